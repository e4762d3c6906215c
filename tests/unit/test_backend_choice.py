"""Keras's backend, decided before Keras loads: a plain ``facelandmarks[jax]`` install runs on JAX without
``KERAS_BACKEND``; a plain ``facelandmarks[onnx]`` install (Keras, no backend) gets one line saying what to
install instead of a traceback from deep inside Keras."""

import json
import os
import subprocess
import sys
from pathlib import Path

from facelandmarks import runtime

ROOT = Path(__file__).resolve().parents[2]
MISSING = "no_such_backend_module"  # a KERAS_BACKEND whose module is not installed anywhere


def _without_keras(monkeypatch, tmp_path, keras_json=None):
    """This process as a script sees it before Keras loads: no KERAS_BACKEND, its own KERAS_HOME."""
    # set, then removed: monkeypatch records an unset variable only so, and undoes the KERAS_BACKEND=jax that
    # backend_missing() sets (left behind, later tests in this process built their models on JAX)
    monkeypatch.setenv("KERAS_BACKEND", "")
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    if keras_json is not None:
        (tmp_path / "keras.json").write_text(json.dumps(keras_json))
    monkeypatch.delitem(sys.modules, "keras", raising=False)


def test_the_backend_asked_for_is_read_as_keras_reads_it(monkeypatch, tmp_path):
    _without_keras(monkeypatch, tmp_path)
    assert runtime.configured_backend() is None
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))  # what Keras writes by itself
    assert runtime.configured_backend() is None
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert runtime.configured_backend() == "jax"
    (tmp_path / "keras.json").write_text("{not json")
    assert runtime.configured_backend() is None
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # the variable wins over the file, as in Keras
    assert runtime.configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    monkeypatch.setenv("KERAS_BACKEND", "")  # set empty: Keras takes keras.json's ('' was read as no choice at all)
    assert runtime.configured_backend() == runtime.keras_backend() == "jax"


def test_jax_is_chosen_where_it_is_the_only_backend_and_none_was_asked_for(monkeypatch, tmp_path):
    installed = {"jax"}
    monkeypatch.setattr(runtime, "_installed", lambda name: name in installed)
    _without_keras(monkeypatch, tmp_path, {"backend": "tensorflow"})
    assert runtime.backend_missing() is None and os.environ["KERAS_BACKEND"] == "jax"
    # asked for by name: kept, and reported when it is missing
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert "'tensorflow' (KERAS_BACKEND) is not installed" in runtime.backend_missing()
    # neither installed: the message names TensorFlow, Keras's default, and how to get a backend
    installed.clear()
    monkeypatch.delenv("KERAS_BACKEND")
    message = runtime.backend_missing()
    assert "KERAS_BACKEND" not in os.environ and "'tensorflow'" in message and "facelandmarks[jax]" in message
    assert "\n" not in message


def test_nothing_is_decided_once_keras_is_loaded(monkeypatch):
    import keras  # noqa: F401

    monkeypatch.setenv("KERAS_BACKEND", MISSING)
    assert runtime.backend_missing() is None  # Keras's backend is already there


def _hiding(tmp_path, *modules, **variables):
    """The environment of a subprocess in which ``modules`` are not installed (a ``sitecustomize`` marks them
    missing in ``sys.modules``: their import fails, ``find_spec`` finds nothing), as in a plain install without
    them; ``variables`` are set too."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "KERAS_HOME": str(tmp_path), **variables}


def test_a_script_without_its_backend_ends_with_one_line(tmp_path):
    env = _hiding(tmp_path, "tensorflow", "jax", KERAS_BACKEND=MISSING)  # a plain [onnx] install: no backend at all
    done = subprocess.run([sys.executable, "models.py", "--list"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(f"models.py: Keras's backend '{MISSING}' (KERAS_BACKEND) is not installed: pip install")


def test_the_api_names_the_run_and_what_to_install(tmp_path):
    # the shipped model through Keras (a plain [onnx] install has no export of it): a clear ModuleNotFoundError
    code = ("from facelandmarks import Predictor\n"
            "try:\n"
            "    Predictor.load(runtime='keras')\n"
            "except ModuleNotFoundError as err:\n"
            "    print(err)\n"
            "import sys; print('keras' in sys.modules)\n")
    env = _hiding(tmp_path, "tensorflow", "jax", KERAS_BACKEND=MISSING)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    message, keras_loaded = done.stdout.splitlines()
    assert message.endswith(f"mobilenetv2-pip-128: no export of these weights to run without Keras; Keras's backend "
                            f"'{MISSING}' (KERAS_BACKEND) is not installed: pip install 'facelandmarks[tensorflow]' or "
                            "'facelandmarks[jax]'; an exported model (export.py, which needs [export]) runs without one")
    assert keras_loaded == "False"


def test_a_backend_asked_for_but_missing_points_to_the_one_installed(monkeypatch, tmp_path):
    # a JAX-only install with KERAS_BACKEND=tensorflow left in the shell: installing JAX again is no answer
    monkeypatch.setattr(runtime, "_installed", lambda name: name == "jax")
    _without_keras(monkeypatch, tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    message = runtime.backend_missing()
    assert message == ("Keras's backend 'tensorflow' (KERAS_BACKEND) is not installed, but 'jax' is: set "
                       "KERAS_BACKEND=jax (or unset it), or pip install 'facelandmarks[tensorflow]'")
    # asked for by keras.json, TensorFlow alone installed
    monkeypatch.setattr(runtime, "_installed", lambda name: name == "tensorflow")
    _without_keras(monkeypatch, tmp_path, {"backend": "jax"})
    assert runtime.backend_missing() == ("Keras's backend 'jax' (keras.json) is not installed, but 'tensorflow' is: "
                                         "set KERAS_BACKEND=tensorflow (or remove 'backend' from keras.json), or pip "
                                         "install 'facelandmarks[jax]'")
    # neither installed, in a plain install: the export script by the name it has there
    monkeypatch.setattr(runtime, "_installed", lambda name: False)
    monkeypatch.setattr(runtime, "working_copy", lambda: False)
    message = runtime.backend_missing()
    assert "(facelandmarks-export, which needs [export])" in message and "export.py" not in message


def test_a_jax_only_script_asked_for_tensorflow_says_so_in_one_line(tmp_path):
    env = _hiding(tmp_path, "tensorflow", KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "models.py", "--list"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("models.py: Keras's backend 'tensorflow' (KERAS_BACKEND) is not installed, but 'jax' is: "
                           "set KERAS_BACKEND=jax (or unset it), or pip install 'facelandmarks[tensorflow]'\n")
