"""Settings of coarse-to-fine training (the pipeline flags of ``train.py``) and of a finished run (``pipeline.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facelandmarks.landmarks import REFINED_REGIONS
from facelandmarks.training.config import _write_json_atomic, setting

KINDS = ("cascade", "regions")


MIN_SIDE = 0.06  # smallest region box, as a fraction of the face crop


REFINER_AUGMENT = "rotation=8,scale=0.05,brightness=0.25,contrast=0.25,noise=4"


BOXES_AUGMENT = "scale=0.08,translate=0.04,flip=0.5,brightness=0.25,contrast=0.25,noise=4"


@dataclass
class PipelineOptions:
    """Settings of the coarse-to-fine trainers (train.py cascade, regions, boxes).

    Declared once, with the metadata scheme of ``TrainConfig``: ``train.py`` derives its pipeline flags
    from these fields, a config file gives them as ``"pipeline": {...}``, and ``pipeline.json`` records
    them (``PipelineConfig`` extends this class).
    """

    stage1: str | None = setting(None, "cascade, regions: run directory of the global model to refine")
    boxes: str | None = setting(None, "regions: run directory of a box network (train.py boxes)")
    refiner: str = setting("scratch", "registered model used for each region refiner")
    box_model: str = setting("resnet_scratch", "boxes: registered model used for the box network")
    patch_size: int = setting(32, "refiner input size in pixels")
    margin: float = setting(0.25, "region box margin per side, fraction of its size")
    regions: list = setting(list(REFINED_REGIONS), "comma-separated regions to refine (the jaw stays with stage 1)")
    copies: int = setting(4, "jittered patches per training face")


@dataclass(kw_only=True)
class PipelineConfig(PipelineOptions):
    """Settings of a coarse-to-fine run, saved as ``pipeline.json``: its options plus what training found."""

    kind: str
    run_dir: str
    fixed_sides: dict = field(default_factory=dict)  # cascade: region -> patch side (crop fraction)
    scheme: str | None = None
    crop_size: int | None = None  # face-crop resolution the refiners were trained on

    def save(self) -> None:
        _write_json_atomic(Path(self.run_dir) / "pipeline.json", asdict(self))

    @classmethod
    def load(cls, run_dir) -> PipelineConfig:
        path = Path(run_dir) / "pipeline.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a pipeline run (no pipeline.json)")
        return cls(**json.loads(path.read_text()))
