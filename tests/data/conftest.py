"""Fixtures built from the real face data: a tiny prepared dataset and a model trained on it."""

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


@pytest.fixture(scope="session")
def tiny_ibug(tmp_path_factory, data_dir):
    """A prepared 48 px ibug68 dataset from real YouTube68 frames (train mirrored, test as is)."""
    from facelandmarks.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("tiny_ibug")
    source = copy_youtube68_subset(data_dir, root / "youtube68", train_subjects=16, per_subject=5, test_faces=24)
    options = PrepareOptions(size=48, out=str(root / "yt48"), workers=1, progress=False)
    prepare([("youtube68", str(source))], options)
    return {"train": root / "yt48_train.npz", "test": root / "yt48_test.npz", "root": root}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_ibug):
    """A small scratch model trained for a few epochs (the run directory)."""
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    run_dir = tmp_path_factory.mktemp("runs") / "scratch-tiny"
    config = TrainConfig(
        model="scratch", data=str(tiny_ibug["train"]), run_dir=str(run_dir), val_fraction=0.2,
        epochs=7, batch=16, lr=2e-3, preview_every=3, workers=1, seed=1,
    )
    fit(config, verbose=0)
    return run_dir
