"""Distributed training on real faces: a two-process MultiWorkerMirroredStrategy cluster one of whose workers stops,
JAX data parallelism, shards. (A whole cluster's run and its resume, and those of a job of two JAX processes, train on
random images: ``tests/unit/test_multiworker.py``, ``tests/unit/test_distribute.py``.)"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.data.feeding import FaceParts, LandmarkBatches
from facelandmarks.training.config import TrainConfig
from facelandmarks.training.fit import fit

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.data


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_command(data, run_dir, *extra):
    # a small MLP (dropout on, as the scratch CNN's): what is checked is the processes' training loop, not the family
    return [sys.executable, str(ROOT / "train.py"), "mlp", "--model-options", '{"hidden_units": [32]}',
            "--data", str(data), "--run-dir", str(run_dir),
            "--epochs", "2", "--batch", "8", "--workers", "1", "--preview-every", "1", "--augment", "default", *extra]


def run_cluster(commands_envs, timeout):
    """Start every process in its own session; always kill them all."""
    processes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) for cmd, env in commands_envs]
    try:
        deadline = time.time() + timeout
        outputs = []
        for process in processes:
            out, err = process.communicate(timeout=max(1, deadline - time.time()))
            outputs.append((process.returncode, out, err))
        return outputs
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def summary_of(stdout):
    return json.loads(stdout[stdout.index("{"):])


def test_a_worker_that_stops_is_named_in_one_line_by_the_others(tiny_ibug, tmp_path):
    # worker 1 cannot read its data: worker 0 ended in the traceback of a collective op ('UnavailableError: ...
    # tasks are unhealthy'), never saying in one line that the other worker had gone
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    jobs = []
    for index, data in enumerate((tiny_ibug["train"], tmp_path / "missing.npz")):
        env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        jobs.append((train_command(data, tmp_path / "run", "--distribute", "multiworker"), env))
    (code0, _, err0), (code1, _, err1) = run_cluster(jobs, timeout=300)
    assert code1 == 2 and err1.strip().endswith("missing.npz: no such dataset file"), err1[-2000:]
    assert code0 == 2 and "Traceback" not in err0, err0[-3000:]
    assert err0.strip().splitlines()[-1] == (
        "train.py: --distribute multiworker: another process of this 2-process job stopped (/job:worker/replica:0/task:1), "
        "and this one cannot go on without it; its own output says why. Start every process again (with --resume once an "
        "epoch has finished)")


# train.py's main, printing the cluster distribute.setup made for the run (after Keras loads, as train.py loads it)
REPORT_CLUSTER = """
import sys
from facelandmarks import runtime
from facelandmarks.cli import train

def startup(verbose=False):
    runtime.startup(verbose)
    import keras
    from facelandmarks.training import distribute

    setup = distribute.setup

    def reported(mode, resumed=None):
        cluster = setup(mode, resumed)
        print("replicas", cluster.replicas, type(keras.distribution.distribution()).__name__, flush=True)
        return cluster

    distribute.setup = reported

train.startup = startup
sys.exit(train.main(sys.argv[1:]))
"""


def test_jax_data_parallel_on_two_devices(tiny_ibug, tmp_path):
    # One process, not a probe of distribute.setup and then the run: the run itself reports its two replicas
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
    command = train_command(tiny_ibug["train"], tmp_path / "dp", "--distribute", "data-parallel", "--batch", "5")
    assert Path(command[1]).name == "train.py"
    command[1:2] = ["-c", REPORT_CLUSTER]
    (result,) = run_cluster([(command, env)], timeout=300)
    code, out, err = result
    assert code == 0, err[-3000:]
    assert "replicas 2 DataParallel\n" in out, out[-2000:] + err[-2000:]
    summary = summary_of(out)
    assert summary["epochs"] == 2 and np.isfinite(summary["val_nme"])


@pytest.mark.backend
def test_mirrored_strategy_or_a_clear_error(tiny_ibug, tmp_path, monkeypatch):
    import keras

    from facelandmarks.training import distribute

    config = TrainConfig(model="scratch", data=str(tiny_ibug["train"]), run_dir=str(tmp_path / "m"),
                                  epochs=1, batch=8, workers=1, distribute="mirrored")
    if keras.config.backend() != "tensorflow":
        with pytest.raises(ValueError, match="mirrored is TensorFlow's"):
            fit(config, verbose=0)
        return
    import tensorflow as tf

    made, setup = [], distribute.setup
    monkeypatch.setattr(distribute, "setup", lambda *args: made.append(setup(*args)) or made[-1])
    summary = fit(config, verbose=0)
    assert summary["epochs"] == 1 and (tmp_path / "m" / "model.keras").is_file()
    # the run trained under a MirroredStrategy (a run that ignored --distribute mirrored passed the lines above)
    (cluster,) = made
    assert isinstance(cluster.strategy, tf.distribute.MirroredStrategy) and cluster.replicas >= 1


# Not backend-marked: streaming is numpy, and fitting is covered on JAX by the other tests.
def test_training_streams_shards_two_at_a_time(tiny_ibug, tmp_path):
    from facelandmarks.data.prepare import PrepareOptions, prepare

    source = tiny_ibug["root"] / "youtube68"
    options = PrepareOptions(size=32, out=str(tmp_path / "sharded"), workers=1, progress=False, shard_size=12)
    prepare([("youtube68", str(source))], options)
    shards = npz.ShardSet(tmp_path / "sharded_train.shards.json")
    assert len(shards) >= 5
    # workers of a cluster read disjoint shards that together cover the set
    halves = [FaceParts(shards, None, worker_index=i, workers=2) for i in range(2)]
    assert set(halves[0].indices).isdisjoint(halves[1].indices)
    assert halves[0].faces + halves[1].faces == shards.faces
    parts = FaceParts(shards, None)
    batches = LandmarkBatches(parts, 8)
    seen = 0
    for index in range(len(batches)):
        x, y = batches[index]
        seen += len(x)
        assert len(parts._cache) <= 2
    assert seen == shards.faces
    config = TrainConfig(model="scratch", data=str(tmp_path / "sharded_train.shards.json"),
                                  val=str(tmp_path / "sharded_test.shards.json"), run_dir=str(tmp_path / "run"),
                                  epochs=2, batch=8, workers=1)
    summary = fit(config, verbose=0)
    assert summary["epochs"] == 2 and np.isfinite(summary["val_nme"])
