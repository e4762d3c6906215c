"""Files written whole (``facelandmarks/files.py``): a process killed while it writes one leaves the earlier file, or
none, never part of one, and nothing reads what it left half-written.

The kills are real: a fresh Python whose files may grow to ``limit`` bytes is ended by the kernel (SIGXFSZ) at the
write that crosses it, in the middle of the file it was writing."""

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks import files
from facelandmarks.inference.photos import image_files, output_name
from facelandmarks.landmarks import get_scheme
from facelandmarks.scheme_files import dump_scheme, load_scheme

ROOT = Path(__file__).resolve().parents[2]
# Python ignores SIGXFSZ (a write past the limit fails with EFBIG instead): at its default, the write kills
KILLED_BY_SIGXFSZ = "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
MARK = """
import sys
from pathlib import Path
import numpy as np
import pytest
from facelandmarks.inference.photos import write_results
from tests.unit.test_drawing import jaw, synthetic_face

side, info = int(sys.argv[1]), {"run": sys.argv[2]}
image = np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8)
found = [synthetic_face(jaw(side / 4, side / 2, side / 3 + i)) for i in range(8)]
write_results(Path("x.jpg"), image, found, Path(sys.argv[3]), info)
"""


def killed_writing(code: str, *args, limit: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` with ``args`` in a fresh Python; with ``limit``, the kernel ends it at the write that makes a file
    longer than ``limit`` bytes (asserted to have happened)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    code = KILLED_BY_SIGXFSZ + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            preexec_fn=cap if limit else None, capture_output=True, text=True, timeout=300)
    assert result.returncode == (-signal.SIGXFSZ if limit else 0), result.stderr
    return result


def test_a_photos_json_killed_mid_write_leaves_no_half_and_no_older_json(tmp_path):
    """evaluate.py --image wrote each photo's JSON in place: a kill mid-write left half a JSON (the earlier run's gone)
    that json.load refused, under the name the overlay beside it promises. Written whole, the earlier run's JSON then
    stayed beside this run's overlay: points and options the overlay does not show. Now the earlier JSON goes once the
    new overlay is written, and a kill in the new JSON leaves none (and no partial file taken for one)."""
    killed_writing(MARK, 32, "first", tmp_path)
    json_path, png = tmp_path / output_name(Path("x.jpg"), "json"), tmp_path / output_name(Path("x.jpg"), "png")
    assert json.loads(json_path.read_text())["run"] == "first"
    assert png.stat().st_size < json_path.stat().st_size // 2  # the kill lands in the JSON, after the overlay was written
    killed_writing(MARK, 32, "second", tmp_path, limit=json_path.stat().st_size // 2)
    assert not json_path.exists()
    assert [p.name for p in tmp_path.iterdir() if not files.is_partial(p.name)] == [png.name]
    assert cv2.imread(str(png)) is not None
    killed_writing(MARK, 32, "third", tmp_path)  # the next run writes it whole
    assert json.loads(json_path.read_text())["run"] == "third"


def test_an_overlay_that_cannot_be_written_leaves_the_earlier_overlay_and_json(tmp_path):
    """The earlier JSON goes only once the new overlay is written: a write that fails in the overlay (here the kernel
    ends it there) leaves the photo's earlier overlay and JSON as they were, a pair of one run."""
    killed_writing(MARK, 32, "first", tmp_path)
    json_path, png = tmp_path / output_name(Path("x.jpg"), "json"), tmp_path / output_name(Path("x.jpg"), "png")
    earlier, overlay = json.loads(json_path.read_text()), png.read_bytes()
    killed_writing(MARK, 32, "second", tmp_path, limit=len(overlay) // 2)
    assert json.loads(json_path.read_text()) == earlier and png.read_bytes() == overlay


def test_an_overlay_killed_mid_write_is_not_a_photo_to_mark_next_time(tmp_path, monkeypatch):
    """A photo folder marked into itself: the overlay a kill left half-written (hidden, beside the photo) was listed
    as a photo by the next run over the folder, and stayed there."""
    from facelandmarks.inference import photos
    from facelandmarks.inference.predictor import Predictor
    from tests.unit.test_video import SquareDetector, SquareModel, frame

    cv2.imwrite(str(tmp_path / "x.jpg"), frame((10, 10)))
    killed_writing(MARK, 400, "first", tmp_path, limit=4096)
    assert any(files.is_partial(p.name) for p in tmp_path.iterdir())  # what the kill left
    assert image_files(tmp_path) == [tmp_path / "x.jpg"]
    assert not (tmp_path / output_name(Path("x.jpg"), "png")).exists()
    class Detector(SquareDetector):
        dropped, min_score = 0, property(lambda self: 0.04, lambda self, value: None)

    monkeypatch.setattr(photos.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=Detector()))
    assert photos.run_on_images(None, tmp_path, tmp_path)["done"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.jpg_landmarks.json", "x.jpg_landmarks.png"]


def test_a_scheme_file_killed_mid_write_leaves_the_earlier_one_whole(tmp_path):
    path = dump_scheme("wflw98", tmp_path / "mine.json")
    killed_writing("""
        import sys
        from facelandmarks.scheme_files import dump_scheme
        dump_scheme("ibug68", sys.argv[1])
    """, path, limit=200)
    assert load_scheme(path, register=False) == get_scheme("wflw98")


def test_a_write_that_fails_leaves_the_earlier_file_and_no_partial_one(tmp_path):
    path = files.write_json_whole(tmp_path / "r.json", {"faces": 2})
    with pytest.raises(TypeError):  # a value JSON cannot hold: nothing is written
        files.write_json_whole(path, {"faces": object()})
    with pytest.raises(KeyboardInterrupt), files.written_whole(path) as partial:
        assert files.is_partial(partial.name) and partial.parent == tmp_path and partial.suffix == ".json"
        partial.write_text("{")
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"faces": 2} and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~files.umask()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's /proc: elsewhere the umask is set to be read")
def test_a_file_written_whole_gets_the_umasks_permissions_without_the_umask_ever_being_changed(tmp_path, monkeypatch):
    """Reading the umask by setting it to 0 and back left, for that moment, any file another thread of the process
    created (a TensorBoard writer, a loader) open to everyone."""
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail(f"the umask was set to {mask:o}"))
        path = files.write_text_whole(tmp_path / "a.txt", "x")
        assert files.umask() == 0o027 and path.stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_a_partial_npz_a_kill_left_goes_at_the_next_write_into_its_folder(tmp_path):
    """datagen.py bottleneck / select-points killed mid-write left a hidden partial npz (as large as the file) that no
    later run removed."""
    arrays = {"images": np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), np.uint8),
              "landmarks": np.zeros((8, 68, 2), np.float32), "visible": np.ones((8, 68), bool),
              "subject": np.array([f"s{i}" for i in range(8)]), "scheme": np.array("ibug68"),
              "box": np.zeros((8, 4), np.float32)}
    np.savez(tmp_path / "arrays.npz", **arrays)
    killed_writing("""
        import sys
        import numpy as np
        from facelandmarks.data import npz
        with np.load(sys.argv[1]) as data:
            npz.save_npz(sys.argv[2], {k: data[k] for k in data.files})
    """, tmp_path / "arrays.npz", tmp_path / "out" / "faces.npz", limit=20000)
    assert [files.is_partial(p.name) for p in (tmp_path / "out").iterdir()] == [True]
    from facelandmarks.data import npz

    npz.save_npz(tmp_path / "out" / "other.npz", arrays)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["other.npz"]


def test_an_evaluation_killed_while_staging_leaves_nothing_the_next_one_keeps(tmp_path):
    """A SIGKILL while evaluate.py --data wrote its tables and plots left its hidden staging folder in --out for good."""
    from facelandmarks.evaluation.evaluate import evaluate_runs
    from tests.unit.test_evaluation import make_run, make_test_set

    run, data, out = make_run(tmp_path / "run"), make_test_set(tmp_path / "test.npz"), tmp_path / "out"
    code = """
        import sys
        from facelandmarks.evaluation.evaluate import evaluate_runs
        evaluate_runs([sys.argv[1]], sys.argv[2], sys.argv[3], timing=False)
    """
    # the evaluations before and after the kill run in this process (one Keras start-up less each); the kill needs its own
    from facelandmarks.evaluation.result_set import LOCK

    evaluate_runs([run], data, out, timing=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK}  # LOCK: the installs' (empty, stays)
    sizes = sorted(len(body) for body in before.values())
    assert sizes[-1] > sizes[-2] + 1  # the largest file (the gallery) is the one the kill lands in
    killed_writing(code, run, data, out, limit=sizes[-2] + 1)
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK] != []  # what the kill left
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    evaluate_runs([run], data, out, timing=False)
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK) == sorted(before)


def test_a_resume_clears_the_partial_record_a_kill_left_in_the_run_folder(tmp_path):
    """A run killed while it rewrote config.json or summary.json (``--resume`` records, the summary at the end) kept
    the hidden partial file in its folder for good."""
    from facelandmarks.training import resume

    (tmp_path / "config.json").write_text('{"model": "scratch"}\n')
    killed_writing("""
        import sys
        from facelandmarks.training.config import _write_json_atomic
        _write_json_atomic(sys.argv[1], {"model": "scratch", "notes": "x" * 4096})
    """, tmp_path / "config.json", limit=1000)
    assert len([p for p in tmp_path.iterdir() if files.is_partial(p.name)]) == 1
    resume.recover(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"model": "scratch"}


def test_a_users_hidden_file_that_only_looks_partial_is_kept(tmp_path):
    """``remove_left_by_kills`` runs on folders the user owns (evaluate.py --image --out may be the photo folder): a
    hidden file of theirs with a number before a dash and '.partial' in its name was taken for a dead writer's."""
    for name in (".notes.2024-draft.partial.txt", ".plan.7-b.partial"):
        (tmp_path / name).write_text("mine")
    (tmp_path / ".r.999999999-k2_x9qe1.partial.json").write_text("{")  # written_whole's, its writer gone
    assert files.remove_left_by_kills(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.2024-draft.partial.txt", ".plan.7-b.partial"]


def test_a_runs_temporary_records_of_before_files_py_go_at_a_resume_and_a_users_stay(tmp_path):
    """Before 6 Dec 2026 a run's config.json, summary.json, pipeline.json and history.csv were written to .NAME.tmp and
    renamed: a kill left that file in the run folder for good (only .state.json.tmp, still how state.json is
    committed, went). Hidden .tmp files of other names are the user's."""
    from facelandmarks.training import resume

    ours = [".config.json.tmp", ".summary.json.tmp", ".pipeline.json.tmp", ".history.csv.tmp", ".state.json.tmp"]
    theirs = [".notes.tmp", ".config.json.mine.tmp", ".model.keras.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("{")
    resume.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_a_partial_npz_of_before_files_py_goes_once_a_day_old(tmp_path):
    """Before 6 Dec 2026 save_npz wrote to .NAME.npz.XXXXXXXX.tmp (mkstemp's name): a kill left that file, as large as
    the npz, for good. Its name holds no process id, so whether its writer is gone is told by its age, as for any
    partial file: a day. Hidden .tmp files of other names are the user's, and so is one dated in mkstemp's place."""
    from facelandmarks.data import npz

    stale = time.time() - 2 * files.STALE_SECONDS
    names = {".faces.npz.k2_x9qe1.tmp": stale, ".faces.npz.abcd1234.tmp": None,  # a writer of today's may be at work
             ".notes.tmp": stale, ".faces.npz.tmp": stale, ".faces.npz.draft-01.tmp": stale, ".a.csv.abcd1234.tmp": stale,
             ".faces.npz.20241201.tmp": stale}  # a user's dated copy: 8 digits, not mkstemp's letters
    for name, when in names.items():
        (tmp_path / name).write_bytes(b"PK")
        if when is not None:
            os.utime(tmp_path / name, (when, when))
    npz.save_npz(tmp_path / "other.npz", {"x": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "other.npz"][1:])


def test_a_write_past_the_file_size_limit_names_the_file_not_its_partial(tmp_path):
    """A full disk (EFBIG here: the file-size limit, SIGXFSZ ignored as Python does) failed with 'File too large' and
    no file named; a folder that cannot be written named the hidden partial name, a file the user never asked for."""
    from facelandmarks.cli.common import error_line

    path = tmp_path / "r.json"
    path.write_text("earlier")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(OSError) as raised:
            files.write_text_whole(path, "x" * 5000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert error_line(raised.value) == f"{path}: File too large"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"] and path.read_text() == "earlier"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written into, root included (a read-only tmpfs), with a dead writer's partial file."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        (folder / ".r.999999999-abcd1234.partial.json").write_text("{")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("root without the right to mount a read-only tmpfs")
    try:
        (folder / ".r.999999999-abcd1234.partial.json").write_text("{")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_folder_names_the_file_and_its_leftovers_are_no_error(read_only_folder):
    path = read_only_folder / "r.json"
    assert files.remove_left_by_kills(read_only_folder) == 0  # it raised naming the leftover
    with pytest.raises(OSError) as raised:
        files.write_json_whole(path, {"faces": 2})
    from facelandmarks.cli.common import error_line

    assert error_line(raised.value).startswith(f"{path}: ")


def test_an_evaluations_dead_staging_folder_goes_and_a_users_look_alike_stays(tmp_path):
    """evaluate.py --data clears its killed runs' .results-PID-XXXXXXXX folders from --out (rmtree): a folder of the
    user's there named like one (.results-2024-final) went with them."""
    from facelandmarks.evaluation.result_set import STAGING

    for name in (".results-2024-final", ".results-999999999-k2_x9qe1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.md").write_text("scores")
    assert files.remove_left_by_kills(tmp_path, STAGING) == 1
    assert [p.name for p in tmp_path.iterdir()] == [".results-2024-final"]


def test_a_name_near_the_file_systems_limit_is_written(tmp_path):
    """The partial name adds a dot, the process id, 8 random characters and '.partial' to the name: a photo's JSON of a
    230-character name (255 is the limit), written in place before, failed with 'File name too long'."""
    for stem in ("p" * 230, "é" * 115):  # 230 bytes either way
        path = tmp_path / (stem + ".json")
        files.write_json_whole(path, {"faces": 2})
        assert json.loads(path.read_text()) == {"faces": 2}
    assert len(list(tmp_path.iterdir())) == 2
