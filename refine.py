"""Coarse-to-fine pipelines: a global model (stage 1) refined region by region.

Two designs from the seeds, sharing one mechanism (a small landmark model per
region, trained on patches cut from the face crop):

* ``cascade`` (seed 001): fixed-size patches centred where stage 1 put each
  region; the refiner corrects the points inside the patch.
* ``regions`` (seed 003): the region's bounding box (square, with a margin)
  from stage 1's points, from a box-regression network (``boxes``) or, as an
  oracle, from the ground truth, resized to a fixed patch size.

Training patches are cut around the ground truth, moved and resized by
offsets drawn from stage 1's *measured* errors on its own validation faces,
so each refiner learns to correct the mistakes stage 1 really makes rather
than to find a centred point.  Validation patches are cut where stage 1
actually predicts.  Regions come from the landmark scheme
(``landmarks.REFINED_REGIONS``); the jaw stays with stage 1.

A pipeline run directory::

    pipeline.json        kind, stage-1 run, box run, regions, patch policy
    jitter.npz           stage 1's validation residuals per region
    <region>/            a normal train.py run directory per refiner
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import dataset_io
import faces
import training
from landmarks import REFINED_REGIONS, Scheme, box_scheme, region_scheme
from predictor import Predictor

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
        training._write_json_atomic(Path(self.run_dir) / "pipeline.json", asdict(self))

    @classmethod
    def load(cls, run_dir) -> "PipelineConfig":
        path = Path(run_dir) / "pipeline.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a pipeline run (no pipeline.json)")
        return cls(**json.loads(path.read_text()))


# ----------------------------------------------------------------------------
# Boxes and patches (all in normalised face-crop coordinates)


def region_boxes(points: np.ndarray, visible: np.ndarray, scheme: Scheme, regions, margin: float) -> np.ndarray:
    """(N, R, 4) square boxes around each region's visible points, enlarged by ``margin`` per side.

    A region without a visible point gets a NaN box.
    """
    n = len(points)
    out = np.full((n, len(regions), 4), np.nan, np.float32)
    for r, region in enumerate(regions):
        idx = list(scheme.regions[region])
        pts, vis = points[:, idx], visible[:, idx]
        big = np.where(vis[..., None], pts, np.nan)
        with np.errstate(invalid="ignore"), _quiet_nan():
            lo, hi = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
        centre = (lo + hi) / 2
        side = np.maximum((hi - lo).max(axis=1) * (1 + 2 * margin), MIN_SIDE)
        out[:, r] = np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)
    return out


class _quiet_nan:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def boxes_to_centres_sides(boxes: np.ndarray):
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2] - boxes[..., 0]


def boxes_from_centres(centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    half = np.asarray(sides)[..., None] / 2
    return np.concatenate([centres - half, centres + half], axis=-1).astype(np.float32)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, R, 4) boxes -> (N, 4R, 2) corners in ``box_scheme`` order."""
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1), np.stack([x1, y1], -1)], axis=2)
    return corners.reshape(len(boxes), -1, 2).astype(np.float32)


def boxes_from_corners(corners: np.ndarray) -> np.ndarray:
    """(N, 4R, 2) predicted corners -> (N, R, 4) square boxes (the corners' bounds, squared)."""
    c = corners.reshape(len(corners), -1, 4, 2)
    lo, hi = c.min(axis=2), c.max(axis=2)
    centre, side = (lo + hi) / 2, np.maximum((hi - lo).max(axis=-1), MIN_SIDE)
    return boxes_from_centres(centre, side)


def cut_patches(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, C) patches of face crops (N, S, S, C) at boxes (N, 4) in crop coordinates."""
    s = images.shape[1]
    return np.stack([faces.crop_face(image, box * s, size) for image, box in zip(images, boxes)])


def to_patch(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return ((points - boxes[:, None, :2]) / (boxes[:, None, 2:] - boxes[:, None, :2])).astype(np.float32)


def from_patch(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return (points * (boxes[:, None, 2:] - boxes[:, None, :2]) + boxes[:, None, :2]).astype(np.float32)


# ----------------------------------------------------------------------------
# Stage-1 errors -> training jitter


def stage1_jitter(stage1: Predictor, val: dict, scheme: Scheme, regions, margin: float) -> dict:
    """Stage 1's errors on its validation faces, per region, relative to the true box.

    Returns ``{"offset": (M, R, 2), "log_scale": (M, R)}``: the predicted
    box centre minus the true one, in units of the true box side, and the log
    of predicted over true side.
    """
    pred = stage1.predict_crops(val["images"])
    true_boxes = region_boxes(val["landmarks"], val["visible"], scheme, regions, margin)
    pred_boxes = region_boxes(pred, np.ones_like(val["visible"]), scheme, regions, margin)
    (tc, ts), (pc, ps) = boxes_to_centres_sides(true_boxes), boxes_to_centres_sides(pred_boxes)
    offset = (pc - tc) / ts[..., None]
    log_scale = np.log(ps / ts)
    ok = np.isfinite(offset).all(axis=(1, 2)) & np.isfinite(log_scale).all(axis=1)
    return {"offset": offset[ok].astype(np.float32), "log_scale": log_scale[ok].astype(np.float32)}


def jittered_boxes(true_boxes: np.ndarray, jitter: dict, rng, fixed_sides=None) -> np.ndarray:
    """True boxes moved (and, unless sides are fixed, resized) by stage-1 errors drawn at random.

    Each face draws the errors of one random validation face for all its
    regions at once, keeping the regions' errors as correlated as stage 1's.
    """
    pick = rng.integers(0, len(jitter["offset"]), size=len(true_boxes))
    centres, true_sides = boxes_to_centres_sides(true_boxes)
    centres = centres + jitter["offset"][pick] * true_sides[..., None]
    if fixed_sides is not None:
        sides = np.broadcast_to(np.asarray(fixed_sides, np.float32), true_sides.shape)
    else:
        sides = true_sides * np.exp(jitter["log_scale"][pick])
    return boxes_from_centres(centres, sides)


# ----------------------------------------------------------------------------
# Training


def patch_dataset(arrays: dict, boxes: np.ndarray, region_index: int, scheme: Scheme, region: str, size: int) -> dict:
    """A normal dataset file's arrays for one region: patches, points in patch coordinates."""
    idx = list(scheme.regions[region])
    box = boxes[:, region_index]
    ok = np.isfinite(box).all(axis=1)
    box = box[ok]
    patches = cut_patches(arrays["images"][ok], box, size)
    points = to_patch(arrays["landmarks"][ok][:, idx], box)
    inside = ((points >= 0) & (points <= 1)).all(axis=-1)
    return {
        "images": patches,
        "landmarks": points,
        "visible": arrays["visible"][ok][:, idx] & inside,
        "subject": arrays["subject"][ok],
        "scheme": np.array(region_scheme(scheme, region).name),
        "box": box.astype(np.float32),  # the patch, in face-crop coordinates
    }


def train_pipeline(config: PipelineConfig, template: training.TrainConfig) -> dict:
    """Train one refiner per region; returns {region: summary}."""
    unknown = sorted(set(config.regions) - set(REFINED_REGIONS))
    if unknown or not config.regions:
        raise ValueError(f"--regions must name some of {', '.join(REFINED_REGIONS)}; got {', '.join(config.regions) or 'none'}")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage1 = Predictor.load(config.stage1)
    s1 = training.TrainConfig.load(Path(config.stage1) / "config.json")
    split_config = training.TrainConfig(**{**asdict(s1), "data": template.data or s1.data})
    train, val = training.load_split(split_config)
    if val is None:
        raise ValueError("a pipeline needs validation faces to measure stage 1's errors; give --val or --val-fraction > 0")
    scheme = dataset_io.scheme_of(train)
    if scheme.name != stage1.scheme.name:
        raise ValueError(f"stage 1 predicts {stage1.scheme.name}, the data is {scheme.name}")
    config.scheme, config.crop_size = scheme.name, int(train["images"].shape[1])
    regions = list(config.regions)

    jitter = stage1_jitter(stage1, val, scheme, regions, config.margin)
    dataset_io.save_npz(run_dir / "jitter.npz", jitter)
    true_train = region_boxes(train["landmarks"], train["visible"], scheme, regions, config.margin)
    if config.kind == "cascade":
        sides = np.nanmedian(boxes_to_centres_sides(true_train)[1], axis=0)
        config.fixed_sides = {r: float(s) for r, s in zip(regions, sides)}
    config.save()
    val_boxes = inference_boxes(config, stage1.predict_crops(val["images"]), scheme)

    rng = np.random.default_rng(template.seed)
    fixed = np.array([config.fixed_sides[r] for r in regions], np.float32) if config.kind == "cascade" else None
    summaries = {}
    for r, region in enumerate(regions):
        copies = []
        for _ in range(config.copies):
            boxes = jittered_boxes(true_train, jitter, rng, fixed)
            copies.append(patch_dataset(train, boxes, r, scheme, region, config.patch_size))
        region_dir = run_dir / region
        region_dir.mkdir(exist_ok=True)
        dataset_io.save_npz(region_dir / "patches_train.npz", dataset_io.concatenate(copies))
        dataset_io.save_npz(region_dir / "patches_val.npz", patch_dataset(val, val_boxes, r, scheme, region, config.patch_size))
        region_config = training.TrainConfig(
            **{**asdict(template), "model": config.refiner, "data": str(region_dir / "patches_train.npz"),
               "val": str(region_dir / "patches_val.npz"), "run_dir": str(region_dir / "run"), "size": None,
               "augment": REFINER_AUGMENT if template.augment != "none" else "none", "weights": "none",
               "train_blocks": None, "preview_every": template.preview_every}
        )
        resume = (region_dir / "run" / "state.json").is_file() and not (region_dir / "run" / "model.keras").is_file()
        if (region_dir / "run" / "model.keras").is_file():
            print(f"{region}: already trained, skipping")
            continue
        print(f"training the {region} refiner ({len(copies[0]['images']) * config.copies} patches)")
        summaries[region] = training.fit(region_config, resume=resume)
    return summaries


def boxes_dataset(arrays: dict, scheme: Scheme, regions, margin: float) -> dict:
    """The arrays of a dataset whose 'landmarks' are the corners of its region boxes."""
    boxes = region_boxes(arrays["landmarks"], arrays["visible"], scheme, regions, margin)
    ok = np.isfinite(boxes).all(axis=-1)
    out = {k: v for k, v in arrays.items() if k not in ("landmarks", "visible", "scheme")}
    out["landmarks"] = np.nan_to_num(box_corners(boxes), nan=0.0)
    out["visible"] = np.repeat(ok, 4, axis=1)
    out["scheme"] = np.array(box_scheme(scheme, regions).name)
    return out


def train_boxes(template: training.TrainConfig, margin: float = 0.25, regions=REFINED_REGIONS) -> dict:
    """The box regressor of seed 003's third approach: a landmark model on region-box corners."""
    run_dir = Path(template.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays = dataset_io.load_npz(template.data)
    scheme = dataset_io.scheme_of(arrays)
    data = run_dir / "boxes_train.npz"
    dataset_io.save_npz(data, boxes_dataset(arrays, scheme, regions, margin))
    config = training.TrainConfig(**{**asdict(template), "data": str(data)})
    if template.val:
        val = run_dir / "boxes_val.npz"
        dataset_io.save_npz(val, boxes_dataset(dataset_io.load_npz(template.val), scheme, regions, margin))
        config.val = str(val)
    if config.augment == "default":
        config.augment = BOXES_AUGMENT
    resume = (run_dir / "state.json").is_file()
    return training.fit(config, resume=resume)


# ----------------------------------------------------------------------------
# Inference


def inference_boxes(config: PipelineConfig, points: np.ndarray, scheme: Scheme, corners=None) -> np.ndarray:
    """(N, R, 4) boxes the refiners see: from predicted points, or from box-net corners."""
    regions = list(config.regions)
    if corners is not None:  # the box network predicts every REFINED_REGIONS box, in that order
        return boxes_from_corners(corners)[:, [REFINED_REGIONS.index(r) for r in regions]]
    boxes = region_boxes(points, np.ones(points.shape[:2], bool), scheme, regions, config.margin)
    if config.kind == "cascade":
        centres, _ = boxes_to_centres_sides(boxes)
        boxes = boxes_from_centres(centres, np.array([config.fixed_sides[r] for r in regions], np.float32))
    return boxes


class PipelinePredictor(Predictor):
    """Stage 1 plus region refiners; used like a ``Predictor`` (photos included).

    Args:
        box_source: where region boxes come from at inference -- 'stage1'
            (default), 'boxes' (the box network; regions pipelines trained
            with ``--boxes``).
        flip_test: flip test for stage 1 (region patches have no left/right
            pairs to undo a flip with, so refiners see their patch once).
    """

    def __init__(self, config: PipelineConfig, stage1: Predictor, refiners: dict, box_net: Predictor | None = None,
                 box_source: str = "stage1", flip_test: bool = False, **kwargs):
        self.stage1 = stage1  # before Predictor.__init__, which sets flip_test
        super().__init__(stage1.model, stage1.scheme.name, name=Path(config.run_dir).name, config=asdict(config), **kwargs)
        self.pipeline, self.refiners, self.box_net = config, refiners, box_net
        self.box_source = box_source
        self.flip_test = flip_test
        # photos are cropped at the resolution the refiners' patches were cut from
        self.crop_size = config.crop_size or stage1.input_size

    @classmethod
    def load(cls, run_dir, box_source: str = "stage1", **kwargs) -> "PipelinePredictor":
        config = PipelineConfig.load(run_dir)
        stage1 = Predictor.load(config.stage1)
        refiners = {}
        for region in config.regions:
            path = Path(run_dir) / region / "run"
            if not (path / "model.keras").is_file():
                raise FileNotFoundError(f"{path}: the {region} refiner has not finished training")
            refiners[region] = Predictor.load(path)
        box_net = Predictor.load(config.boxes) if config.boxes else None
        if box_source == "boxes" and box_net is None:
            raise ValueError(f"{run_dir}: no box network in this pipeline (train it with `train.py boxes` and pass --boxes)")
        return cls(config, stage1, refiners, box_net, box_source, **kwargs)

    @property
    def flip_test(self) -> bool:
        return self.stage1.flip_test

    @flip_test.setter
    def flip_test(self, value: bool) -> None:
        self.stage1.flip_test = value

    def predict_crops(self, crops: np.ndarray, batch_size: int = 64, box_source: str | None = None,
                      truth: tuple | None = None) -> np.ndarray:
        """Refined (N, K, 2) predictions.

        Args:
            box_source: 'stage1', 'boxes', or 'oracle' (boxes from ``truth`` =
                (landmarks, visible), the upper bound of seed 003).
        """
        source = box_source or self.box_source
        points = self.stage1.predict_crops(crops, batch_size)
        return self.refine(crops, points, source, truth, batch_size)

    def refine(self, crops, points, source="stage1", truth=None, batch_size=64) -> np.ndarray:
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

    def ms_per_face(self, crop: np.ndarray, repeats: int = 20) -> float:
        import time

        crop = np.asarray(crop)[None]
        for _ in range(2):
            self.predict_crops(crop)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.predict_crops(crop)
            times.append(time.perf_counter() - start)
        return 1000.0 * float(np.median(times))
