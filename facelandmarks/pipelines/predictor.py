"""A stage-1 model plus its refiners behind the ``Predictor`` interface."""

from __future__ import annotations

import shlex
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from facelandmarks.data.faces import cut_patches, from_patch
from facelandmarks.inference import runtimes
from facelandmarks.inference.predictor import Predictor, Variant, median_ms
from facelandmarks.pipelines.boxes import inference_boxes, region_boxes
from facelandmarks.pipelines.config import PipelineConfig, stage_candidates
from facelandmarks.runtime import script_command, several_models_predicting


def _is_exported(run_dir: Path) -> bool:
    return (run_dir / "stage1" / runtimes.EXPORT_FILE).is_file()


def _stage_path(run_dir: Path, config: PipelineConfig, stage: str, role: str = "stage 1") -> Path:
    """A stage's run directory (stage 1, the box network) as ``pipeline.json`` names it: relative to the pipeline
    folder (a run's since this version, an export's), absolute, or in an older run relative to the folder train.py
    ran in (``stage_candidates``)."""
    candidates = stage_candidates(run_dir, stage, config.run_dir)
    found = next((path for path in candidates if path.exists()), None)
    if found is None:  # else Predictor.load's 'no such run directory' named neither the pipeline nor why
        where = ", relative to the pipeline's folder or to the folder train.py ran in"
        raise FileNotFoundError(f"{run_dir}: its {role}, {stage} in pipeline.json, is not there"
                                f"{'' if Path(stage).is_absolute() else where} (move it back, or export the pipeline "
                                "where it loads: an export holds every stage)")
    return found


class PipelinePredictor(Predictor):
    """Stage 1 plus region refiners; used like a ``Predictor`` (photos included).

    Args:
        box_source: where region boxes come from at inference -- 'stage1'
            (default), 'boxes' (the box network; regions pipelines trained
            with ``--boxes``).
        flip_test: flip test for stage 1 (region patches have no left/right
            pairs to undo a flip with, so refiners see their patch once).
        recrop: stage 1 recrops (``Predictor``'s ``recrop``); the refiners
            cut their patches around its averaged points.
        stage1_dir: the folder stage 1 was loaded from (None: ``config.stage1``):
            its run, or in an export its stage folder (which holds the run's
            history.csv, ``export.py``); its losses and curve are stage 1's row's.
    """

    def __init__(self, config: PipelineConfig, stage1: Predictor, refiners: dict, box_net: Predictor | None = None,
                 box_source: str = "stage1", flip_test: bool = False, stage1_dir=None, **kwargs):
        self.stage1 = stage1  # before Predictor.__init__, which sets flip_test
        self.stage1_dir = Path(config.stage1 if stage1_dir is None else stage1_dir)
        kwargs.setdefault("name", Path(config.run_dir).name)
        super().__init__(stage1.model, stage1.scheme.name, config=asdict(config), **kwargs)
        self.pipeline, self.refiners, self.box_net = config, refiners, box_net
        self.landmark_box = stage1.landmark_box  # stage 1's points are the ones a crop is cut around (recrop, video)
        self.box_source = box_source
        self.flip_test = flip_test
        # photos are cropped at the resolution the refiners' patches were cut from
        self.crop_size = config.crop_size or stage1.input_size

    @classmethod
    def load(cls, run_dir, box_source: str = "stage1", runtime: str = "auto", threads: int | None = None,
             **kwargs) -> PipelinePredictor:
        """A pipeline run, or its export (``export.py``: the same layout, every stage an export folder).

        ``runtime`` other than 'keras' on a pipeline run loads its ``export`` folder ('auto': when there is one).
        """
        run_dir = Path(run_dir)
        exported = run_dir / runtimes.EXPORT_DIR
        if runtime != "keras" and (exported / "pipeline.json").is_file():
            run_dir = exported
        elif runtime not in ("keras", "auto") and not _is_exported(run_dir):
            raise runtimes.ExportError(f"{run_dir}: not exported{runtimes.how_to_export(run_dir, runtime)}")
        if runtime == "keras" and _is_exported(run_dir):
            raise ValueError(f"{run_dir}: an export, which ONNX Runtime or LiteRT runs; Keras needs the pipeline run "
                             f"it came from")
        config = PipelineConfig.load(run_dir)
        stage_options = {"runtime": runtime if _is_exported(run_dir) else "keras", "threads": threads}
        if stage_options["runtime"] == "keras":
            several_models_predicting()
        stage1_dir = _stage_path(run_dir, config, config.stage1)
        boxes_dir = _stage_path(run_dir, config, config.boxes, "box network") if config.boxes else None
        # named as trained; the stages where they were found, the pipeline where it was loaded from (export.py copies)
        kwargs.setdefault("name", Path(config.run_dir).name)
        config = replace(config, stage1=str(stage1_dir), boxes=boxes_dir and str(boxes_dir), run_dir=str(run_dir))
        stage1 = Predictor.load(stage1_dir, **stage_options)
        refiners = {}
        for region in config.regions:
            path = run_dir / region / "run"
            if not ((path / "model.keras").is_file() or runtimes.is_export(path)):
                raise FileNotFoundError(f"{path}: the {region} refiner has not finished training (continue the pipeline: "
                                        f"{script_command('train')} --resume --run-dir {shlex.quote(str(run_dir))})")
            refiners[region] = Predictor.load(path, **stage_options)
        box_net = Predictor.load(boxes_dir, **stage_options) if boxes_dir else None
        if box_source == "boxes" and box_net is None:
            raise ValueError(f"{run_dir}: no box network in this pipeline (train it with `train.py boxes` and pass --boxes)")
        return cls(config, stage1, refiners, box_net, box_source, stage1_dir=stage1_dir, **kwargs)

    def stages(self) -> dict:
        """``{folder within the pipeline run: (predictor, its run directory)}`` of every model (export.py)."""
        out = {"stage1": (self.stage1, self.pipeline.stage1)}
        out.update({f"{region}/run": (refiner, Path(self.pipeline.run_dir) / region / "run")
                    for region, refiner in self.refiners.items()})
        if self.box_net is not None:
            out["boxes"] = (self.box_net, self.pipeline.boxes)
        return out

    @property
    def flip_test(self) -> bool:
        return self.stage1.flip_test

    @flip_test.setter
    def flip_test(self, value: bool) -> None:
        self.stage1.flip_test = value

    @property
    def recrop(self) -> bool:
        return self.stage1.recrop

    @recrop.setter
    def recrop(self, value: bool) -> None:
        self.stage1.recrop = value

    def predict_crops(self, crops: np.ndarray, batch_size: int | None = None, box_source: str | None = None,
                      truth: tuple | None = None) -> np.ndarray:
        """Refined (N, K, 2) predictions.

        Args:
            batch_size: faces per forward pass of each stage (None: each stage's own
                ``Predictor.batch_size``).
            box_source: 'stage1', 'boxes', or 'oracle' (boxes from ``truth`` =
                (landmarks, visible), the upper bound of seed 003).
        """
        source = box_source or self.box_source
        points = self.stage1.predict_crops(crops, batch_size)
        return self.refine(crops, points, source, truth, batch_size)

    def refine(self, crops, points, source="stage1", truth=None, batch_size=None) -> np.ndarray:
        scheme = self.stage1.scheme
        if source == "stage1":
            boxes = inference_boxes(self.pipeline, points, scheme)
        elif source == "boxes":
            if self.box_net is None:
                raise ValueError("this pipeline has no box network")
            boxes = inference_boxes(self.pipeline, points, scheme, corners=self.box_net.predict_crops(crops, batch_size))
        elif source == "oracle":
            if truth is None:
                raise ValueError("oracle boxes need the ground truth")
            boxes = region_boxes(truth[0], truth[1], scheme, self.pipeline.regions, self.pipeline.margin)
            boxes = np.where(np.isfinite(boxes), boxes, inference_boxes(self.pipeline, points, scheme))
        else:
            raise ValueError(f"box source must be stage1, boxes or oracle, got {source!r}")
        refined = np.array(points, np.float32, copy=True)
        for r, region in enumerate(self.pipeline.regions):
            refiner = self.refiners[region]
            patches = cut_patches(np.asarray(crops), boxes[:, r], refiner.input_size)
            local = refiner.predict_crops(patches, batch_size)
            refined[:, list(scheme.regions[region])] = from_patch(local, boxes[:, r])
        return refined

    def count_params(self) -> int:
        extras = list(self.refiners.values()) + ([self.box_net] if self.box_net is not None else [])
        return self.stage1.count_params() + sum(p.count_params() for p in extras)

    def variants(self, run_dir: Path, images: np.ndarray, truth: tuple | None, flip_test: bool = False,
                 recrop: bool = False) -> list[Variant]:
        """Stage 1 alone, stage 1 + refiners (from stage-1 boxes, the box net's, the true ones: not without ``truth``
        in the pipeline's markup), and flip-test and recrop rows (stage 1 alone and + refiners)."""
        name, kind = Path(run_dir).name, self.pipeline.kind
        if self.stage1.runtime_label:  # an export's rows are labelled, as a single model's are (int8: its stage 1's)
            name = f"{name} ({self.stage1.runtime_label})"
        stage1_dir = self.stage1_dir
        # named after its run, in an export too (its export.json's source: the export's folder is 'stage1')
        stage1_name = self.stage1.config.get("source", stage1_dir.name) if self.stage1.runtime != "keras" else stage1_dir.name
        coarse = self.stage1.predict_crops(images)
        out = [Variant(f"{name}: stage 1 ({stage1_name})", coarse, self.stage1, stage1_dir),
               Variant(f"{name}: stage 1 + {kind}", self.refine(images, coarse, "stage1"), self, None)]
        if self.box_net is not None:
            out.append(Variant(f"{name}: stage 1 + {kind} (box net)", self.refine(images, coarse, "boxes"), None, None))
        if truth is not None:
            out.append(Variant(f"{name}: stage 1 + {kind} (oracle boxes)", self.refine(images, coarse, "oracle", truth), None, None))
        if flip_test:
            self.flip_test = True
            coarse = self.stage1.predict_crops(images)
            out += [Variant(f"{name}: stage 1 + flip test", coarse, self.stage1, stage1_dir, True),
                    Variant(f"{name}: stage 1 + flip test + {kind}", self.refine(images, coarse, "stage1"), self, None, True)]
        if recrop:
            self.recrop = True
            stage = f"stage 1{' + flip test' if flip_test else ''} + recrop"
            coarse = self.stage1.predict_crops(images, first=coarse)  # the last stage-1 rows are its first pass
            out += [Variant(f"{name}: {stage}", coarse, self.stage1, stage1_dir, flip_test, True),
                    Variant(f"{name}: {stage} + {kind}", self.refine(images, coarse, "stage1"), self, None, flip_test, True)]
        return out

    def ms_per_face(self, crop: np.ndarray, repeats: int = 20) -> float:
        crop = np.asarray(crop)[None]
        return median_ms(lambda: self.predict_crops(crop), repeats, warmup=2)
