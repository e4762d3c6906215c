"""Settings of a coarse-to-fine run (``pipeline.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facelandmarks.landmarks import REFINED_REGIONS
from facelandmarks.training.config import _write_json_atomic

KINDS = ("cascade", "regions")


MIN_SIDE = 0.06  # smallest region box, as a fraction of the face crop


REFINER_AUGMENT = "rotation=8,scale=0.05,brightness=0.25,contrast=0.25,noise=4"


BOXES_AUGMENT = "scale=0.08,translate=0.04,flip=0.5,brightness=0.25,contrast=0.25,noise=4"


@dataclass
class PipelineConfig:
    """Settings of a coarse-to-fine run, saved as ``pipeline.json``."""

    kind: str
    stage1: str
    run_dir: str
    boxes: str | None = None
    refiner: str = "scratch"
    patch_size: int = 32
    margin: float = 0.25
    copies: int = 4
    regions: list = field(default_factory=lambda: list(REFINED_REGIONS))
    fixed_sides: dict = field(default_factory=dict)  # cascade: region -> patch side (crop fraction)
    scheme: str | None = None
    crop_size: int | None = None  # face-crop resolution the refiners were trained on

    def save(self) -> None:
        _write_json_atomic(Path(self.run_dir) / "pipeline.json", asdict(self))

    @classmethod
    def load(cls, run_dir) -> "PipelineConfig":
        path = Path(run_dir) / "pipeline.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a pipeline run (no pipeline.json)")
        return cls(**json.loads(path.read_text()))
