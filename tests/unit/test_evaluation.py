"""evaluate.py --data on runs and test sets made here: what the tables and plots name, and what is checked first.

No face data: random-weight scratch CNNs stand in for trained runs, random crops for faces.
"""

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.evaluation import result_set
from facelandmarks.evaluation.evaluate import evaluate_runs, score
from facelandmarks.evaluation.tables import results_markdown
from facelandmarks.landmarks import get_scheme
from facelandmarks.scheme_files import load_scheme

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def make_run(folder, seed=0, scheme="ibug68", num_points=68):
    """A run directory as train.py leaves it (config.json + best.weights.h5) of a small random-weight scratch CNN."""
    import keras

    from facelandmarks.models import build_model

    folder.mkdir(parents=True)
    keras.utils.set_random_seed(seed)
    options = {"filters": [4, 4, 4, 4], "dense_units": [8]}
    build_model("scratch", input_shape=(SIZE, SIZE, 3), num_points=num_points, **options).save_weights(
        folder / "best.weights.h5")
    config = {"model": "scratch", "scheme": scheme, "input_shape": [SIZE, SIZE, 3], "num_points": num_points,
              "model_options": options, "weights": "none"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_test_set(path, scheme="ibug68", num_points=68, faces=4):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (faces, SIZE, SIZE, 3), dtype=np.uint8),
              "landmarks": rng.uniform(0.2, 0.8, (faces, num_points, 2)).astype(np.float32),
              "visible": np.ones((faces, num_points), bool), "subject": np.array([f"s{i}" for i in range(faces)]),
              "scheme": np.array(scheme), "box": np.tile(np.float32([0, 0, SIZE, SIZE]), (faces, 1))}
    return npz.save_npz(path, arrays)


def test_runs_of_one_folder_name_keep_their_own_rows_curves_and_gallery(tmp_path):
    first, second = make_run(tmp_path / "a" / "best", seed=1), make_run(tmp_path / "b" / "best", seed=2)
    data = make_test_set(tmp_path / "test.npz")
    rows = evaluate_runs([first, second], data, tmp_path / "out", timing=False)
    assert [r["model"] for r in rows] == ["a/best", "b/best"]  # were two rows 'best', the plots showing one of them
    assert rows[0]["nme"] != rows[1]["nme"]
    assert (tmp_path / "out" / "results.md").read_text().startswith("# Results on `test.npz` (ibug68, 4 faces)")
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == ["a/best", "b/best"]
    alone = evaluate_runs([first], data, tmp_path / "alone", timing=False)
    assert alone[0]["model"] == "best"  # a folder name alone where nothing else shares it
    with pytest.raises(ValueError, match="best: given twice among the runs"):
        evaluate_runs([first, tmp_path / "a" / ".." / "a" / "best"], data, tmp_path / "twice", timing=False)


def test_a_dlib_baseline_on_another_markup_is_refused_before_any_run_is_scored(tmp_path):
    data = make_test_set(tmp_path / "muct_test.npz", scheme="muct76", num_points=76)
    never_loaded = tmp_path / "runs" / "not-there"  # scored first, it would fail as no run directory
    with pytest.raises(ValueError, match="muct_test.npz: dlib's predictor gives ibug68 points; this data is muct76"):
        evaluate_runs([never_loaded], data, tmp_path / "out", baseline="dlib", timing=False)
    assert not (tmp_path / "out").exists()


def test_a_markup_without_regions_gets_no_empty_region_table():
    lapa = load_scheme(ROOT / "configs" / "schemes" / "lapa106.json", register=False)
    assert not lapa.regions
    for scheme, regions in ((lapa, False), (get_scheme("ibug68"), True)):
        truth = np.random.default_rng(0).uniform(0.2, 0.8, (3, scheme.num_points, 2)).astype(np.float32)
        arrays = {"landmarks": truth, "visible": np.ones(truth.shape[:2], bool)}
        table = results_markdown([score("m", truth + 0.01, arrays, scheme)], scheme, "t.npz", 3)
        assert ("## NME % per region" in table) == regions, scheme.name  # lapa106's was a column of model names
        assert "## Mean offset" in table and "\n\n\n" not in table


def test_the_ced_axis_names_what_the_markup_normalises_by(tmp_path):
    import matplotlib

    from facelandmarks.evaluation.plots import ced_plot
    from facelandmarks.evaluation.tables import normaliser

    lapa = load_scheme(ROOT / "configs" / "schemes" / "lapa106.json", register=False)
    nmes = {"m": np.array([0.02, 0.05, 0.2])}
    for scheme, words in ((lapa, "face box size"), (get_scheme("ibug68"), "distance between points 36 and 45"),
                          (get_scheme("kaggle15"), "distance between points left_eye_center and right_eye_center")):
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # the axis label as text in the file
            ced_plot(nmes, tmp_path / "ced.svg", normaliser=normaliser(scheme))
        text = (tmp_path / "ced.svg").read_text()
        assert f"NME (% of the {words})" in text, scheme.name
        assert "outer-eye-corner" not in text  # every markup's axis said so, box-normalised ones too


def test_a_row_with_no_face_scored_is_named_in_the_ced_legend_without_a_warning(tmp_path, recwarn):
    import matplotlib

    from facelandmarks.evaluation.plots import ced_plot

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        ced_plot({"m": np.array([0.02, 0.05]), "oracle": np.array([np.nan, np.nan])}, tmp_path / "ced.svg")
    text = (tmp_path / "ced.svg").read_text()
    assert "oracle  (no face scored)" in text and "NME 3.50%" in text and "nan" not in text
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # was "Mean of empty slice"


def test_a_test_set_in_shards_is_scored_as_one(tmp_path):
    run = make_run(tmp_path / "run")
    whole = npz.load_npz(make_test_set(tmp_path / "whole.npz", faces=5))
    shards = []
    for i, rows in enumerate((np.arange(3), np.arange(3, 5))):
        npz.save_npz(npz.shard_path(tmp_path / "t_test", i), npz.subset(whole, rows))
        shards.append({"file": npz.shard_path(tmp_path / "t_test", i), "faces": len(rows)})
    manifest = npz.write_manifest(tmp_path / "t_test.shards.json", shards, "ibug68", (SIZE, SIZE, 3))
    rows = evaluate_runs([run], manifest, tmp_path / "out", timing=False)  # was 'not an npz file'
    assert rows[0]["faces"] == 5
    assert rows[0]["nme"] == evaluate_runs([run], tmp_path / "whole.npz", tmp_path / "one", timing=False)[0]["nme"]


def test_runs_without_a_history_leave_no_earlier_curves_behind(tmp_path):
    from facelandmarks.cli.evaluate import main

    run, data, out = make_run(tmp_path / "run"), make_test_set(tmp_path / "test.npz"), tmp_path / "out"
    (run / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.03,0.02,9.0\n")
    evaluate_runs([run], data, out, timing=False)
    assert (out / "curves.png").is_file()
    (run / "history.csv").unlink()  # as the shipped model or an export: no history
    assert main([str(run), "--data", str(data), "--out", str(out), "--no-timing"]) == 0
    assert not (out / "curves.png").exists()  # the earlier run's curves stayed beside the new tables


def test_an_evaluation_stopped_while_writing_leaves_the_earlier_tables_and_plots(tmp_path, monkeypatch):
    from facelandmarks.evaluation import plots

    first, second = make_run(tmp_path / "first", seed=1), make_run(tmp_path / "second", seed=2)
    data, out = make_test_set(tmp_path / "test.npz"), tmp_path / "out"
    evaluate_runs([first], data, out, timing=False)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the gallery is drawn, after the tables and the CED

    monkeypatch.setattr(plots, "gallery", stopped)
    with pytest.raises(KeyboardInterrupt):
        evaluate_runs([first, second], data, out, timing=False)
    # the new tables and CED were left beside the earlier gallery, naming a run the gallery did not show
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_the_ced_marks_the_tables_threshold_inside_it(tmp_path):
    import matplotlib

    from facelandmarks.evaluation.plots import ced_plot

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        ced_plot({"m": np.array([0.02, 0.05, 0.09])}, tmp_path / "ced.svg")
    text = (tmp_path / "ced.svg").read_text()
    # the tables give FR and AUC at 8 % too; the plot, drawn to 10 %, showed no mark where to read them
    assert "FR@8 = 1 − a curve" in text and "FR@10" not in text  # 10 % is the plot's right edge


def test_dlib_runs_once_for_both_its_rows(tmp_path, monkeypatch):
    from facelandmarks.inference.dlib_baseline import DlibPredictor

    rng = np.random.default_rng(1)
    faces = 3
    arrays = {"images": rng.integers(0, 256, (faces, 64, 64, 3), dtype=np.uint8),
              "landmarks": rng.uniform(0.2, 0.8, (faces, 68, 2)).astype(np.float32),
              "visible": np.ones((faces, 68), bool), "subject": np.array(["a", "b", "c"]), "scheme": np.array("ibug68"),
              "mirrored": np.zeros(faces, bool), "box": np.float32([[0, 0, 200, 200], [10, 20, 90, 100], [5, 5, 405, 405]])}
    data = npz.save_npz(tmp_path / "test.npz", arrays)
    passes = []
    original = DlibPredictor.predict_dataset

    def counted(self, arrays, progress=True, offset=0.0):
        passes.append(offset)
        return original(self, arrays, progress=False, offset=offset)

    monkeypatch.setattr(DlibPredictor, "predict_dataset", counted)
    rows = evaluate_runs([], data, tmp_path / "out", baseline="dlib", timing=False)
    assert len(passes) == 1  # the +1 px row ran dlib over every face a second time
    expected = original(DlibPredictor(), npz.load_npz(data), progress=False, offset=1.0)
    truth = npz.load_npz(data)
    assert rows[1]["model"] == "dlib (ERT, 68 pts), +1 px"
    assert rows[1]["nme"] == pytest.approx(score("x", expected, truth, get_scheme("ibug68"))["nme"], rel=1e-5)
    assert rows[1]["offset_x"] == pytest.approx(score("x", expected, truth, get_scheme("ibug68"))["offset_x"], rel=1e-5)


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_the_timing_column_names_the_device_the_model_ran_on(tmp_path, monkeypatch, device):
    """It read 'CPU ms/face' of a model Keras ran on a GPU."""
    from facelandmarks.inference import keras_settings

    monkeypatch.setattr(keras_settings, "device", lambda: device)
    run, data = make_run(tmp_path / "run"), make_test_set(tmp_path / "test.npz")
    rows = evaluate_runs([run], data, tmp_path / "out")
    assert rows[0]["device"] == device and rows[0]["ms_per_face"] > 0
    assert (tmp_path / "out" / "results.md").read_text().splitlines()[2].endswith(f"| params | {device} ms/face |")
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        assert [(r["model"], r["device"]) for r in csv.DictReader(handle)] == [("run", device)]
    untimed = evaluate_runs([run], data, tmp_path / "untimed", timing=False)
    assert untimed[0]["device"] is None
    assert (tmp_path / "untimed" / "results.md").read_text().splitlines()[2].endswith("| params | ms/face |")


class Killed(BaseException):
    """A kill at one step: not an Exception, so nothing on the way catches it (a ``finally`` still runs: in
    ``evaluate_runs`` it removes only a staging folder not yet committed, which after a real kill the next
    evaluation removes)."""


RESULT_FILES = ("results.csv", "results.md", "ced.png", "gallery.png", "curves.png")


def _results(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in RESULT_FILES if (folder / name).exists()}


def _killed_at(step: int, out: Path, monkeypatch):
    """Make the ``step``-th rename or removal of a file in ``out`` (not in a folder inside it) raise ``Killed``."""
    import os

    seen = 0

    def wrapped(real):
        def call(*args, **kwargs):
            nonlocal seen
            if any(isinstance(a, (str, os.PathLike)) and Path(a).parent == out for a in args[:2]):
                seen += 1
                if seen == step:
                    raise Killed
            return real(*args, **kwargs)
        return call

    for name in ("replace", "rename", "unlink"):
        monkeypatch.setattr(os, name, wrapped(getattr(os, name)))


def test_an_evaluation_killed_between_its_renames_leaves_one_set_never_a_mixed_one(tmp_path, monkeypatch):
    """The files moved from the staging folder into --out one by one: killed between two renames, --out held a new
    ced.png beside an earlier evaluation's tables, gallery and curves. Killed at each rename or removal in --out,
    what is left is part of one set, never of two, and a whole set wherever results.csv is there; the next
    evaluation into --out (here one that fails: its run is missing) makes it whole, the new set once any of it
    showed. The user's own files in --out are never touched."""
    # every evaluation draws its gallery with one best and one worst face: the set's files are what is checked; the
    # 6 of each (empty panels past this set's 4 faces) took about a third of the test's time
    evaluate = functools.partial(evaluate_runs, timing=False, gallery_faces=1)
    old_run, new_run = make_run(tmp_path / "old", seed=1), make_run(tmp_path / "new", seed=2)
    (old_run / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.03,0.02,9.0\n")
    data = make_test_set(tmp_path / "test.npz")
    evaluate([old_run], data, tmp_path / "old set")
    evaluate([new_run], data, tmp_path / "new set")
    old, new = _results(tmp_path / "old set"), _results(tmp_path / "new set")
    assert set(old) == set(RESULT_FILES) and set(new) == set(RESULT_FILES) - {"curves.png"}  # old curves: stale
    mine = {"notes.txt": b"mine", "results-2024.csv": b"mine too", ".results.txt": b"hidden, mine"}
    for step in range(1, 40):
        out = tmp_path / f"out {step}"
        out.mkdir()
        for name, body in {**old, **mine}.items():
            (out / name).write_bytes(body)
        with monkeypatch.context() as patch:
            _killed_at(step, out, patch)
            try:
                evaluate([new_run], data, out)
            except Killed:
                killed = True
            else:
                killed = False
        left = _results(out)
        if not killed:
            assert left == new and step > 5
            break
        parts_of = [name for name, whole in (("old", old), ("new", new)) if left.items() <= whole.items()]
        assert parts_of, f"killed at step {step}: a mixed set {sorted(left)}"
        assert "results.csv" not in left or left in (old, new), f"killed at step {step}: results.csv of part of a set"
        with pytest.raises((OSError, ValueError)):
            evaluate([tmp_path / "missing"], data, out)
        repaired = _results(out)
        assert repaired in (old, new) and (repaired == new or left == old), f"step {step}"
        ours = {result_set.LOCK}  # the installs' lock file, empty, stays
        assert sorted(p.name for p in out.iterdir() if p.name not in ours) == sorted([*repaired, *mine]), f"step {step}"
        assert {name: (out / name).read_bytes() for name in mine} == mine
    else:
        pytest.fail("never finished")


def test_two_evaluations_into_one_out_install_one_after_the_other(tmp_path, monkeypatch):
    """A second evaluation committing into --out while the first moves its set in: it used to finish the first's
    install itself, so the first then failed on a file gone from under it (FileNotFoundError), and where its rename
    landed on the first's emptied commit folder the first removed the second's set. Installs now wait for each other
    (result_set's lock): both end well, and the later set is the one in --out, whole."""
    import os
    import threading

    def staged(label):
        staging = result_set.staging_folder(tmp_path)
        for name in ("results.csv", "results.md", "ced.png"):
            (staging / name).write_text(label)
        return staging

    first, second = staged("first"), staged("second")
    replace, done, errors = os.replace, threading.Event(), []

    def commit_second():
        try:
            result_set.commit(second)
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)
        done.set()

    racer = threading.Thread(target=commit_second)

    def replace_once_raced(source, target):
        if not racer.is_alive() and not done.is_set():  # the first's first move: the second commits meanwhile
            racer.start()
            done.wait(2.0)  # it finishes here without the lock; with it, it waits for this install to end
        return replace(source, target)

    monkeypatch.setattr(result_set.os, "replace", replace_once_raced)
    result_set.commit(first)
    racer.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["ced.png", "results.csv",
                                                                                          "results.md"]
    assert {(tmp_path / name).read_text() for name in ("results.csv", "results.md", "ced.png")} == {"second"}
    assert not (tmp_path / result_set.COMMIT).exists()
