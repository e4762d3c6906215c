"""``Predictor``: a trained model on face crops or whole photos."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelandmarks import runtime as process
from facelandmarks.data import faces
from facelandmarks.data.detect_size import checked_max_side, detect_in_copy
from facelandmarks.inference import keras_settings, runtimes
from facelandmarks.inference.model_input import activation_bytes, forward_batch, match_channels, resize_crops
from facelandmarks.landmarks import get_scheme
from facelandmarks.scheme_files import landmark_box_of
from facelandmarks.training.runs import flip_averaged, read_run_config, rebuild_model, recropped


@dataclass
class FaceLandmarks:
    """One face found in a photo."""

    detection: np.ndarray  # dlib box [x0, y0, x1, y1]
    score: float
    crop_box: np.ndarray  # the square the model saw
    points: np.ndarray  # (K, 2) pixel coordinates in the photo

    def to_json(self) -> dict:
        return {
            "detection": [round(float(v), 2) for v in self.detection],
            "score": round(float(self.score), 4),
            "crop_box": [round(float(v), 2) for v in self.crop_box],
            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in self.points],
        }


# Run kinds other than a single model, by the file that marks their run directory:
# ``{marker: loader(run_dir, **kwargs) -> Predictor}``.  ``facelandmarks.pipelines`` registers
# ``pipeline.json``; ``Predictor.load`` then loads such a directory as its pipeline.
RUN_KINDS: dict[str, Callable[..., Predictor]] = {}


def register_run_kind(marker: str, loader: Callable[..., Predictor]) -> None:
    """Let ``Predictor.load`` load run directories holding ``marker`` with ``loader``."""
    RUN_KINDS[marker] = loader


@dataclass
class Variant:
    """One row of an evaluation: predictions of one predictor (or stage of it) on a test set.

    ``timed`` is the predictor whose speed the row reports (None: not timed),
    ``history_dir`` the run whose losses and learning curve the row shows (None: none).
    """

    name: str
    predictions: np.ndarray
    timed: Predictor | None
    history_dir: Path | None
    flip_test: bool = False
    recrop: bool = False


def _load_saved_model(run_dir: Path, state: dict | None):
    """``model.keras`` when it is the run's current best model; None (with a line saying why, when it exists) to
    rebuild the model from the registry and load the best weights instead."""
    import keras

    import facelandmarks.models  # noqa: F401  (registers the custom layers, losses and metrics model.keras names)
    from facelandmarks.training.resume import BEST, SAVED_MODEL, find_checkpoint, saved_model_is_current

    path, problem = find_checkpoint(run_dir, SAVED_MODEL, state)
    if path is not None and not saved_model_is_current(state):
        path, problem = None, f"older than {BEST} (the run went on after it was saved)"
    if path is not None:
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as err:  # a damaged archive fails in many ways inside Keras; the weights file is the fallback
            problem = f"does not load ({' '.join(str(err).split())[:200]})"
    if problem != "missing":
        print(f"{run_dir / SAVED_MODEL}: {problem}; loading {BEST} instead", file=sys.stderr)
    return None


def exported_for(run_dir: Path, runtime: str) -> Path | None:
    """The export ``Predictor.load`` should run for ``run_dir`` and ``runtime``, or None for Keras.

    ``run_dir`` itself when it is an export; else its ``export`` folder when ``runtime`` asks for one
    ('onnx', 'litert') or allows one ('auto': when it is current and its runtime installed).
    """
    if runtimes.is_export(run_dir):
        return run_dir
    if runtime == "keras":
        return None
    if problem := runtimes.settings_lost(run_dir):  # else Keras loaded, to say 'not a run directory (no config.json)'
        raise runtimes.ExportError(problem)
    problem = runtimes.export_problem(run_dir, runtime)
    if problem is None:
        return run_dir / runtimes.EXPORT_DIR
    if runtime == "auto":
        return None
    raise runtimes.ExportError(problem)


def unrunnable(run_dir: Path, runtime: str) -> str | None:
    """Why ``run_dir`` (a run directory or an export) cannot run in ``runtime`` ('onnx', 'litert'): no export, one
    made from other weights, none of that runtime's file, the runtime not installed; None where it can. Scripts ask
    before their work starts, where Predictor.load would stop them later."""
    try:
        export = exported_for(run_dir, runtime)
        runtimes.choose_runtime(export, runtimes.read_export(export)[0], runtime)
    except runtimes.ExportError as err:
        return str(err)
    return None


def median_ms(call, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall milliseconds of ``call()`` over ``repeats`` runs, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def check_pixel_range(crops: np.ndarray) -> None:
    """A ``ValueError`` for float crops whose values all lie within 0..1 (not all zero): the models take pixel values
    0..255 (their normalisation is inside them), and such crops gave points far off the face without a word."""
    if np.issubdtype(crops.dtype, np.floating) and crops.size:
        low, high = float(np.nanmin(crops)), float(np.nanmax(crops))
        if 0.0 <= low and 0.0 < high <= 1.0:
            raise ValueError(f"crops hold float values within 0..1 (max {high:.3g}): the model takes pixel values 0..255, "
                             "as the uint8 crops prepare writes; multiply by 255 (or pass uint8)")


class Predictor:
    """A trained model plus what it needs to see faces as it saw them in training.

    Args:
        model: a Keras model mapping crops (N, S, S, C) of raw pixels to
            (N, K, 2) normalised crop coordinates.
        scheme: the landmark scheme name.
        name: a label for tables and plots.
        detector: a ``faces.FaceDetector`` (default: dlib HOG, one doubling
            on images up to 2.5 Mpx).
        flip_test: also predict each face mirrored (the scheme's left/right
            permutation undoes the flip) and average the two -- test-time
            augmentation at twice the compute.
        recrop: predict each face again on the crop dataset preparation would
            have cut around the first prediction (``recrop_boxes``: the face
            centred and sized as in training, wherever the detector put it)
            and average the two -- twice the compute again (four passes with
            the flip test).
        detect_max_side: look for faces in a copy of a photo longer than this many pixels, shrunk to it
            (``detect_size``: faster, misses small faces); crops and points still come from the photo itself.
            None or 0: the photo itself.

    ``landmark_box``: ``faces.detection_like_box``'s relation for the model's markup, from ``config``'s
    ``scheme_definition`` (measured on its data), else a built-in markup's own (``scheme_files.BUILTIN_LANDMARK_BOXES``:
    kaggle15's), else None (iBUG 68's; older runs of your own markup): ``recrop`` and ``FaceTracker`` cut their
    boxes around predicted points with it.
    """

    def __init__(self, model, scheme: str, name: str = "model", detector: faces.FaceDetector | None = None,
                 config: dict | None = None, flip_test: bool = False, recrop: bool = False,
                 detect_max_side: int | None = None):
        self.model = model
        self.scheme = get_scheme(scheme)
        self.name = name
        self.detector = detector or faces.FaceDetector()
        self.detect_max_side = detect_max_side
        self.config = config or {}
        self.landmark_box = landmark_box_of(self.config.get("scheme_definition"), f"{name} (scheme_definition)", self.scheme)
        shape = model.input_shape  # (None, S, S, C): a Keras model's, or an exported one's (inference.runtimes)
        self._activation = activation_bytes(model)
        if self._activation is not None:  # a Keras model: keep its step buffers in the process (runtime.tune_allocator)
            process.tune_allocator()
        self.input_size, self.channels = int(shape[1]), int(shape[3])
        self.crop_size = self.input_size  # resolution photos are cropped at
        self._flip_test = False
        self.flip_test = flip_test
        self.recrop = recrop

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}: {self.scheme.name}, {self.scheme.num_points} points, {self.input_size} px, "
                f"runtime={self.runtime!r}, flip_test={self.flip_test}, recrop={self.recrop})")

    @property
    def flip_test(self) -> bool:
        return self._flip_test

    @flip_test.setter
    def flip_test(self, value: bool) -> None:
        if value and list(self.scheme.mirror) == list(range(self.scheme.num_points)):
            raise ValueError(f"{self.name}: scheme {self.scheme.name} has no left/right pairs, so a flip test cannot undo the flip")
        self._flip_test = bool(value)

    @property
    def detect_max_side(self) -> int | None:
        return self._detect_max_side

    @detect_max_side.setter
    def detect_max_side(self, value: int | None) -> None:
        self._detect_max_side = checked_max_side(value, "detect_max_side")

    @classmethod
    def load(cls, run_dir: str | Path | None = None, weights: str = "best", runtime: str = "auto",
             threads: int | None = None, **kwargs) -> Predictor:
        """Load a run directory written by ``train.py`` (None: the model shipped in ``weights/``), or an
        export (``export.py``: a folder with ``export.json``, or its ``.onnx`` / ``.tflite`` file).

        Args:
            weights: 'best' uses ``model.keras`` (saved with the best
                weights), falling back to the registry + ``best.weights.h5``
                for a run that was interrupted before it finished; 'last'
                loads ``last.weights.h5``.
            runtime: for a run directory, 'auto' (default) runs its export
                (``RUN/export``, written by ``export.py``) when that is as new
                as the run's best weights and its runtime is installed, else
                Keras; 'keras' always Keras; 'onnx' or 'litert' that export
                (an error when it is missing or stale).  An export given
                directly runs with ONNX Runtime, else LiteRT, or the runtime
                named.  Exports never import TensorFlow, Keras or JAX.
            threads: CPU threads (None: all cores): an exported model's, and
                Keras's on TensorFlow (``keras_settings.set_threads``: set
                when TensorFlow starts, so the first load in a process sets
                them; a later one asking for others says so in one line on
                stderr).  Keras on JAX cannot be held to fewer threads than
                cores: a ``ValueError`` says so (it was ignored in silence).

        Every file is checked against the run's ``state.json`` before it is
        used (``training.resume.find_checkpoint``): a damaged or stale
        ``model.keras`` falls back to ``best.weights.h5``, a damaged one of
        best/last to the other, each with one line on stderr.  A run with no
        usable file raises ``ValueError`` naming it.
        """
        if runtime not in ("auto", "keras", *runtimes.RUNTIMES):  # a typo is not 'not exported' nor a pipeline's error
            raise ValueError(f"runtime must be one of auto, keras, {', '.join(runtimes.RUNTIMES)}, got {runtime!r}")
        if weights not in ("best", "last"):  # 'latest' loaded the best weights without a word
            raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
        if run_dir is None:
            from facelandmarks.inference.shipped import default_model_dir

            run_dir = default_model_dir()
        run_dir = Path(run_dir)
        for marker, loader in RUN_KINDS.items():  # runs of other kinds (pipelines) load through their own class
            if (run_dir / marker).is_file():
                return loader(run_dir, runtime=runtime, threads=threads, **kwargs)
        if runtime == "keras" and runtimes.is_export(run_dir):
            raise ValueError(f"{run_dir}: an export, which ONNX Runtime or LiteRT runs; Keras needs the run "
                             f"directory it came from")
        export = exported_for(run_dir, runtime if weights == "best" else "keras")
        if export is not None:
            model, meta = runtimes.load_model(export, "auto" if runtime == "keras" else runtime, threads)
            return cls(model, meta["scheme"], name=run_dir.name, config=meta, **kwargs)
        missing = process.backend_missing()
        if missing:
            raise ModuleNotFoundError(f"{run_dir}: no export of these weights to run without Keras; {missing}")
        process.import_keras_quietly()  # Keras loads here, not for exports: without the backend's start-up lines
        process.tune_allocator()  # before the model computes: under JAX, later is too late for its threads
        from facelandmarks.training.resume import read_state

        config = read_run_config(run_dir)
        if config.get("input_kind") == "features":
            raise ValueError(
                f"{run_dir}: {config['model']} takes precomputed backbone features, not images; "
                "evaluate it on a features npz with evaluate.py"
            )
        keras_settings.set_threads(threads, run_dir)  # before the model starts TensorFlow, which sets them once
        state = read_state(run_dir, strict=False)
        model = _load_saved_model(run_dir, state) if weights == "best" else None
        if model is None:
            model = rebuild_model(run_dir, config, weights)
        return cls(model, config["scheme"], name=run_dir.name, config=config, **kwargs)

    # -- crops -------------------------------------------------------------

    @property
    def runtime(self) -> str:
        """'keras', or the inference runtime of an exported model ('onnx', 'litert')."""
        return getattr(self.model, "runtime", "keras")

    @property
    def runtime_label(self) -> str:
        """What a table row adds to its run's name: '' for Keras, else the runtime and what ``export.py --quantize``
        made of its file ('onnx', 'onnx int8', 'litert float16'), so an int8 and a float32 export of one run read apart."""
        if self.runtime == "keras":
            return ""
        quantize = getattr(self.model, "quantize", "none")
        return self.runtime if quantize == "none" else f"{self.runtime} {quantize}"

    @property
    def device(self) -> str:
        """Where the model computes: 'CPU' for an export (ONNX Runtime and LiteRT run on the CPU), else where Keras's
        backend puts it ('GPU', 'TPU' or 'CPU': ``keras_settings.device``)."""
        return keras_settings.device() if self.runtime == "keras" else "CPU"

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        return match_channels(resize_crops(crops, self.input_size), self.channels).astype(np.float32)

    @property
    def batch_size(self) -> int:
        """Faces per forward pass of ``predict_crops`` by default (``forward_batch``: 16 for MobileNetV2 at
        128 px, 8 with the flip test)."""
        return forward_batch(self._activation, self.flip_test)

    def predict_crops(self, crops: np.ndarray, batch_size: int | None = None, first: np.ndarray | None = None) -> np.ndarray:
        """(N, K, 2) normalised crop coordinates for face crops (N, S, S, C) of any size S, ``batch_size`` faces
        per forward pass (None: ``self.batch_size``).

        ``first``: these crops' points from a pass without ``recrop`` (the same flip test), when already made, as
        an evaluation's rows make them: with ``recrop`` only its second pass then runs.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4:
            raise ValueError(f"crops must be a batch (N, S, S, C), got shape {crops.shape}"
                             + (" (one crop: crops[None])" if crops.ndim == 3 and crops.shape[-1] in (1, 3) else ""))
        check_pixel_range(crops)
        batch_size = batch_size or self.batch_size
        out = [self._predict(self.prepare(crops[start:start + batch_size]),
                             None if first is None else first[start:start + batch_size])
               for start in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.scheme.num_points, 2), np.float32)

    def _predict(self, batch: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """(N, K, 2) for a prepared batch: one pass (``_forward``; or ``points``, its result already made), and
        with ``recrop`` a second on the crops ``recrop_boxes`` cuts around the first one's points, mapped back and
        averaged with it."""
        points = self._forward(batch) if points is None else np.asarray(points, np.float32)
        return recropped(self._forward, batch, points, self.landmark_box) if self.recrop else points

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, K, 2) for a prepared batch; with ``flip_test`` the mirrored batch rides along."""
        if self.flip_test:
            return flip_averaged(self.model.predict_on_batch, batch, self.scheme)
        return np.asarray(self.model.predict_on_batch(batch), np.float32).reshape(-1, self.scheme.num_points, 2)

    def count_params(self) -> int:
        """Parameters of everything that runs for one face."""
        return int(self.model.count_params())

    def variants(self, run_dir: Path, images: np.ndarray, truth: tuple | None, flip_test: bool = False,
                 recrop: bool = False) -> list[Variant]:
        """What an evaluation reports for this predictor: its predictions, with ``flip_test`` flipped too, and with
        ``recrop`` recropped too (after the flip test's row, with the flip test when that is on).

        Pipelines override this to add their stages; evaluation code treats every predictor alike.
        """
        run_dir = Path(run_dir)
        name = f"{run_dir.name} ({self.runtime_label})" if self.runtime_label else run_dir.name
        out = [Variant(name, self.predict_crops(images), self, run_dir)]
        if flip_test:
            self.flip_test = True
            out.append(Variant(f"{name} + flip test", self.predict_crops(images), self, run_dir, True))
        if recrop:  # the row before is its first pass
            self.recrop = True
            out.append(Variant(f"{name}{' + flip test' if flip_test else ''} + recrop",
                               self.predict_crops(images, first=out[-1].predictions), self, run_dir, flip_test, True))
        return out

    def ms_per_face(self, crop: np.ndarray, repeats: int = 20) -> float:
        """Median milliseconds for one face at batch 1 (after warm-up), on ``device``."""
        batch = self.prepare(crop)
        return median_ms(lambda: self._predict(batch), repeats)

    # -- photos ------------------------------------------------------------

    def detect_and_predict(self, image, detections=None) -> list[FaceLandmarks]:
        """Every face in an RGB (or gray) uint8 photo, or the image file at a path, with its landmarks in photo pixels."""
        image = faces.as_photo(image)
        if detections is None:
            detections, scores = self.detect(image)
        else:
            detections = np.asarray(detections, np.float32).reshape(-1, 4)
            scores = np.ones(len(detections), np.float32)
        if len(detections) == 0:
            return []
        boxes = np.stack([faces.crop_box_from_detection(d) for d in detections])
        return [
            FaceLandmarks(det, float(score), box, points)
            for det, score, box, points in zip(detections, scores, boxes, self.predict_boxes(image, boxes))
        ]

    def predict_boxes(self, image: np.ndarray, crop_boxes) -> list[np.ndarray]:
        """(K, 2) photo-pixel landmarks of the face in each crop box (the box ``prepare`` cuts; a large face's pixels
        shrunk from its region of the photo, ``faces.crop_face``), one batch."""
        if len(crop_boxes) == 0:
            return []
        crops = np.stack([faces.crop_face(image, box, self.crop_size) for box in crop_boxes])
        return [faces.points_from_crop(uv, box) for uv, box in zip(self.predict_crops(crops), crop_boxes)]

    def detect(self, image: np.ndarray):
        """dlib detections at two scales, merged (``faces.FaceDetector.detect_all``), in a copy shrunk to
        ``detect_max_side`` when the photo is longer (``detect_size.detect_in_copy``); boxes in the photo's pixels."""
        return detect_in_copy(self.detector, faces.as_photo(image), self.detect_max_side)

    def align(self, image, size: int = 112, padding: float = 0.0) -> list:
        """Every face dlib finds in ``image`` (as ``predict`` takes it), upright in a ``size`` x ``size`` chip placed
        by its landmarks: a list of ``inference.align.AlignedFace`` (image, matrix, points), in ``predict``'s order."""
        from facelandmarks.inference.align import align_face, check_alignment

        check_alignment(size, padding)  # a photo without faces took any size in silence
        image = faces.as_photo(image)
        return [align_face(image, f.points, self.scheme, size, padding) for f in self.detect_and_predict(image)]

    def predict(self, image) -> np.ndarray:
        """(faces, K, 2) landmark pixel coordinates of every face dlib finds in ``image``: an RGB (or gray) uint8
        array, or the path of an image file."""
        found = self.detect_and_predict(image)
        k = self.scheme.num_points
        return np.stack([f.points for f in found]) if found else np.zeros((0, k, 2), np.float32)
