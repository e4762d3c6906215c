"""Distributed training without face data: TF_CONFIG parsing (real clusters: ``tests/data/test_distribute.py``)."""

import pytest

from facelandmarks.training import distribute


def test_tf_config_errors_name_the_problem(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(ValueError, match="task type 'ps' is not in the cluster"):
        distribute.read_tf_config()
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a valid cluster description"):
        distribute.read_tf_config()
    assert distribute.is_chief_task({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}})
    assert not distribute.is_chief_task({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "worker", "index": 0}})
