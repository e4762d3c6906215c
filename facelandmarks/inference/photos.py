"""Landmarks on photos: overlays and JSON per face."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from facelandmarks import stops
from facelandmarks.data import faces
from facelandmarks.data.report import counted
from facelandmarks.drawing import DETECTION, PREDICTION, draw_points, line_width, marker_radius, save_png
from facelandmarks.files import is_partial, remove_left_by_kills, write_json_whole
from facelandmarks.inference.align import AlignedFace, align_face, anchors, check_alignment
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.shipped import default_model_dir

CROP_SIZE = 384  # px, the side of the enlarged face crops
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
# the videos --video reads (a file so named given as a photo is told to use --video); the overlay's containers are
# video_files.OVERLAY_SUFFIXES
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


# what run_on_images writes after a photo's whole name (group 1): not photos to mark when its output folder is marked
# again, and the files of a photo marked again that this run may replace
_SUFFIXES = "|".join(map(re.escape, sorted(IMAGE_SUFFIXES)))
OUTPUT_FILE = re.compile(rf"(.+(?:{_SUFFIXES}))_(?:landmarks\.(?:png|json)|(?:face|aligned)\d+\.png)", re.IGNORECASE)


def image_files(target: Path) -> list[Path]:
    """A photo, or a folder's photos but the overlays, crops and chips that marking them wrote (and the partial
    files a run killed while writing one left, ``files.is_partial``)."""
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                      and not OUTPUT_FILE.fullmatch(p.name) and not is_partial(p.name))
    return [target]


def _photos_of(targets: list[Path]) -> list[Path]:
    """Every photo of ``targets`` (photos and folders), each checked to exist; two photos of one name would
    write the same results, so they are an error."""
    files, seen = [], {}
    for target in targets:
        if not target.exists():
            raise FileNotFoundError(f"{target}: no such photo or folder")
        found = image_files(target)
        held = _subfolders_with_photos(target)
        if not found:
            raise ValueError(f"{target}: no images in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                             + (f"; its subfolders {held} hold photos, which --image does not look into: give them"
                                if held else ""))
        if held:
            print(f"{target}: its subfolders {held} hold photos too, which --image does not look into: give them as "
                  "well (photos of one name in two of them: each with its --out)", file=sys.stderr)
        for path in found:
            if path.name in seen and seen[path.name].resolve() != path.resolve():
                raise ValueError(f"{path}: the same name as {seen[path.name]}, so their results would overwrite "
                                 f"each other in one output folder (mark them one at a time, each with its --out)")
            if path.name not in seen:
                seen[path.name] = path
                files.append(path)
    return files


def _subfolders_with_photos(target: Path) -> str:
    """The quoted names of ``target``'s subfolders that hold photos ('' for a photo or none): --image reads a
    folder's own files, and said nothing of the photos one level down."""
    if not target.is_dir():
        return ""
    subfolders = sorted(p for p in target.iterdir() if p.is_dir() and not p.name.startswith("."))
    return ", ".join(repr(p.name) for p in subfolders if image_files(p))


def output_name(photo: Path, kind: str) -> str:
    """``x.jpg`` -> ``x.jpg_landmarks.png`` (``kind`` 'png') or ``.json``: the whole file name, suffix and
    all, so ``x.jpg`` and ``x.png`` in one folder never write over each other's results."""
    return f"{photo.name}_landmarks.{kind}"


def crop_name(photo: Path, index: int, kind: str = "face") -> str:
    """``x.jpg``, face 0 -> ``x.jpg_face0.png``: the enlarged crop of the face at ``index`` in the JSON's list
    (``kind`` 'aligned': ``x.jpg_aligned0.png``, its aligned chip)."""
    return f"{photo.name}_{kind}{index}.png"


def run_on_images(run_dir, target, out_dir, flip_test=False, min_score=None, crops=False, runtime="auto",
                  threads=None, recrop=False, align: tuple[int, float] | None = None, detect_max_side=None) -> dict:
    """Overlay PNG + JSON per photo (``output_name``) of ``target`` (a photo, a folder of photos, or a list of
    them); returns the counts of photos ``done`` (with a face), ``no_face`` and ``unreadable``.  The JSON names
    the model, its runtime and the options that made the points.

    Detections scoring below ``min_score`` (None: ``faces.MIN_SCORE``) are dropped; the JSON says the
    threshold and how many were dropped, and ``detect_max_side`` (``Predictor``'s).  With ``crops`` each face
    also gets an enlarged crop (``crop_name``); with ``align`` = (size, padding) an aligned chip
    (``inference.align.align_face``).
    ``flip_test`` and ``recrop`` are ``Predictor``'s.  The results an earlier run left in ``out_dir`` of a photo
    this run marks and did not write (chips of faces no longer found, a photo now without a face) are removed.

    An unreadable photo in a folder is skipped with one line and the rest are processed; a missing
    target, a folder without photos, a single unreadable photo or a folder of them only raise, naming
    the file or folder, before or instead of any work.
    """
    targets = [Path(t) for t in ([target] if isinstance(target, (str, os.PathLike)) else target)]
    out_dir = Path(out_dir)
    files = _photos_of(targets)
    if len(targets) == 1 and not targets[0].is_dir():
        _read(targets[0], faces.as_photo)  # an unreadable photo is an error before the model loads
    if align:
        check_alignment(*align)
    predictor = Predictor.load(run_dir, flip_test=flip_test, recrop=recrop, runtime=runtime, threads=threads,
                               detect_max_side=detect_max_side)
    model = default_model_dir() if run_dir is None else run_dir
    if align:
        anchors(predictor.scheme)  # a markup without eyes and mouth fails here, not after the first photo
    detector = predictor.detector
    detector.min_score = min_score
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_left_by_kills(out_dir)  # the partial files of an earlier run killed mid-write
    earlier = earlier_results(out_dir)
    counts = {"done": 0, "no_face": 0, "unreadable": 0}
    try:
        for path in files:
            try:
                image = _read(path)
            except ValueError as err:
                print(f"{err}; skipped", file=sys.stderr)
                counts["unreadable"] += 1
                continue
            found = predictor.detect_and_predict(image)
            dropped = f" ({counted(detector.dropped, 'detection')} below min score {detector.min_score:g} dropped)" if detector.dropped else ""
            if not found:
                with stops.held():  # the photo's earlier results go whole, and it is counted
                    gone = _remove(out_dir, earlier.pop(path.name, set()))
                    print(f"{path}: no face found{dropped}{gone}", file=sys.stderr)
                    counts["no_face"] += 1
                continue
            info = {"model": str(model), "runtime": predictor.runtime, "flip_test": flip_test, "recrop": recrop,
                    "scheme": predictor.scheme.name, "min_score": faces.json_number(detector.min_score),
                    "dropped_below_min_score": detector.dropped, "detect_max_side": predictor.detect_max_side}
            aligned = [align_face(image, f.points, predictor.scheme, *align) for f in found] if align else None
            with stops.held():  # a stop waits until the photo's files are all of this run: none beside an earlier run's
                written = write_results(path, image, found, out_dir, info, crops, aligned)
                gone = _remove(out_dir, earlier.pop(path.name, set()) - result_names(path, len(found), crops, bool(align)))
                print(f"{path}: {counted(len(found), 'face')} -> {written}{dropped}{gone}")
                counts["done"] += 1
    except KeyboardInterrupt as stop:  # for the script's line: how far the run got, and that what it wrote is whole
        stop.progress = f"after {sum(counts.values())} of {counted(len(files), 'photo')}; their results in {out_dir} are whole"
        raise
    if counts["unreadable"] == len(files):
        images = counted(len(files), "image")
        raise ValueError(f"{targets[0]}: none of its {images} could be read" if len(targets) == 1
                         else f"none of the {images} given could be read")
    return counts


def _read(path: Path, read=faces.read_rgb) -> np.ndarray:
    """``read(path)``; a photo it cannot read that is a video (by its name, else as OpenCV opens it: more than one
    frame) says to give it with --video."""
    try:
        return read(path)
    except ValueError as err:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            from facelandmarks.runtime import filtered_fds

            with filtered_fds((2,), keep=lambda line: False):  # FFmpeg's complaints about what it cannot open
                capture = cv2.VideoCapture(str(path))
                frames = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
                capture.release()
            if frames <= 1:
                raise
        raise ValueError(f"{err}; a video? give it with --video") from None


def write_results(path: Path, image: np.ndarray, found: list, out_dir: Path, info: dict, crops: bool = False,
                  aligned: list[AlignedFace] | None = None) -> Path:
    """The overlay PNG (points and the detector's boxes, drawn in proportion to each face), the JSON of one
    photo (``info`` adds photo-level fields), with ``crops`` each face's enlarged crop and with ``aligned`` each
    face's chip (its matrix and points in the JSON); returns the PNG's path.

    An earlier run's JSON goes once the new overlay is written, before it replaces the earlier one, and the new JSON
    comes last: a process killed in between (SIGKILL, which cannot wait as ``stops.held`` makes Ctrl-C wait) leaves
    new files without a JSON, never beside an older one; an overlay that cannot be written leaves both as they were."""
    overlay = image.copy()
    for face in found:  # boxes first: no line cuts through a point
        x0, y0, x1, y1 = (int(round(v)) for v in face.detection)
        cv2.rectangle(overlay, (x0, y0), (x1, y1), DETECTION, line_width(face.detection))
    for face in found:
        overlay = draw_points(overlay, face.points, PREDICTION, radius=marker_radius(face.points))
    png = out_dir / output_name(path, "png")
    save_png(png, overlay, stale=out_dir / output_name(path, "json"))
    record = {"image": str(path), **info, "width": image.shape[1], "height": image.shape[0],
              "faces": [f.to_json() for f in found]}
    if crops:
        record["crops"] = [crop_name(path, i) for i in range(len(found))]
        for name, face in zip(record["crops"], found):
            save_png(out_dir / name, face_crop(image, face))
    if aligned:
        record["aligned"] = []
        for i, chip in enumerate(aligned):
            name = crop_name(path, i, "aligned")
            save_png(out_dir / name, chip.image)
            record["aligned"].append({"file": name, **chip.to_json()})
    write_json_whole(out_dir / output_name(path, "json"), record)
    return png


def result_names(photo: Path, count: int, crops: bool, aligned: bool) -> set[str]:
    """The files ``write_results`` writes for ``photo`` with ``count`` faces."""
    names = {output_name(photo, "png"), output_name(photo, "json")}
    return names | {crop_name(photo, i, kind) for kind, on in (("face", crops), ("aligned", aligned)) if on
                    for i in range(count)}


def earlier_results(out_dir: Path) -> dict[str, set[str]]:
    """``{photo name: its result files}`` in ``out_dir`` (``OUTPUT_FILE``: overlay, JSON, crops, chips), listed
    once before a run marks photos into it."""
    found: dict[str, set[str]] = {}
    for entry in os.scandir(out_dir):
        if match := OUTPUT_FILE.fullmatch(entry.name):
            found.setdefault(match.group(1), set()).add(entry.name)
    return found


def _remove(out_dir: Path, names: set[str]) -> str:
    """Remove ``names`` from ``out_dir``: an earlier run's results of a photo this run marked again that it did not
    write (a face no longer found, a crop or chip not asked for).  Returns the note for the photo's line."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    return f"; {counted(len(names), 'file')} of an earlier run removed" if names else ""


def face_crop(image: np.ndarray, face, size: int = CROP_SIZE) -> np.ndarray:
    """The square the model saw of one face, ``size`` px wide, with its points drawn at that scale."""
    crop = faces.crop_face(image, face.crop_box, size)
    points = faces.points_to_crop(face.points, face.crop_box) * size - 0.5
    return draw_points(crop, points, PREDICTION, radius=marker_radius(points))
