"""Settings of coarse-to-fine training (the pipeline flags of ``train.py``) and of a finished run (``pipeline.json``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from facelandmarks.landmarks import REFINED_REGIONS
from facelandmarks.training.config import _write_json_atomic, setting

KINDS = ("cascade", "regions")


MIN_SIDE = 0.06  # smallest region box, as a fraction of the face crop


REFINER_AUGMENT = "rotation=8,scale=0.05,brightness=0.25,contrast=0.25,noise=4"


BOXES_AUGMENT = "scale=0.08,translate=0.04,flip=0.5,brightness=0.25,contrast=0.25,noise=4"


@dataclass
class PipelineOptions:
    """Settings of the coarse-to-fine trainers (train.py cascade, regions, boxes). The settings above
    train each refiner (the box network); cascade and regions refuse --init, --teachers, --size,
    --val-fraction and --split-seed.

    Declared once, with the metadata scheme of ``TrainConfig``: ``train.py`` derives its pipeline flags
    from these fields, a config file gives them as ``"pipeline": {...}``, and ``pipeline.json`` records
    them (``PipelineConfig`` extends this class).
    """

    stage1: str | None = setting(None, "cascade, regions: run directory of the global model to refine")
    boxes: str | None = setting(None, "regions: run directory of a box network (train.py boxes)")
    refiner: str = setting("scratch", "cascade, regions: registered model used for each region refiner",
                           models=True)
    box_model: str = setting("resnet_scratch", "boxes: registered model used for the box network",
                             models=True)
    patch_size: int = setting(32, "cascade, regions: refiner input size in pixels")
    margin: float = setting(0.25, "region box margin per side, fraction of its size")
    regions: list = setting(list(REFINED_REGIONS), "cascade, regions: comma-separated regions to refine (the jaw stays with stage 1)")
    copies: int = setting(4, "cascade, regions: jittered patches per training face")


# the trainers that use a setting of PipelineOptions (the others use it in every trainer): train.py refuses it elsewhere
USED_BY = {"stage1": ("cascade", "regions"), "boxes": ("regions",), "refiner": ("cascade", "regions"),
           "box_model": ("boxes",), "patch_size": ("cascade", "regions"), "regions": ("cascade", "regions"),
           "copies": ("cascade", "regions")}


@dataclass(kw_only=True)
class PipelineConfig(PipelineOptions):
    """Settings of a coarse-to-fine run, saved as ``pipeline.json``: its options plus what training found."""

    kind: str
    run_dir: str
    fixed_sides: dict = field(default_factory=dict)  # cascade: region -> patch side (crop fraction)
    scheme: str | None = None
    crop_size: int | None = None  # face-crop resolution the refiners were trained on

    def save(self) -> None:
        """``pipeline.json``, naming stage 1 and the box network as ``stage_reference`` does (loading from any folder)."""
        values = asdict(self)
        for name in ("stage1", "boxes"):
            if values[name]:
                values[name] = stage_reference(values[name], self.run_dir)
        _write_json_atomic(Path(self.run_dir) / "pipeline.json", values)

    @classmethod
    def load(cls, run_dir) -> PipelineConfig:
        path = Path(run_dir) / "pipeline.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a pipeline run (no pipeline.json)")
        try:
            values = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}  # keys of another version dropped, as TrainConfig.load drops them
            return cls(**{k: v for k, v in values.items() if k in known})
        except (ValueError, TypeError, AttributeError) as err:  # torn, not an object, or a setting missing
            raise ValueError(f"{path}: not a readable pipeline.json ({err})") from None


def stage_reference(stage, run_dir) -> str:
    """How ``pipeline.json`` names a stage's run (stage 1, the box network) given as ``stage`` (a path from the working
    directory): relative to the pipeline's folder where both lie in one tree (a runs/ folder moved or copied whole keeps
    its pipelines), else absolute."""
    stage, run = Path(stage).resolve(), Path(run_dir).resolve()
    if Path(os.path.commonpath([stage, run])) == Path(stage.anchor):
        return str(stage)
    return os.path.relpath(stage, run)


def stage_candidates(run_dir, stage: str, saved_run_dir: str) -> list[Path]:
    """Where the stage ``pipeline.json`` names may be, most likely first: relative to the pipeline's folder (as
    ``stage_reference`` writes it, and an export's stages), then, for a pipeline.json written before that, relative to
    the folder train.py ran in: the folder its ``run_dir`` (as typed there) leads from to this pipeline, and the
    working directory."""
    stage_path = Path(stage)
    if stage_path.is_absolute():
        return [stage_path]
    out = [Path(run_dir) / stage_path]
    typed = Path(saved_run_dir or "")
    here = Path(run_dir).resolve().parts
    depth = len(typed.parts)
    if not typed.is_absolute() and ".." not in typed.parts and 0 < depth < len(here) and here[-depth:] == typed.parts:
        out.append(Path(*here[:-depth]) / stage_path)
    return [*out, stage_path]
