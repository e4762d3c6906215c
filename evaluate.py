"""Compare trained runs on a test set, or run one on photos and video.

    # tables and plots: results.md, results.csv, ced.png, gallery.png, curves.png
    python evaluate.py runs/scratch runs/mobilenetv2 --data dataset/ibug128_test.npz --baseline dlib --out results/

    # any photo, or a folder of photos: overlay PNG + JSON of points per face
    python evaluate.py runs/mobilenetv2 --image photo.jpg --out out/

    # a video file or a camera index: overlay video, frames per second
    python evaluate.py runs/mobilenetv2 --video clip.mp4 --out out/clip.mp4

NME is in % of the outer-eye-corner distance (and of the pupil distance where
the scheme has pupils); AUC and failure rate (FR) at 8 % and 10 %; points
unavailable in the ground truth are left out, never scored as zero.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

import dataset_io
import metrics
from predictor import DlibPredictor, Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
MUCT_CAMERAS = "abcde"


# ----------------------------------------------------------------------------
# Test-set evaluation


def history_losses(run_dir: Path) -> tuple[float, float, int | None]:
    """(train loss, validation loss, epoch) at the best validation epoch of a run's history.csv."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return float("nan"), float("nan"), None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return float("nan"), float("nan"), None
    key = "val_loss" if rows[0].get("val_loss") not in (None, "") else "loss"
    best = min(rows, key=lambda r: float(r[key]))
    return float(best["loss"]), float(best.get("val_loss") or "nan"), int(best["epoch"]) + 1


def muct_cameras(names: np.ndarray) -> np.ndarray:
    """Camera letter a-e of MUCT image names like ``i000qa-fn`` ('' if not MUCT)."""
    return np.array([n[5] if len(n) > 5 and n[0] == "i" and n[5] in MUCT_CAMERAS else "" for n in names.astype(str)])


def score(name: str, pred: np.ndarray, arrays: dict, scheme) -> dict:
    row = {"model": name}
    row.update(metrics.summarize(pred, arrays["landmarks"], arrays["visible"], scheme))
    row["test_mse"] = metrics.masked_mse(pred, arrays["landmarks"], arrays["visible"])
    if scheme.name == "muct76" and "name" in arrays:
        cameras = muct_cameras(arrays["name"])
        per_face = metrics.nme_per_face(pred, arrays["landmarks"], arrays["visible"], scheme)
        for cam in MUCT_CAMERAS:
            chosen = (cameras == cam) & ~np.isnan(per_face)
            row[f"nme_camera_{cam}"] = 100 * float(per_face[chosen].mean()) if chosen.any() else float("nan")
    return row


def select_faces(arrays: dict, where: list[str], data_path) -> dict:
    """The faces matching every ``KEY=VALUE`` (equal) or ``KEY~TEXT`` (contains) filter.

    KEY is a per-face string array of the npz: ``source``, ``subject``,
    ``path``, ``detection`` ... (``datagen.py info`` lists them).
    """
    keep = np.ones(len(arrays["landmarks"]), bool)
    for spec in where:
        op = "=" if "=" in spec else "~" if "~" in spec else None
        key, _, value = spec.partition(op) if op else (spec, "", "")
        if op is None or not key or not value:
            raise ValueError(f"--where {spec!r}: write KEY=VALUE or KEY~TEXT, e.g. source=youtube68")
        if key not in arrays or arrays[key].ndim != 1 or len(arrays[key]) != len(keep):
            per_face = sorted(k for k, v in arrays.items() if v.ndim == 1 and len(v) == len(keep))
            raise ValueError(f"{data_path}: no per-face key {key!r} for --where (have: {', '.join(per_face)})")
        column = arrays[key].astype(str)
        keep &= (column == value) if op == "=" else np.char.find(column, value) >= 0
    if not keep.any():
        raise ValueError(f"{data_path}: no face matches --where {' '.join(where)}")
    return dataset_io.subset(arrays, np.flatnonzero(keep))


def evaluate_runs(run_dirs, data_path, out_dir, baseline=None, timing=True, gallery_faces=6, where=(),
                  flip_test=False) -> list[dict]:
    """Score every run (and the baseline) on ``data_path``; write tables and plots to ``out_dir``.

    ``where``: filters of ``select_faces`` (for example one source of a combined test set).
    ``flip_test``: also score every model with flip-test averaging (extra rows).
    """
    import plots

    arrays = dataset_io.load_npz(data_path)
    if "images" not in arrays:
        raise ValueError(f"{data_path}: evaluation needs face images (a prepared npz, not bottleneck features)")
    if where:
        arrays = select_faces(arrays, list(where), data_path)
    label = Path(data_path).name + (f" ({' '.join(where)})" if where else "")
    scheme = dataset_io.scheme_of(arrays)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, predictions, histories = [], {}, {}
    for run_dir in map(Path, run_dirs):
        for row, pred, history in run_rows(run_dir, arrays, scheme, data_path, timing, flip_test):
            rows.append(row)
            predictions[row["model"]] = pred
            if history is not None:
                histories[row["model"]] = history
    if baseline == "dlib":
        dlib_model = DlibPredictor()
        # as it comes, and with its 0-based points moved to iBUG's 1-based convention
        for name, offset in ((dlib_model.name, 0.0), (f"{dlib_model.name}, +1 px", 1.0)):
            pred = dlib_model.predict_dataset(arrays, offset=offset)
            row = score(name, pred, arrays, scheme)
            row.update(train_loss=float("nan"), val_loss=float("nan"), best_epoch=None, params=None, ms_per_face=float("nan"))
            rows.append(row)
            predictions[name] = pred
    elif baseline not in (None, "none"):
        raise ValueError(f"unknown baseline {baseline!r} (known: dlib)")

    write_csv(out_dir / "results.csv", rows)
    (out_dir / "results.md").write_text(results_markdown(rows, scheme, label, len(arrays["landmarks"])))
    nmes = {name: metrics.nme_per_face(p, arrays["landmarks"], arrays["visible"], scheme) for name, p in predictions.items()}
    plots.ced_plot(nmes, out_dir / "ced.png", title=f"{label} ({scheme.name})")
    plots.gallery(arrays, predictions, nmes, out_dir / "gallery.png", count=gallery_faces)
    if histories:
        plots.learning_curves(histories, out_dir / "curves.png")
    return rows


def run_rows(run_dir: Path, arrays: dict, scheme, data_path, timing: bool, flip_test: bool = False):
    """(row, predictions, history file) for a run; several for a coarse-to-fine pipeline.

    ``flip_test`` adds the same model(s) with flip-test averaging (stage 1
    only, for pipelines) as extra rows.
    """
    from refine import PipelinePredictor

    predictor = Predictor.load(run_dir)
    if predictor.scheme.name != scheme.name:
        raise ValueError(f"{run_dir} predicts {predictor.scheme.name} points but {data_path} is {scheme.name}")
    images = arrays["images"]
    pipeline = isinstance(predictor, PipelinePredictor)
    # (name, predictions, predictor to time, run whose losses the row shows, flip test)
    if not pipeline:
        variants = [(run_dir.name, predictor.predict_crops(images), predictor, run_dir, False)]
    else:
        stage1, stage1_dir = predictor.stage1, Path(predictor.pipeline.stage1)
        coarse = stage1.predict_crops(images)
        kind = predictor.pipeline.kind
        truth = (arrays["landmarks"], arrays["visible"])
        variants = [(f"{run_dir.name}: stage 1 ({stage1_dir.name})", coarse, stage1, stage1_dir, False),
                    (f"{run_dir.name}: stage 1 + {kind}", predictor.refine(images, coarse, "stage1"), predictor, None, False)]
        if predictor.box_net is not None:
            variants.append((f"{run_dir.name}: stage 1 + {kind} (box net)", predictor.refine(images, coarse, "boxes"), None, None, False))
        variants.append((f"{run_dir.name}: stage 1 + {kind} (oracle boxes)", predictor.refine(images, coarse, "oracle", truth), None, None, False))
    if flip_test:
        predictor.flip_test = True
        if not pipeline:
            variants.append((f"{run_dir.name} + flip test", predictor.predict_crops(images), predictor, run_dir, True))
        else:
            coarse = stage1.predict_crops(images)
            variants += [(f"{run_dir.name}: stage 1 + flip test", coarse, stage1, stage1_dir, True),
                         (f"{run_dir.name}: stage 1 + flip test + {kind}", predictor.refine(images, coarse, "stage1"), predictor, None, True)]
    out = []
    for name, pred, timed, history_dir, flip in variants:  # every prediction is made: timing may now set flip_test
        row = score(name, pred, arrays, scheme)
        row["train_loss"], row["val_loss"], row["best_epoch"] = (
            history_losses(history_dir) if history_dir is not None else (float("nan"), float("nan"), None)
        )
        row["params"] = count_params(timed) if timed is not None else None
        row["ms_per_face"] = float("nan")
        if timing and timed is not None:
            timed.flip_test = flip  # a flip-test row times two passes per face
            row["ms_per_face"] = timed.ms_per_face(images[0])
        # one learning curve per run: the flip-test rows share their run's
        out.append((row, pred, history_dir / "history.csv" if history_dir is not None and not flip else None))
    return out


def count_params(predictor) -> int:
    total = int(predictor.model.count_params())
    for extra in list(getattr(predictor, "refiners", {}).values()) + [getattr(predictor, "box_net", None)]:
        if extra is not None:
            total += int(extra.model.count_params())
    return total


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value, digits=2):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_markdown(rows: list[dict], scheme, label: str, faces: int) -> str:
    lines = [f"# Results on `{label}` ({scheme.name}, {faces} faces)", ""]
    main = [("model", "model", None), ("train loss", "train_loss", 5), ("val loss", "val_loss", 5),
            ("test MSE", "test_mse", 5), ("NME %", "nme", 2)]
    if scheme.pupils is not None:
        main.append(("NME pupils %", "nme_pupils", 2))
    main += [("AUC@8", "auc@0.08", 3), ("FR@8 %", "fr@0.08", 1), ("AUC@10", "auc@0.1", 3), ("FR@10 %", "fr@0.1", 1),
             ("params", "params", None), ("CPU ms/face", "ms_per_face", 1)]
    lines += _table(rows, main)
    lines += ["", "Losses are the training objective at the best validation epoch (history.csv); test MSE is the seed's",
              "MSE on [0, 1] crop coordinates over visible points. NME normalised by the outer eye corners "
              f"(points {scheme.norm_points[0]}/{scheme.norm_points[1]}).", ""]
    lines += ["## NME % per region", ""]
    lines += _table(rows, [("model", "model", None)] + [(r, f"nme_{r}", 2) for r in scheme.regions])
    if any(f"nme_camera_{c}" in rows[0] for c in MUCT_CAMERAS):
        lines += ["", "## NME % per MUCT camera (a frontal, b/c turned, d above, e below)", ""]
        lines += _table(rows, [("model", "model", None)] + [(c, f"nme_camera_{c}", 2) for c in MUCT_CAMERAS])
    unscored = rows[0]["unscored"] if rows else 0
    if unscored:
        lines += ["", f"{unscored} face(s) without both normalising points were not scored."]
    return "\n".join(lines) + "\n"


def _table(rows, columns) -> list[str]:
    out = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(key), digits) if digits else _fmt(row.get(key)) for _, key, digits in columns) + " |")
    return out


# ----------------------------------------------------------------------------
# Photos and video


def image_files(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [target]


def run_on_images(run_dir, target, out_dir, flip_test=False) -> int:
    """Overlay PNG + JSON per photo; returns the number of photos without a face or unreadable."""
    import cv2

    from drawing import PREDICTION, draw_points, save_png

    predictor = Predictor.load(run_dir, flip_test=flip_test)
    target, out_dir = Path(target), Path(out_dir)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such photo or folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = image_files(target)
    if not files:
        raise FileNotFoundError(f"{target}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    failures = 0
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: cannot read image (corrupt or not an image)", file=sys.stderr)
            failures += 1
            continue
        image = bgr[..., ::-1].copy()
        found = predictor.detect_and_predict(image)
        if not found:
            print(f"{path}: no face found", file=sys.stderr)
            failures += 1
            continue
        overlay = image
        for face in found:
            overlay = draw_points(overlay, face.points, PREDICTION)
            x0, y0, x1, y1 = (int(round(v)) for v in face.detection)
            cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 0), max(1, round(min(image.shape[:2]) / 400)))
        save_png(out_dir / f"{path.stem}_landmarks.png", overlay)
        record = {"image": str(path), "scheme": predictor.scheme.name, "width": image.shape[1], "height": image.shape[0],
                  "faces": [f.to_json() for f in found]}
        (out_dir / f"{path.stem}_landmarks.json").write_text(json.dumps(record, indent=1))
        print(f"{path}: {len(found)} face(s) -> {out_dir / (path.stem + '_landmarks.png')}")
    return failures


def run_on_video(run_dir, source, out_path, max_frames=None, flip_test=False) -> dict:
    """Landmarks on every frame of a video file or camera; writes an overlay video."""
    import time

    import cv2

    from drawing import PREDICTION, draw_points

    predictor = Predictor.load(run_dir, flip_test=flip_test)
    capture_source = int(source) if str(source).isdigit() else str(source)
    if isinstance(capture_source, str) and not Path(capture_source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    capture = cv2.VideoCapture(capture_source)
    if not capture.isOpened():
        raise OSError(f"{source}: cannot open video")
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frames, faces_seen, start = None, 0, 0, time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            image = bgr[..., ::-1].copy()
            found = predictor.detect_and_predict(image)
            faces_seen += len(found)
            for face in found:
                image = draw_points(image, face.points, PREDICTION)
            if writer is None:
                Path(out_path).parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (image.shape[1], image.shape[0]))
            writer.write(np.ascontiguousarray(image[..., ::-1]))
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    result = {"frames": frames, "faces": faces_seen, "seconds": round(seconds, 2),
              "fps": round(frames / seconds, 2) if seconds > 0 else 0.0, "output": str(out_path)}
    if frames == 0:
        raise OSError(f"{source}: no frames could be read")
    return result


# ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories written by train.py")
    parser.add_argument("--data", help="test npz: writes the comparison tables and plots")
    parser.add_argument("--image", help="a photo or a folder of photos")
    parser.add_argument("--video", help="a video file or a camera index")
    parser.add_argument("--out", required=True, help="output folder (--data, --image) or video file (--video)")
    parser.add_argument("--baseline", choices=["none", "dlib"], default="none",
                        help="add dlib's stock 68-point predictor (68-point data only)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="score only matching faces: KEY=VALUE or KEY~TEXT on a per-face key "
                             "(source=youtube68, path~youtube68/test/); repeat to combine")
    parser.add_argument("--no-timing", action="store_true", help="skip the ms/face measurement")
    parser.add_argument("--max-frames", type=int, help="stop a video after this many frames")
    parser.add_argument("--flip-test", action="store_true",
                        help="average each face's prediction with that of its mirror image (left/right points swapped "
                             "back); with --data, adds these rows beside the plain ones")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    modes = [m for m in ("data", "image", "video") if getattr(args, m)]
    if len(modes) != 1:
        print("evaluate.py: give exactly one of --data, --image, --video", file=sys.stderr)
        return 2
    try:
        if args.data:
            evaluate_runs(args.runs, args.data, args.out, baseline=args.baseline, timing=not args.no_timing,
                          where=args.where, flip_test=args.flip_test)
            print((Path(args.out) / "results.md").read_text())
            return 0
        if len(args.runs) != 1:
            print("evaluate.py: --image and --video take one run directory", file=sys.stderr)
            return 2
        if args.image:
            failures = run_on_images(args.runs[0], args.image, args.out, args.flip_test)
            # a single photo without a face fails; a folder fails only when no photo worked
            return 1 if failures == len(image_files(Path(args.image))) else 0
        result = run_on_video(args.runs[0], args.video, args.out, args.max_frames, args.flip_test)
        print(f"{result['frames']} frames, {result['faces']} faces, {result['fps']} frames/s -> {result['output']}")
        return 0
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"evaluate.py: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
