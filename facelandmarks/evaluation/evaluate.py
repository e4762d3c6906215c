"""Compare trained runs (and dlib) on a test set: scores, tables, plots."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePath

import numpy as np

from facelandmarks import metrics, pipelines  # noqa: F401 (pipelines registers pipeline runs: they load like single models)
from facelandmarks.data import npz
from facelandmarks.evaluation import result_set
from facelandmarks.evaluation.tables import MUCT_CAMERAS, normaliser, read_history, results_markdown, write_csv
from facelandmarks.ibug68_map import from_ibug68, mapped_points
from facelandmarks.inference.dlib_baseline import DlibPredictor
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.runtimes import EXPORT_DIR


def history_losses(run_dir: Path) -> tuple[float, float, int | None]:
    """(train loss, validation loss, epoch) at the best validation epoch of a run's history.csv.

    The best epoch is the one ``best.weights.h5`` holds: the lowest validation loss among the epochs that logged
    one (an epoch with NA there is never the best, as in training), the lowest training loss in a run without
    validation. (One NA epoch stopped the whole evaluation: "could not convert string to float: ''".)
    """
    rows = read_history(run_dir / "history.csv")
    key = "val_loss" if any(r.get("val_loss") not in (None, "") for r in rows) else "loss"
    rows = [r for r in rows if r.get(key) not in (None, "")]
    if not rows:
        return float("nan"), float("nan"), None
    best = min(rows, key=lambda r: float(r[key]))
    return float(best["loss"]), float(best.get("val_loss") or "nan"), int(best["epoch"]) + 1


def muct_cameras(names: np.ndarray) -> np.ndarray:
    """Camera letter a-e of MUCT image names like ``jpg/i000qa-fn.jpg`` ('' if not MUCT).

    The npz names a face by its path under the source folder: the letter is read from the file's own name
    (read from the path, every face was '', and the per-camera table a row of dashes)."""
    return np.array([_camera(PurePath(n).name) for n in names.astype(str)])


def _camera(name: str) -> str:
    return name[5] if re.match(r"i\d{3}[a-z][a-e]-", name) else ""


def score(name: str, pred: np.ndarray, arrays: dict, scheme, points=None) -> dict:
    """A table row; ``points``: the indices a model gives (``scored_points``), None for all: scored on those alone
    and named with their count ("dlib (7 of 9 points)")."""
    row = {"model": name if points is None else f"{name} ({len(points)} of {scheme.num_points} points)"}
    row.update(metrics.summarize(pred, arrays["landmarks"], arrays["visible"], scheme, points=points))
    row["test_mse"] = metrics.masked_mse(pred, arrays["landmarks"], metrics.of_points(arrays["visible"], points))
    per_face = metrics.nme_per_face(pred, arrays["landmarks"], arrays["visible"], scheme, points=points)
    if scheme.name == "muct76" and "name" in arrays:
        row.update(nme_of_groups(per_face, muct_cameras(arrays["name"]), MUCT_CAMERAS, "camera"))
    turn = metrics.head_turn(arrays["landmarks"], arrays["visible"], scheme)
    if not np.isnan(turn).all():  # the bins by head turn, named by their numbers 0-3
        bins = np.where(np.isnan(turn), "", np.digitize(turn, metrics.TURN_EDGES).astype(str))
        row.update(nme_of_groups(per_face, bins, [str(i) for i in range(len(metrics.TURN_EDGES) + 1)], "turn"))
    return row


def nme_of_groups(per_face: np.ndarray, group: np.ndarray, names, key: str) -> dict:
    """``nme_<key>_<name>`` (%, NaN for a group without a scored face) and ``faces_<key>_<name>`` (how many were
    scored) for each of ``names``, the faces whose ``group`` is that name."""
    out = {}
    for name in names:
        chosen = (group == name) & ~np.isnan(per_face)
        out[f"nme_{key}_{name}"] = 100 * float(per_face[chosen].mean()) if chosen.any() else float("nan")
        out[f"faces_{key}_{name}"] = int(chosen.sum())
    return out


def select_faces(arrays: dict, where: list[str], data_path) -> dict:
    """The faces matching every ``KEY=VALUE`` (equal) or ``KEY~TEXT`` (contains) filter.

    KEY is a per-face string array of the npz: ``source``, ``subject``,
    ``path``, ``detection`` ... (``datagen.py info`` lists them).
    """
    keep = np.ones(len(arrays["landmarks"]), bool)
    alone = []  # (spec, key, op, matched nothing by itself)
    for spec in where:
        found = [(spec.index(c), c) for c in "=~" if c in spec]
        op = min(found)[1] if found else None  # the first: path~a=b looks for 'a=b' in the path
        key, _, value = spec.partition(op) if op else (spec, "", "")
        if op is None or not key or not value:
            raise ValueError(f"--where {spec!r}: write KEY=VALUE or KEY~TEXT, e.g. source=youtube68")
        if key not in arrays or arrays[key].ndim != 1 or len(arrays[key]) != len(keep):
            per_face = sorted(k for k, v in arrays.items() if v.ndim == 1 and len(v) == len(keep))
            raise ValueError(f"{data_path}: no per-face key {key!r} for --where (have: {', '.join(per_face)})")
        column = arrays[key].astype(str)
        match = (column == value) if op == "=" else np.char.find(column, value) >= 0
        alone.append((spec, key, op, not match.any()))
        keep &= match
    if not keep.any():
        raise ValueError(f"{data_path}: no face matches --where {' '.join(where)}{_no_match_hint(arrays, alone)}")
    return npz.subset(arrays, np.flatnonzero(keep))


def _no_match_hint(arrays: dict, alone: list) -> str:
    """What to try instead, for ``select_faces``' error: the values of a KEY=VALUE filter's key that matched nothing
    (a few; --where source=300W had no hint that the key holds 300w), or that each filter matches faces alone."""
    for spec, key, op, none in alone:
        if none:
            values = np.unique(arrays[key].astype(str))
            if op != "=" or len(values) > 8:
                return f" ({spec} matches none of {len(arrays[key])} faces)"
            return f" ({key} is one of: {', '.join(values)})"
    return " (each filter matches faces, but no face matches them all)"


def evaluate_runs(run_dirs, data_path, out_dir, baseline=None, timing=True, gallery_faces=6, where=(),
                  flip_test=False, runtime: str = "keras", threads: int | None = None, recrop=False) -> list[dict]:
    """Score every run (and the baseline) on ``data_path``; write tables and plots to ``out_dir``.

    ``runtime``, ``threads``: how each run is loaded (``Predictor.load``: Keras, or its export).
    ``where``: filters of ``select_faces`` (for example one source of a combined test set).
    ``flip_test``: also score every model with flip-test averaging (extra rows).
    ``recrop``: also score every model with a second pass recropped around its first (``Predictor``'s
    ``recrop``; with the flip test when that is on; extra rows).
    """
    from facelandmarks.evaluation import plots

    out_dir = Path(out_dir)
    result_set.finish_install(out_dir)  # the set of an evaluation killed while moving it in, made whole first
    if npz.is_manifest(data_path):  # a test set prepared with --shard-size: scored as one ("not an npz file" before)
        shards = npz.ShardSet(data_path)
        arrays = npz.concatenate([shards.load(i) for i in range(len(shards))])
    else:
        arrays = npz.load_npz(data_path)
    if "images" not in arrays:
        raise ValueError(f"{data_path}: evaluation needs face images (a prepared npz, not bottleneck features)")
    if where:
        arrays = select_faces(arrays, list(where), data_path)
    label = Path(data_path).name + (f" ({' '.join(where)})" if where else "")
    scheme = npz.scheme_of(arrays)
    mapping = None if scheme.name == "ibug68" else scheme.ibug68  # where its points lie in iBUG 68, if it says
    dlib_model = None  # the baseline's data and model are checked before the runs are scored, not after
    if baseline == "dlib":
        if scheme.name != "ibug68" and mapping is None:
            raise ValueError(f"{data_path}: dlib's predictor gives ibug68 points; this data is {scheme.name}, whose "
                             f"scheme does not say where its points lie in iBUG 68 (add \"ibug68\" to its scheme "
                             "file and make the data again: docs/own-landmarks.md)")
        dlib_model = DlibPredictor()
    elif baseline not in (None, "none"):
        raise ValueError(f"unknown baseline {baseline!r} (known: dlib)")
    rows, predictions, histories, points = [], {}, {}, {}  # points: the indices a row scores, None for all
    for run_dir, run_label in zip(map(Path, run_dirs), run_labels(run_dirs)):
        for row, pred, history in run_rows(run_dir, arrays, scheme, data_path, timing, flip_test, runtime, threads,
                                            recrop):
            row["model"] = run_label + row["model"][len(run_dir.name):]  # every row's name starts with its folder's
            rows.append(row)
            predictions[row["model"]] = pred
            points[row["model"]] = row.pop("points")
            if history is not None:
                histories[row["model"]] = history
    if dlib_model is not None:
        # as it comes, and with its 0-based points moved to iBUG's 1-based convention: one photo pixel is 1 / the crop
        # box's side in crop coordinates (predict_dataset(offset=1) ran dlib over every face a second time for it)
        plain = dlib_model.predict_dataset(arrays)
        pixel = 1.0 / (arrays["box"][:, None, 2:].astype(np.float64) - arrays["box"][:, None, :2])
        for name, pred in ((dlib_model.name, plain), (f"{dlib_model.name}, +1 px", (plain + pixel).astype(np.float32))):
            pred = pred if mapping is None else from_ibug68(pred, mapping).astype(np.float32)
            row = score(name, pred, arrays, scheme, scored_points(mapping))
            row.update(train_loss=float("nan"), val_loss=float("nan"), best_epoch=None, params=None, ms_per_face=float("nan"),
                       device=None)
            rows.append(row)
            predictions[row["model"]], points[row["model"]] = pred, scored_points(mapping)
            row["from_ibug68"] = mapping is not None
    mapped = [row["model"] for row in rows if row.pop("from_ibug68", False)]  # rows of iBUG 68 points, mapped

    # written into a folder of their own and moved in as one set at the end (result_set.py): an evaluation stopped
    # (Ctrl-C during the gallery), failed or killed leaves the earlier set, or the new one, never parts of both; the
    # folder is made once every run is scored: a run that does not load leaves no empty --out behind
    staging = result_set.staging_folder(out_dir)
    try:
        write_csv(staging / "results.csv", rows)
        (staging / "results.md").write_text(results_markdown(rows, scheme, label, len(arrays["landmarks"]),
                                                             mapping_notes(scheme, mapped)))
        nmes = {name: metrics.nme_per_face(p, arrays["landmarks"], arrays["visible"], scheme, points=points[name])
                for name, p in predictions.items()}
        plots.ced_plot(nmes, staging / "ced.png", title=f"{label} ({scheme.name})", normaliser=normaliser(scheme))
        plots.gallery(arrays, predictions, nmes, staging / "gallery.png", count=gallery_faces)
        if histories:  # else no curves.png: an earlier one goes with the rest of the earlier set
            plots.learning_curves(histories, staging / "curves.png")
        result_set.commit(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # not committed (once committed, it has another name)
    return rows


def scored_points(mapping) -> list[int] | None:
    """The points a model of iBUG 68 points is scored on, through a scheme's ``ibug68`` (``mapping``): those it
    maps, or None where it maps them all (or there is no mapping: the model's points are the data's)."""
    return None if mapping is None or all(mapping) else mapped_points(mapping)


def mapping_notes(scheme, mapped: list[str]) -> list[str]:
    """The lines under the table that say which rows are iBUG 68 points mapped to ``scheme``'s, and which of its
    points they lack."""
    if not mapped:
        return []
    where = ", ".join(f"{scheme.point_label(i)} {'+'.join(map(str, g)) if g else '–'}" for i, g in enumerate(scheme.ibug68))
    lines = [f"Rows of iBUG 68 points ({'; '.join(mapped)}) are scored on {scheme.name}'s points, mapped by its "
             f"\"ibug68\" (a+b: their mean): {where}."]
    absent = [scheme.point_label(i) for i, g in enumerate(scheme.ibug68) if g is None]
    if absent:
        lines.append(f"{', '.join(absent)}: no iBUG 68 point, left out of the rows marked ({scheme.num_points - len(absent)} "
                     f"of {scheme.num_points} points); their NME "
                     "is over the other points, each face normalised as in every row, and their region cells for "
                     "regions of absent points alone are empty (–).")
    return lines


def run_labels(run_dirs) -> list[str]:
    """Each run's name in the tables and plots: its folder's name, or as many of the last parts of its path as tell it
    from another run's folder of that name (runs/a/best and runs/b/best were two rows 'best', one curve and gallery).
    A run's own export folder (``RUN/export``) is named with its run, ``RUN/export`` (its row read 'export (onnx)')."""
    paths = [Path(os.path.abspath(d)) for d in run_dirs]
    labels = []
    for path in paths:
        if paths.count(path) > 1:
            raise ValueError(f"{path}: given twice among the runs")
        n = 2 if path.name == EXPORT_DIR and len(path.parts) > 2 else 1
        while n < len(path.parts) and any(o != path and o.parts[-n:] == path.parts[-n:] for o in paths):
            n += 1
        labels.append("/".join(path.parts[-n:]))
    return labels


def run_rows(run_dir: Path, arrays: dict, scheme, data_path, timing: bool, flip_test: bool = False,
             runtime: str = "keras", threads: int | None = None, recrop: bool = False):
    """(row, predictions, history file) for a run; several for a coarse-to-fine pipeline.

    ``flip_test`` adds the same model(s) with flip-test averaging, ``recrop`` with a recropped second
    pass (stage 1 only, for pipelines), as extra rows.
    """
    predictor = Predictor.load(run_dir, runtime=runtime, threads=threads)
    # a run of iBUG 68 points on data of a scheme that says where its points lie in iBUG 68: scored on those
    mapping = scheme.ibug68 if predictor.scheme.name == "ibug68" != scheme.name else None
    if predictor.scheme.name != scheme.name and mapping is None:
        hint = (" (its scheme could say where its points lie in iBUG 68: \"ibug68\", docs/own-landmarks.md)"
                if predictor.scheme.name == "ibug68" else "")
        raise ValueError(f"{run_dir} predicts {predictor.scheme.name} points but {data_path} is {scheme.name}{hint}")
    images = arrays["images"]
    truth = None if mapping is not None else (arrays["landmarks"], arrays["visible"])  # a pipeline's oracle boxes: iBUG 68's
    variants = predictor.variants(run_dir, images, truth, flip_test, recrop)
    out = []
    for variant in variants:  # every prediction is made: timing may now set flip_test and recrop
        name, pred, timed, history_dir, flip = (variant.name, variant.predictions, variant.timed, variant.history_dir,
                                                variant.flip_test)
        if mapping is not None:
            pred = from_ibug68(pred, mapping).astype(np.float32)
        row = score(name, pred, arrays, scheme, scored_points(mapping))
        row["points"], row["from_ibug68"] = scored_points(mapping), mapping is not None
        row["train_loss"], row["val_loss"], row["best_epoch"] = (
            history_losses(history_dir) if history_dir is not None else (float("nan"), float("nan"), None)
        )
        row["params"] = timed.count_params() if timed is not None else None
        row["ms_per_face"], row["device"] = float("nan"), None
        if timing and timed is not None:
            timed.flip_test, timed.recrop = flip, variant.recrop  # each row times its own passes per face (flip test x2, recrop x2)
            row["ms_per_face"] = timed.ms_per_face(images[0])
            row["device"] = timed.device  # the table's column was 'CPU ms/face' of a model timed on a GPU
        # one learning curve per run: the flip-test and recrop rows share their run's
        has_history = history_dir is not None and not (flip or variant.recrop) and row["best_epoch"] is not None
        out.append((row, pred, history_dir / "history.csv" if has_history else None))
    return out
