"""The landmark model shipped in the repository's ``weights/`` folder, and how a run becomes one.

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

import json
import os
import shutil
import sysconfig
from pathlib import Path

import numpy as np

WEIGHTS_ENV = "FACELANDMARKS_WEIGHTS"
WEIGHTS_FILE = "best.weights.h5"
HISTORY_FILE = "history.csv"  # the run's epochs, shipped with it (the losses and curve of its evaluation)
INSTALLED_WEIGHTS = Path("share") / "facelandmarks" / "weights"  # under the install prefix (setup.py)
# settings that describe how the run was trained, not how to rebuild the model: dropped from the shipped config
# (--head-lr-scale and the layers it sped up go with --init: a scale other than 1 without --init is refused, so the
# shipped config.json as a --config would be)
_TRAINING_ONLY = ("data", "val", "init", "run_dir", "teachers", "head_lr_scale", "head_lr_layers")


def _data_sources(data) -> list[str] | None:
    """The datasets (``source``) of a run's training file, or None when it is gone or does not say."""
    import numpy as np

    try:
        with np.load(data, allow_pickle=False) as archive:
            return sorted(np.unique(archive["source"].astype(str)).tolist()) if "source" in archive.files else None
    except (OSError, TypeError, ValueError):
        return None


def weights_folders() -> list[Path]:
    """Where the shipped model may be, in order: the ``weights/`` folder beside the package of a working
    copy, then ``<prefix>/share/facelandmarks/weights`` of an installed copy (``setup.py`` puts it there),
    in the environment's prefix and in the user's (``pip install --user``)."""
    folders = [Path(__file__).resolve().parents[2] / "weights"]
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        if scheme in sysconfig.get_scheme_names():
            folders.append(Path(sysconfig.get_path("data", scheme)) / INSTALLED_WEIGHTS)
    return list(dict.fromkeys(folders))


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
        found = sorted(p.parent for p in folder.glob(f"*/{WEIGHTS_FILE}") if (p.parent / "config.json").is_file())
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise FileNotFoundError(f"{folder}: several models ({names}); give one, or set {WEIGHTS_ENV}")
        if found:
            return found[0]
    looked = " or ".join(map(str, folders))
    raise FileNotFoundError(f"{looked}: no shipped model there; give a run directory, or set {WEIGHTS_ENV}")


def _copy_as_float16(source, target, skip=()) -> None:
    """Copy an HDF5 group (datasets, subgroups, attributes), float32 datasets as float16, leaving out ``skip``."""
    import h5py

    for name, value in source.attrs.items():
        target.attrs[name] = value
    for key, item in source.items():
        if key in skip:
            continue
        if isinstance(item, h5py.Dataset):
            data = item[()]
            if data.dtype == np.float32:
                data = data.astype(np.float16)
            target.create_dataset(key, data=data)
            for name, value in item.attrs.items():
                target[key].attrs[name] = value
        else:
            _copy_as_float16(item, target.create_group(key))


def ship(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write ``run_dir``'s best weights (as float16), its rebuild settings and its ``history.csv`` into the folder
    ``dest`` (an earlier model's history there goes when the run has none).

    The model card is written by hand beside them: it carries measured numbers.  The history is this run's
    epochs alone: a run started with ``--init`` names its start in its own ``config.json`` (``init``, left out
    of the shipped settings), whose folder holds the epochs before.
    """
    import h5py

    from facelandmarks.training.runs import read_run_config

    run_dir, dest = Path(run_dir), Path(dest)
    config = read_run_config(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no {WEIGHTS_FILE} to ship")
    dest.mkdir(parents=True, exist_ok=True)
    from facelandmarks.models import rebuild_options

    shipped = {k: v for k, v in config.items() if k not in _TRAINING_ONLY}
    # every weight is in best.weights.h5: the backbone's ImageNet file is not needed, only the input
    # normalisation it implied
    shipped["model_options"] = rebuild_options(config["model"], config.get("weights", "none"), config.get("model_options", {}))
    shipped["weights"] = "none"
    shipped["shipped_from"] = run_dir.name
    if (sources := _data_sources(config.get("data"))) is not None:
        shipped["trained_on"] = sources  # the data file stays behind: --init warns by its datasets
    # every file whole before any replaces its predecessor: a kill before the renames leaves the folder as it was
    # (one between two of them, a window of microseconds, leaves some files new)
    tmp_weights, tmp_config, tmp_history = (dest / f".{name}.tmp" for name in (WEIGHTS_FILE, "config.json", HISTORY_FILE))
    history = run_dir / HISTORY_FILE
    try:
        with h5py.File(weights, "r") as source, h5py.File(tmp_weights, "w") as target:
            _copy_as_float16(source, target, skip=("optimizer",))  # the model's weights, not Adam's moments
        tmp_config.write_text(json.dumps(shipped, indent=2) + "\n")
        has_history = history.is_file()
        if has_history:
            shutil.copyfile(history, tmp_history)
        os.replace(tmp_weights, dest / WEIGHTS_FILE)
        os.replace(tmp_config, dest / "config.json")
        if has_history:
            os.replace(tmp_history, dest / HISTORY_FILE)
        else:  # an earlier model's epochs are not this one's
            (dest / HISTORY_FILE).unlink(missing_ok=True)
    finally:
        for tmp in (tmp_weights, tmp_config, tmp_history):
            tmp.unlink(missing_ok=True)
    return dest
