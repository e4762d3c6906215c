"""Keras's device and CPU threads: ``Predictor.load(runtime='keras', threads=N)`` and ``evaluate.py --threads N``
(once ignored in silence, Keras running on all cores), and the device the timing column of evaluation tables names
(once 'CPU ms/face' of a model Keras ran on a GPU).

The threads are tested in fresh processes: TensorFlow sets them once, when it starts, for the whole process.
No face data: a random-weight scratch CNN stands in for a trained run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from facelandmarks.inference import keras_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as train.py leaves it (config.json + best.weights.h5), its weights the same on either backend."""
    from facelandmarks.models import build_model

    run = tmp_path_factory.mktemp("runs") / "scratch-random"
    run.mkdir()
    options = {"filters": [4, 4, 4, 4], "dense_units": [8]}
    build_model("scratch", input_shape=(32, 32, 3), num_points=68, **options).save_weights(run / "best.weights.h5")
    config = {"model": "scratch", "scheme": "ibug68", "input_shape": [32, 32, 3], "num_points": 68,
              "model_options": options, "weights": "none"}
    (run / "config.json").write_text(json.dumps(config))
    return run


def _python(code: str, backend: str = "tensorflow") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_keras_on_tensorflow_runs_on_the_threads_asked_for(run_dir):
    code = (
        "import numpy as np, tensorflow as tf\n"
        "from facelandmarks.inference.predictor import Predictor\n"
        f"predictor = Predictor.load({str(run_dir)!r}, runtime='keras', threads=1)\n"
        "predictor.predict_crops(np.zeros((2, 32, 32, 3), np.uint8))\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())\n"
        f"Predictor.load({str(run_dir)!r}, runtime='keras', threads=1)  # the same again: nothing to say\n"
        "print('again', flush=True)\n"
        f"Predictor.load({str(run_dir)!r}, runtime='keras', threads=2)  # TensorFlow has started: said, not applied\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "again"]
    assert done.stderr.strip().splitlines()[-1] == (
        f"{run_dir}: threads=2 not applied: TensorFlow started earlier in this process on 1 thread and keeps them (set "
        "threads in the first load)")


def test_evaluate_threads_reach_keras_on_tensorflow(run_dir, tmp_path):
    """evaluate.py --threads 1 with a run through Keras: TensorFlow on one thread (it said 'on all cores' and ran so)."""
    code = (
        "import tensorflow as tf\n"
        "from facelandmarks.cli import evaluate\n"
        "evaluate._run = lambda args: print(tf.config.threading.get_intra_op_parallelism_threads()) or 0\n"
        f"raise SystemExit(evaluate.main([{str(run_dir)!r}, '--runtime', 'keras', '--threads', '1', '--image', 'a.jpg', "
        f"'--out', {str(tmp_path)!r}]))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"] and "threads" not in done.stderr


def test_threads_keras_on_jax_cannot_keep_to_are_refused(run_dir, tmp_path):
    """XLA has no setting for fewer threads than cores: refused in one line, where it was ignored in silence."""
    pytest.importorskip("jax")
    cores = os.cpu_count()
    if cores < 2:
        pytest.skip("one core: one thread is all of them")
    code = (
        "from facelandmarks.cli import evaluate\n"
        "from facelandmarks.inference.predictor import Predictor\n"
        f"Predictor.load({str(run_dir)!r}, runtime='keras', threads={cores})  # all cores: what JAX does anyway\n"
        "try:\n"
        f"    Predictor.load({str(run_dir)!r}, runtime='keras', threads=1)\n"
        "except ValueError as err:\n"
        "    print(err)\n"
        f"print(evaluate.main([{str(run_dir)!r}, '--runtime', 'keras', '--threads', '1', '--image', 'a.jpg', "
        f"'--out', {str(tmp_path / 'out')!r}]))\n"
    )
    done = _python(code, backend="jax")
    assert done.returncode == 0, done.stderr
    said = (f"Keras on jax runs on all {cores} cores, not {{}}1 (jax has no setting for fewer); an export (export.py) "
            "runs on 1, as does Keras on TensorFlow")
    assert done.stdout.splitlines() == [f"{run_dir}: {said.format('threads=')}", "2"]
    assert done.stderr.strip().splitlines()[-1] == f"evaluate.py: {run_dir}: {said.format('--threads ')}"
    assert not (tmp_path / "out").exists()


def test_the_device_is_the_one_the_backend_computes_on(monkeypatch):
    import keras
    import tensorflow as tf

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
    assert keras_settings.device() == "GPU"
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    assert keras_settings.device() == "CPU"
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for platform, said in (("cuda", "GPU"), ("gpu", "GPU"), ("rocm", "GPU"), ("tpu", "TPU"), ("cpu", "CPU")):
        monkeypatch.setattr(jax, "devices", lambda platform=platform: [SimpleNamespace(platform=platform)])
        assert keras_settings.device() == said


def test_an_export_runs_on_the_cpu_whatever_keras_would_use(monkeypatch):
    from facelandmarks.inference.predictor import Predictor

    monkeypatch.setattr(keras_settings, "device", lambda: "GPU")
    exported = SimpleNamespace(runtime="onnx")
    assert Predictor.device.fget(SimpleNamespace(runtime="onnx", model=exported)) == "CPU"
    assert Predictor.device.fget(SimpleNamespace(runtime="keras")) == "GPU"
