"""The landmark model shipped in the repository's ``weights/`` folder (``inference.ship`` makes one from a run).

A shipped model is a folder that loads like a run directory (``Predictor.load``, ``train.py
--init``): ``config.json`` (the run's settings: model name, options, input shape, scheme),
``best.weights.h5`` with every float32 weight stored as float16 (half the size; ``load_weights``
casts them back, which moves points by far less than 0.01 NME points -- the model card reports the
measured change), ``history.csv`` (the run's epochs, when it kept them: a model continued later with
``--init`` says in its folder what it came from) and ``MODEL_CARD.md``.  ``Predictor.load()`` with no argument loads the one in
``weights/`` (in an installed copy, ``<prefix>/share/facelandmarks/weights``, where ``setup.py`` puts it),
or the folder named by ``FACELANDMARKS_WEIGHTS``.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

WEIGHTS_ENV = "FACELANDMARKS_WEIGHTS"
WEIGHTS_FILE = "best.weights.h5"
HISTORY_FILE = "history.csv"  # the run's epochs, shipped with it (the losses and curve of its evaluation)
INSTALLED_WEIGHTS = Path("share") / "facelandmarks" / "weights"  # under the install prefix (setup.py)


def weights_folders() -> list[Path]:
    """Where the shipped model may be, in order: the ``weights/`` folder beside the package of a working
    copy, then ``<prefix>/share/facelandmarks/weights`` of an installed copy (``setup.py`` puts it there),
    in the environment's prefix and in the user's (``pip install --user``)."""
    folders = [Path(__file__).resolve().parents[2] / "weights"]
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        if scheme in sysconfig.get_scheme_names():
            folders.append(Path(sysconfig.get_path("data", scheme)) / INSTALLED_WEIGHTS)
    return list(dict.fromkeys(folders))


def models_in(folder: Path) -> list[Path]:
    """The model folders in ``folder`` (each with ``config.json`` and the weights), by name; a hidden one is what a
    ``--ship`` writes or left (``inference.swap``), never a model."""
    return sorted(p.parent for p in Path(folder).glob(f"*/{WEIGHTS_FILE}")
                  if not p.parent.name.startswith(".") and (p.parent / "config.json").is_file())


def default_model_dir() -> Path:
    """The shipped model: ``$FACELANDMARKS_WEIGHTS``, else the one folder in ``weights/`` holding a model."""
    chosen = os.environ.get(WEIGHTS_ENV)
    if chosen:
        path = Path(chosen)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: {WEIGHTS_ENV} names no shipped model (no config.json)")
        return path
    folders = weights_folders()
    for folder in folders:
        found = models_in(folder)
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise FileNotFoundError(f"{folder}: several models ({names}); give one, or set {WEIGHTS_ENV}")
        if found:
            return found[0]
    looked = " or ".join(map(str, folders))
    raise FileNotFoundError(f"{looked}: no shipped model there; give a run directory, or set {WEIGHTS_ENV}")
