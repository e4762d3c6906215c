"""Schemes as data and the readers of any markup, on synthetic files (no face data): scheme files and their
errors, the registry, box normalisation, npz files carrying their scheme, COCO / CSV / dlib XML readers, --init
across point counts."""

import json

import cv2
import numpy as np
import pytest

from facelandmarks import landmarks, metrics
from facelandmarks.data import npz
from facelandmarks.data.readers.coco import read_coco
from facelandmarks.data.readers.csvtable import read_csv_points
from facelandmarks.data.readers.dlibxml import read_dlibxml
from facelandmarks.data.records import AnnotationError, ReaderOptions
from facelandmarks.landmarks import SCHEMES, Scheme, get_scheme, register_scheme
from facelandmarks.scheme_files import dump_scheme, load_scheme, register_definition, resolve_scheme

FACE5 = {
    "name": "unit5",
    "points": ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"],
    "pairs": [["right_eye", "left_eye"], ["right_mouth", "left_mouth"]],
    "normalize": ["right_eye", "left_eye"],
    "regions": {"eyes": ["right_eye", "left_eye"], "nose": ["nose"], "mouth": [3, 4]},
}


@pytest.fixture(autouse=True)
def clean_registry():
    yield
    for name in [n for n in landmarks._REGISTERED if n.startswith("unit")]:
        del landmarks._REGISTERED[name]


def write(tmp_path, data, name="myscheme.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_built_in_scheme_round_trips_through_its_file(tmp_path, name):
    scheme = SCHEMES[name]
    assert Scheme.from_dict(scheme.to_dict()) == scheme
    path = dump_scheme(scheme, tmp_path / f"{name}.json")
    assert load_scheme(path, register=False) == scheme
    assert load_scheme(path) is scheme  # registering a built-in's own markup is a no-op


def test_a_scheme_file_gives_names_mirror_normalising_points_and_regions(tmp_path):
    scheme = load_scheme(write(tmp_path, FACE5))
    assert get_scheme("unit5") is scheme and scheme.num_points == 5
    assert scheme.mirror == (1, 0, 2, 4, 3)  # the unpaired nose maps to itself
    assert scheme.norm_points == (0, 1) and scheme.pupils is None
    assert scheme.regions == {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)}
    assert get_scheme("unit5/mouth").num_points == 2 and resolve_scheme(str(tmp_path / "myscheme.json")) is scheme
    assert Scheme.from_dict(scheme.to_dict()) == scheme


def test_yaml_scheme_files_load_when_pyyaml_is_installed(tmp_path):
    import yaml

    path = tmp_path / "unit5.yaml"
    path.write_text(yaml.safe_dump(FACE5))
    assert load_scheme(path).mirror == (1, 0, 2, 4, 3)


@pytest.mark.parametrize("change, message", [
    ({"pairs": [["left_eye", "nose"], ["right_eye", "nose"]]}, "pair ('right_eye', 'nose') names 'nose' twice"),
    ({"pairs": [["nose", "nose"]]}, "pair ('nose', 'nose') names 'nose' twice"),
    ({"regions": {"mouth": ["chin"]}}, "unknown point 'chin' in region mouth"),
    ({"regions": {"mouth": [7]}}, "point index 7 in region mouth outside 0..4"),
    ({"normalize": ["left_eye", "left_eye"]}, "'normalize' names point 'left_eye' twice"),
    ({"normalize": ["eye", "left_eye"]}, "unknown point 'eye' in normalize"),
    ({"normalize": None, "pupils": ["left_eye"]}, "'pupils' must be two points"),
    ({"pupils": ["left_eye", "eye"]}, "unknown point 'eye' in pupils"),
    ({"pupils": ["left_eye", "left_eye"]}, "'pupils' names point 'left_eye' twice"),
    ({"points": ["a", "b", "a"]}, "point name 'a' appears twice (points 0 and 2)"),
    ({"points": 0}, "'points' must be a list of point names or a point count"),
    ({"name": "my/scheme"}, "'name' must be a non-empty name without '/'"),
    ({"pair": []}, "unknown key 'pair'"),
])
def test_scheme_file_errors_name_the_file_and_the_point(tmp_path, change, message):
    path = write(tmp_path, {**FACE5, **change})
    with pytest.raises(ValueError) as err:
        load_scheme(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).count(str(path)) == 1  # the pupils' errors once named it twice


def test_a_scheme_file_without_normalize_asks_for_it_and_bad_json_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"myscheme.json: no 'normalize'.*\"box\""):
        load_scheme(write(tmp_path, {k: v for k, v in FACE5.items() if k != "normalize"}))
    bad = tmp_path / "bad.json"
    bad.write_text("{\"name\": ")
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON"):
        load_scheme(bad)
    with pytest.raises(ValueError, match=r"missing.json: no such scheme file"):
        resolve_scheme(tmp_path / "missing.json")
    typo = tmp_path / "myscheme.jsn"  # once "unknown landmark scheme ''" (split at the path's '/')
    with pytest.raises(ValueError, match=rf"^{typo}: no such scheme file \(--scheme; scheme files end in .json or .yaml\)$"):
        resolve_scheme(typo)
    with pytest.raises(ValueError, match=r"unknown landmark scheme 'ibug86'; known: "):
        resolve_scheme("ibug86")
    assert resolve_scheme("ibug68/mouth").num_points == 20
    with pytest.raises(ValueError, match=r"mouht"):  # a region's typo is not a missing file
        resolve_scheme("ibug68/mouht")
    with pytest.raises(ValueError, match=r"no such scheme file"):
        resolve_scheme("schemes/mine")


def test_the_registry_refuses_another_markup_under_a_taken_name(tmp_path):
    with pytest.raises(ValueError, match="myscheme.json: scheme name 'ibug68' is a built-in scheme"):
        load_scheme(write(tmp_path, {**FACE5, "name": "ibug68"}))
    register_scheme(Scheme.from_dict(FACE5))
    register_scheme(Scheme.from_dict({**FACE5, "description": "same markup, other words"}))
    with pytest.raises(ValueError, match="'unit5' is already registered with another markup"):
        register_scheme(Scheme.from_dict({**FACE5, "pairs": []}))
    with pytest.raises(ValueError, match="unknown landmark scheme 'unit6'"):
        get_scheme("unit6")


def test_box_normalisation_divides_by_the_ground_truth_box_size():
    box = Scheme.from_dict({**FACE5, "name": "unitbox", "normalize": "box"})
    assert box.norm_points is None and box.normalize == "box"
    gt = np.array([[[0, 0], [4, 0], [2, 1], [0, 9], [4, 9]]], np.float64)  # box 4 x 9: size 6
    visible = np.ones((1, 5), bool)
    pred = gt + [0.6, 0.0]
    assert metrics.nme_per_face(pred, gt, visible, box)[0] == pytest.approx(0.1)
    assert metrics.summarize(pred, gt, visible, box)["nme"] == pytest.approx(10.0)
    visible[0, [0, 1, 3, 4]] = False  # one point left: no box, no score
    assert np.isnan(metrics.nme_per_face(pred, gt, visible, box)[0])
    from facelandmarks.evaluation.tables import results_markdown

    visible[:] = True
    row = {"model": "m", **metrics.summarize(pred, gt, visible, box)}
    assert "ground-truth box" in results_markdown([row], box, "test.npz", 1)
    assert metrics.nme_per_face(pred, gt, np.ones((1, 5), bool), Scheme.from_dict(FACE5))[0] == pytest.approx(0.15)


def test_an_npz_carries_its_scheme_and_registers_it_when_loaded(tmp_path):
    scheme = Scheme.from_dict(FACE5)
    arrays = {
        "images": np.zeros((2, 8, 8, 3), np.uint8), "landmarks": np.full((2, 5, 2), 0.5, np.float32),
        "visible": np.ones((2, 5), bool), "subject": np.array(["a", "b"]), "scheme": np.array("unit5"),
        "box": np.zeros((2, 4), np.float32), "scheme_json": np.array(json.dumps(scheme.to_dict())),
    }
    npz.save_npz(tmp_path / "d.npz", arrays)
    assert "unit5" not in landmarks._REGISTERED
    assert npz.scheme_of(npz.load_npz(tmp_path / "d.npz")) == scheme and get_scheme("unit5") == scheme
    with pytest.raises(ValueError, match="run/config.json .scheme_definition.: scheme name 'unit5' is already"):
        register_definition({**FACE5, "pairs": []}, "run/config.json (scheme_definition)")
    npz.save_npz(tmp_path / "other.npz", {**arrays, "scheme_json": np.array(json.dumps({**FACE5, "pairs": []}))})
    with pytest.raises(ValueError) as err:  # a file prepared with an edited scheme of the same name
        npz.load_npz(tmp_path / "other.npz")
    assert str(err.value).startswith(f"{tmp_path / 'other.npz'}: scheme_json: scheme name 'unit5' is already registered")
    assert str(err.value).count("other.npz") == 1  # it once said the file's name twice


# -- readers ---------------------------------------------------------------------------------------------


def image(folder, name="face.png", size=(60, 80)):
    cv2.imwrite(str(folder / name), np.full((*size, 3), 128, np.uint8))
    return name


def coco_file(tmp_path, keypoints, category=None, name="anno.json"):
    data = {"images": [{"id": 7, "file_name": image(tmp_path)}],
            "annotations": [{"id": 3, "image_id": 7, "keypoints": keypoints, "bbox": [10, 20, 30, 40]}],
            "categories": [category or {"name": "face", "keypoints": []}]}
    return write(tmp_path, data, name)


def test_coco_reader_reads_points_visibility_and_the_bbox(tmp_path):
    scheme = register_scheme(Scheme.from_dict(FACE5))
    keypoints = [20, 30, 2, 40, 30, 1, 30, 40, 2, 0, 0, 0, 38, 50, 2]
    listing = read_coco(coco_file(tmp_path, keypoints), ReaderOptions(scheme=scheme, use_bbox=True))
    (record,) = listing.records
    assert listing.scheme == "unit5" and record.labelled.tolist() == [True, True, True, False, True]
    np.testing.assert_array_equal(record.points[:3], [[20, 30], [40, 30], [30, 40]])
    np.testing.assert_array_equal(record.given_box, [10, 20, 40, 60])
    assert record.image_path == str((tmp_path / "face.png").resolve())
    assert read_coco(tmp_path / "anno.json", ReaderOptions(scheme=scheme)).records[0].given_box is None


def test_coco_reader_stops_at_a_point_count_that_disagrees_with_the_scheme(tmp_path):
    path = coco_file(tmp_path, [1, 2, 2] * 4)
    with pytest.raises(AnnotationError, match=rf"^{path}: annotation 3 \(face.png\): 4 keypoints, scheme unit5 has 5$"):
        read_coco(path, ReaderOptions(scheme=Scheme.from_dict(FACE5)))


def test_coco_reader_takes_the_markup_from_the_category_or_asks_for_a_scheme_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"anno.json: categories\[0\] names no keypoints: give the markup with --scheme"):
        read_coco(coco_file(tmp_path, [1, 2, 2] * 3))
    names = ["left_eye", "right_eye", "nose"]
    listing = read_coco(coco_file(tmp_path, [1, 2, 2] * 3, {"name": "unitface", "keypoints": names}, "named.json"))
    scheme = get_scheme(listing.scheme)
    assert scheme.name == "coco_unitface3" and scheme.mirror == (1, 0, 2) and scheme.normalize == "box"
    landmarks._REGISTERED.pop("coco_unitface3")


def test_csv_reader_follows_the_layout_it_is_given(tmp_path):
    scheme = Scheme.from_dict(FACE5)
    name = image(tmp_path)
    xs, ys = [10, 20, 15, "", 22], [5, 5, 9, "", 12]
    (tmp_path / "xy.csv").write_text(f"id,file,{','.join(f'x{i},y{i}' for i in range(5))}\n"
                                     f"1,{name},{','.join(f'{x},{y}' for x, y in zip(xs, ys))}\n")
    (tmp_path / "xxyy.csv").write_text(f"{name},{','.join(map(str, xs + ys))}\n")
    by_xy = read_csv_points(tmp_path / "xy.csv", ReaderOptions(scheme=scheme, csv_image_column=1, csv_first_coordinate=2))
    by_xxyy = read_csv_points(tmp_path / "xxyy.csv", ReaderOptions(scheme=scheme, csv_layout="xxyy", csv_header=False))
    for listing in (by_xy, by_xxyy):
        (record,) = listing.records
        assert record.labelled.tolist() == [True, True, True, False, True] and record.name == name
        np.testing.assert_array_equal(record.points[[0, 4]], [[10, 5], [22, 12]])


def test_csv_reader_stops_at_the_row_whose_count_disagrees(tmp_path):
    name = image(tmp_path)
    path = tmp_path / "points.csv"
    path.write_text(f"file,coords\n{name},{','.join(['1'] * 10)}\n{name},{','.join(['1'] * 8)}\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:3: 8 coordinates from column 1, scheme unit5 has 5 points \(10 numbers\)$"):
        read_csv_points(path, ReaderOptions(scheme=Scheme.from_dict(FACE5)))
    with pytest.raises(AnnotationError, match="needs its markup: give --scheme FILE"):
        read_csv_points(path)
    path.write_text(f"file,coords\n{name};{';'.join(['1'] * 10)}\n")
    with pytest.raises(AnnotationError, match=r":2: 0 coordinates from column 1, .* \(one column: the reader splits at commas"):
        read_csv_points(path, ReaderOptions(scheme=Scheme.from_dict(FACE5)))
    path.write_text(f"file,coords\n{name},{','.join(['1'] * 10)},\n")
    with pytest.raises(AnnotationError, match=r":2: 11 coordinates from column 1, .* \(a comma at the end of the row\?\)$"):
        read_csv_points(path, ReaderOptions(scheme=Scheme.from_dict(FACE5)))


def test_csv_subjects_come_from_their_column_or_each_image_is_one_and_a_note_says_so(tmp_path):
    scheme = Scheme.from_dict(FACE5)
    name = image(tmp_path)
    coords = ",".join(["3"] * 10)
    path = tmp_path / "people.csv"
    path.write_text(f"file,person,coords\n{name},ann,{coords}\n{name},ann,{coords}\n{name},bob,{coords}\n")
    listing = read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2, csv_subject_column=1))
    assert [r.subject for r in listing.records] == ["csv/ann", "csv/ann", "csv/bob"]
    assert not [note for note in listing.notes if "subject" in note]
    alone = read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2))
    assert {r.subject for r in alone.records} == {f"csv/{name}"}
    assert alone.notes[1:] == ["each image is its own subject: photos of one person can land on both sides of the "
                               "split; name each face's person with --csv-subject-column N"]
    path.write_text(f"file,person,coords\n{name},,{coords}\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:2: no subject in column 1$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2, csv_subject_column=1))
    with pytest.raises(AnnotationError, match=rf"^{path}:2: no subject column 20 \(12 columns\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2, csv_subject_column=20))
    with pytest.raises(ValueError, match="--csv-subject-column: must be >= 0"):
        ReaderOptions(csv_subject_column=-1)
    # a column among the coordinates was read as both (the subject's, or the image's, cells taken in silence)
    path.write_text(f"file,person,coords\n{name},ann,{coords}\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:2: subject column 2 is a coordinate \(the coordinates run from "
                                              r"column 2, --csv-first-coordinate, to the end of the row\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_first_coordinate=2, csv_subject_column=2))


def test_a_csv_header_that_is_a_face_and_a_face_that_is_a_header_say_so(tmp_path):
    """Without the check a file without a header lost its first face in silence."""
    scheme = Scheme.from_dict(FACE5)
    name = image(tmp_path)
    path = tmp_path / "points.csv"
    path.write_text(f"{name},{','.join(['4'] * 9)},\n{name},{','.join(['5'] * 10)}\n")  # the first face's last point unlabelled
    with pytest.raises(AnnotationError, match=rf"^{path}:1: every coordinate of the first row is a number: it is a face"
                                              ", not a header; give --csv-no-header"):
        read_csv_points(path, ReaderOptions(scheme=scheme))
    assert len(read_csv_points(path, ReaderOptions(scheme=scheme, csv_header=False)).records) == 2
    path.write_text(f"image,{','.join(map(str, range(10)))}\n{name},{','.join(['5'] * 10)}\n")  # pandas' numbered columns
    assert len(read_csv_points(path, ReaderOptions(scheme=scheme)).records) == 1
    path.write_text(f"file,{','.join(f'x{i},y{i}' for i in range(5))}\n{name},{','.join(['5'] * 10)}\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:1: column 1: 'x0' is not a number \(a header row\? then drop "
                                              r"--csv-no-header\)$"):
        read_csv_points(path, ReaderOptions(scheme=scheme, csv_header=False))
    path.write_text(f"file,{','.join(f'x{i},y{i}' for i in range(5))}\n{name},1,2,3,4,5,6,7,8,9,1O\n")
    with pytest.raises(AnnotationError, match=rf"^{path}:2: column 10: '1O' is not a number$"):
        read_csv_points(path, ReaderOptions(scheme=scheme))
    # Excel's "CSV UTF-8" starts with a byte-order mark: it hid the first face's image, so that face became the
    # header in silence, or with --csv-no-header a face skipped as its image missing
    path.write_text(f"{name},{','.join(['4'] * 10)}\r\n{name},{','.join(['5'] * 10)}\r\n", encoding="utf-8-sig")
    with pytest.raises(AnnotationError, match=rf"^{path}:1: every coordinate of the first row is a number: it is a face"):
        read_csv_points(path, ReaderOptions(scheme=scheme))
    listing = read_csv_points(path, ReaderOptions(scheme=scheme, csv_header=False))
    assert [r.name for r in listing.records] == [name, name] and not listing.skips


def test_csv_rows_without_their_image_say_where_it_was_looked_for(tmp_path, capsys):
    from facelandmarks.cli.datagen import main as datagen

    scheme = write(tmp_path, FACE5)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "points.csv"
    path.write_text(f"file,coords\nfaces/a.png,{','.join(['5'] * 10)}\nfaces/b.png,{','.join([''] * 10)}\n")
    listing = read_csv_points(path, ReaderOptions(scheme=load_scheme(scheme)))
    assert [s.reason for s in listing.skips] == [
        f"image missing for points.csv:2 (no {tmp_path / 'sub' / 'faces' / 'a.png'}; names are relative to the CSV's "
        "folder, or to --images DIR)", "no labelled point (points.csv:3)"]
    assert datagen(["prepare", "csv", "--source", str(path), "--scheme", str(scheme), "--size", "32",
                    "--out", str(tmp_path / "out" / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable faces (2 annotated faces skipped; first: faces/a.png: image " \
                                     "missing for points.csv:2 (no " in err


def dlib_xml(tmp_path, parts):
    name = image(tmp_path)
    part_lines = "".join(f"<part name='{p}' x='{10 + i}' y='{20 + i}'/>" for i, p in enumerate(parts))
    path = tmp_path / "faces.xml"
    path.write_text(f"<dataset><images><image file='{name}'><box top='5' left='6' width='30' height='40'>"
                    f"{part_lines}</box></image></images></dataset>")
    return path


def test_dlib_xml_parts_by_name_or_index_for_any_scheme(tmp_path):
    scheme = Scheme.from_dict(FACE5)
    (record,) = read_dlibxml(dlib_xml(tmp_path, ["left_eye", "00", "nose"]), ReaderOptions(scheme=scheme)).records
    assert record.labelled.tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(record.points[[1, 0, 2]], [[10, 20], [11, 21], [12, 22]])
    with pytest.raises(AnnotationError, match=r"faces.xml: face.png \(box 0\): part name 07 outside 00-04 \(unit5\)"):
        read_dlibxml(dlib_xml(tmp_path, ["07"]), ReaderOptions(scheme=scheme))
    with pytest.raises(AnnotationError, match=r"part name 70 outside 00-67 \(ibug68; give --scheme FILE"):
        read_dlibxml(dlib_xml(tmp_path, ["70"]))
    (record,) = read_dlibxml(dlib_xml(tmp_path, ["36", "45"])).records  # no scheme: ibug68
    assert len(record.labelled) == 68 and record.labelled.sum() == 2



def test_coco_and_dlib_xml_faces_without_their_image_say_where_it_was_looked_for(tmp_path):
    """mmpose's JSON files sit apart from their images: the skip named neither the path tried nor --images."""
    scheme = Scheme.from_dict(FACE5)
    (tmp_path / "anno").mkdir()
    coco = coco_file(tmp_path, [20, 30, 2] * 5)
    moved = coco.rename(tmp_path / "anno" / coco.name)
    (skip,) = read_coco(moved, ReaderOptions(scheme=scheme)).skips
    assert skip.reason == (f"image missing for anno.json annotation 3 (no {tmp_path / 'anno' / 'face.png'}; names are "
                           "relative to the JSON's folder, or to --images DIR)")
    assert read_coco(moved, ReaderOptions(scheme=scheme, images=str(tmp_path))).records
    xml = dlib_xml(tmp_path, ["00"])
    (skip,) = read_dlibxml(xml.rename(tmp_path / "anno" / xml.name), ReaderOptions(scheme=scheme)).skips
    assert skip.reason == (f"image missing for faces.xml (no {tmp_path / 'anno' / 'face.png'}; names are relative to "
                           "the XML's folder)")

def test_prepare_refuses_a_scheme_for_a_dataset_of_fixed_markup(tmp_path):
    from facelandmarks.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(size=32, out=str(tmp_path / "x"), reader=ReaderOptions(scheme=get_scheme("ibug68")))
    with pytest.raises(ValueError, match="--scheme: dataset muct has its own fixed markup"):
        prepare([("muct", str(tmp_path))], options)


def test_init_from_a_model_of_another_point_count_keeps_what_fits(tmp_path, capsys):
    from facelandmarks.models import build_model
    from facelandmarks.training.init import CheckpointError, init_weights

    source = build_model("scratch", input_shape=(32, 32, 1), num_points=5)
    source.save_weights(tmp_path / "five.weights.h5")
    target = build_model("scratch", input_shape=(32, 32, 1), num_points=3)
    init_weights(target, str(tmp_path / "five.weights.h5"))
    line = capsys.readouterr().out
    assert "restarted 1 (landmark_coordinates)" in line
    kept = [layer for layer in target.layers if layer.weights and layer.name != "landmark_coordinates"]
    for layer in kept:
        for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    other = build_model("mlp", input_shape=(32, 32, 1), num_points=3)
    with pytest.raises(CheckpointError, match="five.weights.h5: does not fit"):
        init_weights(other, str(tmp_path / "five.weights.h5"))


def test_datagen_prepare_csv_with_a_scheme_file_stops_in_one_line_at_the_bad_row(tmp_path, capsys):
    from facelandmarks.cli.datagen import main

    scheme = write(tmp_path, {**FACE5, "name": "unitcli"})
    name = image(tmp_path)
    path = tmp_path / "points.csv"
    path.write_text(f"{name},{','.join(['30'] * 10)}\n{name},{','.join(['30'] * 12)}\n")
    argv = ["prepare", "csv", "--source", str(path), "--scheme", str(scheme), "--csv-no-header", "--size", "32",
            "--out", str(tmp_path / "out" / "x"), "--workers", "1", "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"datagen.py prepare: {path}:2: 12 coordinates from column 1, scheme unitcli has 5 points (10 numbers)\n"


def test_datagen_select_points_writes_a_subset_npz_that_carries_its_scheme(tmp_path, capsys):
    from facelandmarks.cli.datagen import main

    points = np.random.default_rng(0).random((3, 68, 2)).astype(np.float32)
    arrays = {"images": np.zeros((3, 8, 8, 3), np.uint8), "landmarks": points, "visible": np.ones((3, 68), bool),
              "subject": np.array(["a", "b", "c"]), "scheme": np.array("ibug68"), "box": np.zeros((3, 4), np.float32)}
    npz.save_npz(tmp_path / "ibug.npz", arrays)
    scheme = write(tmp_path, FACE5)
    base = ["select-points", "--data", str(tmp_path / "ibug.npz"), "--scheme", str(scheme), "--out", str(tmp_path / "five.npz")]
    assert main([*base, "--points", "36,45,30,48,54"]) == 0
    landmarks._REGISTERED.pop("unit5")
    five = npz.load_npz(tmp_path / "five.npz")  # registers unit5 from the file
    np.testing.assert_array_equal(five["landmarks"], points[:, [36, 45, 30, 48, 54]])
    assert get_scheme("unit5").mirror == (1, 0, 2, 4, 3)
    assert main([*base, "--points", "36,45,30,48,53"]) == 2
    assert "--points: point right_mouth (ibug68 48) mirrors to ibug68 54, but unit5 pairs it with ibug68 53" in capsys.readouterr().err
    # crops stored as JPEG (prepare --jpeg) stay stored, byte for byte
    arrays["images"] = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    npz.save_npz(tmp_path / "ibug.npz", arrays, jpeg=80)
    assert main([*base, "--points", "36,45,30,48,54"]) == 0
    with np.load(tmp_path / "ibug.npz") as before, np.load(tmp_path / "five.npz") as after:
        assert "images" not in after.files
        np.testing.assert_array_equal(after["images_jpeg"], before["images_jpeg"])
    np.testing.assert_array_equal(npz.load_npz(tmp_path / "five.npz")["images"], npz.load_npz(tmp_path / "ibug.npz")["images"])
    # --out over --data replaced the 68-point file with the 5-point one (and broke a prepared set's manifest)
    argv = ["select-points", "--data", str(tmp_path / "ibug.npz"), "--scheme", str(scheme), "--points", "36,45,30,48,54",
            "--out", str(tmp_path / "ibug.npz")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"datagen.py select-points: {tmp_path / 'ibug.npz'}: --out is the --data file; "
                                       "write the selected points to another file (replacing it would lose the data's "
                                       "own points)\n")
    assert npz.load_npz(tmp_path / "ibug.npz")["landmarks"].shape == (3, 68, 2)


def test_select_points_on_a_shard_set_says_what_it_reads(tmp_path, capsys):
    from facelandmarks.cli.datagen import main

    scheme = write(tmp_path, FACE5)
    manifest = tmp_path / "big.shards.json"
    manifest.write_text('{"shards": []}')
    argv = ["select-points", "--data", str(manifest), "--scheme", str(scheme), "--points", "36,45,30,48,54", "--out",
            str(tmp_path / "five.npz")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"datagen.py select-points: {manifest}: a shard set; select-points reads one npz "
                                       "file (run it on each shard, or prepare the set without --shard-size)\n")
    assert not (tmp_path / "five.npz").exists()
