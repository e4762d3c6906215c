"""``--distribute multiworker`` in a real two-process TensorFlow cluster on 127.0.0.1, without face data (random
images; a worker that cannot read its faces: ``tests/data/test_distribute.py``)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from facelandmarks.data import npz
from tests.unit.test_train_errors import faces

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def cluster_envs(tmp_path, workers=2):
    """Each worker's environment: TF_CONFIG naming free ports on 127.0.0.1, TensorFlow on the CPU, a temporary folder
    of its own (``tmp_path/tmp<index>``: where a worker other than the chief writes its copy of the run)."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    for index in range(workers):
        (tmp_path / f"tmp{index}").mkdir(exist_ok=True)
    return [dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path / f"tmp{index}"),
                 TF_CONFIG=json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}))
            for index in range(workers)]


def start(command, envs):
    return [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True) for env in envs]


def finish(processes, timeout):
    """Every process's (exit status, stdout, stderr); any still running at the end is killed."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
        return [(p.returncode, *output) for p, output in zip(processes, outputs)]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def train(data, run_dir, *extra, preview_every=0):
    return [sys.executable, str(ROOT / "train.py"), "mlp", "--data", str(data), "--run-dir", str(run_dir),
            "--val-fraction", "0.25", "--batch", "8", "--schedule", "constant", "--augment", "flip=0.5,noise=5",
            "--model-options", '{"hidden_units": [16], "dropout": 0.5}', "--preview-every", str(preview_every),
            "--workers", "1", "--distribute", "multiworker", *extra]


def run_cluster(tmp_path, command, timeout=240):
    results = finish(start(command, cluster_envs(tmp_path)), timeout)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    return results


def test_a_resumed_multiworker_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    # Each worker fed batches of its share of the global batch, which tf.distribute takes for the global batch and
    # splits among every replica of the cluster: a step of two workers took half of each worker's batch, so an epoch
    # trained on half the faces it counted, and a resumed run skipped the faces the finished epochs had counted, half
    # of them never trained on (its epoch 2 trained on other faces than the uninterrupted run's: other weights)
    # The uninterrupted run is also the check of a cluster's run: every worker ends with the same weights, the run's
    # lines come once (from the chief; every worker printed them), and only the chief writes the run folder, the other
    # worker into a private scratch folder that it removes. Each of its options is one the lines are checked for
    data = npz.save_npz(tmp_path / "faces.npz", faces(40))  # 30 training faces, 28 kept: 14 per worker, an epoch ends mid-pass
    options = ("--max-faces", "28", "--steps-per-epoch", "100")
    (chief, worker) = run_cluster(tmp_path, train(data, tmp_path / "whole", "--epochs", "2", *options, preview_every=1))
    for start in ("--max-faces 28: training on 28 of the ", "--steps-per-epoch 100: a pass over the training faces is "):
        assert [sum(line.startswith(start) for line in out.splitlines()) for _, out, _ in (chief, worker)] == [1, 0], start
    summaries = [json.loads(out[out.index("{"):]) for _, out, _ in (chief, worker)]
    assert summaries[0]["weights_sha1"] == summaries[1]["weights_sha1"] and summaries[0]["val_nme"] == summaries[1]["val_nme"]
    for name in ("config.json", "best.weights.h5", "last.weights.h5", "model.keras", "history.csv", "summary.json"):
        assert (tmp_path / "whole" / name).is_file(), name
    assert list((tmp_path / "whole" / "logs" / "previews").iterdir()), "the chief's previews (TensorBoard)"
    assert list((tmp_path / "tmp1").iterdir()) == []
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["distribute"] == "multiworker"
    run_cluster(tmp_path, train(data, tmp_path / "resumed", "--epochs", "1", *options, preview_every=1))
    (_, out, _), _ = run_cluster(tmp_path, train(data, tmp_path / "resumed", "--epochs", "2", "--resume"))
    assert "resuming" in out and "at epoch 2" in out, out[-2000:]

    def history(run):
        with open(tmp_path / run / "history.csv", newline="") as handle:
            return [(row["loss"], row["val_loss"]) for row in csv.DictReader(handle)]

    def weights(run):
        found = {}
        with h5py.File(tmp_path / run / "last.weights.h5") as f:
            f.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
        return found

    assert len(history("whole")) == 2 and history("resumed") == history("whole")  # written once: no epoch twice
    whole, resumed = weights("whole"), weights("resumed")
    assert whole.keys() == resumed.keys() and any(name.startswith("optimizer") for name in whole)
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def test_a_worker_whose_partner_was_killed_ends_on_sigterm_with_its_last_epoch_loadable(tmp_path):
    # TensorFlow's coordination service took SIGTERM for its preemption notifier when the strategy started: the
    # worker ignored it (healthy, or waiting in a step for its SIGKILLed partner) until TensorFlow noticed the loss,
    # then ended as after any lost worker (status 2), and only SIGKILL stopped a worker in time. SIGTERM now winds it
    # down as Ctrl-C does, or, where the wind-down does not end within FACELANDMARKS_STOP_TIMEOUT, the process ends
    # itself with one line; either way the checkpoints of its last committed epoch stay as they were
    from facelandmarks.training.resume import BEST, LAST, find_checkpoint, read_state

    data = npz.save_npz(tmp_path / "faces.npz", faces(400))
    run_dir = tmp_path / "run"
    envs = [dict(env, FACELANDMARKS_STOP_TIMEOUT="2") for env in cluster_envs(tmp_path)]
    survivor, partner = processes = start(train(data, run_dir, "--epochs", "1000"), envs)
    try:
        while not (run_dir / "state.json").is_file() and survivor.poll() is None and partner.poll() is None:
            time.sleep(0.2)
        assert survivor.poll() is None and partner.poll() is None, "a worker ended before its first epoch"
        os.killpg(partner.pid, signal.SIGKILL)
        survivor.send_signal(signal.SIGTERM)
    except BaseException:
        finish(processes, timeout=1)
        raise
    (code, _, err), _ = finish(processes, timeout=120)
    assert code == 143 and "Traceback" not in err, err[-3000:]
    # its last line of its own; TensorFlow's collective executor may still log the partner's loss after it from C++
    # (E0000 ... ring_alg.cc: Aborting RingReduce with UNAVAILABLE, and gRPC's detail lines), as the process ends
    last = [line for line in err.splitlines() if line.startswith(("terminated", "train.py"))][-1]
    assert last.startswith("terminated") and last.endswith(f"--resume --run-dir {run_dir}"), err[-3000:]
    state = read_state(run_dir)
    for name in (LAST, BEST):
        path, problem = find_checkpoint(run_dir, name, state)
        assert problem == "" and h5py.is_hdf5(path), (name, problem)
