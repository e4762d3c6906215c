"""dlib's stock 68-point shape predictor, the baseline to beat (``predict_box``, ``predict_dataset``; not
``Predictor``'s interface)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.data import faces
from facelandmarks.landmarks import get_scheme


class DlibPredictor:
    """dlib's stock 68-point shape predictor (PyPI ``face-recognition-models``), the baseline.

    Given the same face box the toolkit's models get, it predicts the iBUG 68
    points; ``predict_dataset`` runs it on a prepared npz, on the original
    photo when the npz records where it is, else on the crop.
    """

    name = "dlib (ERT, 68 pts)"

    def __init__(self, model_path: str | Path | None = None):
        import dlib

        self.model_path = Path(model_path) if model_path else self.default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: dlib shape predictor model not found")
        self._predictor = dlib.shape_predictor(str(self.model_path))
        self._dlib = dlib
        self.scheme = get_scheme("ibug68")
        self._missing_told: list[str] = []

    @staticmethod
    def default_model_path() -> Path:
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("PyPI package face-recognition-models is not installed (pip install face-recognition-models)")
        return Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"

    def predict_box(self, image: np.ndarray, detection) -> np.ndarray:
        """(68, 2) pixel points for the face in ``detection`` [x0, y0, x1, y1]."""
        x0, y0, x1, y1 = (int(round(float(v))) for v in detection)
        rect = self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1)
        image = np.ascontiguousarray(image if image.ndim == 2 else image[..., :3])
        shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def predict_dataset(self, arrays: dict, progress: bool = True, offset: float = 0.0) -> np.ndarray:
        """(N, 68, 2) normalised crop coordinates for every face of a prepared npz.

        Args:
            offset: pixels (of the original photo) added to x and y.  dlib
                returns 0-based pixel coordinates, as ``datagen.py`` now
                stores iBUG's 1-based points; ``offset=1`` shows what dlib
                would score against 1-based points (npz files prepared
                before that conversion).
        """
        from tqdm import tqdm

        if str(arrays["scheme"]) != "ibug68" and get_scheme(str(arrays["scheme"])).ibug68 is None:  # else mapped
            raise ValueError(f"dlib's predictor gives ibug68 points; this data is {arrays['scheme']} (its scheme does "
                             "not say where its points lie in iBUG 68: \"ibug68\")")
        paths = arrays.get("path")
        out = np.zeros((len(arrays["landmarks"]), 68, 2), np.float32)
        missing = []  # photos the npz names that are not there: dlib gets the crop, and scores differently
        for i in tqdm(range(len(out)), desc="dlib baseline", disable=not progress, unit="face"):
            crop_box = arrays["box"][i]
            detection = faces.detection_from_crop_box(crop_box)
            flipped = arrays["mirrored"][i] or ("vflipped" in arrays and arrays["vflipped"][i])
            original = _read_rgb(paths[i]) if paths is not None and paths[i] and not flipped else None
            if original is None and paths is not None and paths[i] and not flipped:
                missing.append(str(paths[i]))
            if original is not None:
                points = self.predict_box(original, detection) + offset
                out[i] = faces.points_to_crop(points, crop_box)
            else:
                # the crop is all there is: the same box, in crop pixels
                crop = arrays["images"][i]
                size = crop.shape[0]
                scale = size / (crop_box[2] - crop_box[0])
                in_crop = (detection - np.tile(crop_box[:2], 2)) * scale
                points = self.predict_box(crop[..., 0] if crop.shape[-1] == 1 else crop, in_crop)
                out[i] = (points + offset * scale + 0.5) / size
        if missing and missing != self._missing_told:  # once for the same faces, however often asked
            self._missing_told = missing
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            print(f"dlib baseline: {missing[0]}{more}: photo not found or unreadable; dlib ran on the crops of {len(missing)} of the "
                  f"{len(out)} faces instead", file=sys.stderr)
        return out


def _read_rgb(path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path and Path(str(path)).is_file() else None
    return None if image is None else image[..., ::-1].copy()
