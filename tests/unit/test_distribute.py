"""Distributed training without face data: TF_CONFIG parsing (real clusters: ``tests/data/test_distribute.py``)."""

import numpy as np
import pytest

from facelandmarks.training import distribute


def test_tf_config_errors_name_the_problem(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(ValueError, match="task type 'ps' is not in the cluster"):
        distribute.read_tf_config()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}')
    with pytest.raises(ValueError, match=r"TF_CONFIG: task index 2 is not in the cluster, whose 2 worker task\(s\) count from 0"):
        distribute.read_tf_config()  # TensorFlow's 'The `task_id` 2 exceeds the maximum id of worker.'
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
for loss in sys.argv[1:]:
    results = []
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), keras.layers.Reshape((3, 2))])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss=get_loss(loss),
                          metrics=[keras.metrics.MeanMetricWrapper(masked_mse, name="mse")])
        before = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append((before["loss"], before["mse"], model.get_weights()[0]))
    (loss1, mse1, w1), (loss2, mse2, w2) = results
    np.testing.assert_allclose([loss2, mse2], [loss1, mse1], rtol=1e-5, err_msg=loss)
    np.testing.assert_allclose(w2, w1, rtol=1e-5, atol=1e-7, err_msg=loss)
"""


def test_a_strategy_of_two_replicas_trains_and_reports_as_one_device():
    # the losses return one scalar per batch, which Keras does not divide by the replicas before their gradients
    # are summed: two replicas reported twice the loss and stepped twice as far (on top of the scaled rate). Both
    # losses in one process (its start is most of the time)
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, "mse", "wing"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.backend
def test_a_mode_of_the_other_backend_says_what_to_do_and_for_a_resumed_run_how_to_go_on():
    # the hint was 'use data-parallel' even for --resume, which refuses another --distribute; a mirrored run has
    # to go on under TensorFlow (or start anew from its weights)
    import keras

    other, needs, instead = (("mirrored", "tensorflow", "use data-parallel") if keras.config.backend() == "jax"
                             else ("data-parallel", "jax", "use mirrored or multiworker"))
    with pytest.raises(ValueError, match=f"--distribute {other} is .*KERAS_BACKEND={keras.config.backend()} \\({instead}\\)"):
        distribute.setup(other)
    with pytest.raises(ValueError, match=f"\\(resume runs/a with KERAS_BACKEND={needs}, or start a new run from its "
                                         "weights with --init runs/a\\)"):
        distribute.setup(other, resumed="runs/a")


def _faces(count, sources=None):
    return {"images": np.zeros((count, 4, 4, 1), np.uint8), "landmarks": np.full((count, 3, 2), 0.5, np.float32),
            "visible": np.ones((count, 3), bool), "source": np.array(sources or ["a"] * count)}


def _epoch_lengths(parts_of, per_worker, steps, workers=2):
    from facelandmarks.data.feeding import LandmarkBatches

    return [[len(LandmarkBatches(parts_of(w), per_worker, seed=w, pad_remainder=True, max_batches=steps).plan_of(e))
             for w in range(workers)] for e in range(3)]


@pytest.mark.parametrize("count, per_worker, oversample, unequal", [
    (199, 10, None, [10, 10]),  # 100 and 99 faces: ten batches each, the second's last of 9 faces padded
    (201, 10, None, [11, 10]),  # 101 and 100 faces: the first process took an eleventh step and waited in it for ever
    (12, 2, {"b": 3}, [3, 9]),  # the oversampled faces (every second) fall to one process
])
def test_every_process_of_a_jax_job_takes_as_many_batches(count, per_worker, oversample, unequal):
    from facelandmarks.data.feeding import FaceParts

    data = _faces(count, None if oversample is None else ["a", "b"] * (count // 2))
    job = distribute.Cluster("data-parallel", replicas=2, workers=2)
    steps = distribute.equal_batches(job, data, per_worker, oversample)

    def parts_of(worker):
        return FaceParts(data, None, worker_index=worker, workers=2, oversample=oversample)

    assert _epoch_lengths(parts_of, per_worker, None)[0] == unequal  # what each process would take by itself
    assert _epoch_lengths(parts_of, per_worker, steps) == [[min(unequal)] * 2] * 3
    # one process, or a tf.distribute strategy (whose stream of faces sets its own steps): no cut
    assert distribute.equal_batches(distribute.Cluster("data-parallel"), data, per_worker, oversample) is None
    assert distribute.equal_batches(distribute.Cluster("multiworker", workers=2), data, per_worker, oversample) is None


def test_a_jax_job_over_shards_takes_the_batches_of_its_process_with_the_fewest(tmp_path):
    from facelandmarks.data import npz
    from facelandmarks.data.feeding import FaceParts

    whole = {**_faces(29), "scheme": np.array("ibug68")}
    whole["landmarks"], whole["visible"] = np.full((29, 68, 2), 0.5, np.float32), np.ones((29, 68), bool)
    shards, start = [], 0
    for i, size in enumerate((12, 5, 12)):  # process 0 takes shards 0 and 2 (6 batches of 4), process 1 shard 1 (2)
        npz.save_npz(npz.shard_path(tmp_path / "s_train", i), npz.subset(whole, np.arange(start, start + size)))
        shards.append({"file": npz.shard_path(tmp_path / "s_train", i), "faces": size})
        start += size
    train = npz.ShardSet(npz.write_manifest(tmp_path / "s_train.shards.json", shards, "ibug68", (4, 4, 1)))
    job = distribute.Cluster("data-parallel", replicas=2, workers=2)
    steps = distribute.equal_batches(job, train, 4)

    def parts_of(worker):
        return FaceParts(train, None, worker_index=worker, workers=2)

    assert _epoch_lengths(parts_of, 4, None)[0] == [6, 2]  # shard 1's last face in a batch of its own, padded
    assert steps == 2 and _epoch_lengths(parts_of, 4, steps) == [[2, 2]] * 3
    # a process with fewer faces than its batch: said by every process (one refusing alone left the other waiting),
    # naming the shard set and that process's shards (the line named neither)
    with pytest.raises(ValueError) as refused:
        distribute.equal_batches(job, train, 8)
    assert str(refused.value) == (f"{train.manifest}: a process of this 2-process job has 5 training faces (its shard "
                                  f"{train.files[1].name}), fewer than its --batch of 8")
    npz.save_npz(npz.shard_path(tmp_path / "one_train", 1), npz.subset(whole, np.arange(1)))
    one = npz.ShardSet(npz.write_manifest(tmp_path / "one_train.shards.json", [
        {"file": npz.shard_path(tmp_path / "s_train", 0), "faces": 12},
        {"file": npz.shard_path(tmp_path / "one_train", 1), "faces": 1}], "ibug68", (4, 4, 1)))
    with pytest.raises(ValueError, match=r"has 1 training face \(its shard "):  # singular ('1 training faces')
        distribute.equal_batches(job, one, 4)
    with pytest.raises(ValueError) as refused:  # an npz's faces, shared out by the processes
        distribute.equal_batches(job, _faces(9), 8, data="faces_train.npz")
    assert str(refused.value) == ("faces_train.npz: a process of this 2-process job has 4 of the 9 training faces, fewer "
                                  "than its --batch of 8")  # 'of its 9' read as the process's
    with pytest.raises(ValueError) as refused:  # 6 faces, the 3 of source b twice: 9 in an epoch, not in the file
        distribute.equal_batches(job, _faces(6, ["a", "b"] * 3), 8, {"b": 2}, data="faces_train.npz")
    assert str(refused.value) == ("faces_train.npz: a process of this 2-process job has 3 of the 9 training faces of an "
                                  "epoch (--oversample's repeats counted), fewer than its --batch of 8")


def test_a_jax_job_restarting_the_head_for_another_markup_and_taught_by_teachers_agrees(tmp_path):
    """--init from a run of another markup (--init-head nearest) in a job of two JAX processes ended in "AssertionError:
    <class 'jaxlib._jax.ArrayImpl'> passed to device_put is not the same on each process": restarting the head set its
    weights to NaN first, and JAX checks that every process assigns the same value (NaN equals nothing). Past that,
    Keras's predict of the nearest points failed across processes ("Fetching value for `jax.Array` that spans
    non-addressable ... devices is not possible"), and each process would have matched points on its own faces. Now the
    processes predict together on process 0's faces and restart the head alike. --teachers was right already (every
    process predicts every training face): the same targets, the same weights."""
    import os
    import sys
    from pathlib import Path

    from facelandmarks.data import npz
    from facelandmarks.landmarks import Scheme
    from tests.data.test_distribute import free_ports, run_cluster, summary_of
    from tests.unit.test_init_head import FACE5, PICKED, shaped_faces

    arrays = shaped_faces(56)  # the five points lie near their ibug68 ones in what a tiny model learns of them
    ibug = npz.save_npz(tmp_path / "ibug.npz", npz.subset(arrays, np.arange(48)))
    for name, rows in (("five", np.arange(48)), ("five_val", np.arange(48, 56))):
        npz.save_npz(tmp_path / f"{name}.npz", npz.select_points(npz.subset(arrays, rows), Scheme.from_dict(FACE5), PICKED))
    train_py = str(Path(__file__).resolve().parents[2] / "train.py")
    tiny = [sys.executable, train_py, "mlp", "--batch", "4", "--augment", "none", "--preview-every", "0", "--workers",
            "1", "--model-options", '{"hidden_units": [16]}', "--val-fraction", "0"]
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    # a teacher of 1 epoch, whose points lie far off: the nearest points match the annotations. Both are the job's
    # inputs, trained by train.py's main in this process (each a JAX process of its own took 9-10 s alone)
    from facelandmarks.cli.train import main

    for run, data, epochs in (("ibug", ibug, "8"), ("teacher", tmp_path / "five.npz", "1")):
        assert main([*tiny[2:], "--data", str(data), "--run-dir", str(tmp_path / run), "--epochs", epochs,
                     "--lr", "0.01"]) == 0
    port, jobs = free_ports(1)[0], []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir()
        command = [*tiny, "--data", str(tmp_path / "five.npz"), "--val", str(tmp_path / "five_val.npz"), "--run-dir",
                   str(tmp_path / "job"), "--epochs", "1", "--init", str(tmp_path / "ibug"), "--init-head", "nearest",
                   "--teachers", str(tmp_path / "teacher"), "--distribute", "data-parallel"]
        jobs.append((command, dict(env, TMPDIR=str(tmp_path / f"tmp{index}"), KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                                   KERAS_DISTRIBUTION_PROCESS_ID=str(index))))
    results = run_cluster(jobs, timeout=400)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    (_, out0, _), (_, out1, _) = results

    def said(out, start):
        (line,) = [line for line in out.splitlines() if line.startswith(start)]
        return line

    for start in ("--init-head nearest: ", "distillation: "):  # the same points restarted, the same targets
        assert said(out0, start) == said(out1, start)
    restarted = said(out0, "--init-head nearest: ")
    assert restarted.startswith("--init-head nearest: 5 of 5 points ") and "nearest them on 24 training faces" in \
        restarted and "right_eye <- ibug68 36 " in restarted, restarted
    first, second = summary_of(out0), summary_of(out1)
    assert first["weights_sha1"] == second["weights_sha1"] and first["val_nme"] == second["val_nme"]


@pytest.mark.backend
def test_a_data_parallel_run_of_one_jax_process_trains_every_face_of_each_epoch(tmp_path, monkeypatch):
    """--distribute data-parallel dropped each epoch's (and each shard's) short last batch, even in one process: 30
    faces at batch 8 trained 24 an epoch, and shards each smaller than the batch left an epoch without a batch (an
    IndexError traceback). The short batch now comes padded to the batch size, as on JAX without --distribute."""
    import keras

    from facelandmarks.data import feeding, npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from tests.unit.test_train import _shard_set
    from tests.unit.test_train_errors import faces

    if keras.backend.backend() != "jax":
        pytest.skip("data-parallel is Keras's JAX distribution")
    trained, batch = {}, feeding.LandmarkBatches.__getitem__

    def counted(self, index):  # the faces (rows with a visible point) of each step Keras takes
        x, targets = batch(self, index)
        assert len(x) == self.batch_size
        trained[self.epoch, index] = int((targets[..., 2] > 0).any(axis=1).sum())
        return x, targets

    monkeypatch.setattr(feeding.LandmarkBatches, "__getitem__", counted)
    manifest, val = _shard_set(tmp_path, (3, 3, 2))
    for name, data, faces_per_epoch in (("npz", npz.save_npz(tmp_path / "faces.npz", faces(30)), 30),
                                        ("shards", manifest, 8)):
        trained.clear()
        summary = fit(TrainConfig(model="mlp", data=str(data), val=str(val), run_dir=str(tmp_path / name), epochs=2,
                                  batch=8 if name == "npz" else 4, augment="none", model_options={"hidden_units": [4]},
                                  preview_every=0, workers=1, distribute="data-parallel"), verbose=0)
        assert summary["epochs"] == 2
        for epoch in (0, 1):
            assert sum(n for (e, _), n in trained.items() if e == epoch) == faces_per_epoch, (name, trained)


def test_a_resumed_job_of_two_jax_processes_trains_on_the_same_padded_batches(tmp_path):
    """Several JAX processes joined by keras.distribution.initialize (docs/training.md#several-gpus-or-machines): Keras's
    auto-sharding refused the batches; once past it, predicting the validation faces failed reading the other process's
    devices, process 0 alone saving model.keras waited for the other for ever, and processes given different numbers
    of faces took different numbers of steps, the one with a step more waiting in it for ever. Here 19 and 18 faces at
    batch 4: each epoch of each process ends in a padded batch (of 3 and of 2; these were dropped), 5 steps each. The
    processes end with the same weights, and only process 0 writes the run. A job stopped after epoch 1 and resumed
    ends with the losses and weights of the uninterrupted job, with dropout and augmentation on."""
    import csv
    import os
    import sys
    from pathlib import Path

    import h5py

    from facelandmarks.data import npz
    from tests.data.test_distribute import free_ports, run_cluster, summary_of
    from tests.unit.test_train_errors import faces

    npz.save_npz(tmp_path / "faces.npz", faces(37))
    npz.save_npz(tmp_path / "val.npz", faces(8))
    train_py = str(Path(__file__).resolve().parents[2] / "train.py")

    def job(run, *extra):
        port, jobs = free_ports(1)[0], []
        for index in range(2):
            (tmp_path / f"tmp{index}").mkdir(exist_ok=True)
            command = [sys.executable, train_py, "mlp", "--data", str(tmp_path / "faces.npz"), "--val",
                       str(tmp_path / "val.npz"), "--run-dir", str(tmp_path / run), "--batch", "4", "--augment",
                       "flip=0.5,noise=5", "--preview-every", "0", "--workers", "1", "--schedule", "constant",
                       "--model-options", '{"hidden_units": [16], "dropout": 0.5}', "--distribute", "data-parallel",
                       *extra]
            jobs.append((command, dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="",
                                       TMPDIR=str(tmp_path / f"tmp{index}"), KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                       KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                                       KERAS_DISTRIBUTION_PROCESS_ID=str(index))))
        results = run_cluster(jobs, timeout=400)
        for code, _, err in results:
            assert code == 0, err[-3000:]
            assert "oneDNN" not in err, err[-2000:]  # TensorFlow's start-up lines, which keras.distribution.initialize let out
        return results

    def weights(run):
        found = {}
        with h5py.File(tmp_path / run / "last.weights.h5") as f:
            f["layers"].visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset)
                                   else None)
        return found

    def losses(run):
        with open(tmp_path / run / "history.csv", newline="") as handle:
            return [row["loss"] for row in csv.DictReader(handle)]

    (_, out0, _), (_, out1, _) = job("whole", "--epochs", "2")
    assert "5/5 - " in out0, out0[-2000:]  # 4 batches of 4 faces and one of 3 (of 2 in process 1), padded
    first, second = summary_of(out0), summary_of(out1)
    assert first["weights_sha1"] == second["weights_sha1"] and first["val_nme"] == second["val_nme"]
    for name in ("config.json", "best.weights.h5", "last.weights.h5", "model.keras", "history.csv", "summary.json"):
        assert (tmp_path / "whole" / name).is_file(), name
    assert list((tmp_path / "tmp1").iterdir()) == []  # process 1 wrote into a scratch folder, removed at the end
    job("resumed", "--epochs", "1")
    job("resumed", "--epochs", "2", "--resume")
    assert len(losses("whole")) == 2 and losses("resumed") == losses("whole")  # written once: no epoch twice
    whole, resumed = weights("whole"), weights("resumed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def _jax_shard_job(folder, manifest, val):
    """A two-process JAX data-parallel job of a tiny mlp on the shard set ``manifest``: each process's (status, out,
    err), every process killed where one is left waiting past 120 s (TimeoutExpired)."""
    import os
    import sys
    from pathlib import Path

    from tests.data.test_distribute import free_ports, run_cluster

    train_py = str(Path(__file__).resolve().parents[2] / "train.py")
    port, jobs = free_ports(1)[0], []
    for index in range(2):
        (folder / f"tmp{index}").mkdir()
        command = [sys.executable, train_py, "mlp", "--data", str(manifest), "--val", str(val), "--run-dir",
                   str(folder / "run"), "--epochs", "1", "--batch", "4", "--augment", "none", "--preview-every", "0",
                   "--workers", "1", "--model-options", '{"hidden_units": [4]}', "--distribute", "data-parallel"]
        jobs.append((command, dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="",
                                   TMPDIR=str(folder / f"tmp{index}"), KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                                   KERAS_DISTRIBUTION_PROCESS_ID=str(index))))
    return run_cluster(jobs, timeout=120)


def own_last_line(err: str) -> str:
    """The last of train.py's own lines on a JAX process's stderr ("train.py: ..."). JAX's C++ coordination client may
    log after it when the other process ended first (E/F lines of coordination_service_agent.cc and client.h, gRPC's
    detail), as it did in the clean-clone CI at eafe6f7, the process still ending 2 with its line."""
    own = [line for line in err.splitlines() if line.startswith("train.py: ")]
    return own[-1] if own else ""


def test_a_jax_job_over_fewer_shards_than_processes_is_refused_by_every_process(tmp_path):
    """A shard set of one shard in a job of two JAX processes: the process left without a shard refused alone, and the
    other went on into a step that waited for it (both still there when `timeout 120` killed them). Now both refuse
    before training, in the same line, with status 2. Shards as many as the processes but very unequal (20 and 5
    faces at batch 4: 5 batches and 2) train the same 2 steps in each process, their stdout their own."""
    from tests.unit.test_train import _shard_set

    def job(counts):
        folder = tmp_path / "x".join(map(str, counts))
        manifest, val = _shard_set(folder, counts)
        return manifest, _jax_shard_job(folder, manifest, val)

    manifest, results = job((12,))
    said = f"train.py: {manifest}: 1 shard(s) for a job of 2 processes, each of which trains on shards of its own; "
    for code, out, err in results:
        assert code == 2 and own_last_line(err).startswith(said), err[-3000:]
        assert "{" not in out  # no summary: nothing trained
    assert own_last_line(results[0][2]) == own_last_line(results[1][2])
    _, results = job((20, 5))
    for code, out, err in results:
        assert code == 0, err[-3000:]
        # Gloo's C++ line ('[Gloo] Rank 0 is connected to 1 peer ranks. ...') was on each process's stdout, among the
        # run's own lines and before its summary
        assert "[Gloo]" not in out and out.rstrip().endswith("}"), out[-3000:]
        assert err.count("[Gloo] Rank ") == 1, err[-3000:]  # passed on to stderr, not dropped
    assert "2/2 - " in results[0][1]  # process 0's 5 batches cut to process 1's 2


def test_an_error_of_one_jax_process_ends_every_process_of_the_job(tmp_path):
    """A shard that one process of a two-process JAX job cannot read: that process said so in one line and then
    waited at exit in JAX's distributed shutdown for the other, which waited for it in a collective (build_model's
    check of the first weights): both were still there when `timeout 120` killed them. Now the failing process ends
    at once with its line and status 2, and the other within seconds: process 1's error, process 0 says in one line
    that another process stopped (status 2); process 0's error (the coordinator's), JAX itself ends process 1."""
    from tests.unit.test_train import _shard_set

    def job(broken):
        folder = tmp_path / f"broken{broken}"
        manifest, val = _shard_set(folder, (12, 12))
        shard = folder / f"s_train-0000{broken}.npz"
        shard.write_bytes(shard.read_bytes()[:5000])  # a truncated copy: the other process's shard is whole
        return shard, _jax_shard_job(folder, manifest, val)

    shard, ((code0, out0, err0), (code1, out1, err1)) = job(1)
    assert code1 == 2 and own_last_line(err1) == f"train.py: {shard}: not a readable npz file (File is not a zip file)", err1
    assert code0 == 2 and own_last_line(err0).startswith("train.py: --distribute data-parallel: another process of this "
                                                     "2-process job stopped"), err0[-3000:]
    assert "{" not in out0 + out1  # no summary: nothing trained
    shard, ((code0, _, err0), (code1, _, err1)) = job(0)
    assert code0 == 2 and own_last_line(err0) == f"train.py: {shard}: not a readable npz file (File is not a zip file)", err0
    assert code1 != 0, err1[-3000:]  # ended, not left waiting
