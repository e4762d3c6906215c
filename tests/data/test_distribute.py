"""Distributed training: a real two-process MultiWorkerMirroredStrategy cluster, JAX data parallelism, shards."""

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


def test_two_worker_cluster_agrees_and_only_the_chief_writes(tiny_ibug, tmp_path):
    run_dir = tmp_path / "run"
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    jobs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TMPDIR=str(scratch), CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        jobs.append((train_command(tiny_ibug["train"], run_dir, "--distribute", "multiworker", "--max-faces", "64",
                                   "--steps-per-epoch", "100"), env))
    results = run_cluster(jobs, timeout=300)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    # the run's lines, once, from the chief (every worker printed them)
    for start in ("--max-faces 64: training on 64 of the ", "--steps-per-epoch 100: a pass over the training faces is "):
        assert [sum(line.startswith(start) for line in out.splitlines()) for _, out, _ in results] == [1, 0], start
    chief, worker = (summary_of(out) for _, out, _ in results)
    assert chief["weights_sha1"] == worker["weights_sha1"], "workers ended with different weights"
    assert chief["val_nme"] == worker["val_nme"]
    for name in ("config.json", "best.weights.h5", "last.weights.h5", "model.keras", "history.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    # the other worker wrote into a private scratch folder and removed it
    assert list((tmp_path / "tmp1").iterdir()) == []
    config = json.loads((run_dir / "config.json").read_text())
    assert config["distribute"] == "multiworker"
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once


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


def test_a_job_of_two_jax_processes_agrees_and_only_the_first_writes(tiny_ibug, tmp_path):
    # several JAX processes joined by keras.distribution.initialize (docs/training.md#several-gpus-or-machines): Keras's
    # auto-sharding refused the batches; once past it, predicting the validation faces failed reading the other
    # process's devices, process 0 alone saving model.keras waited for the other for ever, and processes given
    # different numbers of faces took different numbers of steps, the one with a step more waiting in it for ever
    data = npz.load_npz(tiny_ibug["train"])
    count = len(data["landmarks"]) // 16 * 16 - 1  # 8j faces for process 0, 8j - 1 for process 1: batches of 8
    npz.save_npz(tmp_path / "faces.npz", npz.subset(data, np.arange(count)))
    (tmp_path / "val.npz").write_bytes(Path(tiny_ibug["test"]).read_bytes())
    run_dir, port = tmp_path / "run", free_ports(1)[0]
    jobs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(os.environ, KERAS_BACKEND="jax", TMPDIR=str(scratch), CUDA_VISIBLE_DEVICES="",
                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                   KERAS_DISTRIBUTION_PROCESS_ID=str(index))
        command = train_command(tmp_path / "faces.npz", run_dir, "--val", tmp_path / "val.npz", "--epochs", "1",
                                "--distribute", "data-parallel")
        jobs.append(([str(word) for word in command], env))
    results = run_cluster(jobs, timeout=400)
    for code, _, err in results:
        assert code == 0, err[-3000:]
        assert "oneDNN" not in err, err[-2000:]  # TensorFlow's start-up lines, which keras.distribution.initialize let out
    (_, out0, _), (_, out1, _) = results
    steps = (count + 1) // 16  # each process's batches, process 1's last of 7 faces padded (it was left out)
    assert f"{steps}/{steps} - " in out0, out0[-2000:]
    first, second = summary_of(out0), summary_of(out1)
    assert first["weights_sha1"] == second["weights_sha1"] and first["val_nme"] == second["val_nme"]
    for name in ("config.json", "best.weights.h5", "last.weights.h5", "model.keras", "history.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((tmp_path / "tmp1").iterdir()) == []  # process 1 wrote into a scratch folder, removed at the end
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 2


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
