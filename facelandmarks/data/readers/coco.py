"""COCO-style keypoint JSON (mmpose's format for 300W, WFLW, COFW, AFLW, LaPa ...): any markup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facelandmarks.data.records import AnnotationError, FaceRecord, Listing, ReaderOptions, Skip, named_image
from facelandmarks.landmarks import Scheme, register_scheme


def read_coco(source: str | os.PathLike, options: ReaderOptions | None = None) -> Listing:
    """COCO keypoint files: ``images`` (id, file_name), ``annotations`` (image_id, keypoints
    ``[x0, y0, v0, x1, ...]``, bbox ``[x, y, w, h]``) and ``categories``.

    ``source`` is a JSON file or a folder of them.  The markup is ``options.scheme`` or, failing
    that, ``categories[0]``'s ``keypoints`` names (mirror pairs from its ``flip_pairs`` where given,
    else from names that differ only by left/right; NME by the face box).  Visibility 0 is an
    unlabelled point.  With ``options.use_bbox`` the ``bbox`` is the face detection.  Images are
    relative to ``options.images`` or the JSON's folder.  Files named *train*/*test* give the split
    when both are there; the subject is the image.
    """
    options = options or ReaderOptions()
    source = Path(source)
    json_files = [source] if source.is_file() else sorted(source.glob("*.json"))
    if not json_files:
        raise AnnotationError(f"{source}: no COCO keypoint .json files")
    parsed = [(path, _load(path)) for path in json_files]
    scheme = options.scheme or _scheme_from_category(*parsed[0])
    listing = Listing("coco", str(source), scheme.name)
    roles = {p: ("test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else None) for p, _ in parsed}
    use_roles = {"test", "train"} <= set(roles.values())
    k = scheme.num_points
    for path, data in parsed:
        images = _images(path, data)
        folder = Path(options.images) if options.images else path.parent
        for number, ann in enumerate(data.get("annotations", [])):
            if not isinstance(ann, dict):
                raise AnnotationError(f"{path}: annotations[{number}] is not an object (got {ann!r:.40})")
            label = f"annotation {ann.get('id', number)}"
            image_id = ann.get("image_id")
            if not isinstance(image_id, (int, str)) or image_id not in images:
                raise AnnotationError(f"{path}: {label}: image_id {image_id!r:.40} is not an id in 'images'")
            file_name = images[image_id]
            values = ann.get("keypoints")
            if not isinstance(values, list) or len(values) % 3:
                raise AnnotationError(f"{path}: {label} ({file_name}): 'keypoints' is not a list of x, y, v triples")
            if len(values) != 3 * k:
                raise AnnotationError(f"{path}: {label} ({file_name}): {len(values) // 3} keypoints, "
                                      f"scheme {scheme.name} has {k}")
            try:
                triples = np.asarray(values, np.float64).reshape(k, 3)
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}: {label} ({file_name}): non-numeric keypoint values") from None
            labelled = triples[:, 2] > 0
            points = np.where(labelled[:, None], triples[:, :2], 0.0)
            if ann.get("iscrowd"):
                listing.skips.append(Skip("coco", file_name, f"{label}: iscrowd"))
                continue
            if not labelled.any():
                listing.skips.append(Skip("coco", file_name, f"{label}: no labelled keypoint"))
                continue
            image = named_image((folder / file_name).resolve())
            if not image.is_file():
                listing.skips.append(Skip("coco", file_name, f"image missing for {path.name} {label} (no {image}; names "
                                                               "are relative to the JSON's folder, or to --images DIR)"))
                continue
            box = None
            if options.use_bbox:
                try:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                except (KeyError, TypeError, ValueError):
                    raise AnnotationError(f"{path}: {label} ({file_name}): no bbox [x, y, w, h] (--use-bbox)") from None
                box = np.array([x, y, x + w, y + h], np.float32)
            listing.records.append(FaceRecord(
                "coco", f"{file_name} ({label})", str(image), points, labelled, f"coco/{file_name}",
                split=roles[path] if use_roles else None, given_box=box,
            ))
    if use_roles:
        listing.notes.append("JSON files named *train*/*test* give the split")
    else:
        listing.notes.append("each image is its own subject (COCO files name no person): photos or video frames of "
                             "one person can land on both sides of the split")
    if options.use_bbox:
        listing.notes.append("the annotations' bbox is the face detection")
    return listing


def _images(path: Path, data: dict) -> dict:
    """``{id: file_name}`` of ``images``, each entry checked: one line naming the file and entry."""
    images = data.get("images", [])
    if not isinstance(images, list):
        raise AnnotationError(f"{path}: 'images' is not a list")
    out = {}
    for number, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("id"), (int, str)):
            raise AnnotationError(f"{path}: images[{number}] is not an object with an 'id' (got {image!r:.40})")
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            raise AnnotationError(f"{path}: images[{number}] (id {image['id']!r}): 'file_name' is not a file name "
                                  f"(got {name!r:.40})")
        out[image["id"]] = name
    return out


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # the byte-order mark Windows editors write is no error
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:  # once "coco (SOURCE): 'utf-8' codec can't decode byte 0x8f ...", naming no file
        raise AnnotationError(f"{path}: not valid JSON (not UTF-8 text: byte {err.start} is 0x{err.object[err.start]:02x})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{path}: not a COCO keypoint file (no 'annotations' list)")
    return data


def _twin(name: str) -> str:
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


def _scheme_from_category(path: Path, data: dict) -> Scheme:
    """The markup ``categories[0]`` declares, or a one-line error asking for a scheme file."""
    categories = data.get("categories") or [{}]
    category = categories[0] if isinstance(categories[0], dict) else {}
    names = category.get("keypoints") or []
    if not names:
        raise AnnotationError(f"{path}: categories[0] names no keypoints: give the markup with --scheme FILE "
                              "(a scheme file) or --scheme NAME (ibug68, wflw98 ...)")
    names = [str(n) for n in names]
    if "flip_pairs" in category:
        try:
            pairs = [[int(a), int(b)] for a, b in category["flip_pairs"]]
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: categories[0]'s flip_pairs are not pairs of point numbers "
                                  f"(got {category['flip_pairs']!r:.60})") from None
    else:
        pairs = [[i, names.index(_twin(n))] for i, n in enumerate(names) if _twin(n) != n and _twin(n) in names
                 and i < names.index(_twin(n))]
    definition = {"name": f"coco_{category.get('name', 'face')}{len(names)}", "points": names, "pairs": pairs,
                  "normalize": "box", "description": f"categories[0] of {path.name}"}
    try:
        return register_scheme(Scheme.from_dict(definition, origin=f"{path} (categories[0])"), f"{path} (categories[0])")
    except ValueError as err:
        raise AnnotationError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
