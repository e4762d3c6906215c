"""Training without face data: the validation split (training runs on real faces: ``tests/data/test_train.py``)."""

import numpy as np

from facelandmarks.data.feeding import split_by_subject


def test_validation_split_is_by_subject():
    subjects = np.array([f"s{i // 3}" for i in range(60)])
    train_idx, val_idx = split_by_subject(subjects, 0.25, seed=3)
    assert set(subjects[train_idx]).isdisjoint(subjects[val_idx])
    assert len(train_idx) + len(val_idx) == 60 and 12 <= len(val_idx) <= 18
