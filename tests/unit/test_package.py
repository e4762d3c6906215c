"""The package's shape: layers, sizes, installability, scripts, and models saved before the move."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "facelandmarks"
# Lowest first: a module may import from its own layer and the ones before it, never from a later one.
LAYERS = ["machine", "files", "stops", "runtime", "ibug68_map", "landmarks", "scheme_files", "drawing", "metrics", "data", "models", "training", "inference", "pipelines",
          "evaluation", "cli"]
MAX_LINES = 450
SCRIPTS = ("datagen.py", "models.py", "train.py", "evaluate.py", "export.py")
# the benchmarks; benchmarks/_common.py is what two of them share, not one
BENCHMARKS = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("[!_]*.py")))


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facelandmarks"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("facelandmarks")}
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def test_every_module_is_in_a_layer_and_under_the_size_limit():
    for name, path in _modules().items():
        assert name == "facelandmarks" or name.split(".")[1] in LAYERS, f"{name} is in no layer of {LAYERS}"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES})"


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = [f"{name} -> {dep}" for name, path in modules.items() if name != "facelandmarks"
              for dep in _imports(path, modules) if _layer(dep) > _layer(name)]
    assert upward == []


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {d for d in _imports(path, modules) if d in modules and d != name} for name, path in modules.items()}
    # a package's __init__ importing its own submodules is how families register; the reverse edge is the cycle to catch
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            if dep.startswith(node + "."):  # package -> its own submodule
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _run(args, cwd, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_importable_from_any_folder_without_loading_a_backend(tmp_path):
    code = ("import sys; from facelandmarks import Predictor, DlibPredictor, FaceTracker, read_video_landmarks; "
            "import facelandmarks.data.prepare; "
            "print(Predictor.__module__, FaceTracker.__module__, read_video_landmarks.__module__, "
            "'keras' in sys.modules, 'tensorflow' in sys.modules)")
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["facelandmarks.inference.predictor", "facelandmarks.inference.video",
                                     "facelandmarks.inference.video_files",
                                     "False", "False"]


@pytest.mark.parametrize("script", SCRIPTS + BENCHMARKS)
def test_scripts_answer_help_quietly_without_loading_a_backend(script):
    code = (f"import contextlib, runpy, sys; sys.argv = [{script!r}, '--help']\n"
            f"with contextlib.suppress(SystemExit): runpy.run_path({script!r}, run_name='__main__')\n"
            "print('LOADED', *[m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules])")
    result = _run([sys.executable, "-c", code], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stdout.split("LOADED")[1].split() == []  # --help answers at once, before Keras loads
    noise = [line for line in result.stderr.splitlines() if "I0000" in line or "absl::InitializeLog" in line]
    assert noise == []


@pytest.mark.backend
def test_the_python_api_loads_keras_without_the_backends_start_up_lines(tmp_path):
    """A program that loads the shipped model through Keras, or imports the models, hears what the scripts hear: no
    oneDNN or absl notices (they were printed twice, by TensorFlow's two native libraries).

    The lines FACELANDMARKS_VERBOSE lets through are TensorFlow's: on JAX, which loads no TensorFlow, there are none
    (the test asked for oneDNN's on either backend, and failed on JAX)."""
    code = ("import sys; from facelandmarks import Predictor; model = Predictor.load(runtime='keras'); "
            "import facelandmarks.models, keras, numpy; "
            "print(model.runtime, 'keras' in sys.modules, keras.backend.backend(), 'tensorflow' in sys.modules, "
            "'jax' in sys.modules, 'matplotlib' in sys.modules); import jax; print(float(jax.numpy.ones(2).sum())); "
            "keras.visualization.plot_image_gallery(numpy.full((2, 8, 8, 3), 99.0), rows=1, cols=2, path='gallery.png')")
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runtime, loaded, backend, tensorflow, jax, matplotlib, summed = result.stdout.split()
    assert (runtime, loaded) == ("keras", "True")
    # TensorFlow's import, which imports JAX for tf.lite where both are installed (0.45 s), ran without it; JAX
    # imports and computes as ever after
    assert (jax, summed) == ("True" if backend == "jax" else "False", "2.0")
    # Keras's import, which imports matplotlib for keras.visualization (0.3-0.4 s), ran without it; Keras's plots
    # import it when they draw
    assert matplotlib == "False"
    assert (tmp_path / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    noise = [line for line in result.stderr.splitlines() if "I0000" in line or "absl::InitializeLog" in line]
    assert noise == []
    # nor that glibc's tuning came after JAX had computed: Predictor.load tunes it before its model computes
    assert "note:" not in result.stderr, result.stderr
    verbose = _run([sys.executable, "-c", "import facelandmarks.models"], tmp_path, {"FACELANDMARKS_VERBOSE": "1"})
    assert verbose.returncode == 0, verbose.stderr
    if backend == "tensorflow":
        assert "oneDNN" in verbose.stderr  # FACELANDMARKS_VERBOSE lets them through
    else:
        assert (backend, tensorflow) == ("jax", "False")  # no TensorFlow, so no oneDNN line to let through


def test_inference_speed_without_its_test_faces_says_so_before_timing(tmp_path):
    # a fresh clone has no dataset/ibug128_test.npz: each timing process ended in a traceback, then empty tables, status 0
    missing = tmp_path / "ibug128_test.npz"
    result = _run([sys.executable, str(ROOT / "benchmarks" / "inference_speed.py"), "--data", str(missing), "--runtimes",
                   "dlib", "--no-cold", "--processes", "1"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(f"inference_speed.py: {missing}: no such test npz")
    assert "Traceback" not in result.stderr


def test_predict_batches_on_an_export_or_without_its_npz_says_so_in_one_line(tmp_path):
    # both ended in a traceback after Keras had loaded: the export through the default runtime, keras
    export = tmp_path / "export"
    export.mkdir()
    (export / "export.json").write_text("{}")
    script = str(ROOT / "benchmarks" / "predict_batches.py")
    missing = tmp_path / "ibug128_test.npz"
    for args, line in ((["--model", str(export)], f"{export} is an export: give --runtime onnx, litert or auto"),
                       ([], f"{missing}: no such npz")):
        result = _run([sys.executable, script, "--data", str(missing), *args], cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"predict_batches.py: {line}")


@pytest.mark.parametrize("script, args, line", [
    ("fit_check.py", ["RUN"], "RUN: not a run directory (no config.json)"),
    ("train_throughput.py", ["--data", "NPZ"], "NPZ: no such npz"),
    ("cluster_speed.py", ["--data", "NPZ"], "NPZ: no such npz"),
    ("video_tracking.py", ["--run", "RUN", "--out", "OUT"], "RUN: no such run directory"),
])
def test_benchmarks_without_their_run_or_npz_say_so_in_one_line(script, args, line, tmp_path):
    # each ended in a traceback from the reader (video_tracking's after its machine lines)
    names = {"RUN": str(tmp_path / "no-run"), "NPZ": str(tmp_path / "no.npz"), "OUT": str(tmp_path / "out")}
    result = _run([sys.executable, str(ROOT / "benchmarks" / script), *[names.get(a, a) for a in args]], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    for name, path in names.items():
        line = line.replace(name, path)
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(f"{script}: {line}")


@pytest.mark.parametrize("script", ["crop_coverage.py", "builtin_landmark_box.py"])
def test_face_data_benchmarks_refuse_a_wrong_folder_or_count_in_one_line(script, tmp_path):
    # each ended in a traceback from the reader or from the process pool.  Their flags are one piece
    # (benchmarks/_common.py), imported whether the script runs from its path in any folder or through runpy
    path, empty = str(ROOT / "benchmarks" / script), tmp_path / "empty"
    empty.mkdir()
    through_runpy = f"import runpy, sys; sys.argv[0] = {path!r}; runpy.run_path({path!r}, run_name='__main__')"
    for args, line in ((["--data", str(tmp_path / "none")], f"{tmp_path / 'none'}: no such folder (--data"),
                       (["--data", str(empty)], f"{empty / '300w'}: not a folder"),
                       (["--data", str(empty), "--workers", "-1"], "--workers must be >= 0, got -1")):
        for command, cwd in (([sys.executable, path, *args], tmp_path), ([sys.executable, "-c", through_runpy, *args], ROOT)):
            result = _run(command, cwd=cwd)
            assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
            assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(f"{script}: {line}")


@pytest.mark.parametrize("script", SCRIPTS + BENCHMARKS)  # the benchmarks printed argparse's usage lines first
def test_scripts_tell_a_wrong_flag_in_one_line(script):
    result = _run([sys.executable, str(ROOT / script), "--no-such-flag"], cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr  # one line, not the usage page
    assert result.stderr.startswith(f"{Path(script).name}")
    assert "--help lists the options" in result.stderr


def test_train_answers_help_and_bad_settings_without_loading_a_backend(tmp_path):
    code = ("import contextlib, sys; from facelandmarks.cli.train import main\n"
            "with contextlib.suppress(SystemExit): main(['--help'])\n"
            "status = main(['mobilenetv2', '--run-dir', 'r'])\n"
            "print('STATUS', status, 'keras' in sys.modules, 'tensorflow' in sys.modules, 'jax' in sys.modules)")
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stdout.split("STATUS")[1].split() == ["2", "False", "False", "False"]
    assert "needs --data" in result.stderr


def test_no_sys_path_edits_anywhere():
    edits = ("sys.path.insert", "sys.path.append")
    offenders = [str(p.relative_to(ROOT)) for folder in ("facelandmarks", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
                 if p.name != "test_package.py" and any(edit in p.read_text() for edit in edits)]
    offenders += [s for s in SCRIPTS if any(edit in (ROOT / s).read_text() for edit in edits)]
    assert offenders == []


@pytest.mark.backend
@pytest.mark.parametrize("name", ["heatmap", "inception_bottleneck"])
def test_models_saved_before_the_package_move_still_deserialize(name):
    import keras

    import facelandmarks.models  # noqa: F401  (registers layers, losses, metrics)

    config = json.loads((ROOT / "tests" / "fixtures" / "saved_before_move" / f"{name}.config.json").read_text())
    model = keras.saving.deserialize_keras_object(config)
    assert model.output_shape == (None, 5, 2)
    compiled = config["compile_config"]
    loss = keras.saving.deserialize_keras_object(compiled["loss"])
    assert type(loss).__name__ == "WingLoss"
    metric = keras.saving.deserialize_keras_object(compiled["metrics"][0])
    assert type(metric).__name__ == "NormalizedMeanError"
    custom = {layer.__class__.__name__ for layer in model._flatten_layers()}
    expected = {"heatmap": {"SoftArgmax2D", "PixelNormalization"}, "inception_bottleneck": {"FeatureTransform"}}[name]
    assert expected <= custom


def test_fit_check_on_a_pipeline_run_names_its_stage_1(tmp_path):
    # it said 'cascade takes features, not images; fit_check needs an image model'
    pipeline = tmp_path / "cascade"
    pipeline.mkdir()
    stage1 = tmp_path / "scratch-128"
    (pipeline / "pipeline.json").write_text(json.dumps({"kind": "cascade", "run_dir": str(pipeline), "stage1": str(stage1),
                                                        "regions": [], "scheme": "ibug68"}))
    (pipeline / "config.json").write_text(json.dumps({"model": "cascade", "stage1": str(stage1), "scheme": "ibug68",
                                                      "input_shape": [128, 128, 3], "num_points": 68}))
    result = _run([sys.executable, str(ROOT / "benchmarks" / "fit_check.py"), str(pipeline)], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr  # as every benchmark's bad input (it was 1)
    assert result.stderr.splitlines() == [f"fit_check.py: {pipeline}: a pipeline run; fit_check looks at one model: give "
                                          f"its stage 1 ({stage1}) (fit_check.py --help lists the options)"]
