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


TWO_REPLICAS = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from facelandmarks.data.feeding import pack_targets
from facelandmarks.models.losses import get_loss, masked_mse

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 4)).astype("float32")
y = pack_targets(rng.uniform(size=(8, 3, 2)), np.ones((8, 3), bool))  # as many points on each replica
results = []
for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), keras.layers.Reshape((3, 2))])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=get_loss(sys.argv[1]),
                      metrics=[keras.metrics.MeanMetricWrapper(masked_mse, name="mse")])
    before = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    results.append((before["loss"], before["mse"], model.get_weights()[0]))
(loss1, mse1, w1), (loss2, mse2, w2) = results
np.testing.assert_allclose([loss2, mse2], [loss1, mse1], rtol=1e-5)
np.testing.assert_allclose(w2, w1, rtol=1e-5, atol=1e-7)
"""


@pytest.mark.parametrize("loss", ["mse", "wing"])
def test_a_strategy_of_two_replicas_trains_and_reports_as_one_device(loss):
    # the losses return one scalar per batch, which Keras does not divide by the replicas before their gradients
    # are summed: two replicas reported twice the loss and stepped twice as far (on top of the scaled rate)
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, loss], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
