"""evaluate.py --data without face data: the per-camera table of MUCT test sets (the camera letter read from each
face's file name), the title, --where filters."""

import numpy as np
import pytest

from facelandmarks.evaluation.evaluate import muct_cameras, score, select_faces
from facelandmarks.evaluation.tables import results_markdown
from facelandmarks.landmarks import get_scheme


def test_the_camera_is_read_from_the_file_name_the_muct_reader_stores():
    # the npz names a face by its path under the source folder, as prepare wrote it for MUCT
    names = np.array(["jpg/i000qa-fn.jpg", "jpg/i012rd-mn.jpg", "i434se-fg.jpg", "helen/trainset/1_1.jpg", "i.jpg"])
    assert muct_cameras(names).tolist() == ["a", "d", "e", "", ""]


def test_a_muct_test_set_gets_a_number_per_camera():
    scheme = get_scheme("muct76")
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (4, scheme.num_points, 2)).astype(np.float32)
    arrays = {"landmarks": truth, "visible": np.ones(truth.shape[:2], bool),
              "name": np.array(["jpg/i000qa-fn.jpg", "jpg/i000qb-fn.jpg", "jpg/i001qa-mn.jpg", "jpg/i001qe-mn.jpg"])}
    row = score("m", truth + 0.01, arrays, scheme)
    # every point 0.01 * sqrt(2) off; each face's NME by its own outer eye corners (27, 32), by hand
    by_face = 100 * 0.01 * np.sqrt(2) / np.linalg.norm(truth[:, 27] - truth[:, 32], axis=-1)
    assert np.ptp(by_face) > 1  # faces of other sizes: a camera given another face's error shows
    assert [row["nme_camera_a"], row["nme_camera_b"], row["nme_camera_e"]] == pytest.approx(
        [(by_face[0] + by_face[2]) / 2, by_face[1], by_face[3]], rel=1e-4)
    assert np.isnan([row["nme_camera_c"], row["nme_camera_d"]]).all()  # no face from those cameras
    table = results_markdown([row], scheme, "muct_test.npz", 4)
    assert "## NME % per MUCT camera" in table and f"| m | {row['nme_camera_a']:.2f} | {row['nme_camera_b']:.2f} | – | – |" in table


def test_one_face_is_one_face():
    scheme = get_scheme("muct76")
    truth = np.full((1, scheme.num_points, 2), 0.5, np.float32)
    row = score("m", truth, {"landmarks": truth, "visible": np.ones(truth.shape[:2], bool)}, scheme)
    assert results_markdown([row], scheme, "one.npz", 1).startswith("# Results on `one.npz` (muct76, 1 face)\n")


def test_where_splits_at_its_first_operator():
    # path~a=b was read as the key 'path~a' (and the value 'b')
    arrays = {"landmarks": np.zeros((3, 5, 2), np.float32),
              "path": np.array(["/d/x=1/a.jpg", "/d/x=2/b.jpg", "/d/y/c.jpg"]), "source": np.array(["w", "w", "v"])}
    assert select_faces(arrays, ["path~x=1"], "t.npz")["path"].tolist() == ["/d/x=1/a.jpg"]
    assert select_faces(arrays, ["source=w", "path~x="], "t.npz")["path"].tolist() == ["/d/x=1/a.jpg", "/d/x=2/b.jpg"]


def test_results_csv_leaves_every_missing_value_empty(tmp_path):
    import csv

    from facelandmarks.evaluation.tables import write_csv

    write_csv(tmp_path / "r.csv", [{"model": "a", "nme": 3.5, "val_loss": float("nan"), "params": None},
                                   {"model": "dlib", "nme": np.float64("nan"), "extra": 1}])
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"model": "a", "nme": "3.5", "val_loss": "", "params": "", "extra": ""},
                    {"model": "dlib", "nme": "", "val_loss": "", "params": "", "extra": "1"}]


def test_the_table_tells_apart_test_mses_that_differ_in_their_second_digit():
    scheme = get_scheme("ibug68")
    rows = [{"model": "plain", "test_mse": 1.8377e-4, "train_loss": 0.09698, "val_loss": 1.2e-5, "nme": 3.86, "unscored": 0},
            {"model": "flip test", "test_mse": 1.7509e-4, "train_loss": float("nan"), "val_loss": None, "nme": 3.76}]
    table = results_markdown(rows, scheme, "t.npz", 261)
    # at 5 decimals both read 0.00018 (the shipped model and its flip test on 300-W), and 1.2e-5 read 0.00001
    assert "| plain | 0.0970 | 1.20e-05 | 0.000184 | 3.86 |" in table
    assert "| flip test | – | – | 0.000175 | 3.76 |" in table


def test_a_where_that_matches_nothing_says_what_would_match():
    arrays = {"landmarks": np.zeros((3, 5, 2), np.float32),
              "path": np.array(["/d/x=1/a.jpg", "/d/x=2/b.jpg", "/d/y/c.jpg"]), "source": np.array(["w", "w", "v"])}
    # 'no face matches --where source=W' alone: nothing said the key holds w and v
    with pytest.raises(ValueError, match=r"t.npz: no face matches --where source=W \(source is one of: v, w\)$"):
        select_faces(arrays, ["source=W"], "t.npz")
    with pytest.raises(ValueError, match=r"--where source=v path~x= \(each filter matches faces, but no face matches them all\)$"):
        select_faces(arrays, ["source=v", "path~x="], "t.npz")
    with pytest.raises(ValueError, match=r"--where source=w path~/z/ \(path~/z/ matches none of 3 faces\)$"):
        select_faces(arrays, ["source=w", "path~/z/"], "t.npz")


def test_times_on_two_devices_each_say_their_own():
    """Keras on a GPU beside its export on the CPU: the column cannot name one device for both."""
    scheme = get_scheme("ibug68")
    rows = [{"model": "run", "nme": 3.5, "params": 10, "ms_per_face": 7.91, "device": "GPU", "unscored": 0},
            {"model": "run/export (onnx)", "nme": 3.5, "params": 10, "ms_per_face": 3.12, "device": "CPU", "unscored": 0},
            {"model": "dlib", "nme": 4.0, "params": None, "ms_per_face": float("nan"), "device": None}]
    lines = results_markdown(rows, scheme, "t.npz", 3).splitlines()
    assert lines[2].endswith("| params | ms/face |")
    assert lines[4].endswith("| 10 | 7.9 GPU |") and lines[5].endswith("| 10 | 3.1 CPU |") and lines[6].endswith("| – | – |")
    assert results_markdown(rows[1:], scheme, "t.npz", 2).splitlines()[2].endswith("| params | CPU ms/face |")


def test_rows_without_an_unscored_count_still_make_a_table():
    # a first row without 'unscored' (a baseline's) stopped results_markdown in a KeyError
    scheme = get_scheme("ibug68")
    rows = [{"model": "dlib", "nme": 4.0}, {"model": "run", "nme": 3.5, "unscored": 2}]
    table = results_markdown(rows, scheme, "t.npz", 5)
    assert "| dlib |" in table and table.endswith("2 faces were without both normalising points: not scored.\n")
    assert "not scored" not in results_markdown(rows[:1], scheme, "t.npz", 5)


def _turned_faces(turns, roll_degrees=0.0):
    """iBUG 68 faces with every point at the centre but the cheeks (2, 14) and the nose tip (30): the nose
    ``turn`` of half the cheeks' distance off their middle, the whole face rolled by ``roll_degrees``."""
    faces = np.full((len(turns), 68, 2), 0.5)
    angle = np.deg2rad(roll_degrees)
    along = 0.2 * np.array([np.cos(angle), np.sin(angle)])  # half the cheeks' distance, rolled
    faces[:, 2], faces[:, 14] = 0.5 - along, 0.5 + along
    faces[:, 30] = 0.5 + np.asarray(turns)[:, None] * along + 0.1 * np.array([-np.sin(angle), np.cos(angle)])
    return faces


def test_head_turn_is_the_nose_offset_over_half_the_cheeks_distance_rolled_or_not():
    from facelandmarks.metrics import head_turn

    turns = [0.0, 0.25, -0.6, 0.9, 1.7]  # the nose beyond a cheek (1.7) is a profile, capped at 1
    visible = np.ones((5, 68), bool)
    for roll in (0.0, 35.0):
        assert head_turn(_turned_faces(turns, roll), visible, "ibug68") == pytest.approx([0, 0.25, 0.6, 0.9, 1.0])
    visible[1, 30] = False  # a face without its nose tip has no turn; faces without both cheeks neither
    faces = _turned_faces(turns)
    faces[2, 14] = np.nan
    assert np.isnan(head_turn(faces, visible, "ibug68")).tolist() == [False, True, True, False, False]
    assert np.isnan(head_turn(np.full((2, 15, 2), 0.5), np.ones((2, 15), bool), "kaggle15")).all()  # no cheeks


def test_a_markup_of_your_own_gets_the_turn_from_its_ibug68_map():
    from facelandmarks.landmarks import Scheme
    from facelandmarks.metrics import head_turn, turn_points

    own = Scheme(name="own", num_points=4, mirror=(1, 0, 2, 3), norm_points=(0, 1), pupils=None,
                 ibug68=((14,), (2,), (30,), (27, 28)))
    assert turn_points(own) == (1, 0, 2)
    faces = _turned_faces([0.4])[:, [14, 2, 30, 27]]
    assert head_turn(faces, np.ones((1, 4), bool), own) == pytest.approx([0.4])
    assert turn_points(Scheme(name="no", num_points=2, mirror=(1, 0), norm_points=(0, 1), pupils=None,
                              ibug68=((2,), (30,)))) is None


def test_an_ibug68_test_set_gets_a_number_per_head_turn():
    scheme = get_scheme("ibug68")
    truth = _turned_faces([0.1, 0.2, 0.4, 0.8])
    off = np.array([0.01, 0.03, 0.02, 0.05])[:, None, None]  # each face its own error, every point moved right
    truth[:, 36], truth[:, 45] = truth[:, 2], truth[:, 14]  # the outer eye corners, which normalise: 0.4 apart
    by_face = 100 * off[:, 0, 0] / 0.4
    row = score("m", truth + off * [1, 0], {"landmarks": truth, "visible": np.ones((4, 68), bool)}, scheme)
    assert [row[f"nme_turn_{i}"] for i in range(3)] == pytest.approx(
        [(by_face[0] + by_face[1]) / 2, by_face[2], float("nan")], nan_ok=True)
    assert row["nme_turn_3"] == pytest.approx(by_face[3])
    assert [row[f"faces_turn_{i}"] for i in range(4)] == [2, 1, 0, 1]
    table = results_markdown([row], scheme, "t.npz", 4)
    assert "| model | 0-0.3 (2 faces) | 0.3-0.5 (1 face) | 0.5-0.7 (0 faces) | 0.7-1 (1 face) |" in table
    assert f"| m | {row['nme_turn_0']:.2f} | {by_face[2]:.2f} | – | {by_face[3]:.2f} |" in table
    # a markup without the points (MUCT has cameras instead) has no such table
    muct = get_scheme("muct76")
    plain = score("m", np.full((1, 76, 2), 0.5), {"landmarks": np.full((1, 76, 2), 0.5), "visible": np.ones((1, 76), bool)}, muct)
    assert "nme_turn_0" not in plain and "by head turn" not in results_markdown([plain], muct, "t.npz", 1)
