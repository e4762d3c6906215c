"""What a user can get wrong gives ``SCRIPT: PATH: what is wrong`` on one stderr line and exit status 2,
never a traceback (synthetic files, no face data).  ``tests/data/test_train_faults.py`` kills real runs."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.cli import evaluate as evaluate_cli
from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.inference.photos import output_name

ROOT = Path(__file__).resolve().parents[2]
TINY = ["mlp", "--model-options", '{"hidden_units": [4]}', "--epochs", "1", "--augment", "none", "--preview-every", "0",
        "--workers", "1"]


def faces(n: int, subjects: int = 4, size: int = 16) -> dict:
    rng = np.random.default_rng(n)
    return {
        "images": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        "landmarks": rng.uniform(0.2, 0.8, (n, 68, 2)).astype(np.float32),
        "visible": np.ones((n, 68), bool),
        "subject": np.array([f"s{i % subjects}" for i in range(n)]),
        "scheme": np.array("ibug68"),
        "box": np.tile(np.array([0, 0, size, size], np.float32), (n, 1)),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    made = {"root": root, "good": npz.save_npz(root / "good.npz", faces(12)),
            "empty": npz.save_npz(root / "empty.npz", faces(0)),
            "one_subject": npz.save_npz(root / "one_subject.npz", faces(6, subjects=1)),
            "set_test": npz.save_npz(root / "set_test.npz", faces(12))}  # beside set_train.npz: a prepared pair
    npz.save_npz(root / "set_train.npz", faces(12))
    whole = made["good"].read_bytes()
    (root / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (root / "text.npz").write_text("not an archive\n")
    (root / "truncated.json").write_text('{"model": "mlp", "epochs"')
    (root / "torn.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # 96 bytes, as a killed write left it
    (root / "a_file").write_text("a file, not a folder\n")
    made.update({name: root / name for name in ("truncated.npz", "text.npz", "truncated.json", "torn.weights.h5")})
    made["unwritable"] = root / "a_file" / "run"  # beneath a file: no one can create it, root included
    return made


def run_cli(main, argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line(code, lines, script, path, words=""):
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{script}: {path}"), lines[0]
    assert words in lines[0], lines[0]


def fake_run(folder: Path, **damage) -> Path:
    """A run folder with a config and damaged (or no) checkpoints: enough to get as far as loading weights."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": "mlp", "scheme": "ibug68", "input_shape": [16, 16, 3], "num_points": 68, "input_kind": "image",
              "model_options": {"hidden_units": [4]}}
    (folder / "config.json").write_text(damage.get("config", json.dumps(config)))
    for name in damage.get("torn", ()):
        (folder / name).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))
    return folder


TRAIN_CASES = {
    "truncated --data": (lambda f: [*TINY, "--data", f["truncated.npz"], "--run-dir", f["root"] / "r1"], "truncated.npz", ""),
    "truncated --val": (lambda f: [*TINY, "--data", f["good"], "--val", f["truncated.npz"], "--run-dir", f["root"] / "r2"],
                        "truncated.npz", ""),
    "not an npz": (lambda f: [*TINY, "--data", f["text.npz"], "--run-dir", f["root"] / "r3"], "text.npz", ""),
    "missing --data": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir", f["root"] / "r4"],
                       "nowhere.npz", ""),
    "--size 0": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["root"] / "r5", "--size", "0"], "--size", "positive"),
    "--size -3": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["root"] / "r6", "--size", "-3"], "--size", "positive"),
    "empty --val": (lambda f: [*TINY, "--data", f["good"], "--val", f["empty"], "--run-dir", f["root"] / "r7"],
                    "empty.npz", "no faces"),
    "empty --data": (lambda f: [*TINY, "--data", f["empty"], "--val-fraction", "0", "--run-dir", f["root"] / "r8"],
                     "empty.npz", "no faces"),
    "one subject, --val-fraction": (lambda f: [*TINY, "--data", f["one_subject"], "--run-dir", f["root"] / "r9"],
                                    "one_subject.npz", "subject"),
    # a loss get_loss refuses is named before the data loads (here there is none to load)
    "unknown --loss": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir", f["root"] / "r12", "--loss",
                                  "huber"], "--loss", "unknown loss 'huber'; known: mse, l1, wing, cgd"),
    "unknown --loss-options key": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir", f["root"] / "r13",
                                              "--loss", "wing", "--loss-options", '{"widht": 8}'],
                                   "--loss-options", "loss 'wing' has no option(s) widht; its options: width, curvature"),
    "bad --loss-options value": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir", f["root"] / "r14",
                                            "--loss", "cgd", "--loss-options", '{"alpha": -1}'],
                                 "--loss-options", "cgd alpha must be a number >= 0, got -1"),
    # so are the model's option names, --weights and --train-blocks (build_model refused them after the data had
    # loaded and config.json was written)
    "unknown --model-options key": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir", f["root"] / "r15",
                                               "--model-options", '{"hiden_units": [4]}'],
                                    "--model-options", "model 'mlp' has no option(s) hiden_units; its options: hidden_units, dropout"),
    "--weights for a model without a backbone": (lambda f: [*TINY, "--data", f["root"] / "nowhere.npz", "--run-dir",
                                                            f["root"] / "r16", "--weights", "imagenet"],
                                                 "--weights", "model 'mlp' has no pretrained backbone"),
    # it trained on the held-out faces evaluate.py then scored, without a word
    "--data a prepared test file": (lambda f: [*TINY, "--data", f["set_test"], "--run-dir", f["root"] / "r17"], "set_test.npz",
                                    "the test file of a prepared set (--data): train on "),
    # a batch larger than the training faces: the line named no file ('batch size 64 is larger than the 9 training
    # faces (--batch)')
    "--batch above the training faces": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["root"] / "r18", "--batch",
                                                    "64"], "good.npz", ": --batch 64 is more than its 9 training faces (left "
                                         "after --val-fraction 0.1 held out its subjects)"),
    "unwritable --run-dir": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["unwritable"]], "a_file/run", "cannot write"),
    "--resume, missing folder": (lambda f: ["--resume", "--run-dir", f["root"] / "gone"], "gone", "nothing to resume"),
    "--resume, empty folder": (lambda f: ["--resume", "--run-dir", _mkdir(f["root"] / "empty_run")], "empty_run",
                               "nothing to resume"),
    "--resume, torn state.json": (lambda f: ["--resume", "--run-dir", _torn_state(f)], "torn_state/state.json", "damaged"),
    "truncated --config": (lambda f: ["--config", f["truncated.json"]], "truncated.json", "JSON"),
    "torn --init file": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["root"] / "r10", "--init", f["torn.weights.h5"]],
                         "torn.weights.h5", "unreadable"),
    "--init run with torn weights": (lambda f: [*TINY, "--data", f["good"], "--run-dir", f["root"] / "r11", "--init",
                                                fake_run(f["root"] / "torn_init", torn=("best.weights.h5", "last.weights.h5"))],
                                     "torn_init", "no usable weights"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _torn_state(f) -> Path:
    run = _mkdir(f["root"] / "torn_state")
    config = {"model": "mlp", "data": str(f["good"]), "run_dir": str(run), "epochs": 1}
    (run / "config.json").write_text(json.dumps(config))
    (run / "state.json").write_text('{"epoch": 0, "learning')
    return run


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_reports_a_bad_input_in_one_line(case, files, capsys):
    make_argv, path, words = TRAIN_CASES[case]
    code, lines = run_cli(train_cli.main, make_argv(files), capsys)
    assert_one_line(code, lines, "train.py", _shown(files, path), words)


def _shown(files, path: str) -> str:
    """The path as the message starts with it (a file of the fixture folder, or a flag)."""
    return path if path.startswith("--") else str(files["root"] / path)


EVALUATE_CASES = {
    "truncated --data": (lambda f: [fake_run(f["root"] / "ok"), "--data", f["truncated.npz"], "--out", f["root"] / "e1"],
                         "truncated.npz", ""),
    "unwritable --out": (lambda f: [fake_run(f["root"] / "ok"), "--data", f["good"], "--out", f["unwritable"]], "a_file/run",
                         "cannot write"),
    "missing run": (lambda f: [f["root"] / "no_run", "--data", f["good"], "--out", f["root"] / "e2"], "no_run",
                    "no such run directory"),
    "a folder as the video": (lambda f: [fake_run(f["root"] / "ok"), "--video", _mkdir(f["root"] / "clips"),
                                         "--out", f["root"] / "e8" / "v.mp4"], "clips", "a folder, not a video file"),
    "a file as --out": (lambda f: [fake_run(f["root"] / "ok"), "--image", _broken_photo(f, "single"),
                                   "--out", f["root"] / "a_file"], "a_file", "a file, not a folder"),
    "corrupt run config": (lambda f: [fake_run(f["root"] / "bad_config", config="{"), "--data", f["good"],
                                      "--out", f["root"] / "e3"], "bad_config/config.json", "unreadable"),
    "run without usable weights": (lambda f: [fake_run(f["root"] / "torn", torn=("best.weights.h5", "last.weights.h5")),
                                              "--data", f["good"], "--out", f["root"] / "e4"], "torn", "no usable weights"),
    "--image: folder without photos": (lambda f: [fake_run(f["root"] / "ok"), "--image", _mkdir(f["root"] / "no_photos"),
                                                  "--out", f["root"] / "e5"], "no_photos", "no images"),
    "--image: unreadable photo": (lambda f: [fake_run(f["root"] / "ok"), "--image", _broken_photo(f, "single"),
                                             "--out", f["root"] / "e6"], "single/broken.jpg", "cannot read"),
    "--image: missing photo": (lambda f: [fake_run(f["root"] / "ok"), "--image", f["root"] / "photo.jpg",
                                          "--out", f["root"] / "e9" / "marked"], "photo.jpg", "no such photo"),
}


# options where they do nothing, and counts below one: refused before anything loads
MISPLACED = {
    ("--video", "clip.mp4", "--crops"): "--crops works with --image, not --video",
    ("--data", "t.npz", "--align", "112"): "--align works with --image and --video, not --data",
    ("--video", "clip.mp4", "--align-padding", "0.3"): "--align-padding works with --align SIZE",
    ("--image", "a.jpg", "--max-frames", "3"): "--max-frames works with --video, not --image",
    ("--image", "a.jpg", "--redetect-every", "3"): "--redetect-every works with --video, not --image",
    ("--image", "a.jpg", "--baseline", "dlib"): "--baseline works with --data, not --image",
    ("--image", "a.jpg", "--where", "source=300w"): "--where works with --data, not --image",
    ("--data", "t.npz", "--min-score", "0.1"): "--min-score works with --image and --video, not --data",
    ("--data", "t.npz", "--no-smooth"): "--no-smooth works with --video, not --data",
    ("--image", "a.jpg", "--no-timing"): "--no-timing works with --data, not --image",  # taken in silence
    # 'the padding of an aligned face must be 0 or more', naming no option, once the photo was read
    ("--image", "a.jpg", "--align", "112", "--align-padding", "-0.7"): "--align-padding must be 0 or more, got -0.7",
    ("--video", "clip.mp4", "--align", "112", "--align-padding", "inf"): "--align-padding must be 0 or more, got inf",
    ("--image", "a.jpg", "--min-score", "nan"): "--min-score must be a number, got nan",  # once named no option
    ("--video", "clip.mp4", "--no-timing"): "--no-timing works with --data, not --video",
    ("--image", "a.jpg", "--align-padding", "0.3"): "--align-padding works with --align SIZE",
    ("--image", "a.jpg", "--threads", "0"): "--threads must be at least 1, got 0",
    ("--image", "a.jpg", "--align", "0"): "--align must be between 16 and 1024 px, got 0",  # once named no flag
    ("--video", "clip.mp4", "--align", "5000"): "--align must be between 16 and 1024 px, got 5000",  # once 5000-px chips
    ("--video", "clip.mp4", "--max-frames", "0"): "--max-frames must be at least 1, got 0",
    ("--video", "clip.mp4", "--redetect-every", "0"): "--redetect-every must be at least 1, got 0",
    ("r1", "r2", "--video", "clip.mp4"): "--video takes one run directory, got 2 (r1, r2)",
    ("--data", "t.npz", "--detect-max-side", "1600"): "--detect-max-side works with --image and --video, not --data",
    ("--video", "clip.mp4", "--detect-max-side", "79"): "--detect-max-side must be 0 (the photo itself) or a whole "
                                                        "number of pixels from 80 (dlib's search window) up, got 79",
    ("--image", "a.jpg", "--detect-max-side", "40"): "--detect-max-side must be 0 (the photo itself) or a whole number "
                                                     "of pixels from 80 (dlib's search window) up, got 40",
    ("--image", "a.jpg", "--detect-max-side", "-1"): "--detect-max-side must be 0 (the photo itself) or a whole number "
                                                     "of pixels from 80 (dlib's search window) up, got -1",
}


@pytest.mark.parametrize("argv", list(MISPLACED))
def test_evaluate_refuses_an_option_where_it_does_nothing(argv, capsys):
    code, lines = run_cli(evaluate_cli.main, list(argv), capsys)
    assert code == 2 and lines == [f"evaluate.py: {MISPLACED[argv]}"]


def test_photos_and_run_directories_in_any_order(files, tmp_path, capsys):
    """Several photos after --image (a shell's glob) are photos, a run directory among them is the run; two
    runs for photos are one line that says where the photos go."""
    run, photo = fake_run(files["root"] / "ok"), _broken_photo(files, "single")
    code, lines = run_cli(evaluate_cli.main, ["--image", photo, run, "--out", tmp_path], capsys)
    assert code == 2 and lines[-1] == f"evaluate.py: {photo}: cannot read image: truncated JPEG (no end-of-image marker)"
    code, lines = run_cli(evaluate_cli.main, [run, run, "--image", photo], capsys)
    assert lines == [f"evaluate.py: --image takes one run directory, got 2 ({run}, {run}): give the photos after --image"]
    code, lines = run_cli(evaluate_cli.main, ["--image", run], capsys)
    assert lines == ["evaluate.py: --image names run directories only; give it photos or folders of photos"]


def test_a_photo_video_or_test_set_given_without_its_option_is_named_with_the_option(files, tmp_path, capsys):
    """evaluate.py photo.jpg (a first try without --image) said only 'give exactly one of --data, --image, --video'."""
    import cv2

    photo, folder, clip = tmp_path / "photo.jpg", tmp_path / "shots", tmp_path / "clip.mp4"
    assert cv2.imwrite(str(photo), np.full((20, 30, 3), 128, np.uint8))
    folder.mkdir()
    (folder / "a.png").write_bytes(photo.read_bytes())
    clip.write_bytes(b"a video file's name is enough")
    run = fake_run(files["root"] / "named")
    for argv, hint in (([photo], f"{photo} is a photo: --image {photo}"),
                       ([run, photo], f"{photo} is a photo: --image {photo}"),
                       ([folder], f"{folder} is a folder of photos: --image {folder}"),
                       ([clip], f"{clip} is a video: --video {clip}"),
                       ([files["good"]], f"{files['good']} is a test set: --data {files['good']}")):
        code, lines = run_cli(evaluate_cli.main, argv, capsys)
        assert code == 2 and lines == [f"evaluate.py: give exactly one of --data, --image, --video ({hint})"], lines
    code, lines = run_cli(evaluate_cli.main, [run], capsys)  # a run alone: nothing to suggest
    assert code == 2 and lines == ["evaluate.py: give exactly one of --data, --image, --video"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "photo.jpg", "shots"]


def test_an_image_or_video_file_name_as_the_photos_out_is_refused_before_anything_is_written(files, tmp_path, capsys):
    """--image photo.jpg --out result.png made a folder named result.png holding photo.jpg_landmarks.png; an existing
    folder so named is still a folder."""
    import cv2

    photo = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(photo), np.full((20, 30, 3), 128, np.uint8))
    for name in ("result.png", "result.JPG", "marked.mp4"):
        code, lines = run_cli(evaluate_cli.main, ["--image", photo, "--out", tmp_path / name], capsys)
        assert code == 2 and lines == [f"evaluate.py: {tmp_path / name}: --out for --image is a folder (each photo's "
                                       f"overlay and points go into it as PHOTO_landmarks.png and .json), not a "
                                       f"{Path(name).suffix} file"], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
    (tmp_path / "shots.png").mkdir()
    code, lines = run_cli(evaluate_cli.main, ["--image", photo, "--out", tmp_path / "shots.png"], capsys)
    assert code == 1 and lines == [f"{photo}: no face found"], lines  # a grey photo, marked into the folder
    # a folder written as one (as --video takes it) was refused as 'not a .png file'
    code, lines = run_cli(evaluate_cli.main, ["--image", photo, "--out", f"{tmp_path / 'new.png'}/"], capsys)
    assert code == 1 and lines == [f"{photo}: no face found"], lines
    assert (tmp_path / "new.png").is_dir()


def test_what_counts_as_a_run_among_the_photos_and_as_an_output_in_a_folder(files, tmp_path):
    """A folder of photos that holds a config.json of its own is photos (a run has weights too); names that only
    look like outputs (john.smith_face1.png) are photos."""
    from facelandmarks.cli.evaluate import _is_run
    from facelandmarks.inference.photos import image_files

    photos = _mkdir(tmp_path / "photos")
    for name in ("a.jpg", "john.smith_face1.png", "2023.05.01_landmarks.png", "a.jpg_landmarks.png", "a.jpg_face0.png",
                 "a.jpg_aligned1.png", "B.JPEG_landmarks.png"):
        (photos / name).write_bytes(b"")
    (photos / "config.json").write_text("{}")
    assert not _is_run(photos) and _is_run(fake_run(files["root"] / "ok")) and _is_run(tmp_path / "model.onnx")
    assert [p.name for p in image_files(photos)] == ["2023.05.01_landmarks.png", "a.jpg", "john.smith_face1.png"]


def _broken_photo(f, folder: str) -> Path:
    photo = _mkdir(f["root"] / folder) / "broken.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return photo


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_reports_a_bad_input_in_one_line(case, files, capsys):
    """... and makes no folder: --out (and the folders above it) was made before a photo was read or a run loaded."""
    make_argv, path, words = EVALUATE_CASES[case]
    argv = make_argv(files)
    out = Path(argv[argv.index("--out") + 1])
    made_before = {folder: folder.exists() for folder in (out, *out.parents)}
    code, lines = run_cli(evaluate_cli.main, [*argv, *(["--no-timing"] if "--data" in argv else [])], capsys)
    assert_one_line(code, lines, "evaluate.py", _shown(files, path), words)
    assert {folder: folder.exists() for folder in made_before} == made_before


def test_a_folder_of_unreadable_photos_is_an_error_after_one_line_per_photo(files, capsys):
    from facelandmarks.models import build_model

    run = fake_run(files["root"] / "untrained")  # weights that load: the photos are the only problem
    build_model("mlp", input_shape=(16, 16, 3), num_points=68, hidden_units=[4]).save_weights(run / "best.weights.h5")
    folder = _broken_photo(files, "all_broken").parent
    code, lines = run_cli(evaluate_cli.main, [run, "--image", folder, "--out", files["root"] / "e7"], capsys)
    assert code == 2 and lines == [f"{folder / 'broken.jpg'}: cannot read image: truncated JPEG (no end-of-image marker); skipped",
                                   f"evaluate.py: {folder}: none of its 1 image could be read"]


def test_a_video_given_as_a_photo_is_told_to_use_video(tmp_path, capsys):
    """evaluate.py --image clip.mp4 said 'unsupported image data' and no more: a video, by its name or as OpenCV opens
    it, now says to give it with --video; a broken photo does not."""
    import cv2

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    unnamed = tmp_path / "recording"
    unnamed.write_bytes(clip.read_bytes())
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    for photo, hinted in ((clip, True), (unnamed, True), (noise, False)):
        code, lines = run_cli(evaluate_cli.main, ["--image", photo, "--out", tmp_path / "out"], capsys)
        assert_one_line(code, lines, "evaluate.py", photo, "cannot read image")
        assert lines[0].endswith("; a video? give it with --video") == hinted, lines[0]


def test_in_a_real_process_the_line_is_all_there_is(files):
    """No traceback, no start-up noise: the whole of stderr is the one line."""
    for script, argv in (("train.py", [*TINY, "--data", files["truncated.npz"], "--run-dir", files["root"] / "p1"]),
                         ("evaluate.py", [files["root"], "--data", files["truncated.npz"], "--out", files["root"] / "p2"])):
        result = subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True, text=True,
                                timeout=300, cwd=ROOT)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{script}: "), result.stderr
        assert "truncated.npz" in result.stderr or "not a run" in result.stderr


def test_photos_with_one_name_and_two_suffixes_get_two_outputs():
    names = {output_name(Path(p), kind) for p in ("x.jpg", "x.png", "x.JPG", "x_jpg.png") for kind in ("png", "json")}
    assert len(names) == 8 and "x.jpg_landmarks.png" in names and "x.png_landmarks.json" in names


def test_help_documents_the_exit_status(capsys):
    for main in (train_cli.main, evaluate_cli.main):
        with contextlib.suppress(SystemExit):
            main(["--help"])
        text = capsys.readouterr().out
        assert "exit status" in text and "2    a usage or input error" in text


def test_the_help_names_the_markup_dlibs_baseline_takes(capsys):
    """It said '68-point data only', but a 68-point markup of your own is refused: dlib gives ibug68's points."""
    with contextlib.suppress(SystemExit):
        evaluate_cli.main(["--help"])
    assert ('on ibug68 data, or on data of a markup whose scheme says where its points lie in iBUG 68 ("ibug68"'
            in " ".join(capsys.readouterr().out.split()))


def test_an_unwritable_folder_is_found_before_any_work(tmp_path):
    from facelandmarks.data.errors import OutputError, check_writable

    check_writable(tmp_path / "new" / "deep")
    assert not [p for p in (tmp_path / "new" / "deep").iterdir()]  # the probe file is gone
    # a folder no one may create files in, root included (the permission case below proves nothing for root,
    # and the test then checked no unwritable folder at all)
    with pytest.raises(OutputError, match=r"^/sys/kernel: cannot write there \((Permission denied|Read-only file system)\)$"):
        check_writable("/sys/kernel")
    if os.geteuid() != 0:  # root writes anywhere: permissions prove nothing for it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="cannot write there"):
            check_writable(locked)


def test_evaluate_writes_where_the_help_says_without_out(tmp_path):
    run = tmp_path / "runs" / "mine"
    parse = evaluate_cli.build_parser().parse_args
    assert evaluate_cli.default_out(parse([str(run), "--data", "t.npz"])) == str(Path("results") / "mine")
    assert evaluate_cli.default_out(parse(["--data", "t.npz", str(run / "export" / "model.onnx")])) == str(Path("results") / "model")
    assert evaluate_cli.default_out(parse(["--image", "photo.jpg"])) == "out"
    assert evaluate_cli.default_out(parse(["--video", "clips/talk.mp4"])) == str(Path("out") / "talk_landmarks.mp4")
    assert evaluate_cli.default_out(parse(["--video", "0"])) == str(Path("out") / "camera0_landmarks.mp4")


def test_only_the_test_half_of_a_prepared_set_is_refused_as_data(tmp_path):
    """PREFIX_test.npz (or its shards' manifest) with the set's training file or manifest beside it; not a file of
    one's own that happens to end in _test.npz, nor the training file."""
    from facelandmarks.data.fileset import test_side_of

    lone = npz.save_npz(tmp_path / "mine_test.npz", faces(4))
    assert test_side_of(lone) is None
    (tmp_path / "ibug_train.shards.json").write_text("{}")
    assert test_side_of(tmp_path / "ibug_test.shards.json") == tmp_path / "ibug_train.shards.json"
    (tmp_path / "face5.manifest.json").write_text("{}")
    assert test_side_of(tmp_path / "face5_test.npz") == tmp_path / "face5_train.npz"
    assert test_side_of(tmp_path / "face5_train.npz") is None


def test_a_val_naming_no_file_names_val_and_leaves_no_run_folder(files, tmp_path, capsys):
    """--val 0.2 (meant: --val-fraction 0.2) said '0.2: no such dataset file', naming no flag, after the run folder
    had been made, and left it empty."""
    run = tmp_path / "run"
    code, lines = run_cli(train_cli.main, [*TINY, "--data", files["good"], "--val", "0.2", "--run-dir", run], capsys)
    assert_one_line(code, lines, "train.py", "0.2", "no such dataset file (--val; for a share of the training faces, "
                                                    "--val-fraction 0.2)")
    assert not run.exists()
    code, lines = run_cli(train_cli.main, [*TINY, "--data", files["good"], "--val", tmp_path / "nowhere.npz",
                                           "--run-dir", run], capsys)
    assert_one_line(code, lines, "train.py", tmp_path / "nowhere.npz", "no such dataset file (--val)")
    assert not run.exists()


def test_a_prepared_sets_test_file_as_val_is_allowed_with_a_warning(files, tmp_path, capsys):
    """--val PREFIX_test.npz chose the best epoch and early stopping on the faces evaluate.py scores, without a word."""
    run = tmp_path / "run"
    code = train_cli.main([str(a) for a in [*TINY, "--batch", "4", "--data", files["good"], "--val", files["set_test"],
                                            "--run-dir", run]])
    out = capsys.readouterr().out
    assert code == 0
    warned = [line for line in out.splitlines() if line.startswith("warning: --val")]
    assert warned == [f"warning: --val {files['set_test']} is the test file of a prepared set (its training file: "
                      f"{files['root'] / 'set_train.npz'}); the best epoch and early stopping are then chosen on the "
                      f"held-out test faces evaluate.py scores"]
    code = train_cli.main([str(a) for a in [*TINY, "--batch", "4", "--data", files["set_test"].with_name("set_train.npz"),
                                            "--val", files["good"], "--run-dir", tmp_path / "run2"]])
    assert code == 0 and "warning: --val" not in capsys.readouterr().out


def test_a_shipped_models_folder_is_a_run_no_new_run_overwrites(files, tmp_path, capsys):
    """A folder models.py --ship wrote (config.json, best.weights.h5, history.csv: no last checkpoint, no state.json)
    given as --run-dir: a new run wrote its config and weights over the shipped ones without a word."""
    shipped = fake_run(tmp_path / "shipped")
    (shipped / "best.weights.h5").write_bytes(b"the shipped weights")
    (shipped / "history.csv").write_text("epoch,loss\n0,1.0\n")
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    code, lines = run_cli(train_cli.main, [*TINY, "--batch", "4", "--data", files["good"], "--run-dir", shipped], capsys)
    assert_one_line(code, lines, "train.py", shipped, "already holds a run (best.weights.h5)")
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before


def test_resume_with_a_budget_below_the_epochs_run_says_how_many_ran(files, tmp_path, capsys):
    """A 3-epoch run resumed with --epochs 2 printed 'already ran its 2 epochs'."""
    import dataclasses

    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    config = TrainConfig(model="mlp", data=str(files["good"]), run_dir=str(tmp_path / "run"), epochs=3, batch=4,
                         augment="none", preview_every=0, workers=1, model_options={"hidden_units": [4]})
    fit(config, verbose=0)
    capsys.readouterr()
    fit(dataclasses.replace(config, epochs=2), resume=True, verbose=0)
    assert (f"{tmp_path / 'run'} already ran 3 epochs, more than --epochs 2: it ends there; --epochs N above 3 gives "
            "it a new budget") in capsys.readouterr().out


def test_a_finished_run_says_where_it_is_what_ended_it_and_its_best_epoch(files, tmp_path, capsys):
    """With --config naming the folder, no line said where the run went; what ended it and the best epoch were only
    keys of the JSON summary. One line before the summary says all three (the summary still parses from its '{')."""
    run = tmp_path / "run"
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "mlp", "data": str(files["good"]), "run_dir": str(run), "epochs": 2, "batch": 4,
                                  "augment": "none", "workers": 1, "model_options": {"hidden_units": [4]}}))
    capsys.readouterr()
    assert train_cli.main(["--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    line = next(line for line in out.splitlines() if line.startswith(f"run in {run}: "))
    assert line.startswith(f"run in {run}: 2 epochs, ended by its epoch budget (--epochs); best epoch "
                           f"{summary['best_epoch']} (validation NME {summary['val_nme']:.2f} %); best.weights.h5, "
                           "model.keras, history.csv, summary.json; TensorBoard: tensorboard --logdir "), line


def test_resume_on_data_of_other_points_or_another_crop_size_is_refused_in_one_line(files, tmp_path, capsys):
    """--resume --data FILE takes FILE as the run's data file, moved: a file of another markup or crop size was told
    'the same file, moved' and then ended in Keras' many-line error on loading the weights."""
    from facelandmarks.landmarks import Scheme

    run = tmp_path / "run"
    tiny = [*TINY, "--batch", "4"]
    assert train_cli.main([*tiny, "--data", str(files["good"]), "--run-dir", str(run)]) == 0
    five = Scheme.from_dict({"name": "resumefive", "points": ["a", "b", "c", "d", "e"], "pairs": [["a", "b"], ["d", "e"]],
                             "normalize": ["a", "b"]})
    other = {"points": npz.save_npz(tmp_path / "five.npz", npz.select_points(faces(12), five, [36, 45, 30, 48, 54])),
             "size": npz.save_npz(tmp_path / "big.npz", faces(12, size=24))}
    said = {"points": f"holds resumefive points (5), the run in {run} trained on ibug68 (68): --resume goes on with the "
                      f"data it trained on; --init {run} starts a new run from it on this data",
            "size": f"gives inputs of 24x24x3, the run in {run} trained on 16x16x3: --resume goes on"}
    for name, path in other.items():
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", run, "--data", path], capsys)
        assert_one_line(code, lines, "train.py", path, said[name])
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_the_line_of_a_run_early_stopping_ended_says_what_it_waited_for(files, tmp_path, capsys):
    """'ended by early stopping; best epoch 3' of a 3-epoch run read as a contradiction: the validation loss still fell
    at epoch 3, by less than --min-delta. The line names the loss, --min-delta and --patience."""
    run = tmp_path / "run"
    argv = [*TINY, "--batch", "4", "--epochs", "20", "--patience", "2", "--min-delta", "100", "--data", str(files["good"]),
            "--run-dir", str(run)]
    capsys.readouterr()
    assert train_cli.main(argv) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"run in {run}: "))
    assert line.startswith(f"run in {run}: 3 epochs, ended by early stopping (the validation loss fell by less than "
                           "--min-delta 100 for --patience 2 epochs); best epoch "), line


def test_resume_with_both_checkpoints_damaged_is_one_line(files, tmp_path, capsys):
    """It printed 'best.weights.h5: damaged ...; the next epoch writes a new one', then the error: no epoch ran."""
    run = tmp_path / "run"
    assert train_cli.main([*TINY, "--batch", "4", "--data", str(files["good"]), "--run-dir", str(run)]) == 0
    for name in ("best.weights.h5", "last.weights.h5"):
        whole = (run / name).read_bytes()
        (run / name).write_bytes(whole[: len(whole) // 2])
    code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", run, "--epochs", "2"], capsys)
    assert_one_line(code, lines, "train.py", run, "no usable weights (last.weights.h5 damaged")
    assert json.loads((run / "config.json").read_text())["epochs"] == 1  # --epochs 2 was recorded, then it failed


@pytest.mark.parametrize("flags, shown", [
    (["mlp", "--train-blocks", "2"], "--train-blocks: model 'mlp' has no backbone blocks to freeze"),
    (["mobilenetv2", "--weights", "nowhere.weights.h5"], "nowhere.weights.h5: no such weights file (--weights: "),
])
def test_a_model_setting_build_model_refuses_is_named_before_the_data_loads(flags, shown, files, tmp_path, capsys):
    """Found only once the data had loaded (a minute for the 128-px training file) and config.json was written, in a
    line naming no flag; a --weights file that is not there was found when the backbone was built."""
    run = tmp_path / "run"
    code, lines = run_cli(train_cli.main, [*flags, "--epochs", "1", "--data", files["good"], "--run-dir", run], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"train.py: {shown}"), lines
    assert not run.exists()


@pytest.mark.parametrize("options, says", [
    ('{"dropout": 2}', "dropout must be in [0, 1), got 2"),
    ('{"hidden_units": [0]}', "hidden_units must be a non-empty sequence of positive integers, got [0]"),
])
def test_an_option_value_the_builder_refuses_names_the_model_and_writes_no_config(options, says, files, tmp_path,
                                                                                  capsys):
    """``check_arguments`` knows the options' names, not their values, which the builder checks (docs/models.md,
    "Adding a model family"): its refusal came as 'train.py: dropout must be in [0, 1), got 2', naming neither the
    model nor its options, and left the new run folder a config.json of the run that never began."""
    run = tmp_path / "run"
    argv = ["mlp", "--model-options", options, "--epochs", "1", "--data", files["good"], "--run-dir", run]
    code, lines = run_cli(train_cli.main, argv, capsys)
    assert code == 2 and lines == [f"train.py: model 'mlp' (--model-options {options}, 16x16x3 inputs): {says}"], lines
    assert not (run / "config.json").exists()
