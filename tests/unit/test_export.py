"""export.py: a run written for ONNX Runtime and LiteRT, loaded back without TensorFlow, Keras or JAX.

No face data: a small registered model with random weights stands in for a trained run.  Exporting
uses TensorFlow's converters, so these tests run on the TensorFlow backend only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.cli import evaluate as evaluate_cli
from facelandmarks.cli import export as export_cli
from facelandmarks.inference import export, runtimes
from facelandmarks.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as train.py leaves it (config.json + best.weights.h5) of a random-weight scratch CNN."""
    from facelandmarks.models import build_model

    run = tmp_path_factory.mktemp("runs") / "scratch-random"
    run.mkdir()
    model = build_model("scratch", input_shape=(SIZE, SIZE, 3), num_points=68)
    model.save_weights(run / "best.weights.h5")
    config = {"model": "scratch", "scheme": "ibug68", "input_shape": [SIZE, SIZE, 3], "num_points": 68,
              "model_options": {}, "weights": "none"}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture(scope="module")
def exported(run_dir):
    return export.export_run(run_dir, formats=("onnx", "litert", "savedmodel"))


def crops(count=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_export_writes_every_format_with_its_settings(run_dir, exported):
    assert exported == run_dir / "export"
    meta = json.loads((exported / "export.json").read_text())
    assert meta["scheme"] == "ibug68" and meta["input_shape"] == [SIZE, SIZE, 3] and meta["num_points"] == 68
    assert meta["files"] == {"onnx": "model.onnx", "litert": "model.tflite", "savedmodel": "saved_model"}
    assert meta["weights_sha1"] == runtimes.file_sha1(run_dir / "best.weights.h5")
    assert (exported / "saved_model" / "saved_model.pb").is_file()
    assert not list(run_dir.glob(".export*"))  # no partial folder left behind


@pytest.mark.parametrize("runtime", ["onnx", "litert"])
def test_exported_points_agree_with_keras(run_dir, exported, runtime):
    keras_points = Predictor.load(run_dir, runtime="keras").predict_crops(crops())
    predictor = Predictor.load(exported, runtime=runtime)
    assert predictor.runtime == runtime and predictor.input_size == SIZE
    points = predictor.predict_crops(crops())
    assert points.shape == (5, 68, 2)
    assert np.abs(points - keras_points).max() * SIZE < 0.01  # crop pixels
    # one face, then a batch again: LiteRT resizes its input between calls
    np.testing.assert_allclose(predictor.predict_crops(crops()[:1]), points[:1], atol=1e-5)
    np.testing.assert_allclose(predictor.predict_crops(crops()), points, atol=1e-5)


@pytest.mark.parametrize("runtime", ["onnx", "litert"])
def test_threads_below_one_are_refused_in_one_line(exported, runtime, tmp_path, capsys):
    # LiteRT said "not a loadable LiteRT model (num_threads should >= 1)"; ONNX Runtime ran on its default
    import cv2

    with pytest.raises(ValueError, match="^threads must be at least 1 \\(default: all cores\\), got 0$"):
        Predictor.load(exported, runtime=runtime, threads=0)
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((96, 96, 3), 128, np.uint8))
    assert evaluate_cli.main([str(exported), "--image", str(tmp_path / "wall.png"), "--out", str(tmp_path), "--runtime",
                              runtime, "--threads", "-2"]) == 2
    assert capsys.readouterr().err == "evaluate.py: --threads must be at least 1, got -2\n"


def test_a_lone_onnx_file_carries_its_settings(exported, tmp_path):
    lone = tmp_path / "landmarks.onnx"
    lone.write_bytes((exported / "model.onnx").read_bytes())
    predictor = Predictor.load(lone)
    assert predictor.runtime == "onnx" and predictor.scheme.name == "ibug68" and predictor.input_size == SIZE


def test_auto_uses_a_current_export_and_ignores_a_stale_one(run_dir, exported, tmp_path):
    assert Predictor.load(run_dir).runtime == "onnx"  # auto: the export is as new as the weights
    assert Predictor.load(run_dir, runtime="keras").runtime == "keras"
    assert repr(Predictor.load(run_dir, flip_test=True)) == (  # what print(predictor) says
        f"Predictor({run_dir.name!r}: ibug68, 68 points, {SIZE} px, runtime='onnx', flip_test=True, recrop=False)")
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("config.json", "best.weights.h5"):
        (stale / name).write_bytes((run_dir / name).read_bytes())
    (stale / "export").mkdir()
    meta = json.loads((exported / "export.json").read_text())
    (stale / "export" / "export.json").write_text(json.dumps({**meta, "weights_sha1": "0" * 40}))
    assert Predictor.load(stale).runtime == "keras"
    with pytest.raises(runtimes.ExportError, match="made from other weights"):
        Predictor.load(stale, runtime="onnx")


def test_photos_through_keras_end_with_how_to_export(run_dir, exported, tmp_path, capsys):
    import keras

    from facelandmarks.cli.evaluate import _export_hint

    capsys.readouterr()
    _export_hint(run_dir, "auto")  # a current export ran: nothing to say
    _export_hint(exported, "auto")
    _export_hint(tmp_path, "keras")  # Keras asked for
    assert capsys.readouterr().out == ""
    _export_hint(tmp_path, "auto")
    assert capsys.readouterr().out.startswith(
        f"ran through Keras on {keras.backend.backend()}: {tmp_path}: not exported (python export.py {tmp_path})")


def test_the_export_hint_names_the_extra_an_install_without_the_exporters_needs(tmp_path, monkeypatch, capsys):
    # a plain [jax] install: no TensorFlow or onnx to export with, and `export.py RUN` alone would only fail
    import keras

    from facelandmarks.cli.evaluate import _export_hint
    from facelandmarks.inference import packages

    monkeypatch.setattr(packages, "installed", lambda module: module not in ("tensorflow", "onnx"))
    _export_hint(tmp_path, "auto")
    assert capsys.readouterr().out == (
        f"ran through Keras on {keras.backend.backend()}: {tmp_path}: not exported (python export.py {tmp_path}, after "
        "pip install 'facelandmarks[export]'); an export runs without Keras, 2.3-2.7x faster per face on one thread "
        "(docs/inference.md)\n")


def test_loading_an_export_imports_no_backend(exported):
    code = (
        "import sys, numpy as np\n"
        "from facelandmarks import Predictor\n"
        f"p = Predictor.load({str(exported)!r})\n"
        f"points = p.predict_crops(np.zeros((3, {SIZE}, {SIZE}, 3), np.uint8))\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'jax', 'jaxlib', 'tf2onnx'})\n"
        "print(p.runtime, points.shape, heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "onnx (3, 68, 2) []"


@pytest.mark.parametrize(("runtime", "module"), [("onnx", "onnxruntime"), ("litert", "ai_edge_litert")])
def test_a_runtime_named_but_not_installed_is_one_line_naming_what_to_install(run_dir, exported, runtime, module):
    # a plain install with [tensorflow] alone: `evaluate.py --runtime litert` ended in a traceback
    file = exported / runtimes.FILES[runtime]
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from facelandmarks.inference import runtimes\n"
        "from facelandmarks import Predictor\n"
        f"for source, kwargs in (({str(run_dir)!r}, {{'runtime': {runtime!r}}}), ({str(file)!r}, {{}})):\n"
        "    try:\n"
        "        Predictor.load(source, **kwargs)\n"
        "    except runtimes.ExportError as err:\n"
        "        print(err)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    assert out.returncode == 0, out.stderr
    hint = f"is not installed to run it (pip install 'facelandmarks[{runtime}]')"
    assert out.stdout.splitlines() == [f"{file}: {runtimes.PACKAGES[runtime]} {hint}"] * 2


def test_a_lone_onnx_file_without_onnx_runtime_is_one_line(exported, tmp_path):
    lone = tmp_path / "landmarks.onnx"
    lone.write_bytes((exported / "model.onnx").read_bytes())
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from facelandmarks import Predictor\n"
            f"Predictor.load({str(lone)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"facelandmarks.inference.runtimes.ExportError: {lone}: onnxruntime is not installed to run it " \
                   "(pip install 'facelandmarks[onnx]')"


def test_an_interrupted_export_leaves_the_previous_one(run_dir, exported, monkeypatch):
    before = (exported / "export.json").read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(run_dir)
    assert (exported / "export.json").read_text() == before
    assert Predictor.load(exported).predict_crops(crops(1)).shape == (1, 68, 2)
    assert not (exported.parent / ".export.partial").exists()  # nothing of the failed export left behind


def test_an_export_killed_between_its_renames_gets_its_folder_back(run_dir, exported, monkeypatch, capsys):
    """Where two names cannot be swapped in one step the old export moves aside first: a kill right after that left
    no export, and the next export deleted the one set aside before it had written its own."""
    before = (exported / "export.json").read_text()
    exported.rename(exported.parent / ".export.old")  # what the kill left, with half of a new export beside it
    (exported.parent / ".export.partial").mkdir()
    (exported.parent / ".export.partial" / "model.onnx").write_bytes(b"half")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(run_dir)
    assert capsys.readouterr().out.startswith(f"{exported}: put {exported} back from .export.old; removed ")
    assert (exported / "export.json").read_text() == before
    assert Predictor.load(exported).predict_crops(crops(1)).shape == (1, 68, 2)
    assert sorted(p.name for p in exported.parent.iterdir() if p.name.startswith(".")) == []


def test_an_export_replaces_only_an_earlier_export(run_dir, exported, tmp_path, capsys):
    """--to once removed whatever stood there: a folder of your own, the run itself, every run above it."""
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("precious")
    (tmp_path / "photo.jpg").write_bytes(b"jpeg")
    weights = sorted(p.name for p in run_dir.iterdir())
    for to, says in ((mine, "exists and is not an earlier export (no export.json)"),
                     (tmp_path / "photo.jpg", "exists and is not an earlier export"),
                     (run_dir, "the run's own folder; "), (run_dir.parent, "the run's own folder or one above it")):
        assert export_cli.main([str(run_dir), "--to", str(to), "--format", "onnx"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"export.py: {to}: {says}") and "\n" not in err
    assert (mine / "important.txt").read_text() == "precious" and (mine / "sub").is_dir()
    assert (tmp_path / "photo.jpg").read_bytes() == b"jpeg" and sorted(p.name for p in run_dir.iterdir()) == weights


def test_bad_check_settings_fail_before_anything_is_exported(run_dir, tmp_path, capsys, monkeypatch):
    def exporting(*args):
        raise AssertionError("exported before the settings were checked")

    monkeypatch.setattr(export, "_export_model", exporting)
    for args, says in ((["--check", str(tmp_path / "nope.npz")], f"{tmp_path / 'nope.npz'}: no such dataset file (--check)"),
                       (["--check", str(tmp_path / "nope.npz"), "--check-faces", "0"], "--check-faces must be at least 1, got 0"),
                       (["--quantize", "int8", "--calibration", str(tmp_path / "c.npz")],
                        f"{tmp_path / 'c.npz'}: no such dataset file (--calibration)")):
        assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), *args]) == 2
        assert capsys.readouterr().err.strip() == f"export.py: {says}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # faces of another markup: 'cannot reshape array of size 168 into shape (7,5,2)' once the formats were written
    other = tmp_path.parent / f"{tmp_path.name}-kaggle15.npz"
    np.savez(other, scheme=np.array("kaggle15"))
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), "--check", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (f"export.py: {other}: its faces have kaggle15 points, {run_dir} predicts "
                                               "ibug68 (--check)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_check_on_a_shard_set_names_the_shards_to_give(run_dir, tmp_path, capsys):
    manifest = tmp_path / "big_test.shards.json"  # it said "no readable 'scheme' array (This file contains pickled ..."
    manifest.write_text('{"shards": []}')
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "out"), "--check", str(manifest)]) == 2
    assert capsys.readouterr().err == (f"export.py: {manifest}: a shard set; --check reads one npz file: give one of "
                                       "its shards (big_test-00000.npz ...)\n")
    assert not (tmp_path / "out").exists()
    train = tmp_path / "big_train.shards.json"  # --calibration said "not an npz file"
    train.write_text('{"shards": []}')
    argv = [str(run_dir), "--to", str(tmp_path / "out"), "--format", "litert", "--quantize", "int8", "--calibration"]
    assert export_cli.main([*argv, str(train)]) == 2
    assert capsys.readouterr().err == (f"export.py: {train}: a shard set; --calibration reads one npz file: give one "
                                       "of its shards (big_train-00000.npz ...)\n")
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert export_cli.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("export.py: ") and "missing" in err and "\n" not in err
    with pytest.raises(SystemExit):
        export_cli.main(["--format", "pdf"])


def test_an_export_without_its_converters_is_one_line_naming_the_extra(run_dir, tmp_path, monkeypatch, capsys):
    # a plain install with [tensorflow] alone: "export.py: No module named 'onnx'" once the LiteRT file was written,
    # its partial folder left behind. onnx hidden as in a process that never had it (find_spec and import see None),
    # export.py's main in this process: its line and status are what is checked (a process spent ~4 s starting)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert export_cli.main([str(run_dir), "--to", str(tmp_path / "exp")]) == 2
    assert capsys.readouterr().err == ("export.py: writing onnx and litert needs onnx, not installed: pip install "
                                       "'facelandmarks[export]'\n")
    assert list(tmp_path.iterdir()) == []


def cascade_of(run_dir, folder):
    """A pipeline run of ``run_dir`` alone (a cascade without regions), as train.py saves one."""
    folder.mkdir()
    (folder / "pipeline.json").write_text(json.dumps({"kind": "cascade", "run_dir": str(folder), "stage1": str(run_dir),
                                                      "regions": [], "scheme": "ibug68", "crop_size": SIZE}))
    (folder / "config.json").write_text(json.dumps({"model": "cascade", "stage1": str(run_dir), "scheme": "ibug68",
                                                    "input_shape": [SIZE, SIZE, 3], "num_points": 68}))
    return folder


def test_the_scripts_export_and_run_a_pipeline_run(run_dir, tmp_path):
    # export.py and evaluate.py RUN --image in a fresh process ended in "unknown model 'cascade'": nothing there had
    # registered pipeline runs with Predictor.load (train.py had, so tests running in its process passed)
    import cv2

    pipeline = cascade_of(run_dir, tmp_path / "cascade")
    done = subprocess.run([sys.executable, "export.py", str(pipeline), "--format", "onnx", "--to", str(tmp_path / "exp")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exp" / "pipeline.json").is_file() and (tmp_path / "exp" / "stage1" / "model.onnx").is_file()
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((96, 96, 3), 128, np.uint8))
    for model in (pipeline, tmp_path / "exp"):
        done = subprocess.run([sys.executable, "evaluate.py", str(model), "--image", str(photo), "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert (done.returncode, done.stderr) == (1, f"{photo}: no face found\n")  # the model loaded; a wall has no face


def scored_faces(path, faces=3):
    """A test npz of ``faces`` random crops (ibug68, every point at the centre)."""
    from facelandmarks.data import npz

    return npz.save_npz(path, {
        "images": crops(faces), "landmarks": np.full((faces, 68, 2), 0.5, np.float32), "visible": np.ones((faces, 68), bool),
        "subject": np.array([f"s{i}" for i in range(faces)]), "scheme": np.array("ibug68"),
        "box": np.tile(np.float32([0, 0, SIZE, SIZE]), (faces, 1))})


# The evaluations below check their rows' names, losses and curves: each draws its gallery with one best and one
# worst face a row (gallery_faces=1), not six of each
def test_an_exported_pipelines_rows_name_their_runtime(run_dir, tmp_path):
    # a single model's rows said 'scratch (onnx)'; a pipeline's export ran unlabelled, as if through Keras
    from facelandmarks.evaluation.evaluate import evaluate_runs

    pipeline = cascade_of(run_dir, tmp_path / "cascade")
    export.export_run(pipeline, formats=("onnx",))  # into cascade/export, which runtime auto then runs
    data = scored_faces(tmp_path / "test.npz")
    names = [r["model"] for r in evaluate_runs([pipeline], data, tmp_path / "out", timing=False, gallery_faces=1, runtime="auto")]
    assert names[:2] == [f"cascade (onnx): stage 1 ({run_dir.name})", "cascade (onnx): stage 1 + cascade"]
    keras_names = [r["model"] for r in evaluate_runs([pipeline], data, tmp_path / "k", timing=False, gallery_faces=1, runtime="keras")]
    assert keras_names[:2] == [f"cascade: stage 1 ({run_dir.name})", "cascade: stage 1 + cascade"]


def test_an_exported_pipelines_stage1_row_keeps_its_runs_name_losses_and_curve(run_dir, tmp_path):
    # the export's stage-1 row read 'stage 1 (stage1)', its folder in the export, with no losses and no learning
    # curve; the run's read 'stage 1 (scratch-random)' with the best epoch's losses of the stage-1 run's history.csv
    import shutil

    from facelandmarks.evaluation.evaluate import evaluate_runs

    stage1 = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, stage1, ignore=shutil.ignore_patterns(runtimes.EXPORT_DIR))
    (stage1 / "history.csv").write_text("epoch,loss,val_loss\n0,0.5,0.4\n1,0.3,0.2\n2,0.25,0.3\n")
    pipeline = cascade_of(stage1, tmp_path / "cascade")
    export.export_run(pipeline, formats=("onnx",))  # into cascade/export, which runtime auto then runs
    moved = shutil.copytree(pipeline / runtimes.EXPORT_DIR, tmp_path / "moved")  # an export on its own (--to)
    data = scored_faces(tmp_path / "test.npz")
    rows = {label: evaluate_runs([folder], data, tmp_path / label, timing=False, gallery_faces=1, runtime=runtime)[0]
            for label, folder, runtime in (("keras", pipeline, "keras"), ("auto", pipeline, "auto"), ("moved", moved, "auto"))}
    assert [row["model"] for row in rows.values()] == [f"cascade: stage 1 ({run_dir.name})",
                                                       f"cascade (onnx): stage 1 ({run_dir.name})",
                                                       f"moved (onnx): stage 1 ({run_dir.name})"]
    for label, row in rows.items():
        assert (row["train_loss"], row["val_loss"], row["best_epoch"]) == (0.3, 0.2, 2), label
        assert (tmp_path / label / "curves.png").is_file(), label


def test_a_models_export_evaluated_on_its_own_is_named_with_its_run_and_keeps_its_losses(run_dir, tmp_path):
    # evaluate.py RUN/export read 'export (onnx)' with no losses and no learning curve, where evaluate.py RUN (which
    # runs the same export) read 'scratch-random (onnx)' with the run's best epoch
    import shutil

    from facelandmarks.evaluation.evaluate import evaluate_runs

    run = shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name, ignore=shutil.ignore_patterns(runtimes.EXPORT_DIR))
    (run / "history.csv").write_text("epoch,loss,val_loss\n0,0.5,0.4\n1,0.3,0.2\n2,0.25,0.3\n")
    export.export_run(run, formats=("onnx",))
    moved = export.export_run(run, tmp_path / "moved", formats=("onnx",))  # --to a folder of its own
    data = scored_faces(tmp_path / "test.npz")
    rows = {label: evaluate_runs([folder], data, tmp_path / label, timing=False, gallery_faces=1, runtime="auto")[0]
            for label, folder in (("run", run), ("export", run / runtimes.EXPORT_DIR), ("moved", moved))}
    assert [row["model"] for row in rows.values()] == [f"{run.name} (onnx)", f"{run.name}/export (onnx)", "moved (onnx)"]
    for label, row in rows.items():
        assert (row["train_loss"], row["val_loss"], row["best_epoch"]) == (0.3, 0.2, 2), label
        assert (tmp_path / label / "curves.png").is_file(), label


def test_an_int8_exports_rows_say_so_and_a_float32_exports_keep_their_names(run_dir, tmp_path):
    # an int8 and a float32 export of one run (and of a pipeline on it) both read '(onnx)' in evaluate.py's table
    import shutil

    from facelandmarks.evaluation.evaluate import evaluate_runs

    run = shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name, ignore=shutil.ignore_patterns(runtimes.EXPORT_DIR))
    export.export_run(run, formats=("onnx",))
    data = scored_faces(tmp_path / "test.npz", faces=8)
    int8 = export.export_run(run, tmp_path / "int8", ("onnx",), "int8", calibration=data)
    pipeline = cascade_of(run, tmp_path / "cascade")
    export.export_run(pipeline, tmp_path / "cascade-int8", ("onnx",), "int8", calibration=data)
    names = [r["model"] for r in evaluate_runs([run, int8, tmp_path / "cascade-int8"], data, tmp_path / "out", timing=False, gallery_faces=1,
                                               runtime="auto")]
    assert names[:3] == [f"{run.name} (onnx)", "int8 (onnx int8)", f"cascade-int8 (onnx int8): stage 1 ({run.name})"]
    assert names[3] == "cascade-int8 (onnx int8): stage 1 + cascade"


def test_a_runtime_without_its_file_names_the_export_command_for_this_run(run_dir, tmp_path):
    # it said 'export.py --format litert': without the run that exports the shipped model, and it would have
    # replaced the folder without the ONNX file
    import shutil

    run = tmp_path / "onnx-only"
    run.mkdir()
    for name in ("config.json", "best.weights.h5"):
        shutil.copy(run_dir / name, run / name)
    export.export_run(run, formats=("onnx",))
    with pytest.raises(runtimes.ExportError, match=rf"{run / 'export'}: no litert export here \(.*export.* {run} "
                                                   r"--format onnx litert\)$"):
        Predictor.load(run, runtime="litert")
    moved = shutil.copytree(run / "export", tmp_path / "moved")  # an export folder of its own (--to): RUN unknown
    with pytest.raises(runtimes.ExportError, match=rf"RUN --format onnx litert --to {moved}\)$"):
        Predictor.load(moved, runtime="litert")


def test_int8_litert_is_one_integer_graph_with_a_float_decoding(tmp_path):
    """PIPNet head, torch-normalised input: the normalisation runs as an integer convolution (no float
    arithmetic on the full-size input), every operation of the decoding layer stays float (its additions
    included, which by type alone would be quantized like the residual additions), and XNNPACK takes the
    whole graph as one partition."""
    from ai_edge_litert.interpreter import Interpreter

    from facelandmarks.inference import quantize
    from facelandmarks.models import build_model

    model = build_model("mobilenetv2_heatmap", input_shape=(SIZE, SIZE, 3), num_points=68, normalization="torch")
    path = tmp_path / "model.tflite"
    quantize.litert_int8(model, path, crops(4).astype(np.float32))
    interpreter = Interpreter(str(path))
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()
    first_conv = next(i for i, op in enumerate(ops) if op["op_name"] == "CONV_2D")
    assert [op["op_name"] for op in ops[:first_conv]] == ["QUANTIZE"]
    decoding = [op for op in ops if any("/landmarks" in tensors[i]["name"] for i in op["outputs"])]
    assert {op["op_name"] for op in decoding} >= {"ADD", "SOFTMAX"}
    assert all(tensors[i]["dtype"] == np.float32 for op in decoding for i in op["outputs"])
    assert any(t["dtype"] == np.int8 for t in tensors)
    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()  # XNNPACK replaces what it runs by DELEGATE nodes
    assert [op["op_name"] for op in interpreter._get_ops_details()].count("DELEGATE") == 1


def saturating_int8_conv(path):
    """A QDQ 1x1 convolution as ``export.py --quantize int8`` writes them (unsigned activations, signed
    per-channel weights), whose inputs near 255 times weights near -128 or 127 overflow a 16-bit sum of two
    byte products: what ONNX Runtime's u8 x s8 kernels compute on x86 CPUs without VNNI."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.integers(-128, -119, (2, 8, 1, 1)), rng.integers(120, 128, (2, 8, 1, 1))])
    constants = {"one": np.float32(1.0), "zero_u8": np.uint8(0), "w": weights.astype(np.int8),
                 "w_scale": np.ones(4, np.float32), "w_zero": np.zeros(4, np.int8),
                 "y_scale": np.float32(2048.0), "y_zero": np.uint8(128)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "one", "zero_u8"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "one", "zero_u8"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"])]
    graph = helper.make_graph(nodes, "saturating", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return weights[:, :, 0, 0].astype(np.float64)


def test_int8_onnx_sessions_do_not_saturate_on_any_x86_cpu(tmp_path):
    """``onnx_session`` asks ONNX Runtime to make signed int8 weights unsigned where its kernels would
    saturate (x86 without VNNI), and only there: the convolution comes out exact on every CPU.  Without
    the setting an AVX2 CPU gives sums of about half the size (checked under qemu-x86_64 -cpu EPYC-Rome:
    docs/inference.md)."""
    weights = saturating_int8_conv(tmp_path / "conv.onnx")
    session = runtimes.onnx_session(tmp_path / "conv.onnx", threads=1)
    options = session.get_session_options()
    if runtimes.int8_products_saturate():
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
    else:  # the setting would cost a VNNI CPU its fast u8 x s8 kernels
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.x64quantprecision")
    x = np.random.default_rng(1).integers(250, 256, (1, 8, 4, 4)).astype(np.float32)
    y = session.run(None, {"x": x})[0]
    exact = np.einsum("oc,nchw->nohw", weights, x)  # 8 x 255 x -128 = -261,120 at most: inside the output's range
    np.testing.assert_allclose(y, exact, atol=1024.0)  # half an output step of 2,048


@pytest.mark.parametrize(("machine", "flags", "saturate"), [
    ("x86_64", {"avx", "avx2", "fma"}, True),                       # AMD EPYC Rome, Intel Haswell
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, True),              # Intel Skylake-SP: AVX-512 without VNNI
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),          # Intel Cascade Lake on, AMD Zen 4
    ("AMD64", {"avx2", "avx_vnni"}, False),                         # Intel Alder Lake: VNNI on 256-bit registers
    ("aarch64", set(), False),
    ("arm64", {"asimddp"}, False),
])
def test_int8_saturation_is_told_by_the_cpu(machine, flags, saturate):
    assert runtimes.int8_products_saturate(machine, flags) is saturate
    assert runtimes.int8_products_saturate() is (runtimes.onnx_settings() == runtimes.PRECISE_INT8)


def test_a_runtime_named_for_an_export_is_the_one_that_runs_or_an_error(run_dir, exported):
    """An explicit runtime once gave way in silence: a .tflite file asked for ONNX ran LiteRT, an export asked
    for Keras ran ONNX Runtime."""
    assert Predictor.load(exported, runtime="litert").runtime == "litert"
    with pytest.raises(runtimes.ExportError, match=r"model.tflite: a model for LiteRT, not ONNX Runtime \(give its folder"):
        Predictor.load(exported / "model.tflite", runtime="onnx")
    with pytest.raises(runtimes.ExportError, match=r"model.onnx: a model for ONNX Runtime, not LiteRT"):
        Predictor.load(exported / "model.onnx", runtime="litert")
    for folder_or_file in (exported, exported / "model.onnx"):
        with pytest.raises(ValueError, match="an export, which ONNX Runtime or LiteRT runs; Keras needs the run directory"):
            Predictor.load(folder_or_file, runtime="keras")


def test_one_crop_without_its_batch_axis_is_an_error_not_two_faces(exported):
    model = Predictor.load(exported)
    with pytest.raises(ValueError, match=r"crops must be a batch \(N, S, S, C\), got shape \(64, 64, 3\) \(one crop: crops\[None\]\)"):
        model.predict_crops(crops(1)[0])
    assert model.predict_crops(crops(1)).shape == (1, 68, 2)


def test_export_on_the_jax_backend_goes_through_tensorflow(run_dir, tmp_path):
    # KERAS_BACKEND=jax python export.py RUN ended with Keras's "This requires the jax2onnx module": the converters
    # that write the files are TensorFlow's, and the weights are the same on either backend
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "export.py", str(run_dir), "--format", "onnx", "--to", str(tmp_path / "exp")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("export.py: exporting through TensorFlow ")
    assert (tmp_path / "exp" / "model.onnx").is_file()
    assert json.loads((tmp_path / "exp" / "export.json").read_text())["scheme"] == "ibug68"


def test_export_json_says_per_format_what_was_quantized_and_reads_older_ones(run_dir, exported, tmp_path):
    """--quantize int8 with savedmodel among the formats recorded "int8" for the whole export, the float32
    SavedModel too; an export.json of before (one word) still loads, read per format."""
    from facelandmarks.data import npz

    rng = np.random.default_rng(0)
    faces = {"images": crops(8), "landmarks": rng.uniform(0.2, 0.8, (8, 68, 2)).astype(np.float32),
             "visible": np.ones((8, 68), bool), "subject": np.array([f"s{i}" for i in range(8)]),
             "scheme": np.array("ibug68"), "box": np.tile(np.float32([0, 0, SIZE, SIZE]), (8, 1))}
    calibration = npz.save_npz(tmp_path / "calibration.npz", faces)
    dest = export.export_run(run_dir, tmp_path / "int8", ("onnx", "savedmodel"), "int8", calibration=calibration)
    meta = json.loads((dest / "export.json").read_text())
    assert meta["quantize"] == {"onnx": "int8", "savedmodel": "none"} and meta["format_version"] == 2
    import onnx

    embedded = {p.key: p.value for p in onnx.load(str(dest / "model.onnx")).metadata_props}[runtimes.METADATA_KEY]
    assert json.loads(embedded)["quantize"] == {"onnx": "int8"}  # the file alone says what it holds
    assert Predictor.load(dest).model.quantize == "int8"
    assert Predictor.load(dest / "model.onnx").model.quantize == "int8"
    meta.update(format_version=1, quantize="int8")  # as export.py wrote it before
    (dest / "export.json").write_text(json.dumps(meta))
    assert runtimes.read_export(dest)[0]["quantize"] == {"onnx": "int8", "savedmodel": "none"}
    assert Predictor.load(dest).model.quantize == "int8"
    assert runtimes.quantized(runtimes.FORMATS, "float16") == {"onnx": "none", "litert": "float16", "savedmodel": "none"}
    assert runtimes.read_export(exported)[0]["quantize"] == dict.fromkeys(runtimes.FORMATS, "none")
