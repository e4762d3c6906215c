"""A markup of your own read from the formats docs/own-landmarks.md offers: the mistakes a user makes first."""

import json

import cv2
import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.data.readers.csvtable import read_csv_points
from facelandmarks.data.readers.dlibxml import read_dlibxml
from facelandmarks.data.records import AnnotationError, ReaderOptions
from facelandmarks.landmarks import Scheme

FACE5 = {
    "name": "ownmarkup5",
    "points": ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"],
    "pairs": [["right_eye", "left_eye"], ["right_mouth", "left_mouth"]],
    "normalize": ["right_eye", "left_eye"],
}


def image(folder, name="face.png"):
    cv2.imwrite(str(folder / name), np.full((80, 60, 3), 128, np.uint8))
    return name


def dlib_xml(tmp_path, boxes):
    name = image(tmp_path)
    box_lines = "".join(
        "<box top='5' left='6' width='30' height='40'>"
        + "".join(f"<part name='{p}' x='{10 + i}' y='{20 + i}'/>" for i, p in enumerate(parts)) + "</box>"
        for parts in boxes)
    path = tmp_path / "faces.xml"
    path.write_text(f"<dataset><images><image file='{name}'>{box_lines}</image></images></dataset>")
    return path


def test_dlib_xml_of_fewer_points_without_a_scheme_asks_for_one(tmp_path):
    """Parts 00-11 in every box were read as iBUG 68's jaw points 0-11 (the other 56 unlabelled), in silence."""
    twelve = [f"{i:02d}" for i in range(12)]
    path = dlib_xml(tmp_path, [twelve, twelve])
    with pytest.raises(AnnotationError, match=rf"^{path}: every box has parts 00-11 and none past them: a markup of 12 "
                                              r"points, not iBUG 68's; give --scheme FILE \(docs/own-landmarks.md\), or "
                                              r"--scheme ibug68 to read them as iBUG 68's points 00-11$"):
        read_dlibxml(path)
    assert len(read_dlibxml(path, ReaderOptions(scheme=Scheme.from_dict({**FACE5, "points": 12, "pairs": [],
                                                                         "normalize": [0, 1]}))).records) == 2
    # iBUG 68 with points left out stays iBUG 68: a box with other parts, or parts that do not start at 00
    assert len(read_dlibxml(dlib_xml(tmp_path, [twelve, [f"{i:02d}" for i in range(68) if i != 40]])).records) == 2
    assert len(read_dlibxml(dlib_xml(tmp_path, [["36", "45"]])).records) == 1


def test_a_csv_whose_first_row_misses_by_its_leading_columns_names_the_first_coordinate(tmp_path):
    """Forgetting --csv-first-coordinate (or a person column left out) read '25 coordinates from column 1' and no more."""
    scheme = Scheme.from_dict(FACE5)
    name = image(tmp_path)
    path = tmp_path / "points.csv"
    coords = ",".join(["5"] * 10)
    path.write_text(f"file,person,coords\n{name},ann,{coords}\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:2: 11 coordinates from column 1, scheme ownmarkup5 has 5 points "
                                              r"\(10 numbers\) \(12 columns: do the coordinates start at column 2\? "
                                              r"--csv-first-coordinate 2\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme))
    path.write_text(f"file,coords\n{name},{coords}\n")
    with pytest.raises(AnnotationError, match=r":2: 9 coordinates from column 2, .* \(11 columns: do the coordinates "
                                              r"start at column 1\? --csv-first-coordinate 1\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2, csv_subject_column=1))
    # people numbered (MUCT's 000-275), given as --csv-subject-column 1: that column is no coordinate, whatever it holds,
    # so the hint stands (own-landmarks.md's 'column 0 the image, 1 the person' with --csv-first-coordinate forgotten)
    path.write_text(f"file,person,coords\n{name},007,{coords}\n")
    with pytest.raises(AnnotationError, match=r":2: 11 coordinates from column 1, .* \(12 columns: do the coordinates "
                                              r"start at column 2\? --csv-first-coordinate 2\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_subject_column=1))
    with pytest.raises(AnnotationError, match=r":2: 11 coordinates from column 1, scheme ownmarkup5 has 5 points "
                                              r"\(10 numbers\)$"):  # not said to be the person's: as the next case
        read_csv_points(path, ReaderOptions(scheme=scheme))
    # numbers where the coordinates would start: as likely a markup of more points than the scheme's (the doc's example)
    path.write_text(f"file,coords\n{name},{','.join(['5'] * 12)}\n")
    with pytest.raises(AnnotationError, match=r":2: 12 coordinates from column 1, scheme ownmarkup5 has 5 points "
                                              r"\(10 numbers\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme))
    # a later row that is short is that row's mistake: no hint to move the columns every good row agrees with
    path.write_text(f"file,coords\n{name},{coords}\n{name},{','.join(['5'] * 9)}\n")
    with pytest.raises(AnnotationError, match=r":3: 9 coordinates from column 1, scheme ownmarkup5 has 5 points "
                                              r"\(10 numbers\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme))


@pytest.mark.parametrize("dataset, name", [("csv", "points.csv"), ("coco", "anno.json"), ("dlibxml", "faces.xml")])
def test_a_missing_annotation_file_is_not_called_a_folder(tmp_path, capsys, dataset, name):
    from facelandmarks.cli.datagen import main as datagen

    missing = tmp_path / name
    assert datagen(["prepare", dataset, "--source", str(missing), "--size", "32", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"datagen.py prepare: {missing}: no such file or folder (--source)\n"


def test_init_from_a_run_whose_scheme_of_the_same_name_had_other_points_restarts_the_head():
    """A scheme file edited under its old name (other points, as many): the head was kept, its outputs the old points."""
    from facelandmarks.models import build_model
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import _restart_for_markup

    now = Scheme.from_dict(FACE5)
    before = {**FACE5, "points": ["right_brow", "left_brow", "nose", "right_mouth", "left_mouth"],
              "pairs": [["right_brow", "left_brow"], ["right_mouth", "left_mouth"]], "normalize": ["right_brow", "left_brow"]}
    config = TrainConfig(model="scratch", data="unused.npz", run_dir="unused", input_shape=(32, 32, 1))
    model = build_model("scratch", input_shape=(32, 32, 1), num_points=5)
    run = {"scheme": "ownmarkup5", "num_points": 5, "scheme_definition": before}
    layers, reason = _restart_for_markup(config, run, now, model)
    assert layers == ("landmark_coordinates",)
    assert reason == ": the run's ownmarkup5 named its points otherwise (point 0 was 'right_brow', this data's is " \
                     "'right_eye'): its scheme file has changed since"
    assert _restart_for_markup(config, {**run, "scheme_definition": now.to_dict()}, now, model) == ((), "")
    assert _restart_for_markup(config, {"scheme": "ownmarkup5", "num_points": 5}, now, model) == ((), "")


def test_a_scheme_name_taken_by_another_markup_says_who_took_it_and_what_differs(tmp_path):
    """An old run evaluated on data prepared with its scheme file edited: the line named the run's export alone and
    'give yours another name', not which file registered the name first nor what differs."""
    from facelandmarks import landmarks
    from facelandmarks.scheme_files import register_definition

    try:
        register_definition(FACE5, "data/test.npz (scheme_json)")
        with pytest.raises(ValueError, match=r"^runs/x/export/export.json \(scheme_definition\): scheme name 'ownmarkup5' "
                                             r"is already registered with another markup \(by data/test.npz "
                                             r"\(scheme_json\); its pairs, normalize differ\); give yours another name$"):
            register_definition({**FACE5, "pairs": [], "normalize": "box"}, "runs/x/export/export.json (scheme_definition)")
        landmarks._REGISTERED.pop("ownmarkup5")
        arrays = {"images": np.zeros((1, 8, 8, 3), np.uint8), "landmarks": np.full((1, 5, 2), 0.5, np.float32),
                  "visible": np.ones((1, 5), bool), "subject": np.array(["a"]), "scheme": np.array("ownmarkup5"),
                  "box": np.zeros((1, 4), np.float32), "scheme_json": np.array(json.dumps(FACE5))}
        npz.save_npz(tmp_path / "test.npz", arrays)
        npz.load_npz(tmp_path / "test.npz")  # registers its scheme
        with pytest.raises(ValueError, match=rf"another markup \(by {tmp_path / 'test.npz'} \(scheme_json\); its pairs differ"):
            register_definition({**FACE5, "pairs": []}, "runs/x/config.json (scheme_definition)")
    finally:
        landmarks._REGISTERED.pop("ownmarkup5", None)


def ibug68_arrays(n=2):
    rng = np.random.default_rng(0)
    return {"images": np.zeros((n, 8, 8, 3), np.uint8), "landmarks": rng.random((n, 68, 2)).astype(np.float32),
            "visible": np.ones((n, 68), bool), "subject": np.array(["a", "b"][:n]), "scheme": np.array("ibug68"),
            "box": np.zeros((n, 4), np.float32)}


def test_select_points_refuses_a_point_given_twice():
    """'30,30,8' (a typo) wrote a dataset whose two points are one, in silence, where no pair caught it."""
    three = Scheme.from_dict({"name": "ownmarkup3", "points": 3, "normalize": [0, 2]})
    with pytest.raises(ValueError, match=r"^--points: ibug68 30 given twice \(points 0 and 1 of ownmarkup3\)$"):
        npz.select_points(ibug68_arrays(), three, [30, 30, 8])
    assert npz.select_points(ibug68_arrays(), three, [30, 33, 8])["landmarks"].shape == (2, 3, 2)


def test_select_points_takes_a_scheme_name_as_prepare_does(tmp_path, capsys):
    """'--scheme ibug68' said 'ibug68: cannot read scheme file': select-points read files alone."""
    from facelandmarks.cli.datagen import main as datagen

    npz.save_npz(tmp_path / "ibug.npz", ibug68_arrays())
    order = ",".join(map(str, range(68)))
    assert datagen(["select-points", "--data", str(tmp_path / "ibug.npz"), "--scheme", "ibug68", "--points", order,
                    "--out", str(tmp_path / "same.npz")]) == 0
    assert str(npz.load_npz(tmp_path / "same.npz")["scheme"]) == "ibug68"
    assert datagen(["select-points", "--data", str(tmp_path / "ibug.npz"), "--scheme", "nowhere.json", "--points", order,
                    "--out", str(tmp_path / "x.npz")]) == 2
    assert capsys.readouterr().err.endswith("nowhere.json: no such scheme file (--scheme)\n")


def test_a_csv_of_1_based_coordinates_with_csv_origin_1_prepares_as_its_0_based_twin(tmp_path, capsys):
    """300-W's .pts numbers written into a CSV as given were read as 0-based: every run sat 1 px (1.7-2.0 % of the
    eye distance) off its points, in silence. ``--csv-origin 1`` subtracts the 1; the report names the origin read."""
    from facelandmarks.cli.datagen import main as datagen
    from tests.unit.test_datagen_errors import face_shape

    rng = np.random.default_rng(0)
    names = [f"face{i}.png" for i in range(2)]
    shapes = [face_shape(cx=80 + 3 * i, cy=82 - 2 * i) for i in range(2)]
    for name in names:
        cv2.imwrite(str(tmp_path / name), rng.integers(60, 200, (160, 160, 3), dtype=np.uint8))

    def write_csv(file, origin):
        rows = [f"{name},{','.join(f'{x + origin:.3f},{y + origin:.3f}' for x, y in shape)}"
                for name, shape in zip(names, shapes)]
        (tmp_path / file).write_text("file," + ",".join(f"x{i},y{i}" for i in range(68)) + "\n" + "\n".join(rows) + "\n")

    write_csv("zero.csv", 0)
    write_csv("one.csv", 1)
    common = ["--scheme", "ibug68", "--size", "32", "--test-fraction", "0", "--workers", "1", "--quiet"]
    landmarks, boxes, notes = {}, {}, {}
    for label, file, flags in (("0-based", "zero.csv", []), ("1-based, --csv-origin 1", "one.csv", ["--csv-origin", "1"]),
                               ("1-based as given", "one.csv", [])):
        out = tmp_path / label.replace(" ", "_").replace(",", "")
        assert datagen(["prepare", "csv", "--source", str(tmp_path / file), *flags, *common, "--out", str(out)]) == 0
        arrays = npz.load_npz(f"{out}_train.npz")
        landmarks[label], boxes[label] = arrays["landmarks"], arrays["box"]
        notes[label] = json.loads((tmp_path / f"{out}_report.json").read_text())["datasets"][0]["notes"]
    capsys.readouterr()
    np.testing.assert_allclose(landmarks["1-based, --csv-origin 1"], landmarks["0-based"], atol=1e-6)
    np.testing.assert_allclose(boxes["1-based, --csv-origin 1"], boxes["0-based"], atol=1e-4)
    # read as given, the points (and the crop boxed from them, dlib finding no face in noise) sit 1 px right and down
    # of the image's: the trap the option closes
    np.testing.assert_allclose(boxes["1-based as given"][:, :2] - boxes["0-based"][:, :2], 1.0, atol=1e-4)
    assert "coordinates read as pixels counted from 1 (--csv-origin 1): 1 subtracted from each" in notes["1-based, --csv-origin 1"]
    assert any("(--csv-origin 0); for a file that counts from 1" in note for note in notes["0-based"])

    for bad in ("2", "-1", "one"):
        with pytest.raises(SystemExit):
            datagen(["prepare", "csv", "--source", str(tmp_path / "one.csv"), "--csv-origin", bad, *common,
                     "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument --csv-origin: 0 (coordinates count pixels from 0, the default) or 1 " \
                                          f"(they count from 1, as iBUG's .pts and MATLAB do: 1 is subtracted from " \
                                          f"each), got '{bad}'" in err, err
    with pytest.raises(ValueError, match=r"^--csv-origin: 0 \(coordinates count pixels from 0, .*, got 2$"):
        ReaderOptions(csv_origin=2)
    # given to a reader that does not take it, it is an error, not ignored
    assert datagen(["prepare", "dlibxml", "--source", str(dlib_xml(tmp_path, [["36", "45"]])), "--csv-origin", "1",
                    *common, "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "datagen.py prepare: --csv-origin: dataset dlibxml does not use it (it is for csv)\n"
