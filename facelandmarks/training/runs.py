"""A trained run read back: its settings, its model with the chosen weights, its flip-test and recropped predictions.

Shared by ``Predictor.load`` (inference) and the teachers of a distillation run (``training.teachers``),
so a run folder -- or a shipped-model folder, which loads like one -- is read the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facelandmarks.data import faces
from facelandmarks.landmarks import get_scheme, mirror_landmarks
from facelandmarks.runtime import PLUGINS_ENV, env_plugins


def init_run_config(config) -> dict | None:
    """The ``config.json`` of the run ``--init`` names (a run folder, or the folder of a weights file), or None."""
    return run_config_of(config.init) if config.init else None


def run_config_of(init: str) -> dict | None:
    """The ``config.json`` beside ``init`` (a run folder, or a weights file in one), or None (none there, or none
    that holds an object of settings: a list or a number was an AttributeError traceback where it was read)."""
    folder = Path(init) if Path(init).is_dir() else Path(init).parent
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


# the settings --resume may give anew that a later reader of the run's config.json needs as they now are: the epoch
# budget, where the run folder (--config RUN/config.json --resume went to the old one, and without --resume trained a
# new run there) and --data, --val and a --weights file now lie (the run folder or its files moved)
RESUME_RECORDS = ("epochs", "run_dir", "data", "val", "weights", "plugins")


def record_resumed(path: Path, config) -> None:
    """A resumed run's ``config.json`` (``path``) takes ``config``'s ``RESUME_RECORDS``, written whole (a temporary
    file renamed), once the run's state is back (a resume that fails leaves the file as it was).

    The budget of ``--resume --epochs N`` is then what a later ``--resume`` (after a kill) goes on to (it read the
    first budget and ended at once); the data where it found them is what a second ``--resume`` without ``--data``,
    ``--config`` of the file, a pipeline on the run as its stage 1 and ``--ship`` read (they found the old paths)."""
    from facelandmarks.training.config import _write_json_atomic

    saved = json.loads(Path(path).read_text())
    now = {name: getattr(config, name) for name in RESUME_RECORDS}
    if any(saved.get(name) != value for name, value in now.items()):
        _write_json_atomic(path, {**saved, **now})


def read_run_config(run_dir: Path) -> dict:
    """``run_dir/config.json``, checked to be a trained run's; a scheme of the run's own is registered."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).exists():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable run config ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a run config (expected a JSON object)")
    missing = [k for k in ("model", "scheme", "input_shape", "num_points") if k not in config]
    if missing:
        raise ValueError(f"{path}: not the config of a trained run (no {', '.join(missing)})")
    if config.get("scheme_definition"):  # a scheme of your own: register it before get_scheme looks it up
        from facelandmarks.scheme_files import register_definition

        register_definition(config["scheme_definition"], f"{path} (scheme_definition)")
    if config.get("plugins") or env_plugins():  # the families and losses of your own it may need: before its model is
        # rebuilt or its model.keras loaded
        from facelandmarks.models.plugins import load_run_plugins

        load_run_plugins(config.get("plugins", []), f"plugins of {path}; {PLUGINS_ENV}=PATH: where it is now",
                         config["model"], config.get("loss"))
    return config


def rebuild_model(run_dir: Path, config: dict, weights: str = "best"):
    """The run's model rebuilt from the registry with its best weights (else its last; ``weights='last'``:
    the other way round), each file checked against the run's ``state.json`` first."""
    from facelandmarks.training.resume import BEST, LAST, choose_checkpoint, read_state

    model = build_run_model(config)
    state = read_state(run_dir, strict=False)
    model.load_weights(choose_checkpoint(run_dir, state, (LAST, BEST) if weights == "last" else (BEST, LAST)))
    return model


def build_run_model(config: dict):
    """The model of a run's ``config.json``, rebuilt from the registry without weights (its backbone's pixel
    normalisation the one it trained with)."""
    from facelandmarks.models import build_model, rebuild_options

    options = rebuild_options(config["model"], config.get("weights", "none"), config.get("model_options", {}))
    return build_model(
        config["model"], input_shape=tuple(config["input_shape"]), num_points=config["num_points"],
        weights="none", train_blocks=config.get("train_blocks"), **options,
    )


def flip_averaged(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, scheme) -> np.ndarray:
    """(N, K, 2) points of ``batch`` averaged with those of its mirror image, mapped back (the flip test).

    ``predict`` maps a batch of crops to their points, any shape that reshapes to (M, K, 2).
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    k, n = scheme.num_points, len(batch)
    points = np.asarray(predict(np.concatenate([batch, batch[:, :, ::-1]])), np.float32).reshape(-1, k, 2)
    unflipped, _ = mirror_landmarks(points[n:], np.ones((n, k), bool), scheme)
    return 0.5 * (points[:n] + unflipped)


def recrop_boxes(points: np.ndarray, size: int, landmark_box=None) -> np.ndarray:
    """(N, 4) square boxes, in the normalised coordinates of the ``size`` x ``size`` crops the (N, K, 2) ``points``
    were predicted on, that dataset preparation would cut around those points for a face dlib missed (as if dlib
    had found the face there: ``faces.crop_box_from_landmarks`` with ``landmark_box``, the model's relation).

    On the shipped model's test faces a second pass on these crops, averaged with the first, gains what the flip
    test gains (300-W 3.86 -> 3.77 % NME) and adds to it (3.76 -> 3.69); docs/results.md, "A second look".
    """
    return np.stack([faces.crop_box_from_landmarks(p * size - 0.5, None, landmark_box) for p in np.asarray(points, np.float64)]) / size


def recropped(forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, points: np.ndarray,
              landmark_box=None) -> np.ndarray:
    """``points`` (N, K, 2), ``forward``'s for the crops ``batch``, averaged with a second pass of ``forward`` on the
    crops ``recrop_boxes`` cuts around them, mapped back (``--recrop``; a distillation's ``--teacher-recrop``).
    A face without finite points keeps its one pass."""
    points = np.asarray(points, np.float32)
    ok = np.isfinite(points).all(axis=(1, 2))
    if not ok.any():
        return points
    size = batch.shape[1]
    boxes = recrop_boxes(points[ok], size, landmark_box)
    out = points.copy()
    out[ok] = (points[ok] + faces.from_patch(forward(faces.cut_patches(batch[ok], boxes, size)), boxes)) / 2
    return out
