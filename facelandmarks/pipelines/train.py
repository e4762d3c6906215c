"""Training the refiners of a cascade or region pipeline, and the region-box network."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from facelandmarks.data import npz
from facelandmarks.data.faces import cut_patches, to_patch
from facelandmarks.data.feeding import load_split, repeat_counts
from facelandmarks.inference.predictor import Predictor
from facelandmarks.landmarks import REFINED_REGIONS, Scheme, box_scheme, region_scheme
from facelandmarks.models.plugins import plugins_here
from facelandmarks.pipelines.boxes import (
    box_corners,
    boxes_from_centres,
    boxes_to_centres_sides,
    inference_boxes,
    region_boxes,
)
from facelandmarks.pipelines.config import (
    BOXES_AUGMENT,
    REFINER_AUGMENT,
    USED_BY,
    PipelineConfig,
    PipelineOptions,
    stage_candidates,
)
from facelandmarks.training.config import TrainConfig, flag_name
from facelandmarks.training.fit import fit, read_summary
from facelandmarks.training.runs import record_resumed


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


def patch_dataset(arrays: dict, boxes: np.ndarray, region_index: int, scheme: Scheme, region: str, size: int) -> dict:
    """A normal dataset file's arrays for one region: patches, points in patch coordinates."""
    idx = list(scheme.regions[region])
    box = boxes[:, region_index]
    ok = np.isfinite(box).all(axis=1)
    box = box[ok]
    patches = cut_patches(arrays["images"][ok], box, size)
    points = to_patch(arrays["landmarks"][ok][:, idx], box)
    inside = ((points >= 0) & (points <= 1)).all(axis=-1)
    out = {
        "images": patches,
        "landmarks": points,
        "visible": arrays["visible"][ok][:, idx] & inside,
        "subject": arrays["subject"][ok],
        "scheme": np.array(region_scheme(scheme, region).name),
        "box": box.astype(np.float32),  # the patch, in face-crop coordinates
    }
    if "source" in arrays:  # each patch is its face's: --oversample weights a source's faces in the refiners too
        out["source"] = arrays["source"][ok]
    return out


def train_kind(kind: str, config: TrainConfig, resume: bool = False) -> dict:
    """``train.py cascade|regions|boxes``: the trainer ``facelandmarks.pipelines`` registers for each kind.

    The models trained here get ``config`` without its ``pipeline`` settings, so each of their
    ``config.json`` files is a plain run's.  A cascade or region run also saves ``config`` itself in its
    directory: ``--resume`` and ``--config`` then work on it like on any run.
    """
    options = PipelineOptions(**config.pipeline)
    template = replace(config, pipeline={})
    if resume:  # the refiners take the plugins where they are now (FACELANDMARKS_PLUGINS for a recorded file not
        # here): a refiner not started before the stop trains as a new run, which refused that file
        template = replace(template, plugins=plugins_here(config.plugins))
    check_in_memory(config.data, kind)
    check_model("--box-model" if kind == "boxes" else "--refiner", options.box_model if kind == "boxes" else options.refiner,
                template)
    if not resume:
        check_kind_options(kind, options)
        check_run_folder(kind, config)
    if kind == "boxes":
        return train_boxes(replace(template, model=options.box_model), margin=options.margin)
    if config.time_limit:
        raise ValueError(f"--time-limit times one model's training; train.py {kind} trains its models one after "
                         "another: give them --epochs")
    if not resume:
        check_refiner_settings(kind, config)
    if not options.stage1:
        raise ValueError(f"train.py {kind} needs --stage1 RUN_DIR (the global model to refine)")
    check_regions(options.regions)
    if resume:
        options = found_stages(options, Path(config.run_dir))
    for flag, path in (("--stage1", options.stage1), ("--boxes", options.boxes)):
        if path and not Path(path).is_dir():  # before config.json is written (Predictor.load said it only after)
            where = (f" (in {Path(config.run_dir) / 'config.json'}: relative to the folder train.py started the run in, "
                     "and not where its pipeline.json leads)") if resume else ""
            raise FileNotFoundError(f"{flag} {path}: no such run directory{where}")
    check_stages(options)
    if not resume:
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        config.save(Path(config.run_dir) / "config.json")
    else:
        record_resumed(Path(config.run_dir) / "config.json", config)  # the budget, where --data and --val now are
    shared = {f.name: getattr(options, f.name) for f in fields(PipelineOptions)}
    return train_pipeline(PipelineConfig(kind=kind, run_dir=config.run_dir, **shared), template, resume)


def check_model(flag: str, name: str, template: TrainConfig) -> None:
    """The model a pipeline trains, with the run's ``--weights``, ``--train-blocks`` and ``--model-options``, refused in
    one line before stage 1 predicts and the patches are cut (``build_model`` would refuse it only then)."""
    from facelandmarks.models import IMAGE, check_arguments

    try:
        spec = check_arguments(name, template.weights, template.train_blocks, **template.model_options)
    except ValueError as err:
        raise ValueError(f"{flag} {name}: {err}") from None
    if spec.input_kind != IMAGE:
        raise ValueError(f"{flag} {name}: the model takes {spec.input_kind}, and the pipelines train on images")


def found_stages(options: PipelineOptions, run_dir: Path) -> PipelineOptions:
    """``--resume``: stage 1 and the box network where the run's ``pipeline.json`` finds them, where the paths typed
    at its start (relative to the folder train.py ran in, as ``config.json`` keeps them) lead nowhere from here."""
    if not (run_dir / "pipeline.json").is_file():
        return options
    saved, found = PipelineConfig.load(run_dir), {}
    for name in ("stage1", "boxes"):
        typed, stored = getattr(options, name), getattr(saved, name)
        if typed and stored and not Path(typed).is_dir():
            where = next((path for path in stage_candidates(run_dir, stored, saved.run_dir) if path.is_dir()), None)
            found.update({name: str(where.resolve())} if where else {})
    return replace(options, **found)


def check_stages(options: PipelineOptions) -> None:
    """``--stage1`` one model's run, ``--boxes`` a box network's (``train.py boxes``): a pipeline as stage 1 stopped in a
    TypeError traceback after config.json was written, another model as the box network gave its points as corners."""
    if (Path(options.stage1) / "pipeline.json").is_file():
        raise ValueError(f"--stage1 {options.stage1}: a pipeline; stage 1 is one model's run (this one's is in its "
                         "pipeline.json)")
    if options.boxes:
        try:
            scheme = json.loads((Path(options.boxes) / "config.json").read_text()).get("scheme")
        except (OSError, ValueError, AttributeError):
            scheme = None
        if not str(scheme).endswith("/boxes"):
            raise ValueError(f"--boxes {options.boxes}: not a box network (a run of train.py boxes, whose config.json "
                             "names a scheme ending in /boxes)")


def check_kind_options(kind: str, options: PipelineOptions) -> None:
    """Settings of another trainer (``USED_BY``; ``train.py boxes --stage1``, ``cascade --boxes``), refused in one line
    naming each and its trainers (they were ignored)."""
    default = PipelineOptions()
    other = [f"{flag_name(f.name)} ({', '.join(USED_BY[f.name])})" for f in fields(PipelineOptions)
             if kind not in USED_BY.get(f.name, (kind,)) and getattr(options, f.name) != getattr(default, f.name)]
    if other:
        raise ValueError(f"{', '.join(other)}: not a setting of train.py {kind}")


# what a rerun of a pipeline's command (which goes on with its unfinished refiners) may change
RERUN_MAY_CHANGE = ("epochs", "time_limit", "workers", "preview_every", "run_dir")


def check_run_folder(kind: str, config: TrainConfig) -> None:
    """A new run's ``--run-dir`` holding another run, refused in one line before anything is written: cascade and
    regions overwrote its config.json (a stage 1's, say) and trained in it, boxes resumed it as the box network; a
    rerun of a pipeline with other settings rewrote them beside refiners trained with the old ones."""
    run_dir = Path(config.run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return  # none (or unreadable: the run's own errors name it)
    saved = saved if isinstance(saved, dict) else {}
    ours = Path(str(saved.get("data"))).name == "boxes_train.npz" if kind == "boxes" else saved.get("model") == kind
    if not ours:
        what = saved.get("model")
        raise FileExistsError(f"{run_dir} already holds a run{f' ({what})' if what else ''}, not a train.py {kind} run: "
                              "choose another --run-dir")
    if kind == "boxes":
        return  # its rerun goes on (as --resume) with the box network's own settings
    now = asdict(config)
    changed = [flag_name(name) for name, value in now.items() if name not in RERUN_MAY_CHANGE and name != "pipeline"
               and name in saved and saved[name] != value]
    changed += [flag_name(name) for name, value in config.pipeline.items() if saved.get("pipeline", {}).get(name) != value]
    if changed:
        raise FileExistsError(f"{run_dir} already holds a {kind} pipeline trained with other {', '.join(changed)}: "
                              f"rerun it as it was started, continue it with --resume, or choose another --run-dir")


def check_in_memory(data, kind: str) -> None:
    """A shard set (``--data X.shards.json``), refused in one line: the pipelines cut patches from, and the box network
    rewrites, the training faces in memory (it stopped in a TypeError traceback, or 'not an npz file')."""
    if data and npz.is_manifest(data):
        raise ValueError(f"{data}: a shard set; train.py {kind} works on the training faces in memory: give it one npz "
                         "(datagen.py prepare without --shard-size, or a smaller set)")


def check_refiner_settings(kind: str, config: TrainConfig) -> None:
    """Settings of one model's training that mean nothing for a pipeline's refiners, refused in one line before any
    file is written (they reached the refiners and failed there, after stage 1 had run, or were ignored)."""
    if config.init:
        raise ValueError(f"--init {config.init}: train.py {kind} starts a new refiner per region (from --weights); "
                         "--init starts one model from another's weights: fine-tune stage 1 with it, then refine that run")
    if config.teachers:
        raise ValueError(f"--teachers: train.py {kind} trains its refiners on region patches, which the teachers (models "
                         "of whole faces) do not mark: distil stage 1 with them (train.py MODEL --teachers ...), then "
                         "refine that run")
    if config.max_faces:
        raise ValueError(f"--max-faces {config.max_faces}: train.py {kind} trains its refiners on patches cut from "
                         "stage 1's training faces, several of each: give stage 1's run --max-faces")
    if config.size:
        raise ValueError(f"--size {config.size}: train.py {kind} cuts the refiners' patches (--patch-size) from the faces "
                         "at the size stage 1 was trained on")
    split = ([f"--val-fraction {config.val_fraction:g}"] if config.val_fraction != TrainConfig.val_fraction else []) + (
        [f"--split-seed {config.split_seed}"] if config.split_seed is not None else [])
    if split:
        raise ValueError(f"{', '.join(split)}: train.py {kind} measures stage 1's errors, and validates its refiners, on "
                         "stage 1's own validation faces (the split it trained with) or on --val NPZ, faces stage 1 did "
                         "not see")


def check_regions(regions, scheme: Scheme | None = None, boxes: bool = False) -> None:
    """``regions`` must be some of the stage-1 scheme's regions (any markup's, by name); a box network
    (``--boxes``) predicts the boxes of ``REFINED_REGIONS`` only."""
    if not regions:
        raise ValueError("--regions names no region")
    allowed = REFINED_REGIONS if boxes else tuple(scheme.regions) if scheme is not None else None
    unknown = [] if allowed is None else sorted(set(regions) - set(allowed))
    if unknown:
        owner = "the box network" if boxes else f"scheme {scheme.name}"
        raise ValueError(f"--regions: {owner} has no region {', '.join(unknown)} "
                         f"(it has {', '.join(allowed) or 'none: a scheme file names them under regions'})")


def train_pipeline(config: PipelineConfig, template: TrainConfig, resume: bool = False) -> dict:
    """Train one refiner per region; returns {region: summary}.  ``resume`` (``--resume``) resumes the finished
    refiners too, which train on to a new ``--epochs`` budget; a rerun skips them."""
    check_regions(config.regions)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage1 = Predictor.load(config.stage1, runtime="keras")
    s1 = _stage1_config(config.stage1)
    # stage 1's own split (its --val, --val-fraction and seeds), so its errors are measured on faces it did not
    # train on; the pipeline's --val replaces its validation faces
    split_config = TrainConfig(**{**asdict(s1), "data": template.data or s1.data, "val": template.val or s1.val})
    if not template.data and not Path(s1.data).exists():  # else 'X.npz: no such dataset file', not saying whose
        raise FileNotFoundError(f"{s1.data}: no such dataset file (stage 1's --data, in {Path(config.stage1) / 'config.json'}"
                                ", relative to the folder it trained in: give the pipeline --data)")
    check_in_memory(split_config.data, config.kind)  # stage 1's data, when the pipeline has no --data
    train, val = load_split(split_config)
    if val is None:
        raise ValueError(f"a pipeline measures stage 1's errors on faces it did not train on, and {config.stage1} was "
                         "trained without validation faces (--val-fraction 0, no --val): give the pipeline --val NPZ, "
                         "faces stage 1 did not see")
    if template.oversample:  # its source names, before stage 1 runs and the patches are cut
        repeat_counts(train, template.oversample)
    scheme = npz.scheme_of(train)
    if scheme.name != stage1.scheme.name:
        raise ValueError(f"stage 1 predicts {stage1.scheme.name}, the data is {scheme.name}")
    check_regions(config.regions, scheme, boxes=bool(config.boxes))
    config.scheme, config.crop_size = scheme.name, int(train["images"].shape[1])
    regions = list(config.regions)

    jitter = stage1_jitter(stage1, val, scheme, regions, config.margin)
    npz.save_npz(run_dir / "jitter.npz", jitter)
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
        npz.save_npz(region_dir / "patches_train.npz", npz.concatenate(copies))
        npz.save_npz(region_dir / "patches_val.npz", patch_dataset(val, val_boxes, r, scheme, region, config.patch_size))
        region_config = TrainConfig(
            **{**asdict(template), "model": config.refiner, "data": str(region_dir / "patches_train.npz"),
               "val": str(region_dir / "patches_val.npz"), "run_dir": str(region_dir / "run"), "size": None,
               "augment": REFINER_AUGMENT if template.augment != "none" else "none",
               "preview_every": template.preview_every, "pipeline": {}}
        )
        finished = (region_dir / "run" / "model.keras").is_file()
        if finished and not resume:
            print(f"{region}: already trained, skipping")
            summaries[region] = read_summary(region_dir / "run")  # its summary, as a run's --resume prints it
            continue
        if not finished:
            print(f"training the {region} refiner ({len(copies[0]['images']) * config.copies} patches)")
        summaries[region] = fit(region_config, resume=(region_dir / "run" / "state.json").is_file())
    return summaries


def _stage1_config(stage1) -> TrainConfig:
    """The stage-1 run's settings.  A shipped model's folder loads like a run, but its settings name no data
    (``TrainConfig.load`` says so in one line naming the file)."""
    return TrainConfig.load(Path(stage1) / "config.json")


def boxes_dataset(arrays: dict, scheme: Scheme, regions, margin: float) -> dict:
    """The arrays of a dataset whose 'landmarks' are the corners of its region boxes."""
    boxes = region_boxes(arrays["landmarks"], arrays["visible"], scheme, regions, margin)
    ok = np.isfinite(boxes).all(axis=-1)
    out = {k: v for k, v in arrays.items() if k not in ("landmarks", "visible", "scheme")}
    out["landmarks"] = np.nan_to_num(box_corners(boxes), nan=0.0)
    out["visible"] = np.repeat(ok, 4, axis=1)
    out["scheme"] = np.array(box_scheme(scheme, regions).name)
    return out


def train_boxes(template: TrainConfig, margin: float = 0.25, regions=REFINED_REGIONS) -> dict:
    """The box regressor of seed 003's third approach: a landmark model on region-box corners."""
    run_dir = Path(template.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays = npz.load_npz(template.data)
    scheme = npz.scheme_of(arrays)
    missing = [region for region in regions if region not in scheme.regions]
    if missing:
        raise ValueError(f"{template.data}: the box network predicts the boxes of {', '.join(regions)}; scheme "
                         f"{scheme.name} has no region {', '.join(missing)}")
    data = run_dir / "boxes_train.npz"
    npz.save_npz(data, boxes_dataset(arrays, scheme, regions, margin))
    config = TrainConfig(**{**asdict(template), "data": str(data), "pipeline": {}})
    if template.val:
        val = run_dir / "boxes_val.npz"
        npz.save_npz(val, boxes_dataset(npz.load_npz(template.val), scheme, regions, margin))
        config.val = str(val)
    if config.augment == "default":
        config.augment = BOXES_AUGMENT
    resume = (run_dir / "state.json").is_file()
    return fit(config, resume=resume)
