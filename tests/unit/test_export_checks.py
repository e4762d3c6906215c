"""export.py and evaluate.py settings that did nothing, or failed late: refused (or said) in one line, up front.

No face data: a small registered model with random weights stands in for a trained run, and npz files of a few
random faces for the test and training sets.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.cli import evaluate as evaluate_cli
from facelandmarks.cli import export as export_cli
from facelandmarks.data.errors import DatasetError
from facelandmarks.data.npz import read_member
from facelandmarks.inference import export

SIZE = 64


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as train.py leaves it (config.json + best.weights.h5) of a random-weight scratch CNN."""
    from facelandmarks.models import build_model

    run = tmp_path_factory.mktemp("runs") / "scratch-random"
    run.mkdir()
    build_model("scratch", input_shape=(SIZE, SIZE, 3), num_points=68).save_weights(run / "best.weights.h5")
    config = {"model": "scratch", "scheme": "ibug68", "input_shape": [SIZE, SIZE, 3], "num_points": 68,
              "model_options": {}, "weights": "none"}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture
def not_exported(monkeypatch):
    def exporting(*args):
        raise AssertionError("exported before the settings were checked")

    monkeypatch.setattr(export, "_export_model", exporting)


@pytest.mark.parametrize(("args", "says"), [
    # export.json said "quantize": "int8" of a float32 SavedModel, and the calibration faces were read for nothing
    (["--format", "savedmodel", "--quantize", "int8", "--calibration", "CAL"],
     "--quantize int8 quantizes the ONNX and LiteRT files, and --format savedmodel writes neither: add onnx or litert "
     "to --format"),
    # an ONNX file stays float32: the 'float16' export was the float32 one
    (["--format", "onnx", "--quantize", "float16"],
     "--quantize float16 stores LiteRT's weights as float16, and --format onnx writes no LiteRT file (ONNX and "
     "SavedModel stay float32): add litert to --format"),
    (["--format", "savedmodel", "--check", "CHECK"],
     "--check compares ONNX Runtime and LiteRT with Keras, and --format savedmodel writes no file either runs: add "
     "onnx or litert to --format"),
])
def test_a_setting_no_format_carries_out_is_refused_before_anything_is_written(run_dir, tmp_path, capsys,
                                                                               not_exported, args, says):
    data = tmp_path.parent / f"{tmp_path.name}-faces.npz"
    np.savez(data, scheme=np.array("ibug68"))
    args = [str(data) if a in ("CAL", "CHECK") else a for a in args]
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err == f"export.py: {says}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_format_given_twice_is_written_once(run_dir, tmp_path, capsys, monkeypatch):
    """--format onnx onnx converted the model to ONNX twice."""
    asked = []

    def exporting(predictor, run, work, formats, *rest):
        asked.append(tuple(formats))
        raise ValueError("stop here")

    monkeypatch.setattr(export.packages, "missing", lambda *args: {})
    monkeypatch.setattr(export, "_export_model", exporting)
    argv = [str(run_dir), "--to", str(tmp_path / "out"), "--format", "onnx", "savedmodel", "onnx", "savedmodel"]
    assert export_cli.main(argv) == 2
    assert capsys.readouterr().err == "export.py: stop here\n"
    assert asked == [("onnx", "savedmodel")]


def test_a_check_file_without_faces_fails_before_the_formats_are_written(run_dir, tmp_path, capsys, not_exported):
    """It failed with 'missing key(s) images ...' only after every format had been converted."""
    data = tmp_path.parent / f"{tmp_path.name}-scheme-only.npz"
    np.savez(data, scheme=np.array("ibug68"), landmarks=np.zeros((3, 68, 2), np.float32))
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), "--check", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"export.py: {data}: missing key(s) images") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_check_file_that_is_no_npz_says_so(run_dir, tmp_path, capsys):
    """A text file given to --check was 'no readable 'scheme' array (This file contains pickled (object) data ...'."""
    text = tmp_path / "faces.npz"
    text.write_text("hello\n")
    with pytest.raises(DatasetError, match="not an npz file"):
        read_member(text, "scheme")
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), "--check", str(text)]) == 2
    assert capsys.readouterr().err == (f"export.py: {text}: not an npz file (it does not start as a zip archive "
                                       "does)\n")
    assert not (tmp_path / "out").exists()


def _benchmark(name):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_export(run_dir, tmp_path, sha1, files=("model.onnx",)):
    """A copy of ``run_dir`` whose export/ holds export.json (of weights with ``sha1``) and empty ``files``."""
    import shutil

    from facelandmarks.inference import runtimes

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "export").mkdir()
    meta = {"scheme": "ibug68", "num_points": 68, "input_shape": [SIZE, SIZE, 3], "weights_file": "best.weights.h5",
            "weights_sha1": sha1 or runtimes.file_sha1(run / "best.weights.h5"),
            "files": {fmt: file for fmt, file in runtimes.FILES.items() if file in files}}
    (run / "export" / "export.json").write_text(json.dumps(meta))
    for name in files:
        (run / "export" / name).write_bytes(b"")
    return run


@pytest.mark.parametrize(("sha1", "runtimes", "says"), [
    ("0" * 40, ["onnx", "dlib"], "{run}/export: made from other weights than {run}/best.weights.h5"),
    (None, ["litert"], "{run}/export: no litert export here"),
])
def test_inference_speed_without_a_usable_export_says_so_before_timing(run_dir, tmp_path, capsys, monkeypatch, sha1,
                                                                       runtimes, says):
    """It checked only that an export/ folder existed: a stale export, or one without a runtime's file, gave a
    traceback from every timing process of that runtime, then rows of dashes and 'ours / dlib ... nan', status 0."""
    run = _with_export(run_dir, tmp_path, sha1)
    bench = _benchmark("inference_speed")

    def timing(*args, **kwargs):
        raise AssertionError("timed before the export was checked")

    monkeypatch.setattr(bench, "run_worker", timing)
    data = tmp_path / "faces.npz"
    data.write_bytes(b"PK")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--model", str(run), "--runtimes", *runtimes, "--no-cold", "--data", str(data)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].split(": ", 1)[1].startswith(says.format(run=run)), err


def test_predict_batches_without_a_usable_export_says_so_in_one_line(run_dir, tmp_path, capsys, monkeypatch):
    """--runtime onnx on a run whose export is of other weights ended in a traceback."""
    bench = _benchmark("predict_batches")
    run = _with_export(run_dir, tmp_path, "0" * 40)
    data = tmp_path / "faces.npz"
    data.write_bytes(b"PK")
    monkeypatch.setattr(bench.npz, "load_npz", lambda path: {"images": np.zeros((4, SIZE, SIZE, 3), np.uint8)})
    with pytest.raises(SystemExit) as stop:
        bench.main(["--data", str(data), "--model", str(run), "--runtime", "onnx"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].split(": ", 1)[1].startswith(
        f"{run}/export: made from other weights than {run}/best.weights.h5")


@pytest.mark.parametrize(("files", "says"), [
    (("model.onnx", "model.tflite"), "an export without its export.json; give {folder}/model.onnx, which carries the "
                                     "settings, or export again"),
    (("model.tflite",), "an export without its export.json, which model.tflite needs beside it; export again"),
])
def test_an_export_folder_without_its_settings_says_so_without_loading_keras(tmp_path, capsys, monkeypatch, files,
                                                                             says):
    """It loaded TensorFlow and Keras for seconds, then said '<folder>: not a run directory (no config.json)'."""
    from facelandmarks import runtime
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.predictor import Predictor

    folder = tmp_path / "export"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"")
    says = f"{folder}: {says.format(folder=folder)}"
    with pytest.raises(runtimes.ExportError) as err:
        Predictor.load(folder)
    assert str(err.value) == says

    def keras(*args):
        raise AssertionError("Keras loaded for an export")

    monkeypatch.setattr(runtime, "startup", keras)
    import cv2

    photo = tmp_path / "grey.png"
    cv2.imwrite(str(photo), np.full((32, 32, 3), 128, np.uint8))
    assert evaluate_cli.main([str(folder), "--image", str(photo), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"evaluate.py: {says}\n"


def test_auto_runs_keras_past_an_export_whose_settings_are_damaged(run_dir, tmp_path):
    """A damaged RUN/export/export.json ended every load of the run, 'auto' included, which the docs say runs Keras
    where the export cannot stand in for the run's weights; 'onnx' names the file and how to export again."""
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.predictor import Predictor

    run = _with_export(run_dir, tmp_path, None)
    (run / "export" / "export.json").write_text("{")
    assert Predictor.load(run).runtime == "keras"
    with pytest.raises(runtimes.ExportError) as err:
        Predictor.load(run, runtime="onnx")
    assert str(err.value).startswith(f"{run}/export/export.json: unreadable export settings (")
    assert str(err.value).endswith(f" (python export.py {run} again)")


@pytest.mark.parametrize("runtime", ["onnx", "litert"])
def test_a_model_file_of_another_export_is_one_line_when_loaded(run_dir, tmp_path_factory, runtime):
    """A model file beside the export.json of another export (another input size) loaded, then failed on the first
    face with the runtime's traceback ('Got: 112 Expected: 64', 'XNNPack delegate failed to reshape')."""
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.predictor import Predictor

    folder = tmp_path_factory.getbasetemp() / "mismatched-export"
    if not folder.exists():
        export.export_run(run_dir, folder, formats=("onnx", "litert"))
        meta = json.loads((folder / "export.json").read_text())
        (folder / "export.json").write_text(json.dumps(meta | {"input_shape": [112, 112, 3]}))
    with pytest.raises(runtimes.ExportError) as err:
        Predictor.load(folder, runtime=runtime)
    assert str(err.value) == (f"{folder / runtimes.FILES[runtime]}: takes {SIZE}x{SIZE}x3 crops and gives 68 points, "
                              f"{folder / 'export.json'} says 112x112x3 and 68: files of two exports (export again)")


def _features(tmp_path):
    features = tmp_path / "features.npz"
    np.savez(features, scheme=np.array("ibug68"), features=np.zeros((3, 8), np.float32))
    return features


def _beneath_a_file(tmp_path):
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "export"


@pytest.mark.parametrize(("args", "says"), [
    # taken in silence
    (lambda t: ["--check-faces", "5"], lambda t: "--check-faces works with --check NPZ (got --check-faces 5 alone)"),
    # a traceback, KeyError: 'images', once the model had loaded
    (lambda t: ["--quantize", "int8", "--calibration", _features(t)],
     lambda t: f"{t / 'features.npz'}: no face images to calibrate int8 on (--calibration takes a prepared npz of "
               "training faces, not bottleneck features)"),
    # '.../a_file/.export.partial: Not a directory', a folder never given
    (lambda t: ["--to", _beneath_a_file(t)], lambda t: f"{t / 'a_file' / 'export'}: cannot write there, "
                                                       f"{t / 'a_file'} is a file (--to)"),
])
def test_export_settings_that_did_nothing_or_failed_late_are_one_line_first(run_dir, tmp_path, capsys, not_exported,
                                                                            args, says):
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(run_dir), "--to", str(tmp_path / "out"), "--format", "onnx", *map(str, args(work))]
    assert export_cli.main(argv) == 2
    assert capsys.readouterr().err == f"export.py: {says(work)}\n"
    assert not (tmp_path / "out").exists()


def test_a_runtime_asked_for_is_checked_on_every_run_before_any_is_scored(run_dir, tmp_path, capsys, monkeypatch):
    """--runtime onnx with a second run not exported ended the evaluation once the first run had been scored."""
    from facelandmarks.inference.predictor import Predictor

    exported = _with_export(run_dir, tmp_path, None)

    def loading(*args, **kwargs):
        raise AssertionError("a run loaded before every run's export was checked")

    monkeypatch.setattr(Predictor, "load", loading)
    argv = [str(exported), str(run_dir), "--data", "test.npz", "--runtime", "onnx", "--out", str(tmp_path / "out")]
    assert evaluate_cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"evaluate.py: {run_dir}: not exported (")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["one-step-swap", "moved-aside"])
def test_a_ctrl_c_after_the_new_export_is_in_place_says_so(run_dir, tmp_path, capsys, monkeypatch, exchange):
    """A Ctrl-C while the replaced export was being deleted said 'the previous export is unchanged' of a folder that
    held the new one."""
    from facelandmarks.inference import swap

    def exporting(predictor, run, work, *rest):  # an export's folder, without the minutes of converting
        work.mkdir()
        (work / "export.json").write_text(json.dumps({"made": len(list(tmp_path.glob("made-*")))}))
        (tmp_path / f"made-{len(list(tmp_path.glob('made-*')))}").touch()

    monkeypatch.setattr(export.packages, "missing", lambda *args: {})
    monkeypatch.setattr(export, "_export_model", exporting)
    if not exchange:
        monkeypatch.setattr(swap, "_exchange", lambda first, second: False)
    out = tmp_path / "out"
    assert export_cli.main([str(run_dir), "--to", str(out), "--format", "onnx"]) == 0
    rmtree = swap.shutil.rmtree

    def ctrl_c(path, *args, **kwargs):  # the deletion of the old export, once the new one is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(swap.shutil, "rmtree", ctrl_c)
    capsys.readouterr()
    assert export_cli.main([str(run_dir), "--to", str(out), "--format", "onnx"]) == 130
    assert capsys.readouterr().err == ("\nexport.py: interrupted while deleting the export it replaced; the new export "
                                       "is in place (what is left of the old one goes at the next export)\n")
    assert json.loads((out / "export.json").read_text()) == {"made": 1}
    monkeypatch.setattr(swap.shutil, "rmtree", rmtree)
    assert export_cli.main([str(run_dir), "--to", str(out), "--format", "onnx"]) == 0
    assert json.loads((out / "export.json").read_text()) == {"made": 2}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(("name", "says"), [
    ("photo.jpg", "a file, not a run directory: give the folder train.py wrote"),
    ("model.onnx", "an export, which ONNX Runtime or LiteRT runs, not a run directory: give the folder train.py wrote"),
])
def test_a_file_given_as_the_run_is_named_as_the_run_not_as_the_destination(tmp_path, capsys, not_exported, name,
                                                                            says):
    """export.py photo.jpg said 'photo.jpg/export: cannot write there, photo.jpg is a file (--to)': no --to was given."""
    import cv2

    path = tmp_path / name
    assert cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((20, 30, 3), 128, np.uint8))
    if name != "photo.jpg":
        path.write_bytes((tmp_path / "photo.jpg").read_bytes())
    assert export_cli.main([str(path)]) == 2
    assert capsys.readouterr().err == f"export.py: {path}: {says}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"photo.jpg", name})
