"""Fixtures built from the real face data: a tiny prepared dataset and a model trained on it.

Both are built once per test session, however many pytest-xdist processes run it (``built_once``):
the first process to need one builds it under a lock, the others wait and read it.
"""

import fcntl
import os
import shutil
from pathlib import Path

import pytest


def copy_youtube68_subset(data_dir: Path, dest: Path, train_subjects: int, per_subject: int, test_faces: int) -> Path:
    """A small YouTube68 folder (CSV rows + frames) in ``dest``: whole subjects, real frames."""
    import csv
    import shutil

    source = data_dir / "youtube68"
    dest.mkdir(parents=True, exist_ok=True)
    for split, folder, limit in (("training", "training", None), ("test", "test", test_faces)):
        with open(source / f"{split}_frames_keypoints.csv", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = list(reader)
        chosen, per = [], {}
        for row in rows:
            subject = row[0].rsplit("_", 1)[0]
            if limit is None:
                if subject not in per and len(per) >= train_subjects:
                    continue
                if per.get(subject, 0) >= per_subject:
                    continue
                per[subject] = per.get(subject, 0) + 1
            elif len(chosen) >= limit:
                break
            chosen.append(row)
        (dest / folder).mkdir(exist_ok=True)
        for row in chosen:
            shutil.copy(source / folder / row[0], dest / folder / row[0])
        with open(dest / f"{split}_frames_keypoints.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(chosen)
    return dest


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``build(folder)`` filled, built by one process of the session and shared with the rest.

    pytest-xdist gives each worker its own temporary folder inside the session's one; the build goes
    there, under a file lock.  A folder without its ``.built`` mark (a worker that died building it) is
    built again.  Tests read these folders; they write only in their own ``tmp_path``.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, done = base / name, base / name / ".built"
    with open(base / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_ibug(tmp_path_factory, data_dir):
    """A prepared 48 px ibug68 dataset from real YouTube68 frames (train mirrored, test as is)."""
    from facelandmarks.data.prepare import PrepareOptions, prepare

    def build(root):
        source = copy_youtube68_subset(data_dir, root / "youtube68", train_subjects=16, per_subject=5, test_faces=24)
        prepare([("youtube68", str(source))], PrepareOptions(size=48, out=str(root / "yt48"), workers=1, progress=False))

    root = built_once(tmp_path_factory, "tiny_ibug", build)
    return {"train": root / "yt48_train.npz", "test": root / "yt48_test.npz", "root": root}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_ibug):
    """A small scratch model trained for a few epochs (the run directory)."""
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    def build(root):
        config = TrainConfig(
            model="scratch", data=str(tiny_ibug["train"]), run_dir=str(root / "scratch-tiny"), val_fraction=0.2,
            epochs=7, batch=16, lr=2e-3, preview_every=3, workers=1, seed=1,
        )
        fit(config, verbose=0)

    return built_once(tmp_path_factory, "tiny_run", build) / "scratch-tiny"
