"""What a plain install without TensorFlow, onnxruntime or ai-edge-litert (``pip install 'facelandmarks[jax]'``) tells
its user: which extras an export needs before it runs, where to export a shipped model that is not the user's to
write, and help texts that do not send the user to files the install does not have."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.inference import runtimes
from facelandmarks.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("onnxruntime", "ai_edge_litert", "tensorflow", "onnx", "tf2onnx")  # a plain [jax] install lacks them


def _hiding(tmp_path, *modules, **variables):
    """The environment of a subprocess in which ``modules`` are not installed (as in test_backend_choice)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "KERAS_HOME": str(tmp_path), **variables}


@pytest.mark.parametrize("runtime, package", [("onnx", "onnxruntime"), ("litert", "ai-edge-litert")])
def test_a_runtime_asked_for_says_it_is_missing_beside_the_missing_export(tmp_path, monkeypatch, runtime, package):
    # it said "not exported (export.py RUN)" alone: the user exported, and the export still did not run
    monkeypatch.setattr(runtimes, "_installed", lambda name: False)
    with pytest.raises(runtimes.ExportError) as caught:
        Predictor.load(tmp_path, runtime=runtime)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: not exported, and {package} is not installed to run it (")
    assert f"'facelandmarks[{runtime}]')" in message and "\n" not in message
    monkeypatch.setattr(runtimes, "_installed", lambda name: True)  # installed: only the export is missing
    with pytest.raises(runtimes.ExportError, match=r"not exported \("):
        Predictor.load(tmp_path, runtime=runtime)


def test_evaluate_without_onnxruntime_names_the_export_and_both_extras_in_one_line(tmp_path):
    import cv2

    model = tmp_path / "shipped"
    model.mkdir()
    (model / "config.json").write_bytes(next((ROOT / "weights").glob("*/config.json")).read_bytes())
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    env = _hiding(tmp_path, *HIDDEN, FACELANDMARKS_WEIGHTS=str(model))
    done = subprocess.run([sys.executable, "evaluate.py", "--image", str(photo), "--runtime", "onnx", "--out",
                           str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"evaluate.py: {model}: not exported, and onnxruntime is not installed to run it (python "
                           f"export.py {model}, after pip install 'facelandmarks[export]' 'facelandmarks[onnx]')\n")


def _read_only_model(tmp_path, monkeypatch):
    """A shipped model's folder as a system-wide install leaves it for a user: chmod 555.  The tests run as root,
    whose os.access ignores permission bits, so os.access is made to read them as it does for other users."""
    import stat

    model = tmp_path / "share" / "facelandmarks" / "weights" / "shipped"
    model.mkdir(parents=True)
    (model / "config.json").write_bytes(next((ROOT / "weights").glob("*/config.json")).read_bytes())
    model.chmod(0o555)
    real = os.access

    def access(path, mode, **kwargs):  # write permission as the owner's bits give it, whoever runs the tests
        if mode & os.W_OK:
            return bool(os.stat(path).st_mode & stat.S_IWUSR)
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    return model


def test_a_model_the_user_cannot_write_is_exported_to_a_folder_of_theirs(tmp_path, monkeypatch, capsys):
    # the hints sent the user to export into <prefix>/share/facelandmarks/weights, which a system-wide install
    # does not let them write
    model = _read_only_model(tmp_path, monkeypatch)
    to = tmp_path / "home" / "facelandmarks" / "exports" / "shipped"
    advice = (f"(python export.py {model} --to {to}: its own folder is not writable here; then Predictor.load('{to}') "
              f"or python evaluate.py {to} --image PHOTO runs it)")
    monkeypatch.setattr(runtimes, "_installed", lambda name: True)
    with pytest.raises(runtimes.ExportError) as caught:
        Predictor.load(model, runtime="onnx")
    assert str(caught.value) == f"{model}: not exported {advice}"

    import keras

    from facelandmarks.cli.evaluate import _export_hint
    from facelandmarks.inference import packages

    monkeypatch.setattr(packages, "missing", lambda *args: {})
    _export_hint(model, "auto")  # after photos marked through Keras
    assert capsys.readouterr().out.startswith(f"ran through Keras on {keras.backend.backend()}: {model}: not exported "
                                              f"{advice}; an export runs without Keras")
    model.chmod(0o755)  # the user's own: exported beside it, as before
    assert runtimes.stale_export(model, model / "export", tools=()) == f"{model}: not exported (python export.py {model})"


@pytest.mark.skipif(not os.path.isdir("/proc/1"), reason="needs Linux's /proc")
def test_a_folder_not_even_root_may_write_is_not_offered(tmp_path, monkeypatch):
    # /proc/1: os.access says no to root too, without the permission-bit stand-in above
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert not runtimes.writable(Path("/proc/1"))
    assert f"--to {tmp_path / 'facelandmarks' / 'exports' / '1'}" in runtimes.how_to_export(Path("/proc/1"), tools=())


def _helps() -> dict:
    """Every script's --help text (datagen's with each command's)."""
    from facelandmarks.cli import datagen, evaluate, export, models, train

    texts = {name: module.build_parser().format_help() for name, module in
             (("train", train), ("models", models), ("export", export), ("evaluate", evaluate))}
    parser, commands = datagen._build_parsers()
    texts["datagen"] = parser.format_help()
    texts.update({f"datagen {name}": command.format_help() for name, command in commands.items()})
    return texts


def test_a_plain_installs_help_cites_the_repositorys_files_as_the_repositorys(monkeypatch):
    # facelandmarks-train --help said "see facelandmarks/data/augment" and "a recipe from configs/", paths of a working
    # copy that a plain install does not have
    import re

    from facelandmarks import runtime

    working = _helps()
    monkeypatch.setattr(runtime, "working_copy", lambda: False)
    plain = _helps()
    text = "\n".join(plain.values())
    assert "(see the module facelandmarks.data.augment)" in " ".join(plain["train"].split())
    assert "(the module facelandmarks.training.config)" in plain["train"]
    assert "# a recipe from configs/ in the source repository" in plain["train"]
    assert "see docs/models.md in the source repository." in plain["models"]
    assert not re.search(r"(?<![\w./-])facelandmarks/", text)  # no module cited by a path
    assert len(re.findall(r"docs/[\w-]+\.md", text)) == text.count(".md in the source repository") > 0
    # a working copy's help is as written
    monkeypatch.setattr(runtime, "working_copy", lambda: True)
    assert _helps() == working and "(see facelandmarks/data/augment)" in " ".join(working["train"].split())


def test_the_export_hint_names_the_extras_export_py_would_ask_for(tmp_path, monkeypatch):
    # the hint guessed from whether onnx and TensorFlow import: on TensorFlow without tf2onnx it sent the user to
    # `export.py RUN` alone, which then stopped with "needs tf2onnx, not installed: pip install 'facelandmarks[export]'"
    import keras

    from facelandmarks.inference import export

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # not installed (on JAX, Keras's ONNX exporter does without it)
    with pytest.raises((ModuleNotFoundError, FileNotFoundError)) as caught:  # on JAX: tmp_path is no run to export
        export.export_run(tmp_path)
    needs = re.findall(r"'facelandmarks\[(\w+)\]'", str(caught.value))
    assert needs == (["export"] if keras.backend.backend() == "tensorflow" else [])
    after = "".join(f", after pip install 'facelandmarks[{extra}]'" for extra in needs)
    assert runtimes.stale_export(tmp_path, tmp_path / "export") == f"{tmp_path}: not exported (python export.py " \
                                                                   f"{tmp_path}{after})"

def _current_export(run: Path, formats) -> Path:
    """``run`` with weights and an export of them holding ``formats``' files (empty: only their names are read)."""
    import hashlib
    import json

    run.mkdir()
    (run / "best.weights.h5").write_bytes(b"weights")
    folder = run / runtimes.EXPORT_DIR
    folder.mkdir()
    files = {fmt: runtimes.FILES[fmt] for fmt in formats}
    meta = {"scheme": "ibug68", "input_shape": [64, 64, 3], "num_points": 68, "weights_file": "best.weights.h5",
            "weights_sha1": hashlib.sha1(b"weights").hexdigest(), "files": files}
    (folder / runtimes.EXPORT_FILE).write_text(json.dumps(meta))
    for name in files.values():
        (folder / name).write_bytes(b"")
    return folder


@pytest.mark.parametrize("runtime, other, package", [("litert", "onnx", "ai-edge-litert"),
                                                     ("onnx", "litert", "onnxruntime")])
def test_an_export_without_the_format_asked_for_names_its_missing_runtime(tmp_path, monkeypatch, capsys, runtime,
                                                                           other, package):
    # it said "no litert export here (python export.py RUN --format onnx litert)" alone: the user exported, and the
    # export still did not run, for want of ai-edge-litert
    import cv2

    from facelandmarks.cli import evaluate

    run = tmp_path / "run"
    folder = _current_export(run, [other])
    monkeypatch.setattr(runtimes, "_installed", lambda name: name != runtime)
    line = (f"{folder}: no {runtime} export here, and {package} is not installed to run it (python export.py {run} "
            f"--format {other} {runtime}, after pip install 'facelandmarks[{runtime}]')")
    with pytest.raises(runtimes.ExportError) as caught:
        Predictor.load(run, runtime=runtime)
    assert str(caught.value) == line
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    assert evaluate.main([str(run), "--image", str(photo), "--runtime", runtime, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"evaluate.py: {line}\n"
    monkeypatch.setattr(runtimes, "_installed", lambda name: True)  # installed: only the file is missing
    with pytest.raises(runtimes.ExportError, match=rf"no {runtime} export here \(python export.py {run} --format "
                                                   rf"{other} {runtime}\)$"):
        Predictor.load(run, runtime=runtime)

def test_keras_used_beside_an_export_no_runtime_runs_says_what_to_install(tmp_path, monkeypatch, capsys):
    # photos marked through Keras beside a current export, for want of onnxruntime, ended without a word: the export
    # hint took an export as new as the weights for one that had run
    import keras

    from facelandmarks.cli.evaluate import _export_hint

    run = tmp_path / "run"
    folder = _current_export(run, ["onnx", "savedmodel"])
    monkeypatch.setattr(runtimes, "_installed", lambda name: False)
    _export_hint(run, "auto")
    assert capsys.readouterr().out == (
        f"ran through Keras on {keras.backend.backend()}: {folder}: onnxruntime is not installed to run it (pip install "
        "'facelandmarks[onnx]'); an export runs without Keras, 2.3-2.7x faster per face on one thread "
        "(docs/inference.md)\n")
    (folder / "model.tflite").write_bytes(b"")  # both files: either runtime would do
    _export_hint(run, "auto")
    assert f"{folder}: neither onnxruntime nor ai-edge-litert is installed to run it (pip install 'facelandmarks[onnx]'" \
           ", or 'facelandmarks[litert]'); " in capsys.readouterr().out
    monkeypatch.setattr(runtimes, "_installed", lambda name: name == "litert")
    _export_hint(run, "auto")  # the export runs (LiteRT): nothing to say
    assert capsys.readouterr().out == ""
    only_savedmodel = _current_export(tmp_path / "served", ["savedmodel"])  # no runtime here runs it
    monkeypatch.setattr(runtimes, "_installed", lambda name: False)
    _export_hint(only_savedmodel.parent, "auto")
    assert f"{only_savedmodel}: no onnx export here, and onnxruntime is not installed to run it (python export.py " \
           f"{only_savedmodel.parent} --format savedmodel onnx, after pip install 'facelandmarks[onnx]'); " in capsys.readouterr().out
