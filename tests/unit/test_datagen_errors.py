"""datagen.py against hostile input, without face data: landmarks off their image, bad files of every
kind it reads, archives that try to write outside their destination, and mixed train/test sets.

Everything is synthetic and written under ``tmp_path``.  The same defences on real faces, with
``prepare`` killed at every step of its write path, are in ``tests/data/test_prepare_faults.py``.
"""

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks.cli.datagen import EXIT_INPUT, main
from facelandmarks.data import download, fileset, npz
from facelandmarks.data.download import ArchiveError, safe_extract
from facelandmarks.data.errors import DatasetError, OutputError
from facelandmarks.data.fileset import SetWriter
from facelandmarks.files import is_partial
from facelandmarks.landmarks import KAGGLE15_NAMES
from tests.unit.range_server import serving

# --------------------------------------------------------------------------- synthetic 300-W faces


def face_shape(cx=80.0, cy=80.0, radius=40.0):
    """68 points on a ring: enough of a face for the landmark box (dlib will not find it: fallback box)."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    wobble = 1 + 0.15 * np.sin(3 * angles)
    return np.stack([cx + radius * wobble * np.cos(angles), cy + 1.2 * radius * wobble * np.sin(angles)], axis=1)


def write_face(folder, stem, points, shape=(160, 160), exif=None):
    """An image and its headerless .pts (1-based, as iBUG's files are)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    image = rng.integers(60, 200, (*shape, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    data = encoded.tobytes()
    if exif is not None:
        data = with_exif_orientation(data, exif)
    (folder / f"{stem}.jpg").write_bytes(data)
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points]
    (folder / f"{stem}.pts").write_text("\n".join(lines) + "\n")


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """JPEG data with an APP1 Exif segment holding only the orientation tag."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


BAD_FACES = {
    "shifted": (face_shape() + 1000, "landmarks off the image: 68 of 68 labelled points"),
    "negated": (-face_shape(), "landmarks off the image: 68 of 68 labelled points"),
    "equal": (np.full((68, 2), 80.0), "degenerate landmarks: the 68 labelled points span only 0.0 x 0.0 px"),
    "line": (np.stack([np.linspace(20, 140, 68), np.full(68, 80.0)], axis=1), "degenerate landmarks"),
    "nan": (np.where(np.arange(68)[:, None] == 5, np.nan, face_shape()), "non-finite landmarks: 1 of 68"),
    "infinite": (np.where(np.arange(68)[:, None] == 7, np.inf, face_shape()), "non-finite landmarks: 1 of 68"),
}


@pytest.fixture
def hostile_300w(tmp_path):
    root = tmp_path / "300w" / "afw"
    for i in range(8):
        write_face(root, f"good{i}_1", face_shape(70 + 2 * i, 75))
    for stem, (points, _) in BAD_FACES.items():
        write_face(root, f"{stem}_1", points)
    write_face(root, "tiny_1", face_shape(), shape=(10, 10))  # a 10 x 10 image with full-size points
    # stored 120 x 200 (h x w); EXIF 6 turns it to 200 x 120: points at x 140-196 only fit the stored pixels
    write_face(root, "exif_1", face_shape(168, 60, 22), shape=(120, 200), exif=6)
    # points that fit neither view: off both
    write_face(root, "exifoff_1", face_shape() + 900, shape=(120, 200), exif=6)
    return tmp_path / "300w"


def prepare_args(source, out, *extra):
    return ["prepare", "300w", "--source", str(source), "--size", "32", "--out", str(out), "--workers", "1", "--quiet", *extra]


def test_faces_whose_landmarks_are_not_on_the_image_are_skipped_with_a_reason(hostile_300w, tmp_path, capsys):
    stray = face_shape(70, 75)
    stray[8] = (-40.0, 150.0)  # one point clicked (or typed) past the image's left edge: kept, and noted
    write_face(hostile_300w / "afw", "stray_1", stray)
    out = tmp_path / "out" / "hostile"
    assert main(prepare_args(hostile_300w, out)) == 0
    report = json.loads((tmp_path / "out" / "hostile_report.json").read_text())
    reasons = {s["file"]: s["reason"] for s in report["skips"]}
    for stem, (_, reason) in BAD_FACES.items():
        assert reason in reasons.pop(f"afw/{stem}_1.jpg"), stem
    assert reasons.pop("afw/tiny_1.jpg").startswith("image far smaller than its landmarks")
    off_both = reasons.pop("afw/exifoff_1.jpg")
    assert off_both.startswith("landmarks off the image") and "also on the stored pixels (EXIF orientation 6 ignored)" in off_both
    assert reasons == {}
    # the EXIF face whose points fit the stored pixels is kept, on those pixels, and the summary says so
    assert report["counts"]["written"] == 10 and report["counts"]["skipped"] == len(BAD_FACES) + 2
    assert any("landmarks fit the stored pixels (EXIF orientation 6 ignored)" in note for note in report["notes"])
    assert "1 faces: kept with labelled points past the image's edge: check them if the face is inside it " \
           "(e.g. afw/stray_1.jpg)" in report["notes"]
    names, visible = [], []
    for side in ("train", "test"):
        arrays = npz.load_npz(tmp_path / "out" / f"hostile_{side}.npz")
        names += list(arrays["name"])
        visible.append(arrays["visible"])
    assert sorted(set(names)) == sorted([f"afw/good{i}_1.jpg" for i in range(8)] + ["afw/exif_1.jpg", "afw/stray_1.jpg"])
    assert np.concatenate(visible).mean() > 0.95  # written faces keep their points on the crop
    summary = capsys.readouterr().out
    assert "afw/shifted_1.jpg: landmarks off the image" in summary
    # dlib finds none of these drawn faces: every one boxed from its points, which real data does for 2.7 %
    assert report["counts"]["fallback"] == 10 and "WARNING: 10 of 18 faces (56 %) were boxed from their landmarks" in summary


def test_a_split_that_leaves_a_side_empty_is_an_error_before_anything_is_written(tmp_path, capsys):
    source = tmp_path / "300w"
    for face in (1, 2, 3):  # three faces of one photo: one subject
        write_face(source / "afw", f"solo_{face}", face_shape(60 + 10 * face, 80))
    out = tmp_path / "out" / "solo"
    assert main(prepare_args(source, out)) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"datagen.py prepare: 300w ({source}): the split by subject leaves")
    assert "empty (1 subject in all)" in err[0] and "--test-fraction 0" in err[0]
    assert not (tmp_path / "out").exists()  # the folder it had created is gone again
    # asked for on purpose: written, with a warning in the summary
    assert main(prepare_args(source, out, "--test-fraction", "0")) == 0
    assert "WARNING: test is empty, as asked (--test-fraction 0.0)" in capsys.readouterr().out
    assert len(npz.load_npz(f"{out}_test.npz")["landmarks"]) == 0


def test_a_split_option_that_sends_every_subject_to_one_side_says_so(tmp_path, capsys):
    """MUCT's 7 subjects with --test-subjects 9 said 'a split needs two subjects at least -- add data'."""
    muct = tmp_path / "muct"
    (muct / "muct-landmarks").mkdir(parents=True)
    (muct / "jpg").mkdir()
    rows = ["name,tag," + ",".join(f"x{i:02d},y{i:02d}" for i in range(76))]
    for subject in range(3):
        rows.append(f"i{subject:03d}qa-fn,0," + ",".join(["50"] * 152))
        (muct / "jpg" / f"i{subject:03d}qa-fn.jpg").write_bytes(b"")  # refused before any image is read
    (muct / "muct-landmarks" / "muct76-opencv.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "m"
    for flags, asked in ((["--test-subjects", "9"], "--test-subjects 9"), (["--test-fraction", "0.9"], "--test-fraction 0.9")):
        argv = ["prepare", "muct", "--source", str(muct), "--size", "32", "--out", str(out), "--quiet", *flags]
        assert main(argv) == EXIT_INPUT
        assert capsys.readouterr().err == (f"datagen.py prepare: muct ({muct}): {asked} leaves train empty (3 subjects in "
                                           "all, none to train); give less to test, or --test-fraction 0 (all to train) "
                                           "or 1 (all to test) to write one side on purpose\n")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- one-line errors, exit 2


def minimal_arrays(n=2, set_id=None):
    arrays = {
        "images": np.zeros((n, 8, 8, 3), np.uint8),
        "landmarks": np.full((n, 15, 2), 0.5, np.float32),
        "visible": np.ones((n, 15), bool),
        "subject": np.array([f"s{i}" for i in range(n)]),
        "scheme": np.array("kaggle15"),
        "box": np.tile(np.float32([0, 0, 8, 8]), (n, 1)),
    }
    if set_id:
        arrays["set_id"] = np.array(set_id)
    return arrays


def bad_npz_files(tmp_path):
    good = npz.save_npz(tmp_path / "good.npz", minimal_arrays())
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": os.urandom(3000),
        "zip of text": _zip({"a.txt": b"hello"}),
        "member cut short": _zip_member_cut(data),
    }
    paths = {}
    for label, content in files.items():
        paths[label] = tmp_path / f"{label.replace(' ', '_')}.npz"
        paths[label].write_bytes(content)
    paths["single npy"] = tmp_path / "single.npz"
    np.save(paths["single npy"].with_suffix(".npy"), np.zeros(3))
    paths["single npy"].with_suffix(".npy").rename(paths["single npy"])
    paths["pickled"] = tmp_path / "pickled.npz"
    np.savez(paths["pickled"], subject=np.array([{"a": 1}], dtype=object))
    paths["off schema"] = npz.save_npz(tmp_path / "noland.npz", {k: v for k, v in minimal_arrays().items() if k != "landmarks"})
    paths["corrupt shards.json"] = tmp_path / "x_train.shards.json"
    paths["corrupt shards.json"].write_text('{"shards": [')
    paths["corrupt manifest.json"] = tmp_path / "y.manifest.json"
    paths["corrupt manifest.json"].write_text("{}")
    paths["missing"] = tmp_path / "missing.npz"
    paths["a folder"] = tmp_path
    return paths


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _zip_member_cut(npz_bytes: bytes) -> bytes:
    """A valid zip directory whose first member's data is zeroed (CRC mismatch on reading)."""
    data = bytearray(npz_bytes)
    data[100:400] = bytes(300)
    return bytes(data)


def test_every_unreadable_dataset_file_is_one_line_and_exit_2(tmp_path, capsys):
    for label, path in bad_npz_files(tmp_path).items():
        if label not in ("corrupt shards.json", "corrupt manifest.json"):
            with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}: "):
                npz.load_npz(path)
        assert main(["info", str(path)]) == EXIT_INPUT, label
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"datagen.py info: {path}: "), (label, err)


def bad_annotations(tmp_path):
    """``(label, argv, says)`` of prepare runs on broken annotation files and missing folders: ``says`` starts the line."""
    cases = []

    def folder(name):
        path = tmp_path / "bad" / name
        path.mkdir(parents=True)
        return path

    muct = folder("muct_nul") / "muct-landmarks"
    muct.mkdir()
    (muct / "muct76-opencv.csv").write_bytes(b"name,tag,x00\x00,y00\n")
    cases.append(("muct csv with NUL", "muct", muct.parent, f"{muct}/muct76-opencv.csv: header is not 'name,tag,x00,y00,"))
    muct = folder("muct_empty") / "muct-landmarks"
    muct.mkdir()
    (muct / "muct76-opencv.csv").write_bytes(b"")
    cases.append(("muct csv empty", "muct", muct.parent, f"{muct}/muct76-opencv.csv: empty file, expected the header"))
    muct = folder("muct_binary") / "muct-landmarks"
    muct.mkdir()
    (muct / "muct76-opencv.csv").write_bytes(os.urandom(2000).replace(b"\x00", b"\x01"))
    cases.append(("muct csv binary", "muct", muct.parent, f"{muct}/muct76-opencv.csv: header is not 'name,tag,x00,y00,"))
    yt = folder("yt_cut")
    (yt / "training_frames_keypoints.csv").write_text("name," + ",".join(["x"] * 136) + "\nframe_00.jpg,1,2,3\n")
    cases.append(("youtube68 csv cut mid-row", "youtube68", yt, f"{yt}/training_frames_keypoints.csv:2: 4 fields, expected 137"))
    yt = folder("yt_nul")
    (yt / "test_frames_keypoints.csv").write_bytes(b"name,x\nframe\x00,1\n")
    cases.append(("youtube68 csv with NUL", "youtube68", yt, f"{yt}/test_frames_keypoints.csv:2: 2 fields, expected 137"))
    kaggle = folder("kaggle_nul")
    (kaggle / "training.csv").write_bytes(b"\x00" * 10)
    cases.append(("kaggle csv NUL", "kaggle", kaggle, f"{kaggle}/training.csv: missing column(s) left_eye_center_x,"))
    kaggle = folder("kaggle_empty")
    (kaggle / "training.csv").write_text("")
    cases.append(("kaggle csv empty", "kaggle", kaggle, f"{kaggle}/training.csv: empty file, expected a header"))
    xml = folder("xml_cut")
    (xml / "faces.xml").write_text("<dataset><images><image file='a.jpg'><box top='1' left='1' width='9' height='9'><part name='00' x='1'")
    cases.append(("dlib xml cut", "dlibxml", xml, f"{xml}/faces.xml: not well-formed XML (unclosed token"))
    xml = folder("xml_twice")
    (xml / "faces.xml").write_text("<dataset><images><image file='a.jpg'><box top='1' left='1' width='9' height='9'>"
                                   "<part name='04' x='1' y='2'/><part name='04' x='3' y='4'/></box></image></images></dataset>")
    cases.append(("dlib xml part twice", "dlibxml", xml, f"{xml}/faces.xml: a.jpg (box 0): part 04 given twice"))
    xml = folder("xml_binary")
    (xml / "faces.xml").write_bytes(os.urandom(500))
    cases.append(("dlib xml binary", "dlibxml", xml, f"{xml}/faces.xml: not well-formed XML"))
    for name, text, says in (("pts_short", "1 2\n3 4\n", "2 points, expected 68 (ibug68)"),
                             ("pts_words", "version: 1\nn_points: 68\n{\n" + "a b\n" * 68 + "}\n", "not 'x y' number pairs"),
                             ("pts_open", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, "'{' without closing '}'")):
        pts = folder(name)
        (pts / "x_1.pts").write_text(text)
        (pts / "x_1.jpg").write_bytes(b"")
        cases.append((f"300w {name}", "300w", pts, f"{pts}/x_1.pts: {says}"))
    wflw = folder("wflw_short")
    (wflw / "list.txt").write_text("1 2 3 a.jpg\n")
    cases.append(("wflw line too short", "wflw", wflw, f"{wflw}/list.txt:1: 4 fields, expected 196 coordinates"))
    wflw = folder("wflw_no_images")  # the lists without WFLW_images/: once 'image missing for list.txt:1', not where
    (wflw / "list.txt").write_text(" ".join(["10"] * 196 + ["1", "2", "3", "4"] + ["0"] * 6 + ["0--Parade/a.jpg"]) + "\n")
    cases.append(("wflw without its images", "wflw", wflw, f"wflw ({wflw}): no usable faces (1 annotated faces skipped; first: "
                  f"0--Parade/a.jpg: image missing for list.txt:1 (not under {wflw / 'WFLW_images'}, {wflw / 'images'}, {wflw})"))
    for dataset in ("muct", "300w", "youtube68", "kaggle", "wflw", "dlibxml"):
        kind = "file or folder" if dataset in ("kaggle", "dlibxml") else "folder"  # these read their file too
        cases.append((f"{dataset} missing folder", dataset, tmp_path / "nowhere", f"{tmp_path / 'nowhere'}: no such {kind}"))
    # annotations that hold no face (a header and no rows: a download cut short): once "no usable faces (0 annotated
    # faces skipped)", naming no file
    muct = folder("muct_header_only") / "muct-landmarks"
    muct.mkdir()
    (muct / "muct76-opencv.csv").write_text("name,tag," + ",".join(f"x{i:02d},y{i:02d}" for i in range(76)) + "\n")
    yt = folder("yt_header_only")
    (yt / "test_frames_keypoints.csv").write_text("," + ",".join(str(i) for i in range(136)) + "\n")
    wflw = folder("wflw_blank")
    (wflw / "list.txt").write_text("\n\n")
    kaggle = folder("kaggle_header_only")
    (kaggle / "training.csv").write_text(",".join(f"{n}_{a}" for n in KAGGLE15_NAMES for a in "xy") + ",Image\n")
    coco = folder("coco_no_annotations")
    (coco / "faces.json").write_text(json.dumps({**coco_file(), "annotations": []}))
    for dataset, source in (("muct", muct.parent), ("youtube68", yt), ("wflw", wflw), ("kaggle", kaggle),
                            ("coco", coco)):
        cases.append((f"{dataset} without faces", dataset, source, f"{source}: no annotated faces in it ({dataset}:"))
    # a folder dataset given its annotation file: once "no MUCT landmark file (looked for FILE/muct-landmarks/...)"
    for dataset, file in (("muct", muct / "muct76-opencv.csv"), ("youtube68", yt / "test_frames_keypoints.csv"),
                          ("wflw", wflw / "list.txt")):
        cases.append((f"{dataset} given a file", dataset, file, f"{file}: a file, not a folder (--source): {dataset} reads"))
    coco = folder("coco_binary")  # once "coco (FOLDER): 'utf-8' codec can't decode byte ...", naming no file
    (coco / "faces.json").write_bytes(b'{"images": [\xff\xfe]}')
    cases.append(("coco: not UTF-8", "coco", coco, f"{coco}/faces.json: not valid JSON (not UTF-8 text: byte 12 is 0xff)"))
    for label, (edit, says) in COCO_EDITS.items():
        coco = folder(f"coco_{len(cases)}")
        (coco / "faces.json").write_text(json.dumps(edit(coco_file())))
        cases.append((f"coco: {label}", "coco", coco, f"{coco}/faces.json: {says}"))
    return [(label, ["prepare", dataset, "--source", str(source), "--size", "32", "--out", str(tmp_path / "o" / "x"),
                     "--workers", "1", "--quiet"], says) for label, dataset, source, says in cases]


def coco_file() -> dict:
    """A COCO keypoint file of one face with three named points (its image need not exist to be refused)."""
    return {"images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"id": 7, "image_id": 1, "keypoints": [10, 10, 2, 20, 10, 2, 15, 20, 2]}],
            "categories": [{"name": "face", "keypoints": ["left_eye", "right_eye", "mouth"]}]}


def _edit(data: dict, where: str, value) -> dict:
    part, key = where.split(".")
    if key == "*":
        data[part] = value
    else:
        data[part][0][key] = value
    return data


# one field edited each: every one a line naming the file, where it once was a Python traceback
COCO_EDITS = {
    "images not objects": (lambda d: _edit(d, "images.*", [1, 2]), "images[0] is not an object with an 'id' (got 1)"),
    "an annotation not an object": (lambda d: _edit(d, "annotations.*", [5]), "annotations[0] is not an object (got 5)"),
    "file_name a number": (lambda d: _edit(d, "images.file_name", 123),
                           "images[0] (id 1): 'file_name' is not a file name (got 123)"),
    "file_name null": (lambda d: _edit(d, "images.file_name", None),
                       "images[0] (id 1): 'file_name' is not a file name (got None)"),
    "image_id a list": (lambda d: _edit(d, "annotations.image_id", [1]), "annotation 7: image_id [1] is not an id in 'images'"),
    "flip_pairs not pairs": (lambda d: _edit(d, "categories.flip_pairs", [[0]]),
                             "categories[0]'s flip_pairs are not pairs of point numbers (got [[0]])"),
}


def test_datagen_names_what_is_wrong_with_sources_names_and_out(tmp_path, capsys):
    data = tmp_path / "300w"
    for stem in ("x_1", "y_1", "z_1", "w_1", "v_1"):
        write_face(data / "afw", stem, face_shape())
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "faces.json").write_text(json.dumps(_edit(coco_file(), "images.file_name", None)))
    out = ["--size", "32", "--out", str(tmp_path / "o" / "x"), "--workers", "1", "--quiet"]
    for argv, says in (
        (["300w", "300w", "--source", str(data), "--source", str(data / "afw")],
         f"--source {data} and --source {data / 'afw'}: one holds the other, so their faces would be read twice"),
        (["300w", "--source", str(tmp_path / "nowhere")], f"{tmp_path / 'nowhere'}: no such folder (--source)"),
        (["coco", "--source", str(coco)], f"{coco / 'faces.json'}: images[0] (id 1): 'file_name' is not a file name (got None)"),
    ):
        assert main(["prepare", *argv, *out]) == EXIT_INPUT
        assert capsys.readouterr().err.startswith(f"datagen.py prepare: {says}")
    with pytest.raises(SystemExit):  # argparse's usage error, one line
        main(["prepare", "youtube", "--source", str(data), *out])
    assert "argument DATASET: unknown dataset 'youtube': did you mean youtube68?" in capsys.readouterr().err
    assert main(["prepare", "300w", "--source", str(data), "--size", "32", "--out", str(tmp_path / "x_train.npz"),
                 "--workers", "1", "--quiet"]) == EXIT_INPUT
    assert "a prefix, not a file: prepare writes PREFIX_train.npz" in capsys.readouterr().err
    for flags, says in ((["--images", str(tmp_path)], "--images: dataset 300w does not use it (it is for coco, csv)"),
                        (["--csv-layout", "xxyy"], "--csv-layout: dataset 300w does not use it (it is for csv)"),
                        (["--use-bbox"], "--use-bbox: dataset 300w does not use it (it is for coco)")):
        assert main(["prepare", "300w", "--source", str(data), *flags, *out]) == EXIT_INPUT  # once ignored in silence
        assert capsys.readouterr().err == f"datagen.py prepare: {says}\n"
    assert main(["prepare", "300W", "--source", str(data), *out]) == 0  # a dataset's name in any case
    printed = capsys.readouterr().out
    assert "no 300-W test folder" in printed and "replaced the earlier set" not in printed
    first = json.loads((tmp_path / "o" / "x.manifest.json").read_text())["set_id"]
    assert main(["prepare", "300w", "--source", str(data), *out]) == 0
    assert f"replaced the earlier set {first} of {tmp_path / 'o' / 'x'}_*" in capsys.readouterr().out
    for name in ("a_1", "b_1"):  # every face skipped: how many for each reason
        write_face(tmp_path / "bad" / "afw", name, face_shape())
        (tmp_path / "bad" / "afw" / f"{name}.jpg").write_bytes(b"\xff\xd8\xff\xe0junk\xff\xd9")
    (tmp_path / "bad" / "afw" / "b_1.jpg").unlink()
    assert main(["prepare", "300w", "--source", str(tmp_path / "bad"), "--test-fraction", "0", *out]) == EXIT_INPUT
    assert "every face was skipped (2: 1 image missing, 1 corrupt or unsupported image data); first: " in capsys.readouterr().err


def bad_options(tmp_path):
    plain_file = tmp_path / "plain"
    plain_file.write_text("a file, not a folder")
    base = ["prepare", "kaggle", "--source", str(tmp_path), "--workers", "1", "--quiet"]
    # the source holds no kaggle faces: a check that let its option through would still end in an error (that
    # training.csv is missing), so each line must name the option
    return [
        ("size 0", base + ["--size", "0", "--out", str(tmp_path / "o" / "x")], "--size: must be between 8 and 4096 pixels, got 0"),
        ("size 5000", base + ["--size", "5000", "--out", str(tmp_path / "o" / "x")],
         "--size: must be between 8 and 4096 pixels, got 5000"),
        ("test fraction 2", base + ["--size", "32", "--test-fraction", "2", "--out", str(tmp_path / "o" / "x")],
         "--test-fraction: must be in [0, 1], got 2.0"),
        ("test fraction nan", base + ["--size", "32", "--test-fraction", "nan", "--out", str(tmp_path / "o" / "x")],
         "--test-fraction: must be in [0, 1], got nan"),
        ("upsample 9", base + ["--size", "32", "--upsample", "9", "--out", str(tmp_path / "o" / "x")],
         "--upsample: must be between 0 and 3 (each step doubles the photo's side, 4x the memory and time; 3 finds "
         "faces of about 10 px), got 9"),
        ("negative shard size", base + ["--size", "32", "--shard-size", "-1", "--out", str(tmp_path / "o" / "x")],
         "--shard-size: must be >= 0 (0: one file per side), got -1"),
        ("out under a file", base + ["--size", "32", "--out", str(plain_file / "x")],
         f"{plain_file}: a file, not a folder, so the output set {plain_file / 'x'}_* cannot go under it"),
        ("out is a folder", base + ["--size", "32", "--out", str(tmp_path)], f"--out {tmp_path}: a prefix such as"),
        ("out ends with /", base + ["--size", "32", "--out", str(tmp_path / "o") + "/"], f"--out {tmp_path / 'o'}/: a prefix such as"),
        ("out names an npz", base + ["--size", "32", "--out", str(tmp_path / "o" / "x_train.npz")],
         f"--out {tmp_path / 'o' / 'x_train.npz'}: a prefix, not a file"),
    ]


def test_bad_annotations_folders_and_options_are_one_line_and_exit_2(tmp_path, capsys):
    cases = bad_annotations(tmp_path) + bad_options(tmp_path)
    for label, argv, says in cases:
        assert main(argv) == EXIT_INPUT, label
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"datagen.py prepare: {says}"), (label, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written, not even the output folder


def test_an_unwritable_or_full_out_is_found_before_any_face_is_read(tmp_path, monkeypatch):
    (tmp_path / "plain.txt").write_text("a file where a folder should be")
    with pytest.raises(OutputError, match=f"^{tmp_path / 'plain.txt'}: a file, not a folder, so the output set"):
        SetWriter(tmp_path / "plain.txt" / "x")  # mkdir's own "File exists" named no file
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".probe") and "w" in mode:
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(OutputError, match="No space left on device"):
        SetWriter(tmp_path / "full" / "x")
    assert not (tmp_path / "full").exists()
    monkeypatch.setattr("builtins.open", real_open)

    def read_only_mkdtemp(prefix="", dir=None, **kwargs):  # what a read-only folder does (root writes anywhere)
        raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}k2j4h1x0"))

    monkeypatch.setattr("tempfile.mkdtemp", read_only_mkdtemp)
    (tmp_path / "ro").mkdir()  # named itself, not '.x.staging-1234-k2j4h1x0' inside it
    with pytest.raises(OutputError, match=f"^{re.escape(str(tmp_path / 'ro'))}: cannot write the output set "
                                          f"{re.escape(str(tmp_path / 'ro' / 'x'))}_\\* here \\(Permission denied\\)$"):
        SetWriter(tmp_path / "ro" / "x")


# --------------------------------------------------------------------------- archives


def tar_with(tmp_path, members, name="hostile.tar"):
    """A tar of ``(name, kind, data_or_link)`` members: kind is file, dir, sym or hard."""
    path = tmp_path / name
    with tarfile.open(path, "w") as tar:
        for member_name, kind, value in members:
            info = tarfile.TarInfo(member_name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            info.linkname = value or ""
            tar.addfile(info)
    return path


GOOD = ("jpg/good.txt", "file", b"good")
NOWHERE = "/nonexistent-facelandmarks-test"  # absolute targets: harmless should a check ever let one through
HOSTILE_ARCHIVES = {
    "chained symlinks": [GOOD, ("a", "sym", "."), ("a/b", "sym", ".."), ("b/evil.txt", "file", b"evil")],
    "deeper chain": [GOOD, ("a", "sym", "."), ("a/a/a/b", "sym", ".."), ("a/b/evil.txt", "file", b"evil")],
    "link to a link to outside": [GOOD, ("d", "dir", None), ("d/up", "sym", "../.."), ("x", "sym", "d/up")],
    "absolute symlink": [GOOD, ("abs", "sym", NOWHERE), ("abs/evil.txt", "file", b"evil")],
    "absolute name": [GOOD, (f"{NOWHERE}/evil.txt", "file", b"evil")],
    "dot-dot name": [GOOD, ("../evil.txt", "file", b"evil")],
    "dot-dot inside a name": [GOOD, ("jpg/../../evil.txt", "file", b"evil")],
    "hardlink out": [GOOD, ("h", "hard", "../evil.txt")],
    "hardlink absolute": [GOOD, ("h", "hard", f"{NOWHERE}/evil.txt")],
    "hardlink through a symlink": [GOOD, ("s", "sym", "."), ("h", "hard", "s/../evil.txt")],
    "file through a symlinked folder": [GOOD, ("s", "sym", "jpg/.."), ("s/../evil.txt", "file", b"evil")],
    "symlink re-pointed later": [GOOD, ("a", "sym", "b/.."), ("b", "sym", ".")],
    "link replaced": [GOOD, ("l", "sym", "jpg"), ("l", "sym", "jpg/..")],
    "link loop": [GOOD, ("p", "sym", "q"), ("q", "sym", "p"), ("p/evil.txt", "file", b"evil")],
    "device": [GOOD, ("dev", "file", b"")],
}


def _as_device(path):
    """Rewrite the 'dev' member of an archive as a character device."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            if member.name == "dev":
                member.type = tarfile.CHRTYPE
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("with_stdlib_filter", [True, False], ids=["python-filter", "no-filter"])
@pytest.mark.parametrize("case", HOSTILE_ARCHIVES)
def test_hostile_archives_are_refused_before_anything_is_extracted(tmp_path, monkeypatch, case, with_stdlib_filter):
    if not with_stdlib_filter:  # as on Python before 3.11.4: only our own check stands
        monkeypatch.setattr(download, "_filter_arguments", lambda: {})
    archive = tar_with(tmp_path, HOSTILE_ARCHIVES[case])
    if case == "device":
        _as_device(archive)
    dest = tmp_path / "box" / "dest"
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, dest)
    message = str(caught.value)
    assert message.startswith(f"{archive}: member ") and "nothing extracted" in message and "\n" not in message
    assert list(dest.iterdir()) == []  # not even the harmless first member
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["box", "dest", archive.name])


def test_a_link_already_on_disk_is_followed_too(tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "jpg").symlink_to(outside)
    archive = tar_with(tmp_path, [("jpg/evil.txt", "file", b"evil")])
    with pytest.raises(ArchiveError, match="would land outside"):
        safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_links_that_stay_inside_are_extracted(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_filter_arguments", lambda: {})
    archive = tar_with(tmp_path, [("jpg", "dir", None), GOOD, ("latest", "sym", "jpg"), ("latest/more.txt", "file", b"more"),
                                  ("copy.txt", "hard", "jpg/good.txt"), ("./", "dir", None)])
    dest = tmp_path / "dest"
    assert safe_extract(archive, dest) == 6
    assert (dest / "jpg" / "more.txt").read_bytes() == b"more" and (dest / "copy.txt").read_bytes() == b"good"


def test_a_hard_link_to_another_archives_file_is_refused_in_one_line(tmp_path):
    """Each archive is extracted apart (into a folder of its own, then moved into place), so a hard link may name a
    member of its own archive only (tarfile, extracting into --dest itself, linked one to a file an earlier archive
    left). Such a link is refused in one line, not as tarfile's KeyError "linkname ... not found"; nothing is
    extracted."""
    dest = tmp_path / "dest"
    safe_extract(tar_with(tmp_path, [GOOD], "first.tar"), dest)
    archive = tar_with(tmp_path, [("copy.txt", "hard", "jpg/good.txt")], "second.tar")
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, dest)
    assert str(caught.value) == (f"{archive}: cannot be extracted (a hard link to a file outside the archive); "
                                 "nothing extracted from this archive")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["jpg", "jpg/good.txt"]


def test_a_refused_or_corrupt_download_is_deleted_with_a_hint(tmp_path, capsys):
    dest = tmp_path / "muct"
    dest.mkdir()
    cached = dest / "muct-a-jpg-v1.tar.gz"
    shutil.copy(tar_with(tmp_path, HOSTILE_ARCHIVES["chained symlinks"]), cached)
    argv = ["download", "muct", "--dest", str(dest), "--url", "http://127.0.0.1:9/", "--quiet"]
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{cached}: member 'a/b' links outside" in err
    assert "the archive was deleted: run download again" in err and not cached.exists()
    cached.write_bytes(b"\x1f\x8b" + os.urandom(500))  # a corrupt gzip
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "not a readable tar archive" in err and "deleted" in err and not cached.exists()


# --------------------------------------------------------------------------- sets: written together, read together


def write_set(prefix, n, set_files=("train", "test")):
    writer = SetWriter(prefix)
    for side in set_files:
        arrays = minimal_arrays(n, writer.set_id)
        writer.write(f"{writer.name}_{side}.npz", lambda path, arrays=arrays: npz.save_npz(path, arrays))
    writer.write_text(f"{writer.name}_report.txt", f"set {writer.set_id}\n")
    writer.commit()
    return writer.set_id


def test_a_mixed_set_is_refused_with_one_line(tmp_path, capsys):
    prefix = tmp_path / "sets" / "d"
    write_set(prefix, 2)
    old_test = (tmp_path / "sets" / "d_test.npz").read_bytes()
    new_id = write_set(prefix, 3)
    assert str(npz.load_npz(f"{prefix}_test.npz")["set_id"]) == new_id
    assert npz.check_set(prefix)["set_id"] == new_id
    (tmp_path / "sets" / "d_test.npz").write_bytes(old_test)  # an old test file beside the new train file
    npz.load_npz(f"{prefix}_train.npz")  # the train file itself is still the one listed
    with pytest.raises(DatasetError, match=r"d_test.npz: a mixed set"):
        npz.load_npz(f"{prefix}_test.npz")
    with pytest.raises(DatasetError, match="d_test.npz: a mixed set"):
        npz.check_set(f"{prefix}_train.npz")
    assert main(["info", f"{prefix}_test.npz"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a mixed set" in err
    # a stray member (left by hand) is named by check_set
    (tmp_path / "sets" / "d_test.npz").unlink()
    write_set(prefix, 2)
    shutil.copy(f"{prefix}_train.npz", f"{prefix}_train-00000.npz")
    with pytest.raises(DatasetError, match="d_train-00000.npz: not part of the set"):
        npz.check_set(prefix)


def test_an_interrupted_install_is_finished_by_the_next_reader(tmp_path, monkeypatch):
    prefix = tmp_path / "d"
    write_set(prefix, 2)
    log = tmp_path / "steps.log"
    monkeypatch.setenv(fileset.FAULT_LOG_ENV, str(log))
    monkeypatch.setattr(fileset, "_faults_passed", 0)
    write_set(prefix, 3)
    steps = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    install = steps.index("install d_test.npz: before") + 1
    monkeypatch.setenv(fileset.FAULT_ENV, f"{install}:enospc")
    monkeypatch.setattr(fileset, "_faults_passed", 0)
    with pytest.raises(OutputError, match="committed but not yet in place"):
        write_set(prefix, 4)
    assert (tmp_path / ".d.commit").is_dir()
    monkeypatch.delenv(fileset.FAULT_ENV)
    assert len(npz.load_npz(f"{prefix}_test.npz")["landmarks"]) == 4  # the reader finished the install
    assert not (tmp_path / ".d.commit").exists() and len(npz.load_npz(f"{prefix}_train.npz")["landmarks"]) == 4
    npz.check_set(prefix, hashes=True)


def test_a_seed_numpy_cannot_take_is_a_usage_error_naming_the_flag(tmp_path, capsys):
    for bad in ("-1", "4294967296", "x"):
        with pytest.raises(SystemExit) as stop:
            main(prepare_args(tmp_path / "300w", tmp_path / "out" / "x", "--seed", bad))
        assert stop.value.code == 2
        assert f"argument --seed: must be a whole number from 0 to 4294967295, got '{bad}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bottleneck_and_select_points_never_write_over_a_prepared_set(tmp_path, capsys, monkeypatch):
    """``--out`` over ``--data`` or over another file of a prepared set once replaced it (the set then read as mixed),
    and an unwritable ``--out`` was found only after the features, naming a temporary file: each is one line, first."""
    from facelandmarks.models import backbones

    for i in range(6):
        write_face(tmp_path / "300w" / "afw", f"f{i}_1", face_shape(70 + 2 * i, 75))
    out = tmp_path / "o" / "x"
    assert main(prepare_args(tmp_path / "300w", out, "--test-fraction", "0.5")) == 0
    capsys.readouterr()
    files = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    monkeypatch.setattr(backbones, "extract_features", lambda *a, **k: pytest.fail("features before --out was checked"))
    (tmp_path / "plain").write_text("a file where a folder should be")
    set_file = "a file of the prepared set x.manifest.json (--out); writing it would leave a mixed set"
    for command, target, says in (
        ("bottleneck", f"{out}_train.npz", "--out is the --data file"),
        ("bottleneck", f"{out}_test.npz", set_file),
        ("bottleneck", f"{out}_report.json", set_file),
        ("bottleneck", f"{out}.manifest.json", set_file),
        ("select-points", f"{out}_test.npz", set_file),
        ("bottleneck", tmp_path / "plain" / "f.npz", None),
        ("select-points", tmp_path / "plain" / "f.npz", None),
    ):
        argv = (["bottleneck", "--backbone", "mobilenetv2", "--weights", "none"] if command == "bottleneck" else
                ["select-points", "--scheme", "ibug68", "--points", "0"])
        assert main([*argv, "--data", f"{out}_train.npz", "--out", str(target)]) == EXIT_INPUT, target
        err = capsys.readouterr().err
        expected = f"{target}: {says}" if says else f"{tmp_path / 'plain'}: a file, not a folder to write into"
        assert err.count("\n") == 1 and err.startswith(f"datagen.py {command}: {expected}"), err
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == files
    assert main(["info", f"{out}.manifest.json"]) == 0


def test_checking_out_makes_no_folder_a_failure_would_leave_behind(tmp_path, capsys):
    """select-points and bottleneck check --out first, and that check made its folder: a bad --points or a missing
    --data after it left an empty folder behind.  The folder is made when the file is written."""
    from tests.unit.test_train_errors import faces

    data = npz.save_npz(tmp_path / "faces.npz", faces(4))
    new = tmp_path / "new" / "deeper"
    for argv in (["select-points", "--scheme", "ibug68", "--points", "0,999", "--data", str(data)],
                 ["bottleneck", "--backbone", "mobilenetv2", "--weights", "none", "--data", str(tmp_path / "nowhere.npz")]):
        assert main([*argv, "--out", str(new / "out.npz")]) == EXIT_INPUT
        assert capsys.readouterr().err.count("\n") == 1
        assert not (tmp_path / "new").exists(), argv
    assert main(["select-points", "--scheme", "ibug68", "--points", ",".join(map(str, range(68))), "--data", str(data),
                 "--out", str(new / "out.npz")]) == 0
    assert npz.load_npz(new / "out.npz")["landmarks"].shape == (4, 68, 2)


def test_download_takes_a_folder_of_the_tarballs_for_url(tmp_path, capsys):
    """``--url FOLDER`` (tarballs fetched by hand) said 'unknown url type: FOLDER/muct-a-jpg-v1.tar.gz'."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in download.MUCT_ARCHIVES:
        shutil.copy(tar_with(tmp_path, [(f"jpg/{name}.txt", "file", name.encode())]), mirror / name)
    dest = tmp_path / "muct"
    assert main(["download", "muct", "--dest", str(dest), "--url", str(mirror), "--quiet", "--delete-archives"]) == 0
    assert sorted(p.name for p in (dest / "jpg").iterdir()) == sorted(f"{name}.txt" for name in download.MUCT_ARCHIVES)
    assert sorted(p.name for p in mirror.iterdir()) == sorted(download.MUCT_ARCHIVES)  # the mirror's own copies stay
    capsys.readouterr()
    assert main(["download", "muct", "--dest", str(dest), "--url", str(tmp_path / "nowhere"), "--quiet"]) == EXIT_INPUT
    assert capsys.readouterr().err == (f"datagen.py download: {tmp_path / 'nowhere'}: --url is neither a URL (http://, "
                                       "https://, file://) nor a folder\n")
    (tmp_path / "plain").write_text("a file where --dest should be a folder")
    assert main(["download", "muct", "--dest", str(tmp_path / "plain"), "--url", str(mirror), "--quiet"]) == EXIT_INPUT
    assert capsys.readouterr().err == f"datagen.py download: {tmp_path / 'plain'}: a file, not a folder to write into\n"


# a download killed at one step: its files' writes (each member's half written, then the kill) and renames
KILLED_DOWNLOAD = r"""
import os, sys, tarfile
from facelandmarks.data import download
at, seen = int(sys.argv[3]), 0

def step():
    global seen
    seen += 1
    return seen == at

def copy(source, target, length=None, *args, _real=tarfile.copyfileobj, **kwargs):
    if step():
        target.write(source.read(length // 2))
        target.flush()
        os._exit(9)
    return _real(source, target, length, *args, **kwargs)

def replace(*args, _real=os.replace, **kwargs):
    if step():
        os._exit(9)
    return _real(*args, **kwargs)

tarfile.copyfileobj, os.replace = copy, replace
download.download_muct(sys.argv[1], sys.argv[2], progress=False, keep_archives=False)
"""


def test_a_download_killed_while_extracting_leaves_no_half_member_and_a_rerun_extracts_each_archive_once(tmp_path,
                                                                                                           capsys):
    """tarfile wrote each member at its place in --dest: killed mid-extraction, a half-written photo lay there as if
    whole, and the next run extracted every archive again (with --delete-archives, downloaded the finished ones
    again). Killed at each write and rename, the members in --dest are whole, and the rerun extracts only the
    archives the killed run had not finished, leaving every member and nothing else (what the kill left is gone)."""
    rng = np.random.default_rng(0)
    mirror, members = tmp_path / "mirror", {}
    mirror.mkdir()
    for name in download.MUCT_ARCHIVES:
        inside = {f"jpg/{name[:6]}-{i}.jpg": rng.bytes(30_000) for i in range(2)}
        if "landmarks" in name:
            inside = {"muct-landmarks/muct76-opencv.csv": rng.bytes(5_000)}
        with tarfile.open(mirror / name, "w:gz") as tar:
            for member, body in inside.items():
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        members.update(inside)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for step in range(1, 200):
        dest = tmp_path / f"muct {step}"
        killed = subprocess.run([sys.executable, "-c", KILLED_DOWNLOAD, str(dest), str(mirror), str(step)], env=env,
                                capture_output=True, text=True)
        if killed.returncode == 0:
            assert step > len(members) + len(download.MUCT_ARCHIVES)
            break
        assert killed.returncode == 9, killed.stderr
        shown = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*")
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(dest).parts)
                 and not p.name.endswith((".tar.gz", ".part"))}
        assert {name: len(body) for name, body in shown.items()} == {name: len(members[name]) for name in shown}, step
        assert shown.items() <= members.items(), step
        capsys.readouterr()
        download.download_muct(dest, str(mirror), progress=False, keep_archives=False)
        extracted = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if "members extracted" in line]
        before = [line.split(":")[0] for line in killed.stdout.splitlines() if "members extracted" in line]
        assert sorted(before + extracted) == sorted(download.MUCT_ARCHIVES), f"step {step}: {before} then {extracted}"
        files = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        assert {name: body for name, body in files.items() if not name.startswith(".")} == members, step
        hidden = sorted(name for name in files if name.startswith("."))  # one marker per archive, no partial file
        assert len(hidden) == len(download.MUCT_ARCHIVES) and not any(map(is_partial, hidden)), f"step {step}: {hidden}"
        assert [p for p in dest.iterdir() if p.name.startswith(".") and not p.is_file()] == [], step  # no folders left
    else:
        pytest.fail("never finished")


def test_json_with_a_byte_order_mark_is_read_and_a_binary_scheme_file_is_named(tmp_path, capsys):
    """A COCO file or scheme file saved by a Windows editor (UTF-8 with a BOM) was 'not valid JSON (Unexpected UTF-8
    BOM ...)', and a scheme file that is not text was "'utf-8' codec can't decode byte 0xd9 in position 0", no file."""
    from facelandmarks.data.readers.coco import read_coco
    from facelandmarks.scheme_files import read_scheme_file

    write_face(tmp_path, "a", face_shape())
    coco = {**coco_file(), "images": [{"id": 1, "file_name": "a.jpg"}]}
    (tmp_path / "faces.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco).encode())
    listing = read_coco(tmp_path / "faces.json")
    assert [r.name for r in listing.records] == ["a.jpg (annotation 7)"]
    scheme = {"name": "bom3", "points": ["left_eye", "right_eye", "mouth"], "pairs": [[0, 1]], "normalize": "box"}
    (tmp_path / "bom3.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(scheme).encode())
    assert read_scheme_file(tmp_path / "bom3.json") == scheme
    (tmp_path / "binary.json").write_bytes(b"\xd9\x00\x17")
    argv = ["prepare", "coco", "--source", str(tmp_path / "faces.json"), "--scheme", str(tmp_path / "binary.json"),
            "--size", "32", "--out", str(tmp_path / "o" / "x"), "--quiet"]
    assert main(argv) == EXIT_INPUT
    assert capsys.readouterr().err == (f"datagen.py prepare: {tmp_path / 'binary.json'}: not a scheme file (not UTF-8 "
                                       "text: byte 0 is 0xd9)\n")


def test_a_download_resumes_its_partial_file_and_starts_over_when_it_is_too_long(tmp_path):
    """A ``.part`` longer than the server's file (another version, a corrupt partial) answered 'HTTP 416 Requested Range
    Not Satisfiable' on every run until it was deleted by hand."""
    body = os.urandom(200_000)
    target, part = tmp_path / "f.tar.gz", tmp_path / "f.tar.gz.part"
    with serving({"f.tar.gz": body}) as (_, url):
        part.write_bytes(body[:70_000])  # cut short: resumed with a Range request
        assert download.download_file(url + "f.tar.gz", target, progress=False) == target
        assert target.read_bytes() == body and not part.exists()
        target.unlink()
        part.write_bytes(body + b"stale tail")  # longer than the file now served: fetched anew
        assert download.download_file(url + "f.tar.gz", target, progress=False) == target
        assert target.read_bytes() == body and not part.exists()


def test_the_summary_does_not_say_a_split_it_did_not_use_gave_the_split(tmp_path, capsys):
    """With --official-split ignore the summary said 'split by image (hash ...); the dataset's own split ignored' and,
    below it, 'note: 300-W test folders present: folder roles give the split'."""
    for i in range(4):
        write_face(tmp_path / "300w" / "afw", f"a{i}_1", face_shape(70 + 2 * i, 75))
        write_face(tmp_path / "300w" / "testset", f"t{i}_1", face_shape(70 + 2 * i, 75))
    out = tmp_path / "o" / "x"
    assert main(prepare_args(tmp_path / "300w", out)) == 0
    assert "note: 300-W test folders present: folder roles give the split" in capsys.readouterr().out
    assert main(prepare_args(tmp_path / "300w", out, "--official-split", "ignore")) == 0
    printed = capsys.readouterr().out
    assert "the dataset's own split ignored (--official-split ignore)" in printed and "give the split" not in printed
    assert "give the split" not in (tmp_path / "o" / "x_report.json").read_text()


def test_a_markup_of_its_own_too_small_to_measure_its_box_says_so(tmp_path, capsys):
    """docs/own-landmarks.md: 'one note: line gives the ratio' of dlib's box around a markup's own points; where too
    few faces had a detection to measure it, the set was boxed as iBUG 68's, and the summary said nothing."""
    write_face(tmp_path, "a", face_shape())
    (tmp_path / "faces.json").write_text(json.dumps(coco_file()))
    argv = ["prepare", "coco", "--source", str(tmp_path / "faces.json"), "--size", "32", "--out", str(tmp_path / "o" / "x"),
            "--test-fraction", "0", "--workers", "1", "--quiet"]
    assert main(argv) == 0
    assert ("note: 1 faces: dlib's box around coco_face3's points not measured (fewer than 5 of its faces had a dlib "
            "detection holding their points): boxed as iBUG 68's points are") in capsys.readouterr().out


def test_info_says_how_many_rows_of_a_jpeg_file_are_copies(tmp_path, capsys):
    """A test file (no mirrored copies) was '74 encoded, the other rows their flipped copies', with no other rows."""
    arrays = minimal_arrays(3)
    arrays["images"] = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    npz.save_npz(tmp_path / "plain.npz", arrays, jpeg=90)
    arrays["images"][1] = arrays["images"][0][:, ::-1]  # a mirrored copy of face 0, stored as a pointer to it
    arrays["mirrored"] = np.array([False, True, False])
    npz.save_npz(tmp_path / "mirrored.npz", arrays, jpeg=90)
    assert main(["info", str(tmp_path / "plain.npz"), str(tmp_path / "mirrored.npz")]) == 0
    printed = capsys.readouterr().out
    assert "stored as JPEG of quality 90 (3 encoded)\n" in printed
    assert "stored as JPEG of quality 90 (2 encoded, the other 1 rows their flipped copies)\n" in printed


def test_an_archive_changed_since_its_marker_is_extracted_again(tmp_path, capsys):
    """The marker said 'extracted' whatever archive lay in --dest: a new copy of one (fetched again by hand) was skipped,
    its members never extracted. An archive that is there and not the one marked is extracted again; one removed
    (--delete-archives) keeps its marker's word."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in download.MUCT_ARCHIVES:
        shutil.copy(tar_with(tmp_path, [(f"jpg/{name}.txt", "file", name.encode())]), mirror / name)
    dest = tmp_path / "muct"
    download.download_muct(dest, str(mirror), progress=False)
    first = download.MUCT_ARCHIVES[0]
    shutil.copy(tar_with(tmp_path, [("jpg/new.txt", "file", b"new")]), dest / first)
    capsys.readouterr()
    download.download_muct(dest, str(mirror), progress=False)
    assert (dest / "jpg" / "new.txt").read_bytes() == b"new"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{first}: 1 members extracted into {dest}" and all("already" in line for line in lines[1:])


def test_a_file_in_dest_where_an_archive_has_a_folder_is_one_line_naming_it(tmp_path):
    """Extracted into a hidden folder first, the line named that folder, which is gone once it is read
    ('dest/.NAME.PID-XXXXXXXX.partial/jpg: Not a directory'); it names the file in --dest in the way."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "jpg").write_text("mine")
    archive = tar_with(tmp_path, [GOOD], "first.tar")
    with pytest.raises(OutputError) as caught:
        safe_extract(archive, dest)
    assert str(caught.value) == f"{dest / 'jpg'}: a file where {archive.name} has a folder (move it away)"
    assert sorted(p.name for p in dest.iterdir()) == ["jpg"] and (dest / "jpg").read_text() == "mine"
