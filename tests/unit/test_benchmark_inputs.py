"""The benchmarks tell a wrong path or count in one line and write their results safely (synthetic files, no face
data: each check stops before the measuring starts).  Each of these ended in a traceback, most after Keras had loaded
or after minutes of work."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data import npz

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args, cwd, env=None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _main(script: str, *args, capfd, monkeypatch) -> subprocess.CompletedProcess:
    """``script``'s main called in this process, its exit status and what it wrote to stdout and stderr, as
    ``_bench`` gives them: for the refusals that come after Keras has loaded, which a process of their own spent 4 s of
    TensorFlow's start-up on (an exception out of main fails the test, as a traceback in ``_one_line`` would)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / script)])  # its parser names the script from argv[0]
    capfd.readouterr()
    try:
        status = _module(Path(script).stem).main(list(map(str, args)))
    except SystemExit as stop:
        status = stop.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(script, status or 0, out, err)


def _one_line(result, script: str, line: str, status: int = 2) -> None:
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # not argparse's usage lines first
    assert result.stderr.startswith(f"{script}: {line}"), result.stderr


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_inputs")
    n, rng = 8, np.random.default_rng(0)
    good = npz.save_npz(root / "faces.npz", {
        "images": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
        "landmarks": rng.uniform(0.2, 0.8, (n, 68, 2)).astype(np.float32), "visible": np.ones((n, 68), bool),
        "subject": np.array([f"s{i % 4}" for i in range(n)]), "scheme": np.array("ibug68"),
        "box": np.tile(np.array([0, 0, 16, 16], np.float32), (n, 1))})
    (root / "text.npz").write_text("not an archive\n")
    (root / "a_file").write_text("a file, not a folder\n")
    return {"root": root, "good": good, "text": root / "text.npz", "file": root / "a_file"}


def test_crop_speed_without_its_samples_folder(files):
    for samples in (files["root"] / "none", files["file"]):
        _one_line(_bench("crop_speed.py", "--samples", samples, cwd=files["root"]), "crop_speed.py",
                  f"{samples}: no such folder (--samples")
    # a folder without a photo and its .pts: exit status 1, a line without the script's name
    (files["root"] / "empty").mkdir()
    _one_line(_bench("crop_speed.py", "--samples", files["root"] / "empty", cwd=files["root"]), "crop_speed.py",
              f"{files['root'] / 'empty'}: no photo with a .pts file beside it (--samples)")


@pytest.mark.slow  # Keras loads
def test_predict_batches_refuses_a_bad_batch_list_count_npz_or_model(files, capfd, monkeypatch):
    where = files["root"]
    _one_line(_bench("predict_batches.py", "--data", files["good"], "--batches", "8,x", cwd=where), "predict_batches.py",
              "argument --batches: '8,x': give comma-separated batch sizes >= 1")
    _one_line(_bench("predict_batches.py", "--data", files["good"], "--batches", "0", cwd=where), "predict_batches.py",
              "argument --batches: '0'")
    _one_line(_bench("predict_batches.py", "--data", files["good"], "--faces", "0", cwd=where), "predict_batches.py",
              "--faces and --repeats must be >= 1, got 0 and 2")
    # these two come after Keras has loaded: main in this process
    _one_line(_main("predict_batches.py", "--data", files["text"], capfd=capfd, monkeypatch=monkeypatch),
              "predict_batches.py", f"{files['text']}: not an npz file")
    _one_line(_main("predict_batches.py", "--data", files["good"], "--model", where / "no-run", capfd=capfd,
                    monkeypatch=monkeypatch), "predict_batches.py", f"{where / 'no-run'}: no such run directory")


@pytest.mark.slow  # Keras loads
def test_train_throughput_refuses_a_zero_count_an_unreadable_npz_or_an_unknown_model(files, capfd, monkeypatch):
    # a bad count is answered before Keras loads (it took 4 s): a process that cannot import a backend says it
    hide = ("import runpy, sys; sys.modules.update(keras=None, tensorflow=None, jax=None); sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    early = subprocess.run([sys.executable, "-c", hide, str(ROOT / "benchmarks" / "train_throughput.py"), "--data",
                            str(files["good"]), "--steps", "0"], capture_output=True, text=True, timeout=120)
    _one_line(early, "train_throughput.py", "--size, --batch and --rounds must be >= 1, --steps >= 2")

    # through main too, and the others, which come after Keras has loaded: main in this process (the per-allocator
    # test below runs it as a process)
    def refused(*args, line):
        _one_line(_main("train_throughput.py", "--data", *args, capfd=capfd, monkeypatch=monkeypatch),
                  "train_throughput.py", line)

    refused(files["good"], "--steps", "0", line="--size, --batch and --rounds must be >= 1, --steps >= 2")
    refused(files["good"], "--size", "16", "--steps", "2", "--warmup", "1", "--batch", "4",
            line=f"{files['good']}: 8 faces, fewer than --steps + --warmup batches of --batch (2 + 1 of 4) take")
    refused(files["text"], line=f"{files['text']}: not an npz file")
    refused(files["good"], "--model", "nosuch", "--size", "16", "--steps", "2", "--warmup", "0", "--batch", "2",
            line="unknown model 'nosuch'")


@pytest.mark.slow  # Keras loads in the measured process
def test_train_throughput_per_allocator_tells_a_failed_run_in_one_line_with_status_2(files, capfd, monkeypatch):
    """--allocator both printed the failed run's whole stderr and exited 1. (The measured run is a process of its own,
    as ever; the one that starts it and reads its stderr is main in this process, whose Keras start-up took 4 s.)"""
    monkeypatch.chdir(files["root"])
    failed = _main("train_throughput.py", "--data", files["good"], "--model", "nosuch", "--size", "16", "--steps", "2",
                   "--warmup", "0", "--batch", "2", "--allocator", "both", capfd=capfd, monkeypatch=monkeypatch)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    header, line = failed.stderr.splitlines()  # the run's own line ("train_throughput.py: unknown model ...") is in it
    assert header == "measuring with glibc default (1 of 2)..."
    assert line.startswith("train_throughput.py: the run with glibc default failed: unknown model 'nosuch'; known: ")


def test_cluster_speed_refuses_an_unreadable_npz_and_tells_a_failed_training_in_one_line(files):
    where = files["root"]
    _one_line(_bench("cluster_speed.py", "--data", files["text"], cwd=where), "cluster_speed.py",
              f"{files['text']}: not an npz file")
    _one_line(_bench("cluster_speed.py", "--data", files["good"], "--faces", "0", cwd=where), "cluster_speed.py",
              "--faces, --size, --batch and --epochs must be >= 1")
    failed = _bench("cluster_speed.py", "--data", files["good"], "--model", "nosuch", cwd=where)  # train.py refuses it
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr  # it was 1; every other benchmark exits 2
    assert failed.stderr.splitlines()[-1].startswith("cluster_speed.py: train.py with 1 process(es) failed: train.py:")
    assert "nosuch" in failed.stderr.splitlines()[-1]
    assert failed.stderr.splitlines()[0] == "training with 1 process(es), 2 epoch(s)..."  # minutes each: said before


@pytest.mark.slow  # a training and a prediction
def test_train_throughput_and_predict_batches_show_their_progress(files, capfd, monkeypatch):
    # each ran minutes without a word before its table (each main in this process: the progress and the table are
    # what is checked, not a process's start)
    monkeypatch.chdir(files["root"])
    timed = _main("train_throughput.py", "--data", files["good"], "--model", "scratch", "--size", "16", "--batch", "2",
                  "--steps", "2", "--warmup", "1", "--rounds", "1", "--workers", "1", "--augment", "none", capfd=capfd,
                  monkeypatch=monkeypatch)
    assert timed.returncode == 0, timed.stderr[-3000:]
    assert "| ratio pipeline / compute |" in timed.stdout and "rounds x modes: " in timed.stderr
    batches = _main("predict_batches.py", "--data", files["good"], "--faces", "8", "--batches", "4", "--repeats", "1",
                    capfd=capfd, monkeypatch=monkeypatch)
    assert batches.returncode == 0, batches.stderr[-3000:]
    assert "| 4 |" in batches.stdout and "batch sizes: " in batches.stderr


def test_augment_speed_without_its_faces_says_so_before_keras_loads(tmp_path):
    _one_line(_bench("augment_speed.py", "--data-dir", tmp_path, cwd=tmp_path), "augment_speed.py",
              f"{tmp_path / '300w' / 'afw'}: no such folder (--data-dir")
    # fewer faces than --batch: it said so after Keras had loaded, exit status 1, without the script's name
    afw = tmp_path / "300w" / "afw"
    afw.mkdir(parents=True)
    (afw / "one.pts").write_text("version: 1\nn_points: 68\n{\n}\n")
    _one_line(_bench("augment_speed.py", "--data-dir", tmp_path, "--batch", "2", cwd=tmp_path), "augment_speed.py",
              f"{afw}: 1 face(s) (.pts files), fewer than --batch 2")


def test_model_speed_refuses_no_points(files):
    _one_line(_bench("model_speed.py", "--models", "mlp", "--num-points", "0", cwd=files["root"]), "model_speed.py",
              "--warmup, --repeats and --num-points must be >= 1, got 3, 20 and 0")


def test_fit_check_on_the_shipped_model_says_it_needs_a_trained_run(files):
    # its config.json names no data: TrainConfig's TypeError; now the line train.py's loader gives
    shipped = ROOT / "weights" / "mobilenetv2-pip-128"
    _one_line(_bench("fit_check.py", shipped, cwd=files["root"]), "fit_check.py",
              f"{shipped / 'config.json'}: no data or run_dir: not the config.json of a training run")


def _run_config(run: Path, **settings) -> Path:
    """A run folder whose config.json holds an image model's settings as train.py writes them, with ``settings``."""
    from facelandmarks.training.config import TrainConfig

    run.mkdir()
    saved = {**dataclasses.asdict(TrainConfig(model="mlp", data=str(run / "faces.npz"), run_dir=str(run),
                                              scheme="ibug68", num_points=68, input_shape=[16, 16, 3],
                                              input_kind="image")), **settings}
    (run / "config.json").write_text(json.dumps(saved))
    return run


def test_fit_check_reads_a_runs_config_json_as_train_py_does_and_tells_a_bad_one_in_one_line(tmp_path):
    """It read config.json by hand, then with a loader that checked no value: a value of the wrong type or out of range
    ended in a traceback after Keras had loaded (or was read otherwise than train.py --resume reads it)."""
    run = _run_config(tmp_path / "typed", val_fraction="0.1")
    _one_line(_bench("fit_check.py", run, cwd=tmp_path), "fit_check.py",
              f"{run / 'config.json'}: val_fraction must be float, got '0.1'")
    run = _run_config(tmp_path / "range", augment="rotation=lots")
    _one_line(_bench("fit_check.py", run, cwd=tmp_path), "fit_check.py", f"{run / 'config.json'}: --augment: ")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model": ')
    _one_line(_bench("fit_check.py", tmp_path / "broken", cwd=tmp_path), "fit_check.py",
              f"{tmp_path / 'broken' / 'config.json'}: cannot read run config (")


@pytest.mark.slow  # Keras loads
def test_fit_check_tells_a_run_whose_data_is_not_where_its_config_json_says_in_one_line(tmp_path, capfd, monkeypatch):
    run = _run_config(tmp_path / "moved")  # its faces.npz is not there: a FileNotFoundError traceback
    _one_line(_main("fit_check.py", run, capfd=capfd, monkeypatch=monkeypatch), "fit_check.py", f"{run / 'faces.npz'}: ")


def test_fit_check_refuses_a_features_model_in_one_line_with_status_2(tmp_path):
    # it said so after Keras had loaded, exit status 1, without the script's name
    run = _run_config(tmp_path / "features", model="inception_bottleneck", input_kind="features", input_shape=[2048])
    _one_line(_bench("fit_check.py", run, cwd=tmp_path), "fit_check.py",
              f"{run}: inception_bottleneck takes features, not images; fit_check needs an image model")


@pytest.mark.slow  # Keras loads
def test_fit_check_tells_a_run_without_validation_or_with_sharded_data_in_one_line_with_status_2(files, tmp_path, capfd,
                                                                                                  monkeypatch):
    # each ended with exit status 1 and a line without the script's name (both after Keras has loaded: in this process)
    run = _run_config(tmp_path / "no-val", data=str(files["good"]), val_fraction=0.0)
    _one_line(_main("fit_check.py", run, capfd=capfd, monkeypatch=monkeypatch), "fit_check.py",
              f"{run}: trained without validation data; nothing to compare with")
    manifest = npz.write_manifest(tmp_path / "faces_train.shards.json", [], "ibug68", (16, 16, 3))
    run = _run_config(tmp_path / "sharded", data=str(manifest), val=str(files["good"]))
    _one_line(_main("fit_check.py", run, capfd=capfd, monkeypatch=monkeypatch), "fit_check.py",
              f"{run}: sharded training data ({manifest}); fit_check needs an npz")


@pytest.mark.slow  # a training and Keras loaded once more
def test_fit_check_prints_its_table_alone_on_stdout(files, tmp_path, capfd, monkeypatch):
    # Keras's progress bars of the passes over the faces were printed into the table
    from facelandmarks.cli.train import main as train

    run = tmp_path / "run"
    # trained in this process (the run is fit_check's input, not what is checked): one Keras start-up less
    assert train(["mlp", "--model-options", '{"hidden_units": [64]}', "--data", str(files["good"]), "--run-dir", str(run),
                  "--epochs", "1", "--batch", "2", "--augment", "none", "--preview-every", "0", "--workers", "1"]) == 0
    result = _bench("fit_check.py", run, "--faces", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[1:4] == [f"{run} (mlp, 4 training faces sampled, 2 validation faces)", "",
                                               "| faces | mode | NME % |"]
    assert "step" not in result.stdout and "step" in result.stderr
    # the training-mode rows (the mlp's dropout 0.5 on) changed between runs with one --seed: dropout was not seeded
    # (the second run in this process, whose random state the training above and earlier tests moved)
    again = _main("fit_check.py", run, "--faces", "4", capfd=capfd, monkeypatch=monkeypatch)
    assert again.returncode == 0, again.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 6 and [line for line in again.stdout.splitlines() if line.startswith("| ")] == table


def test_prepare_speed_checks_its_folders_first_and_tells_prepares_complaint_in_one_line(files, tmp_path):
    _one_line(_bench("prepare_speed.py", "--data", tmp_path, "--configs", "both", cwd=tmp_path), "prepare_speed.py",
              f"{tmp_path / '300w'}, {tmp_path / 'youtube68'}: no such folder (--data")
    (tmp_path / "300w").mkdir()
    result = _bench("prepare_speed.py", "--data", tmp_path, "--configs", "300w", "--size", "4", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == "prepare_speed.py: --size: must be between 8 and 4096 pixels, got 4"


def _blank_face_data(root, muct_and_wflw=False):
    """One blank grey photo (no face for dlib) with made-up points in each folder a dlib-box benchmark reads:
    300w/ and youtube68/, and with ``muct_and_wflw`` muct/ and the WFLW samples' COCO file too."""
    import json

    import cv2

    blank = np.full((64, 64, 3), 128, np.uint8)
    points = "\n".join(f"{20 + i % 8} {20 + i // 8}" for i in range(68))
    (root / "300w" / "afw").mkdir(parents=True)
    cv2.imwrite(str(root / "300w" / "afw" / "blank_1.jpg"), blank)
    (root / "300w" / "afw" / "blank_1.pts").write_text(f"version: 1\nn_points: 68\n{{\n{points}\n}}\n")
    (root / "youtube68" / "training").mkdir(parents=True)
    cv2.imwrite(str(root / "youtube68" / "training" / "blank_01.jpg"), blank)
    row = ",".join(["blank_01.jpg"] + [str(20 + i % 8) for i in range(136)])
    (root / "youtube68" / "training_frames_keypoints.csv").write_text(",".join(["name"] + ["v"] * 136) + f"\n{row}\n")
    if muct_and_wflw:
        (root / "muct" / "jpg").mkdir(parents=True)
        cv2.imwrite(str(root / "muct" / "jpg" / "i000qa-fn.jpg"), blank)
        header = ["name", "tag"] + [f"{axis}{i:02d}" for i in range(76) for axis in "xy"]
        (root / "muct" / "muct76-opencv.csv").write_text(
            ",".join(header) + "\n" + ",".join(["i000qa-fn", "0"] + [str(20 + i % 8) for i in range(152)]) + "\n")
        wflw = root / "samples" / "mmpose" / "tests" / "data" / "wflw"
        wflw.mkdir(parents=True)
        cv2.imwrite(str(wflw / "blank.jpg"), blank)
        keypoints = [v for i in range(98) for v in (20 + i % 8, 20 + i // 8, 2)]
        (wflw / "test_wflw.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "blank.jpg", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "keypoints": keypoints, "num_keypoints": 98, "iscrowd": 0,
                             "bbox": [10, 10, 40, 40], "category_id": 1}],
            "categories": [{"id": 1, "name": "face"}]}))


def test_crop_coverage_tells_faces_dlib_finds_none_of_in_one_line_with_status_2(tmp_path):
    """Blank photos under 300w/ and youtube68/: dlib finds no face.  It said so without the script's name or the
    folder, exit status 1."""
    _blank_face_data(tmp_path)
    result = _bench("crop_coverage.py", "--data", tmp_path, "--workers", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout.strip() == "", result.stderr
    assert result.stderr.splitlines()[-1] == (  # after the progress bar of the detections; no "--help" hint
        f"crop_coverage.py: {tmp_path}: dlib found none of the 2 faces sampled from 300w/ and youtube68/; nothing to "
        "measure"), result.stderr


def test_inference_speed_checks_its_model_and_json_first_and_writes_it_whole(files, tmp_path):
    for target, line in ((tmp_path, "is a folder"), (files["file"] / "r.json", f"{files['file']} is a file, not a folder")):
        _one_line(_bench("inference_speed.py", "--runtimes", "dlib", "--no-cold", "--data", files["good"], "--json",
                         target, cwd=tmp_path),  # --data: a clean checkout has no prepared test file
                  "inference_speed.py", f"--json {target}: {line}")
    _one_line(_bench("inference_speed.py", "--model", tmp_path / "no-run", "--runtimes", "keras", "dlib", "--no-cold",
                     cwd=tmp_path), "inference_speed.py", f"{tmp_path / 'no-run'}: no such run directory or export (--model)")
    bench = _module("inference_speed")
    out = tmp_path / "results" / "speed.json"
    assert bench.json_problem(out) is None and out.parent.is_dir()
    bench.write_json(out, {"faces": 2})
    with pytest.raises(TypeError):  # a failure while writing leaves the earlier results whole, and no partial file
        bench.write_json(out, {"faces": object()})
    assert json.loads(out.read_text()) == {"faces": 2} and sorted(p.name for p in out.parent.iterdir()) == ["speed.json"]


def test_inference_speed_refuses_a_json_path_it_could_not_write_before_timing(files, tmp_path):
    """A --json that passed the check and failed at the end, after minutes of timing (exit status 1): a folder no file
    can be made in (as root, os.access said any folder was writable), a name too long (a traceback), a FIFO or device
    (os.replace would have put the results in place of /dev/null)."""
    long_name = tmp_path / ("x" * 300 + ".json")
    _one_line(_bench("inference_speed.py", "--runtimes", "dlib", "--no-cold", "--data", files["good"], "--json", long_name,
                     cwd=tmp_path), "inference_speed.py", f"--json {long_name}: cannot be written (File name too long)")
    bench = _module("inference_speed")
    assert bench.json_problem(Path("/proc/speed.json")).startswith("/proc: cannot write there (")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert bench.json_problem(fifo) == "not a regular file; give a file name"
    assert bench.json_problem(tmp_path / "new" / "speed.json") is None and sorted(os.listdir(tmp_path / "new")) == []


def test_inference_speed_tells_test_faces_without_their_photos_in_one_line_before_timing(files, tmp_path):
    # each timing process said so (exit status 1, no script name) and the tables came out in dashes
    arrays = npz.load_npz(files["good"])
    n = len(arrays["images"])
    mirrored = npz.save_npz(tmp_path / "mirrored.npz", {**arrays, "path": np.array([str(tmp_path / "a.jpg")] * n),
                                                        "mirrored": np.arange(n) == 1})
    for data, line in ((mirrored, f"{mirrored}: the first 2 faces need their original photos (path, not mirrored; --data)"),
                       (files["good"], f"{files['good']}: no readable 'path' array")):
        _one_line(_bench("inference_speed.py", "--runtimes", "dlib", "--no-cold", "--faces", "2", "--data", data,
                         cwd=tmp_path), "inference_speed.py", line)
    _one_line(_bench("inference_speed.py", "--worker", "time", "--runtime", "dlib", "--faces", "2", "--data", mirrored,
                     cwd=tmp_path), "inference_speed.py", f"{mirrored}: the first 2 faces need their original photos")


def test_video_tracking_checks_its_folders_first_and_reads_face_data_dir(files, tmp_path, monkeypatch):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"")
    run = ["--data-dir", tmp_path, "--photo", photo]
    _one_line(_bench("video_tracking.py", *run, "--out", tmp_path / "o", cwd=tmp_path), "video_tracking.py",
              f"{tmp_path / 'face.pts'}: not found (--photo's iBUG 68 points")
    photo.with_suffix(".pts").write_text("")
    _one_line(_bench("video_tracking.py", *run, "--out", tmp_path / "o", cwd=tmp_path), "video_tracking.py",
              f"{tmp_path / 'youtube68'}: not found (--data-dir")
    (tmp_path / "youtube68").mkdir()
    _one_line(_bench("video_tracking.py", *run, "--out", files["file"], cwd=tmp_path), "video_tracking.py",
              f"--out {files['file']}: not a folder it can write in")
    # an unreadable photo, .pts file or YouTube68 CSV: exit status 1 and a line without the script's name, the CSV's
    # after minutes of the pan clips' rows
    _one_line(_bench("video_tracking.py", *run, "--out", tmp_path / "o", cwd=tmp_path), "video_tracking.py",
              f"{photo}: missing or not an image")
    import cv2

    cv2.imwrite(str(photo), np.full((8, 8, 3), 128, np.uint8))
    _one_line(_bench("video_tracking.py", *run, "--out", tmp_path / "o", cwd=tmp_path), "video_tracking.py",
              f"{photo.with_suffix('.pts')}: not a readable .pts file")
    photo.with_suffix(".pts").write_text("version: 1\nn_points: 1\n{\n4 4\n}\n")
    _one_line(_bench("video_tracking.py", *run, "--out", tmp_path / "o", cwd=tmp_path), "video_tracking.py",
              f"{tmp_path / 'youtube68' / 'training_frames_keypoints.csv'}: not a readable YouTube68 CSV")
    monkeypatch.setenv("FACE_DATA_DIR", str(tmp_path))  # it read ../shared/data whatever this said, as no other benchmark did
    assert _module("video_tracking").build_parser().parse_args([]).data_dir == tmp_path
    # its clips and overlays (pan.mp4 ...) replaced files of those names in any --out, /tmp/video_tracking by default
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pan.mp4").write_bytes(b"the user's own video")
    _one_line(_bench("video_tracking.py", *run, "--out", mine, cwd=tmp_path), "video_tracking.py",
              f"--out {mine}: holds pan.mp4, not written by video_tracking.py (no .video_tracking there); name a new or "
              "empty folder")
    assert sorted(p.name for p in mine.iterdir()) == ["pan.mp4"] and (mine / "pan.mp4").read_bytes() == b"the user's own video"
    claim_out = _module("video_tracking").claim_out
    assert claim_out(tmp_path / "new" / "clips") is None and claim_out(tmp_path / "new" / "clips") is None  # its own, again
    (tmp_path / "new" / "clips" / "pan.mp4").write_bytes(b"an earlier run's clip")
    assert claim_out(tmp_path / "new" / "clips") is None
    assert sorted(p.name for p in (tmp_path / "new" / "clips").iterdir()) == [".video_tracking", "pan.mp4"]
    assert claim_out(tmp_path / "new").startswith(f"--out {tmp_path / 'new'}: holds clips, not written by")


def test_inference_speed_times_keras_on_jax_on_every_core_and_names_its_backend():
    """Keras on JAX was timed 'on 1 thread' (JAX has no such setting, and Predictor.load now refuses it: a traceback
    and a row of dashes) under the name 'Keras (TensorFlow)'."""
    bench = _module("_inference_common")  # what inference_speed.py's parts share
    assert bench.thread_counts("keras", "jax") == [bench.CORES]
    assert bench.thread_counts("keras", "tensorflow") == sorted({1, bench.CORES})
    assert bench.thread_counts("onnx", "jax") == sorted({1, bench.CORES}) and bench.thread_counts("dlib", None) == [1]
    assert bench.label("keras", {"keras_backend": "jax"}) == "Keras (JAX)"
    assert bench.label("keras", {"keras_backend": "tensorflow"}) == "Keras (TensorFlow)"
    assert bench.label("onnx", {"keras_backend": "jax"}) == "ONNX Runtime"


def test_builtin_landmark_box_tells_faces_dlib_finds_none_of_in_one_line_with_status_2(tmp_path):
    """Blank photos in every folder it reads: dlib finds no face.  It printed the table's header with no row and
    exited 0."""
    _blank_face_data(tmp_path, muct_and_wflw=True)
    result = _bench("builtin_landmark_box.py", "--data", tmp_path, "--workers", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout.strip() == "", (
        result.stdout, result.stderr)
    assert result.stderr.splitlines()[-1] == (
        f"builtin_landmark_box.py: {tmp_path}: dlib found none of the 4 faces read (300-W 1, YouTube68 1, MUCT 1, "
        "WFLW samples 1); nothing to measure"), result.stderr


def test_detect_max_side_refuses_an_unknown_set_a_small_side_or_a_missing_folder(tmp_path):
    _one_line(_bench("detect_max_side.py", "--data", tmp_path, "--sets", "afw,wider", cwd=tmp_path), "detect_max_side.py",
              "--sets: 'afw,wider': give comma-separated names of afw, helen, muct")
    _one_line(_bench("detect_max_side.py", "--data", tmp_path, "--max-sides", "1024,40", cwd=tmp_path),
              "detect_max_side.py", "argument --max-sides: '1024,40': give comma-separated sides in px >= 80")
    _one_line(_bench("detect_max_side.py", "--data", tmp_path, "--sets", "muct", cwd=tmp_path), "detect_max_side.py",
              f"{tmp_path / 'muct'}: no such folder (--data: the face data, with muct/)")  # a traceback from the reader


def test_photo_speed_refuses_a_missing_photo_a_small_side_or_no_repeats(tmp_path):
    _one_line(_bench("photo_speed.py", "--photo", tmp_path / "none.jpg", cwd=tmp_path), "photo_speed.py",
              f"{tmp_path / 'none.jpg'}: no such photo")
    _one_line(_bench("photo_speed.py", "--max-sides", "0,50", cwd=tmp_path), "photo_speed.py",
              "--max-sides: 50: give 0 (the photo itself) or 80 px or more")
    _one_line(_bench("photo_speed.py", "--repeats", "0", cwd=tmp_path), "photo_speed.py", "--repeats must be >= 1, got 0")
