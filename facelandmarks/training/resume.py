"""Resuming a run: the checkpoint set and how it is committed and read back, callback state, history trimming.

The checkpoint set
------------------
A run folder's checkpoints -- ``best.weights.h5``, ``last.weights.h5`` and ``model.keras`` -- change
together with ``state.json``.  ``state.json`` records the last finished epoch, the callbacks' counters,
the state of the model's random generators (``"random"``: the dropout layers', which no weights file holds)
and, under ``"files"``, the size and SHA-1 of every checkpoint file that belongs to that epoch: it is
the commit record, and a file belongs to the run only when ``state.json`` names its exact bytes.

``commit_set`` replaces the set in three steps, so that a kill at any moment leaves one whole set:

1. each new file is written under a pending name in the run folder (``.best.pending.weights.h5``,
   ``.last.pending.weights.h5``, ``.model.pending.keras``) and fsynced; its size and SHA-1 are taken;
2. the new state, carrying those records (and the unchanged ones of the files not rewritten), is
   written to ``.state.json.tmp``, fsynced and renamed over ``state.json``: this rename is the commit;
3. each pending file is renamed over its final name (``os.replace``) and the folder is fsynced.

Killed before the commit, the folder holds the previous ``state.json`` and the previous files, which
match it; the pending files are leftovers.  Killed after it, every file of the new state is under its
final name or still under its pending name, and its SHA-1 tells which.  ``find_checkpoint`` (used by
every reader) accepts a file only when its size and SHA-1 match the record, looking under both names;
``recover`` (run by ``--resume``) finishes the renames and removes leftovers.  A file is therefore
never torn under a name the state vouches for, and a new ``last`` never meets an old state.

Files can still be damaged from outside (a disk error, a copy cut short, a run of an older version
killed inside Keras' in-place write of ``best.weights.h5``).  Readers then fall back to the other of
best/last with one line on stderr (``choose_checkpoint``) instead of crashing in h5py.  Runs written
before the record existed have no ``"files"``: their files are checked by opening them.

``FACELANDMARKS_FAULT=POINT@N`` (a test hook, ``fault_point``) ends the process like a kill at POINT
of the Nth commit; ``tests/data/test_train_faults.py`` kills runs at every point.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np

from facelandmarks.data.fileset import file_hash
from facelandmarks.files import fsync_file, fsync_folder, remove_left_by_kills, written_whole

STATE_FIELDS = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "ModelCheckpoint": ("best",),
    "CosineSchedule": ("epochs", "anchor_epoch", "anchor_progress"),  # reshaped by --time-limit
    "TimeLimit": ("end", "planned"),
}
STATE = "state.json"
# a run's records written to .NAME.tmp and renamed before files.py (6 Dec 2026): a kill left that file for good
OLDER_RECORDS = ("config.json", "summary.json", "pipeline.json", "history.csv")
BEST, LAST, SAVED_MODEL = "best.weights.h5", "last.weights.h5", "model.keras"
FAULT_ENV = "FACELANDMARKS_FAULT"
FAULT_EXIT = 86  # the exit status of a process the fault hook ended
_commits = 0  # commits made by this process (the N of FACELANDMARKS_FAULT=POINT@N)


class CheckpointError(ValueError):
    """A run folder whose checkpoints cannot be used; the message is one line naming the file."""


def _jsonable(value):
    value = keras.ops.convert_to_numpy(value) if hasattr(value, "shape") else value
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _from_json(value):
    return float(value) if value in ("inf", "-inf", "nan") else value


def restore_callbacks(state: dict, stateful: dict) -> None:
    for name, callback in stateful.items():
        for key, value in state.get(name, {}).items():
            setattr(callback, key, _from_json(value))


def callback_state(stateful: dict) -> dict:
    """The counters of the stateful callbacks, keyed as in ``state.json``."""
    return {name: {k: _jsonable(getattr(callback, k)) for k in STATE_FIELDS[name]} for name, callback in stateful.items()}


def random_variables(model) -> list:
    """The state of the model's random generators (a Keras ``SeedGenerator`` each: the dropout layers'), which
    ``save_weights`` leaves out: the model's variables that are not weights, in ``model.variables``' order."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def random_state(model) -> list:
    """``random_variables``' values, as ``state.json`` keeps them under ``"random"``."""
    return [keras.ops.convert_to_numpy(v).tolist() for v in random_variables(model)]


def restore_random_state(model, run_dir: Path, state: dict) -> None:
    """The random generators as the last finished epoch left them; one line where ``state.json`` has no state
    for them (a run of an older version): the dropout masks from here on are not an uninterrupted run's."""
    variables, saved = random_variables(model), state.get("random")
    if saved is not None and len(saved) == len(variables):
        for variable, value in zip(variables, saved):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    elif variables:
        why = "was not saved (a run of an older version)" if saved is None else f"holds {len(saved)} generators, not {len(variables)}"
        print(f"{Path(run_dir) / STATE}: the random state of the dropout layers {why}: from epoch {state['epoch'] + 2} "
              "they drop other units than an uninterrupted run would", file=sys.stderr)


# -- writing the set ---------------------------------------------------------


def fault_point(point: str, path: Path | None = None) -> None:
    """Test hook: with ``FACELANDMARKS_FAULT=POINT@N`` the process ends here (``os._exit``, no clean-up, as
    a kill would) at the Nth commit.  ``torn-POINT@N`` first cuts ``path`` short: a write killed midway.

    Points, in order: ``begin``; per file ``write``, ``written``; ``state``, ``state-written``,
    ``committed``; per file ``renamed``; ``done``.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, nth = spec.partition("@")
    if name.removeprefix("torn-") != point or int(nth or 1) != _commits:
        return
    if name.startswith("torn-") and path is not None and Path(path).is_file():
        os.truncate(path, min(96, Path(path).stat().st_size // 2))
    os._exit(FAULT_EXIT)


def pending_name(name: str) -> str:
    """Where ``name`` is written before the commit: ``best.weights.h5`` -> ``.best.pending.weights.h5``
    (Keras wants the ``.weights.h5`` and ``.keras`` endings)."""
    head, _, rest = name.partition(".")
    return f".{head}.pending.{rest}"


def file_record(path: Path) -> dict:
    return {"size": Path(path).stat().st_size, "sha1": file_hash(path, "sha1")}


def write_state(run_dir: Path, state: dict) -> None:
    """``state.json``, atomically and durably: the commit of a checkpoint set."""
    tmp = Path(run_dir) / f".{STATE}.tmp"
    fault_point("state", tmp)
    with open(tmp, "w") as handle:
        handle.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    fault_point("state-written", tmp)
    os.replace(tmp, Path(run_dir) / STATE)
    fsync_folder(Path(run_dir))


def commit_set(run_dir: Path, writers: dict, state: dict, meta: dict | None = None) -> dict:
    """Replace the files ``writers`` names (``{name: write(path)}``) and ``state.json`` as one set.

    ``state["files"]`` holds the records of the current set; the files not rewritten keep theirs.
    ``meta`` adds fields to a new file's record.  Returns the new records.  An error before the commit
    (a full disk) removes the pending files and leaves the previous set as it was.
    """
    global _commits
    _commits += 1
    run_dir = Path(run_dir)
    fault_point("begin")
    files, written, path = dict(state.get("files", {})), {}, run_dir / STATE  # path: the file being written
    try:
        for name, write in writers.items():
            path = written[name] = run_dir / pending_name(name)
            fault_point("write", path)
            write(str(path))
            fsync_file(path)
            fault_point("written", path)
            files[name] = {**file_record(path), **(meta or {}).get(name, {})}
        path = run_dir / STATE
        write_state(run_dir, {**state, "files": files})
    except Exception as err:
        for leftover in written.values():
            leftover.unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:  # h5py and Keras rarely say which file
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    fault_point("committed")
    for name, pending in written.items():
        os.replace(pending, run_dir / name)
        fault_point("renamed", run_dir / name)
    fsync_folder(run_dir)
    fault_point("done")
    return files


# -- reading the set ---------------------------------------------------------


def read_state(run_dir: Path, strict: bool = True) -> dict | None:
    """The run's ``state.json`` (None when no epoch was committed).

    A damaged one raises ``CheckpointError`` when ``strict`` (resuming needs it); otherwise it is
    reported in one line and ignored, and the files are checked by opening them.
    """
    path = Path(run_dir) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("no epoch in it")
    except (OSError, ValueError) as err:
        problem = f"{path}: damaged run state ({_one_line(err)})"
        if strict:
            raise CheckpointError(problem) from None
        print(f"{problem}; checking the checkpoints by opening them", file=sys.stderr)
        return None
    return state


def find_checkpoint(run_dir: Path, name: str, state: dict | None) -> tuple[Path | None, str]:
    """(the good copy of checkpoint ``name``, '') or (None, what is wrong with it).

    With a record in ``state``, the good copy is the final or the pending file whose size and SHA-1
    match it (a kill between the commit and the rename leaves it pending); without one, the final
    file if it opens.
    """
    run_dir = Path(run_dir)
    record = (state or {}).get("files", {}).get(name)
    final = run_dir / name
    if record is None:
        if not final.is_file():
            return None, "missing"
        problem = _open_problem(final)
        return (None, problem) if problem else (final, "")
    for candidate in (final, run_dir / pending_name(name)):
        if _matches(candidate, record):
            return candidate, ""
    if not final.is_file():
        return None, "missing"
    size = final.stat().st_size
    if size != record["size"]:
        return None, f"damaged ({size} bytes, {STATE} recorded {record['size']})"
    return None, f"damaged (its SHA-1 is not the one {STATE} recorded)"


def choose_checkpoint(run_dir: Path, state: dict | None, names=(BEST, LAST)) -> Path:
    """The first of ``names`` that checks out; one stderr line for each one passed over that exists."""
    run_dir, passed = Path(run_dir), []
    for name in names:
        path, problem = find_checkpoint(run_dir, name, state)
        if path is not None:
            for skipped, why in passed:
                if why != "missing":
                    print(f"{run_dir / skipped}: {why}; using {path.name} instead", file=sys.stderr)
            return path
        passed.append((name, problem))
    raise CheckpointError(f"{run_dir}: no usable weights ({'; '.join(f'{n} {why}' for n, why in passed)})")


def saved_model_is_current(state: dict | None) -> bool:
    """False when ``model.keras`` holds older best weights than ``best.weights.h5`` (a resumed run went on)."""
    files = (state or {}).get("files", {})
    made_from = files.get(SAVED_MODEL, {}).get("best_sha1")
    return made_from is None or BEST not in files or files[BEST]["sha1"] == made_from


def recover(run_dir: Path) -> dict | None:
    """Finish a commit a kill interrupted (pending files the state names take their final names) and
    remove the leftovers of one that never committed, and the partial files of a killed process's other writes;
    returns the state (None: no epoch committed)."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    for name, record in (state or {}).get("files", {}).items():
        pending = run_dir / pending_name(name)
        if not _matches(run_dir / name, record) and _matches(pending, record):
            with contextlib.suppress(FileNotFoundError):  # another worker of a cluster got there first
                os.replace(pending, run_dir / name)
    for leftover in [*run_dir.glob(".*.pending.*"), *(run_dir / f".{name}.tmp" for name in (STATE, *OLDER_RECORDS))]:
        leftover.unlink(missing_ok=True)
    remove_left_by_kills(run_dir)  # a config.json, summary.json or history.csv a kill left half-written
    fsync_folder(run_dir)
    return state


def _matches(path: Path, record: dict) -> bool:
    return path.is_file() and path.stat().st_size == record["size"] and file_record(path)["sha1"] == record["sha1"]


def _open_problem(path: Path) -> str:
    """'' when ``path`` opens as what its name says (HDF5 weights, a .keras zip), else why not."""
    import zipfile

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                archive.getinfo("model.weights.h5")
        else:
            import h5py

            with h5py.File(path, "r"):
                pass
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        return f"unreadable ({_one_line(err)})"
    return ""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# -- history and restoring ---------------------------------------------------


def read_history_epochs(path: Path) -> list[int]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def trim_history(path: Path, last_epoch: int) -> None:
    """Drop rows after ``last_epoch`` (an epoch logged but not checkpointed before a crash)."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
        fields = rows[0].keys() if rows else None
    if not rows:
        return
    kept = [row for row in rows if int(row["epoch"]) <= last_epoch]
    with written_whole(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(kept)


def restore_for_resume(model, run_dir: Path, out_dir: Path, state: dict, stateful: dict, callbacks: list) -> int:
    """Weights, optimizer state, learning rate, random state and callback counters of the last finished epoch.

    A damaged ``last.weights.h5`` falls back to the best weights (one line says so); a damaged
    ``best.weights.h5`` is forgotten, so the next epoch writes a new one.
    """
    model.optimizer.build(model.trainable_variables)
    best_weights = None
    best, problem = find_checkpoint(run_dir, BEST, state)
    if best is None and problem != "missing":
        state = {**state, "ModelCheckpoint": {"best": None},
                 "files": {k: v for k, v in state.get("files", {}).items() if k != BEST}}
    last = choose_checkpoint(run_dir, state, (LAST, BEST))  # none usable: one line naming both, before any other
    if best is not None:
        model.load_weights(best)
        best_weights = model.get_weights()
    elif problem != "missing":
        print(f"{run_dir / BEST}: {problem}; the next epoch writes a new one", file=sys.stderr)
    model.load_weights(last)
    restore_random_state(model, run_dir, state)
    checkpoints = stateful.get("ModelCheckpoint")
    if checkpoints is not None:  # the set the next commit extends
        checkpoints.files = dict(state.get("files", {}))
    model.optimizer.learning_rate.assign(state["learning_rate"])
    if out_dir == run_dir:
        trim_history(run_dir / "history.csv", state["epoch"])
    else:
        seed_scratch(run_dir, out_dir, state["epoch"], best)
    callbacks.append(RestoreCallbackState(state, stateful, best_weights))
    # the rate saved is the last finished epoch's; a schedule sets the next epoch's when it begins
    print(f"resuming {run_dir} at epoch {state['epoch'] + 2} (epoch {state['epoch'] + 1} ended at learning rate "
          f"{state['learning_rate']:.3g})")
    return state["epoch"] + 1


def seed_scratch(run_dir: Path, scratch: Path, last_epoch: int, best: Path | None) -> None:
    """A resumed worker's scratch folder (not the chief's run folder) takes the run's history and best weights so far:
    its summary read them there (its history held this sitting's epochs only: the train seconds of one sitting, a
    best epoch among them; with no better epoch since, finish loaded the last weights)."""
    if (run_dir / "history.csv").is_file():
        shutil.copyfile(run_dir / "history.csv", scratch / "history.csv")  # the chief trims its copy by os.replace
        trim_history(scratch / "history.csv", last_epoch)
    if best is not None:
        shutil.copyfile(best, scratch / BEST)


def weights_fingerprint(model) -> str:
    """SHA-1 of the model's weights: equal on every worker of a synchronous cluster."""
    digest = hashlib.sha1()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _epoch_seconds(path: Path, sitting: float) -> float:
    """The epochs' seconds summed over every sitting of the run (``history.csv``'s ``epoch_seconds``, which a
    resumed run keeps), or this sitting's wall time where the history has none."""
    try:
        with open(path, newline="") as handle:
            seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(handle) if row.get("epoch_seconds")]
    except (OSError, ValueError):
        seconds = []
    return round(sum(seconds), 1) if seconds else sitting


def _best_epoch(path: Path, monitor: str):
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(monitor)]
    if not rows:
        return None
    return int(min(rows, key=lambda r: float(r[monitor]))["epoch"]) + 1


class RestoreCallbackState(keras.callbacks.Callback):
    """On a resumed run, puts the saved counters back after the other callbacks reset them."""

    def __init__(self, state: dict, stateful: dict, best_weights=None):
        super().__init__()
        self.state, self.stateful, self.best_weights = state, stateful, best_weights

    def on_train_begin(self, logs=None):
        restore_callbacks(self.state, self.stateful)
        early = self.stateful.get("EarlyStopping")
        if early is not None and self.best_weights is not None:
            early.best_weights = self.best_weights
