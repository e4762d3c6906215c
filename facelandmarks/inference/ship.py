"""``models.py --ship RUN --to FOLDER``: a trained run becomes a shipped model's folder (``inference.shipped``).

The new folder is written whole beside the destination, loaded once, and swapped in (``inference.swap``): a kill
at any moment leaves the destination holding the model it had or the new one, each complete, and the next
``--ship`` removes what the kill left (one line says so).  Before anything is written the run and the destination
are checked, each refusal one line: the run must be a run (not a shipped folder) with usable best weights; the
destination must be new, empty or a shipped model's folder of the same scheme (never a run or any other folder);
in a ``weights/`` folder (``shipped.weights_folders``), which ``Predictor.load()`` takes one model from, it must be
the model already there (or the first), and its tracked files must stay within ``SIZE_LIMIT``.  A run that has
not finished is shipped with a warning.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

from facelandmarks.files import write_json_whole
from facelandmarks.inference import shipped
from facelandmarks.inference.shipped import HISTORY_FILE, WEIGHTS_FILE
from facelandmarks.inference.swap import recover, replace_folder, work_folder
from facelandmarks.training.config import HEAD_LR_SCALE_DEFAULT_RECORD

SIZE_LIMIT = 8 * 2**20  # bytes of a model in weights/: the most the repository lets git keep there
TRACKED = ("config.json", WEIGHTS_FILE, "MODEL_CARD.md", HISTORY_FILE)  # what git keeps of weights/NAME/ (.gitignore)
WRITTEN = ("config.json", WEIGHTS_FILE, HISTORY_FILE)  # from the run; anything else in the folder stays (its card)
RUN_FILES = ("state.json", "summary.json", "last.weights.h5", "model.keras")  # a training run's, never a shipped model's
# settings that describe how the run was trained, not how to rebuild the model: dropped from the shipped config
# (--head-lr-scale and the layers it sped up go with --init: a scale other than 1 without --init is refused, so the
# shipped config.json as a --config would be)
_TRAINING_ONLY = ("data", "val", "init", "run_dir", "teachers", "head_lr_scale", "head_lr_layers", HEAD_LR_SCALE_DEFAULT_RECORD)


def _data_sources(data) -> list[str] | None:
    """The datasets (``source``) of a run's training file, or None when it is gone or does not say."""
    import numpy as np

    try:
        with np.load(data, allow_pickle=False) as archive:
            return sorted(np.unique(archive["source"].astype(str)).tolist()) if "source" in archive.files else None
    except (OSError, TypeError, ValueError):
        return None


def _copy_as_float16(source, target, skip=()) -> None:
    """Copy an HDF5 group (datasets, subgroups, attributes), float32 datasets as float16, leaving out ``skip``."""
    import h5py
    import numpy as np

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
    ``dest``, replacing the model there whole; the rest of an earlier model's folder (its ``MODEL_CARD.md``, written
    by hand: it carries measured numbers) stays, its ``history.csv`` goes when the run has none.

    The history is this run's epochs alone: a run started with ``--init`` names its start in its own
    ``config.json`` (``init``, left out of the shipped settings), whose folder holds the epochs before.
    """
    import h5py

    from facelandmarks.models import REGISTRY, rebuild_options
    from facelandmarks.training.resume import find_checkpoint, read_state
    from facelandmarks.training.runs import read_run_config

    run_dir, dest = Path(run_dir), Path(dest)
    config = read_run_config(run_dir)
    if "shipped_from" in config:
        raise ValueError(f"{run_dir}: a shipped model already (from the run {config['shipped_from']}), not a run to "
                         "ship; copy the folder instead")
    if config["model"] not in REGISTRY:  # a pipeline's run (cascade, regions): its models are runs of their own
        raise ValueError(f"{run_dir}: a {config['model']} run, not one model's; --ship takes the run of a model that "
                         "models.py --list names")
    state = read_state(run_dir, strict=False)
    weights, problem = find_checkpoint(run_dir, WEIGHTS_FILE, state)
    if weights is None:
        raise ValueError(f"{run_dir}: no {WEIGHTS_FILE} to ship (no epoch of it finished)" if problem == "missing"
                         else f"{run_dir / WEIGHTS_FILE}: {problem}; nothing to ship")
    target = Path(os.path.abspath(dest))  # '--to .' has a name to stage beside
    if line := recover(target, "a --ship"):
        print(line)
    _check_destination(dest, target, run_dir, config)
    if line := _unfinished(run_dir, state, config):
        print(line)

    settings = {k: v for k, v in config.items() if k not in _TRAINING_ONLY}
    # every weight is in best.weights.h5: the backbone's ImageNet file is not needed, only the input
    # normalisation it implied
    settings["model_options"] = rebuild_options(config["model"], config.get("weights", "none"), config.get("model_options", {}))
    settings["weights"] = "none"
    settings["shipped_from"] = Path(os.path.abspath(run_dir)).name
    if (sources := _data_sources(config.get("data"))) is not None:
        settings["trained_on"] = sources  # the data file stays behind: --init warns by its datasets
    work = work_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        work.mkdir()
        kept = [p for p in target.iterdir() if p.name not in WRITTEN and not _left_by_an_earlier_ship(p.name)] \
            if target.is_dir() else []
        for path in kept:
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, work / path.name)
        with h5py.File(weights, "r") as source, h5py.File(work / WEIGHTS_FILE, "w") as copy:
            _copy_as_float16(source, copy, skip=("optimizer",))  # the model's weights, not Adam's moments
        write_json_whole(work / "config.json", settings, indent=2)
        if (run_dir / HISTORY_FILE).is_file():
            shutil.copyfile(run_dir / HISTORY_FILE, work / HISTORY_FILE)
        _check_size(work, dest, target, run_dir)
        _check_loads(work, settings, run_dir)
        replace_folder(work, target)
    except BaseException:  # a failed or interrupted ship leaves nothing of itself behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    if any(p.name == "MODEL_CARD.md" for p in kept):
        print(f"{dest / 'MODEL_CARD.md'}: kept from the model it replaced; its numbers are that model's until you "
              "update them")
    return dest


_TO = "--to names a new folder or a shipped model's, e.g. weights/NAME"


def _left_by_an_earlier_ship(name: str) -> bool:
    """``.config.json.tmp`` and the like: what a --ship of before 6 Dec 2026 left in the folder when it was killed."""
    return name.startswith(".") and name.endswith(".tmp") and name[1:-4] in WRITTEN


def _check_destination(dest: Path, target: Path, run_dir: Path, config: dict) -> None:
    """``dest`` may take the run's model: new, empty, or a shipped model's folder of the run's scheme; in a
    ``weights/`` folder, the one model there."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"{dest}: a file, not a folder (--to names the model's folder, e.g. weights/NAME)")
    entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if held := [name for name in RUN_FILES if name in entries]:
        raise ValueError(f"{dest}: a training run's folder ({held[0]}), not a shipped model's; {_TO}")
    if entries and not {"config.json", WEIGHTS_FILE} <= set(entries):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(f"{dest}: holds {shown} but no shipped model (config.json, {WEIGHTS_FILE}); {_TO}")
    if entries:
        try:
            old = json.loads((target / "config.json").read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise ValueError(f"{dest / 'config.json'}: unreadable ({' '.join(str(err).split())}); {_TO}") from None
        before, now = (old.get("scheme"), old.get("num_points")), (config["scheme"], config["num_points"])
        if before != now:
            raise ValueError(f"{dest} holds a model of {before[0]} ({before[1]} points) and {run_dir} predicts "
                             f"{now[0]} ({now[1]} points): ship it to a folder of its own, or remove {dest} first")
    if _in_weights_folder(target):
        others = [p for p in shipped.models_in(target.parent) if p.name != target.name]
        if others:
            folder = target.parent if dest.parent == Path(".") else dest.parent
            raise ValueError(f"{dest}: {folder} ships {others[0].name} already, and Predictor.load() takes "
                             f"the one model there: --to {dest.parent / others[0].name} replaces it (or remove that "
                             "folder first)")


def _in_weights_folder(target: Path) -> bool:
    return target.parent.resolve() in {folder.resolve() for folder in shipped.weights_folders()}


def _unfinished(run_dir: Path, state: dict | None, config: dict) -> str | None:
    """A warning line where the run's best weights may change yet: no finished sitting wrote its summary, or the
    run went on after it."""
    from facelandmarks.runtime import script_command

    try:
        ran = json.loads((run_dir / "summary.json").read_text()).get("epochs")
    except (OSError, ValueError, AttributeError):
        ran = None
    committed = state["epoch"] + 1 if state and isinstance(state.get("epoch"), int) else None
    if ran is not None and (committed is None or ran >= committed):
        return None
    at = f" (epoch {committed} of {config.get('epochs')})" if committed else ""
    return (f"warning: {run_dir} has not finished{at}: no summary.json of its last epochs (still training, or "
            f"stopped); shipping its best weights so far ({script_command('train')} --resume --run-dir {shlex.quote(str(run_dir))} "
            "finishes it)")


def _check_size(work: Path, dest: Path, target: Path, run_dir: Path) -> None:
    """In a ``weights/`` folder, the files git keeps stay within ``SIZE_LIMIT``."""
    if not _in_weights_folder(target):
        return
    size = sum((work / name).stat().st_size for name in TRACKED if (work / name).is_file())
    if size > SIZE_LIMIT:
        weights = (work / WEIGHTS_FILE).stat().st_size
        raise ValueError(f"{run_dir}: shipped, it takes {size / 2**20:.1f} MiB ({WEIGHTS_FILE} {weights / 2**20:.1f} "
                         f"MiB as float16), over the {SIZE_LIMIT // 2**20} MiB a model in {target.parent} may take; "
                         f"{dest} left as it was")


def _check_loads(work: Path, settings: dict, run_dir: Path) -> None:
    """The new folder's model builds from its settings and takes its weights, before it replaces anything."""
    from facelandmarks.training.runs import build_run_model

    try:
        build_run_model(settings).load_weights(work / WEIGHTS_FILE)
    except (ValueError, OSError) as err:
        raise ValueError(f"{run_dir}: its shipped weights do not load into {settings['model']} "
                         f"({' '.join(str(err).split())[:300]}); nothing shipped") from None
