"""Face crops stored as JPEG inside a dataset npz (``datagen.py prepare --jpeg Q``).

A prepared set of 128-px crops is mostly pixels: 49 KB a face raw, about 6 KB as a quality-95 JPEG,
and a mirrored training face is its original turned over, so it needs no bytes of its own.  A
packed file replaces ``images`` by

===================  ===============  ==========================================================
key                  dtype, shape     meaning
===================  ===============  ==========================================================
images_jpeg          uint8 (B,)       the encoded crops, one after another
images_jpeg_offsets  int64 (M + 1,)   where encoded crop m starts and ends
images_copy_of       int32 (N,)       -1: the row's crop is the next encoded one; else the row
                                      whose crop, flipped as the row's ``mirrored`` /
                                      ``vflipped`` says, is exactly this row's crop
images_shape         int64 (4,)       (N, S, S, C) of the decoded ``images``
images_jpeg_quality  int64 ()         the quality the crops were encoded with (1-100)
===================  ===============  ==========================================================

``npz.load_npz`` decodes it back into ``images`` (about 0.2 ms a 128-px crop), so every reader
gets the usual arrays.  The loss is JPEG's own: at quality 95 a crop's pixels move by about 1 grey
level on average; flipped copies match their originals exactly, as in a raw file.
"""

from __future__ import annotations

import numpy as np

KEYS = ("images_jpeg", "images_jpeg_offsets", "images_copy_of", "images_shape", "images_jpeg_quality")


def is_packed(arrays) -> bool:
    return "images_jpeg" in arrays


def _flipped(image: np.ndarray, mirrored: bool, vflipped: bool) -> np.ndarray:
    return image[::-1 if vflipped else 1, ::-1 if mirrored else 1]


def pack(arrays: dict[str, np.ndarray], quality: int) -> dict[str, np.ndarray]:
    """``arrays`` with ``images`` replaced by the JPEG keys above (raises ValueError for a bad quality)."""
    import cv2

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    images = arrays["images"]
    n = len(images)
    mirrored = np.asarray(arrays.get("mirrored", np.zeros(n, bool)), bool)
    vflipped = np.asarray(arrays.get("vflipped", np.zeros(n, bool)), bool)
    copy_of = np.full(n, -1, np.int32)
    chunks, offsets = [], [0]
    for i in range(n):
        if mirrored[i] or vflipped[i]:  # prepare writes a face's copies right after it
            for j in (i - 1, i - 2, i - 3):
                if j >= 0 and not (mirrored[j] or vflipped[j]) and np.array_equal(
                        images[i], _flipped(images[j], mirrored[i], vflipped[i])):
                    copy_of[i] = j
                    break
        if copy_of[i] < 0:
            image = images[i][:, :, ::-1] if images.shape[-1] == 3 else images[i][:, :, 0]
            ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:
                raise ValueError(f"OpenCV could not encode crop {i} as JPEG")
            chunks.append(data.ravel())
            offsets.append(offsets[-1] + data.size)
    out = {key: value for key, value in arrays.items() if key != "images"}
    out["images_jpeg"] = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    out["images_jpeg_offsets"] = np.asarray(offsets, np.int64)
    out["images_copy_of"] = copy_of
    out["images_shape"] = np.asarray(images.shape, np.int64)
    out["images_jpeg_quality"] = np.asarray(int(quality), np.int64)
    return out


def unpack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with the JPEG keys decoded into ``images``; ValueError says what is inconsistent."""
    import cv2

    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise ValueError(f"JPEG-packed images lack {', '.join(missing)}")
    data, offsets, copy_of = arrays["images_jpeg"], arrays["images_jpeg_offsets"], arrays["images_copy_of"]
    shape = tuple(int(v) for v in arrays["images_shape"])
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] not in (1, 3) or min(shape) < 0:
        raise ValueError(f"images_shape must be (N, S, S, 1|3), got {shape}")
    n, channels = shape[0], shape[3]
    own = np.flatnonzero(copy_of < 0)
    if copy_of.shape != (n,) or len(offsets) != len(own) + 1 or offsets[0] != 0 or offsets[-1] != data.size \
            or (np.diff(offsets) <= 0).any():
        raise ValueError("images_jpeg_offsets / images_copy_of do not match images_jpeg and images_shape")
    copies = np.flatnonzero(copy_of >= 0)
    if copies.size and ((copy_of[copies] >= copies) | (copy_of[copy_of[copies]] >= 0)).any():
        raise ValueError("images_copy_of must point back to rows with crops of their own")
    images = np.empty(shape, np.uint8)
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    for m, i in enumerate(own):
        image = cv2.imdecode(data[offsets[m]:offsets[m + 1]], flag)
        if image is None or image.shape[:2] != shape[1:3]:
            got = "nothing" if image is None else f"{image.shape[1]} x {image.shape[0]} px"
            raise ValueError(f"JPEG crop of row {i} decodes to {got}, not {shape[1]} x {shape[2]} px")
        images[i] = image[:, :, ::-1] if channels == 3 else image[:, :, None]
    mirrored = arrays.get("mirrored", np.zeros(n, bool))
    vflipped = arrays.get("vflipped", np.zeros(n, bool))
    for i in copies:
        images[i] = _flipped(images[copy_of[i]], bool(mirrored[i]), bool(vflipped[i]))
    out = {key: value for key, value in arrays.items() if key not in KEYS}
    out["images"] = images
    return out
