"""Training without face data: the validation split (training runs on real faces: ``tests/data/test_train.py``)."""

import numpy as np

from facelandmarks.data.feeding import split_by_subject


def test_validation_split_is_by_subject():
    subjects = np.array([f"s{i // 3}" for i in range(60)])
    train_idx, val_idx = split_by_subject(subjects, 0.25, seed=3)
    assert set(subjects[train_idx]).isdisjoint(subjects[val_idx])
    assert len(train_idx) + len(val_idx) == 60 and 12 <= len(val_idx) <= 18


def _faces(sources):
    n = len(sources)
    return {"images": np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(4, 1).repeat(4, 2),
            "landmarks": np.full((n, 3, 2), 0.5, np.float32), "visible": np.ones((n, 3), bool),
            "source": np.array(sources)}


def test_oversample_repeats_a_source_within_each_epoch():
    from facelandmarks.data.feeding import FaceParts, LandmarkBatches

    data = _faces(["300w"] * 4 + ["youtube68"] * 8)
    batches = LandmarkBatches(FaceParts(data, None, oversample={"300w": 3}), 4, seed=5)
    assert len(batches) == (4 * 3 + 8) // 4
    seen = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))]).astype(int)
    assert np.bincount(seen, minlength=12).tolist() == [3] * 4 + [1] * 8  # every face, 300-W ones three times
    plain = LandmarkBatches(FaceParts(data, None), 4, seed=5)
    assert len(plain) == 3
    # a worker of two takes every second face, with its own repeats
    half = FaceParts(data, None, worker_index=1, workers=2, oversample={"300w": 3})
    assert half.repeats[0].tolist() == [3, 3] + [1] * 4


def test_oversample_names_unknown_sources_and_bad_factors():
    import pytest

    from facelandmarks.data.feeding import FaceParts
    from facelandmarks.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"source\(s\) afw .*they have: 300w, youtube68"):
        FaceParts(_faces(["300w", "youtube68"]), None, oversample={"afw": 2})
    for bad in ({"300w": 0}, {"300w": 1.5}, {"300w": True}):
        with pytest.raises(ValueError, match="--oversample must map source names to whole numbers"):
            TrainConfig(model="scratch", data="x.npz", run_dir="r", oversample=bad).validate()
