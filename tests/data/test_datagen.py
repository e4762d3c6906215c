"""datagen.py on real faces: every reader, the npz contract, splits, mirroring, bad input, download."""

import csv
import io
import json
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
import pytest

from facelandmarks.cli.datagen import main
from facelandmarks.data import faces
from facelandmarks.data.readers.ibug300w import IBUG_ORIGIN, read_pts
from facelandmarks.data.readers.muct import read_muct
from facelandmarks.data.readers.youtube68 import _read_keypoint_csv
from facelandmarks.data.records import AnnotationError, read_image
from facelandmarks.data.splits import muct_test_subjects
from facelandmarks.landmarks import KAGGLE15_NAMES, get_scheme, mirror_landmarks
from tests.unit.range_server import serving

from .face_batches import read_muct_rows

pytestmark = pytest.mark.data

PER_FACE_DTYPES = {
    "images": np.uint8,
    "landmarks": np.float32,
    "visible": np.bool_,
    "box": np.float32,
    "mirrored": np.bool_,
    "vflipped": np.bool_,
}


def run_prepare(*args, workers=2):
    return main(["prepare", *map(str, args), "--workers", str(workers), "--quiet"])


def load(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def check_contract(arrays, scheme, size, channels=3):
    n = len(arrays["landmarks"])
    k = get_scheme(scheme).num_points
    assert str(arrays["scheme"]) == scheme
    assert arrays["images"].shape == (n, size, size, channels)
    assert arrays["landmarks"].shape == (n, k, 2) and arrays["visible"].shape == (n, k)
    assert arrays["box"].shape == (n, 4)
    for key, dtype in PER_FACE_DTYPES.items():
        assert arrays[key].dtype == dtype, key
    for key in ("subject", "name", "source", "detection"):
        assert arrays[key].dtype.kind == "U" and arrays[key].shape == (n,), key
    seen = arrays["landmarks"][arrays["visible"]]
    assert np.isfinite(seen).all() and (seen >= 0).all() and (seen <= 1).all()
    assert np.isfinite(arrays["landmarks"]).all()


def pixel_points(arrays, i, scheme):
    """Landmarks of row i in the original image's pixels (un-mirroring mirrored rows)."""
    uv, visible = arrays["landmarks"][i], arrays["visible"][i]
    if arrays["mirrored"][i]:
        uv, visible = mirror_landmarks(uv, visible, scheme)
    return faces.points_from_crop(uv, arrays["box"][i]), visible


# --------------------------------------------------------------------------- MUCT


@pytest.fixture(scope="module")
def muct64(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("muct") / "muct64"
    assert run_prepare("muct", "--source", data_dir / "muct", "--size", 64, "--out", out) == 0
    return out


def test_muct_npz_contract_and_boxes_map_back(muct64, data_dir):
    rows = read_muct_rows(data_dir)
    for side in ("train", "test"):
        arrays = load(f"{muct64}_{side}.npz")
        check_contract(arrays, "muct76", 64)
        assert set(arrays["detection"]) <= {"dlib", "landmarks"}
        for i in range(len(arrays["name"])):
            truth = rows[re.search(r"(i\d{3}\w+-\w+)\.jpg", arrays["name"][i]).group(1)]
            labelled = (truth != 0).any(axis=1)
            points, visible = pixel_points(arrays, i, "muct76")
            assert not (visible & ~labelled).any(), "an unavailable (0,0) point is marked visible"
            assert np.abs(points[visible] - truth[visible]).max() < 1.0
            # every labelled point inside the crop counts as visible
            box = arrays["box"][i]
            inside = ((truth + 0.5 >= box[:2]) & (truth + 0.5 <= box[2:])).all(axis=1)
            np.testing.assert_array_equal(visible, labelled & inside)


def test_muct_skips_are_reported_with_reasons(muct64):
    report = json.loads(open(f"{muct64}_report.json").read())
    counts = report["counts"]
    assert counts["listed"] == 3755 and counts["read"] == 101
    assert counts["written"] == 101 and counts["skipped"] == 3654
    assert counts["detected"] + counts["fallback"] == 101
    assert not report["warnings"]  # real faces in their own layout: dlib finds most where their points are
    assert len(report["skips"]) == 3654
    assert all(s["reason"].startswith("image missing") and s["file"].startswith("jpg/i") for s in report["skips"])
    text = open(f"{muct64}_report.txt").read().split("All skipped faces:")[1]
    assert "jpg/i624ze-fn.jpg" in text and text.count("image missing for landmark row") == 3654


def test_muct_split_by_subject_with_the_seed_proportion(muct64):
    train, test = load(f"{muct64}_train.npz"), load(f"{muct64}_test.npz")
    assert set(test["subject"]) == {"muct/000", "muct/001"}  # round(82 / 276 * 7) = 2 first subjects
    assert set(train["subject"]) == {f"muct/00{i}" for i in range(2, 7)}
    assert train["mirrored"].sum() == (~train["mirrored"]).sum() and not test["mirrored"].any()
    report = json.loads(open(f"{muct64}_report.json").read())
    assert "same proportion applied to the 7 subjects present" in report["datasets"][0]["split"]


def test_muct_split_rule_on_the_full_database(data_dir):
    subjects = sorted({f"muct/{name[1:4]}" for name in read_muct_rows(data_dir) if not name.startswith("ir")})
    assert len(subjects) == 276 and {"muct/247", "muct/248"} <= set(subjects)
    test, text = muct_test_subjects(subjects)
    assert test == set(subjects[:82]) and "same proportion" not in text
    # the twins 247/248 stay together when the cut falls between them
    cut = subjects.index("muct/248")
    test, text = muct_test_subjects(subjects, test_subjects=cut)
    assert "muct/247" in test and "muct/248" in test and len(test) == cut + 1 and "twins" in text
    test, _ = muct_test_subjects(subjects, test_fraction=0.5)
    assert len(test) == 138
    # the default proportion leaves a subject on each side; 0 and 1 (or every subject) empty one, as asked (they
    # were once moved to one subject in silence, unlike every other dataset's split)
    assert muct_test_subjects(["muct/000", "muct/001", "muct/002"])[0] == {"muct/000"}
    assert muct_test_subjects(["muct/000", "muct/001"], test_fraction=0.0)[0] == set()
    assert muct_test_subjects(["muct/000", "muct/001"], test_fraction=1.0)[0] == {"muct/000", "muct/001"}
    assert muct_test_subjects(["muct/000", "muct/001"], test_subjects=0)[0] == set()
    test, text = muct_test_subjects(["muct/000", "muct/001"], test_subjects=100)
    assert test == {"muct/000", "muct/001"} and "--test-subjects 100; only 2 present" in text


def test_info_summarises_a_file(muct64, capsys):
    assert main(["info", f"{muct64}_train.npz"]) == 0
    out = capsys.readouterr().out
    assert "scheme muct76" in out and "64 x 64 px, 3 channel(s)" in out
    assert "subjects: 5" in out and "mirrored: " in out and "detection: " in out and "visible: " in out


# --------------------------------------------------------------------------- 300-W + YouTube68


def copy_face(data_dir, relative, dest_root):
    """Copy a 300-W image and its .pts into dest_root, keeping the relative path."""
    for suffix in (".jpg", ".pts"):
        src = (data_dir / "300w" / relative).with_suffix(suffix)
        dst = (dest_root / relative).with_suffix(suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)


def make_youtube_subset(data_dir, dest, people=("Abdel_Aziz_Al-Hakim", "Abdullah_Gul", "Adam_Sandler"), per_split=2):
    src = data_dir / "youtube68"
    for folder, csv_name in (("training", "training_frames_keypoints.csv"), ("test", "test_frames_keypoints.csv")):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        lines = open(src / csv_name).read().splitlines()
        kept = [lines[0]]
        for person in people:
            rows = [line for line in lines[1:] if re.fullmatch(re.escape(person) + r"_\d+\.jpg", line.split(",")[0])]
            kept += rows[:per_split]
        for line in kept[1:]:
            shutil.copy(src / folder / line.split(",")[0], dest / folder)
        (dest / csv_name).write_text("\n".join(kept) + "\n")
    return dest


@pytest.fixture(scope="module")
def ibug_subset(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ibug")
    for relative in ("afw/111076519_1", "afw/111076519_2", "afw/134212_1", "afw/134212_2", "afw/1051618982_1",
                     "helen/trainset/100032540_1", "helen/trainset/100040721_1", "helen/trainset/100040721_2"):
        copy_face(data_dir, relative, root / "300w")
    make_youtube_subset(data_dir, root / "youtube68")
    return root


def test_300w_and_youtube68_combine_with_no_subject_on_both_sides(ibug_subset, tmp_path):
    out = tmp_path / "ibug48"
    # the Makefile's form: DATASET --source DIR pairs, intermixed
    code = run_prepare("300w", "--source", ibug_subset / "300w", "youtube68", "--source", ibug_subset / "youtube68",
                       "--size", 48, "--out", out)
    assert code == 0
    train, test = load(f"{out}_train.npz"), load(f"{out}_test.npz")
    for arrays in (train, test):
        check_contract(arrays, "ibug68", 48)
    assert train["mirrored"].sum() == (~train["mirrored"]).sum() and not test["mirrored"].any()
    assert (~train["mirrored"]).sum() + len(test["name"]) == 8 + 12
    assert {"300w", "youtube68"} <= set(train["source"]) | set(test["source"])
    assert not set(train["subject"]) & set(test["subject"])
    # the two faces of one AFW photo are one subject
    assert "300w/afw/111076519" in set(train["subject"]) | set(test["subject"])
    # YouTube68's own folders share every person, so they are not used as the split
    report = json.loads(open(f"{out}_report.json").read())
    youtube = next(d for d in report["datasets"] if d["dataset"] == "youtube68")
    assert "3 of 3 subjects on both sides" in youtube["split"]
    for arrays in (train, test):
        for i in np.nonzero(~arrays["mirrored"])[0]:
            if arrays["source"][i] == "300w":
                truth = read_pts((ibug_subset / "300w" / arrays["name"][i]).with_suffix(".pts")) - IBUG_ORIGIN
                points, visible = pixel_points(arrays, i, "ibug68")
                assert np.abs(points[visible] - truth[visible]).max() < 1.0


@pytest.mark.parametrize("jpeg", [0, 95])
def test_shards_hold_the_same_faces_as_one_file(ibug_subset, tmp_path, jpeg, capsys):
    """Also with the crops stored as JPEG (``--jpeg 95``): the same faces, pixels within JPEG's loss."""
    from facelandmarks.data import npz

    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    args = ("300w", "--source", ibug_subset / "300w", "youtube68", "--source", ibug_subset / "youtube68", "--size", 32)
    assert run_prepare(*args, "--out", whole) == 0
    assert run_prepare(*args, "--out", sharded, "--shard-size", 5, "--jpeg", jpeg) == 0
    for side in ("train", "test"):
        reference = load(f"{whole}_{side}.npz")
        pixels = {f"{n}|{m}": image for n, m, image in zip(reference["name"], reference["mirrored"], reference["images"])}
        shards = npz.ShardSet(f"{sharded}_{side}.shards.json")
        assert shards.faces == len(reference["landmarks"])
        assert all(count <= 5 + 1 for count in shards.counts)  # a face and its mirror stay together
        names = []
        for i in range(len(shards)):
            part = shards.load(i)
            check_contract(part, "ibug68", 32)
            names += [f"{n}|{m}" for n, m in zip(part["name"], part["mirrored"])]
            errors = [np.abs(image.astype(int) - pixels[name]).mean() for name, image in zip(names[-len(part["name"]):],
                                                                                           part["images"])]
            assert max(errors) < (6.0 if jpeg else 1e-9)  # 32-px crops lose 2.7-3.3 grey levels; two faces differ by 20+
        assert sorted(names) == sorted(f"{n}|{m}" for n, m in zip(reference["name"], reference["mirrored"]))
    if jpeg:
        first = f"{sharded}_train-00000.npz"
        assert main(["info", first]) == 0
        assert "stored as JPEG of quality 95" in capsys.readouterr().out
        assert os.path.getsize(first) < os.path.getsize(f"{whole}_train.npz") * len(load(first)["name"]) / len(
            load(f"{whole}_train.npz")["name"])


def test_official_split_keep_and_300w_test_folders(ibug_subset, data_dir, tmp_path):
    out = tmp_path / "keep"
    assert run_prepare("youtube68", "--source", ibug_subset / "youtube68", "--official-split", "keep",
                       "--size", 32, "--out", out, "--no-mirror") == 0
    train, test = load(f"{out}_train.npz"), load(f"{out}_test.npz")
    assert all(n.startswith("training/") for n in train["name"]) and all(n.startswith("test/") for n in test["name"])
    report = json.loads(open(f"{out}_report.json").read())
    assert len(report["subjects_on_both_sides"]) == 3
    # 300-W with a test folder: folders give the split (afw trains, helen/testset tests)
    root = tmp_path / "300w"
    copy_face(data_dir, "afw/134212_1", root)
    copy_face(data_dir, "helen/trainset/100032540_1", root)
    (root / "helen" / "testset").mkdir(parents=True)
    for suffix in (".jpg", ".pts"):
        shutil.move(root / "helen" / "trainset" / f"100032540_1{suffix}", root / "helen" / "testset")
    out = tmp_path / "folders"
    assert run_prepare("300w", "--source", root, "--size", 32, "--out", out, "--workers", 1) == 0
    assert list(load(f"{out}_test.npz")["name"]) == ["helen/testset/100032540_1.jpg"]
    assert set(load(f"{out}_train.npz")["name"]) == {"afw/134212_1.jpg"}


# --------------------------------------------------------------------------- mirroring, flips, gray


def test_mirror_flips_image_and_landmarks_with_the_permutation(data_dir, tmp_path):
    """A magenta dot on the subject's right outer eye corner (36) must sit at point 45 of the mirror."""
    src = data_dir / "300w" / "afw" / "1051618982_1"
    image = cv2.imread(str(src.with_suffix(".jpg")))
    points = read_pts(src.with_suffix(".pts")) - IBUG_ORIGIN  # 0-based, as datagen stores them
    x, y = np.round(points[36]).astype(int)
    cv2.circle(image, (int(x), int(y)), 3, (255, 0, 255), -1)
    root = tmp_path / "300w" / "afw"
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "1051618982_1.png"), image)  # lossless, the marker stays crisp
    shutil.copy(src.with_suffix(".pts"), root)
    out = tmp_path / "marked"
    assert run_prepare("300w", "--source", tmp_path / "300w", "--size", 128, "--out", out,
                       "--test-fraction", 0, "--vflip", workers=1) == 0
    train = load(f"{out}_train.npz")
    assert list(train["mirrored"]) == [False, True, False] and list(train["vflipped"]) == [False, False, True]
    original, mirrored, flipped = train["images"]
    np.testing.assert_array_equal(mirrored, original[:, ::-1])
    np.testing.assert_array_equal(flipped, original[::-1])
    perm = get_scheme("ibug68").mirror_array
    np.testing.assert_allclose(train["landmarks"][1][:, 0], 1 - train["landmarks"][0][perm, 0], atol=1e-6)
    np.testing.assert_allclose(train["landmarks"][1][:, 1], train["landmarks"][0][perm, 1], atol=1e-6)
    np.testing.assert_allclose(train["landmarks"][2][:, 1], 1 - train["landmarks"][0][:, 1], atol=1e-6)
    for row, point in ((0, 36), (1, 45), (2, 36)):
        crop = train["images"][row].astype(int)
        magenta = (crop[..., 0] - crop[..., 1] > 120) & (crop[..., 2] - crop[..., 1] > 120)
        ys, xs = np.nonzero(magenta)
        assert len(xs), f"marker missing in row {row}"
        found = (np.array([xs.mean(), ys.mean()]) + 0.5) / 128
        assert np.abs(found - train["landmarks"][row][point]).max() * 128 < 1.5, (row, point)


def test_gray_output_has_one_channel(ibug_subset, tmp_path):
    out = tmp_path / "gray"
    assert run_prepare("300w", "--source", ibug_subset / "300w" / "helen", "--size", 40, "--out", out, "--gray") == 0
    for side in ("train", "test"):
        check_contract(load(f"{out}_{side}.npz"), "ibug68", 40, channels=1)


def test_fallback_box_or_skip_when_dlib_misses(data_dir, tmp_path):
    root = tmp_path / "300w"
    copy_face(data_dir, "afw/1372188757_1", root)  # dlib finds no matching face here
    copy_face(data_dir, "afw/1051618982_1", root)
    out = tmp_path / "fallback"
    assert run_prepare("300w", "--source", root, "--size", 32, "--out", out, "--no-mirror", workers=1) == 0
    both = {n: d for side in ("train", "test") for n, d in zip(*(load(f"{out}_{side}.npz")[k] for k in ("name", "detection")))}
    assert both == {"afw/1372188757_1.jpg": "landmarks", "afw/1051618982_1.jpg": "dlib"}
    assert run_prepare("300w", "--source", root, "--size", 32, "--out", out, "--no-fallback", workers=1) == 0
    report = json.loads(open(f"{out}_report.json").read())
    assert report["skips"] == [{"dataset": "300w", "file": "afw/1372188757_1.jpg",
                                "reason": "dlib found no face matching the landmarks (--no-fallback)"}]
    assert report["counts"]["read"] == 2 and report["counts"]["detected"] == 1


# --------------------------------------------------------------------------- bad input


def test_corrupt_truncated_and_missing_images_are_skipped_with_reasons(data_dir, tmp_path, capsys):
    root = tmp_path / "300w"
    for relative in ("afw/1051618982_1", "afw/134212_1", "afw/134212_2", "afw/111076519_1"):
        copy_face(data_dir, relative, root)
    corrupt = bytearray((root / "afw" / "134212_1.jpg").read_bytes())
    corrupt[3:300] = bytes(297)  # headers zeroed; signature and end marker intact
    (root / "afw" / "134212_1.jpg").write_bytes(bytes(corrupt))
    whole = (root / "afw" / "134212_2.jpg").read_bytes()
    (root / "afw" / "134212_2.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "afw" / "111076519_1.jpg").unlink()
    out = tmp_path / "bad"
    assert run_prepare("300w", "--source", root, "--size", 32, "--out", out, workers=1) == 0
    report = json.loads(open(f"{out}_report.json").read())
    reasons = {s["file"]: s["reason"] for s in report["skips"]}
    assert reasons == {
        "afw/134212_1.jpg": "corrupt or unsupported image data (JPEG signature)",
        "afw/134212_2.jpg": "truncated JPEG (no end-of-image marker)",
        "afw/111076519_1.jpg": "image missing for afw/111076519_1.pts (no 111076519_1.* beside it: looked for .jpg, "
                               ".jpeg, .png, .bmp, .ppm, .pgm, .tif, .tiff, .webp)",
    }
    assert report["counts"] == {"listed": 4, "read": 1, "detected": 1, "fallback": 0, "given": 0, "written": 1, "skipped": 3}
    summary = capsys.readouterr().out
    for file, reason in reasons.items():
        assert f"{file}: {reason}" in summary


def test_pts_with_wrong_point_count_is_an_error_naming_the_file(data_dir, tmp_path, capsys):
    root = tmp_path / "300w"
    copy_face(data_dir, "afw/1051618982_1", root)
    copy_face(data_dir, "afw/134212_1", root)
    pts = root / "afw" / "134212_1.pts"
    lines = pts.read_text().splitlines()
    pts.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # 67 points under n_points: 68
    out = tmp_path / "wrong"
    sentinel = b"an earlier, good output"
    (tmp_path / "wrong_train.npz").write_bytes(sentinel)
    assert run_prepare("300w", "--source", root, "--size", 32, "--out", out, workers=1) == 2
    err = capsys.readouterr().err
    assert str(pts) in err and "n_points is 68" not in err and "67 points, expected 68" in err
    assert (tmp_path / "wrong_train.npz").read_bytes() == sentinel  # nothing already written is lost
    # a declared count that disagrees is named too; headerless files are accepted
    pts.write_text(pts.read_text().replace("n_points:  68", "n_points: 67"))
    with pytest.raises(AnnotationError, match=re.escape(str(pts)) + ".*n_points is 67"):
        read_pts(pts)
    good = root / "afw" / "1051618982_1.pts"
    headerless = tmp_path / "headerless.pts"
    headerless.write_text("\n".join(good.read_text().split("{")[1].split("}")[0].strip().splitlines()) + "\n")
    np.testing.assert_array_equal(read_pts(headerless), read_pts(good))


def test_png_under_a_jpg_name_is_read_by_content(data_dir, tmp_path):
    src = data_dir / "youtube68" / "training" / "Abdel_Aziz_Al-Hakim_00.jpg"
    image = cv2.imread(str(src))
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    disguised = tmp_path / "frame_00.jpg"
    ok, png = cv2.imencode(".png", rgba)
    disguised.write_bytes(png.tobytes())
    decoded, notes = read_image(disguised)
    np.testing.assert_array_equal(decoded, image[..., ::-1])
    assert notes == ["PNG data under a .jpg name"]
    # and through prepare: the face is used and the summary says so
    root = make_youtube_subset(data_dir, tmp_path / "youtube68", people=("Abdel_Aziz_Al-Hakim",), per_split=1)
    target = next((root / "training").iterdir())
    frame = cv2.imread(str(target))
    ok, png = cv2.imencode(".png", np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]))
    target.write_bytes(png.tobytes())
    out = tmp_path / "png"
    # one person: a split by subject cannot fill both sides, so everything goes to train on purpose
    assert run_prepare("youtube68", "--source", root, "--size", 32, "--out", out, "--test-fraction", 0, workers=1) == 0
    report = json.loads(open(f"{out}_report.json").read())
    assert report["counts"]["written"] == 2
    assert report["notes"] == [f"1 faces: PNG data under a .jpg name (e.g. training/{target.name})"]


KAGGLE_FROM_IBUG = {  # Kaggle's 15 points (subject's left/right) from the iBUG 68
    "left_eye_center": list(range(42, 48)), "right_eye_center": list(range(36, 42)),
    "left_eye_inner_corner": [42], "left_eye_outer_corner": [45],
    "right_eye_inner_corner": [39], "right_eye_outer_corner": [36],
    "left_eyebrow_inner_end": [22], "left_eyebrow_outer_end": [26],
    "right_eyebrow_inner_end": [21], "right_eyebrow_outer_end": [17],
    "nose_tip": [30], "mouth_left_corner": [54], "mouth_right_corner": [48],
    "mouth_center_top_lip": [51], "mouth_center_bottom_lip": [57],
}


def test_kaggle_missing_coordinates_become_invisible(data_dir, tmp_path):
    rows = _read_keypoint_csv(data_dir / "youtube68" / "test_frames_keypoints.csv", 68)[:4]
    header = [f"{n}_{a}" for n in KAGGLE15_NAMES for a in "xy"] + ["Image"]
    truth, lines = [], [header]
    for _, name, points, _ in rows:
        image, _ = read_image(data_dir / "youtube68" / "test" / name)
        box = faces.crop_box_from_landmarks(points)
        gray = cv2.cvtColor(faces.crop_face(image, box, 96), cv2.COLOR_RGB2GRAY)
        in_crop = faces.points_to_crop(points, box) * 96 - 0.5
        kp = np.array([in_crop[KAGGLE_FROM_IBUG[n]].mean(axis=0) for n in KAGGLE15_NAMES])
        truth.append(kp)
        lines.append([f"{v:.4f}" for v in kp.ravel()] + [" ".join(map(str, gray.ravel()))])
    lines[1][2] = ""  # right_eye_center_x empty
    lines[2][20:22] = ["NaN", "nan"]  # nose tip
    path = tmp_path / "training.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    out = tmp_path / "kaggle"
    assert run_prepare("kaggle", "--source", tmp_path, "--size", 96, "--out", out, "--no-mirror", workers=1) == 0
    parts = [load(f"{out}_{side}.npz") for side in ("train", "test")]
    for part in parts:
        check_contract(part, "kaggle15", 96)
        np.testing.assert_array_equal(part["box"], np.tile(np.float32([0, 0, 96, 96]), (len(part["box"]), 1)))
    arrays = {k: np.concatenate([part[k] for part in parts]) for k in ("name", "landmarks", "visible", "detection", "images")}
    assert len(arrays["name"]) == 4 and set(arrays["detection"]) == {"given"}
    for name, uv, visible, image in zip(arrays["name"], arrays["landmarks"], arrays["visible"], arrays["images"]):
        row = int(name.split(":")[1]) - 2
        expected_hidden = {0: [1], 1: [10]}.get(row, [])
        assert sorted(np.nonzero(~visible)[0]) == expected_hidden
        np.testing.assert_allclose(uv[visible], (truth[row][visible] + 0.5) / 96, atol=1e-4)
        assert image.shape == (96, 96, 3) and (image[..., 0] == image[..., 1]).all()


# --------------------------------------------------------------------------- download


@pytest.fixture
def muct_server(data_dir):
    files = {}
    muct = data_dir / "muct"
    for camera in "abcde":
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            for path in sorted((muct / "jpg").glob(f"i00[01]q{camera}-*.jpg")):
                tar.add(path, arcname=f"jpg/{path.name}")
        files[f"muct-{camera}-jpg-v1.tar.gz"] = buffer.getvalue()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        tar.add(muct / "muct-landmarks" / "muct76-opencv.csv", arcname="muct-landmarks/muct76-opencv.csv")
    files["muct-landmarks-v1.tar.gz"] = buffer.getvalue()
    with serving(files) as (server, url):
        yield server, url + "muct/"


def test_download_resumes_and_extracts_a_preparable_tree(muct_server, data_dir, tmp_path):
    server, url = muct_server
    dest = tmp_path / "muct"
    dest.mkdir()
    partial = server.files["muct-b-jpg-v1.tar.gz"]
    (dest / "muct-b-jpg-v1.tar.gz.part").write_bytes(partial[: len(partial) // 2])
    complete = server.files["muct-c-jpg-v1.tar.gz"]
    (dest / "muct-c-jpg-v1.tar.gz.part").write_bytes(complete)  # complete, only never renamed
    assert main(["download", "muct", "--dest", str(dest), "--url", url, "--quiet"]) == 0
    assert ("muct-b-jpg-v1.tar.gz", f"bytes={len(partial) // 2}-") in server.requests
    assert ("muct-c-jpg-v1.tar.gz", f"bytes={len(complete)}-") in server.requests
    assert ("muct-a-jpg-v1.tar.gz", None) in server.requests
    for name, data in server.files.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in (dest / "jpg").iterdir()) == sorted(
        p.name for p in (data_dir / "muct" / "jpg").glob("i00[01]q?-*.jpg"))
    assert (dest / "jpg" / "i000qa-fn.jpg").read_bytes() == (data_dir / "muct" / "jpg" / "i000qa-fn.jpg").read_bytes()
    # the layout is what prepare reads
    listing = read_muct(dest)
    assert len(listing.records) == 10 and len(listing.skips) == 3745


def test_download_failure_names_the_url(muct_server, tmp_path, capsys):
    server, url = muct_server
    del server.files["muct-d-jpg-v1.tar.gz"]
    assert main(["download", "muct", "--dest", str(tmp_path), "--url", url, "--quiet"]) == 2
    assert f"{url}muct-d-jpg-v1.tar.gz: HTTP 404" in capsys.readouterr().err


# --------------------------------------------------------------------------- WFLW, dlib XML


def test_wflw_annotation_lines(data_dir, tmp_path):
    src = data_dir / "samples" / "mmpose" / "tests" / "data" / "wflw"
    coco = json.load(open(src / "test_wflw.json"))
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    (tmp_path / "wflw" / "WFLW_images").mkdir(parents=True)
    lines, truth = [], {}
    for ann in coco["annotations"]:
        points = np.array(ann["keypoints"], np.float64).reshape(98, 3)[:, :2]
        name = files[ann["image_id"]]
        shutil.copy(src / name, tmp_path / "wflw" / "WFLW_images")
        x, y, w, h = ann["bbox"]
        fields = [f"{v:.6f}" for v in points.ravel()] + [f"{v:.0f}" for v in (x, y, x + w, y + h)] + ["0"] * 6 + [name]
        lines.append(" ".join(fields))
        truth.setdefault(name, []).append(points)
    (tmp_path / "wflw" / "list_98pt_rect_attr_mine.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "wflw64"
    assert run_prepare("wflw", "--source", tmp_path / "wflw", "--size", 64, "--out", out, workers=1) == 0
    matched = []
    for side in ("train", "test"):
        arrays = load(f"{out}_{side}.npz")
        check_contract(arrays, "wflw98", 64)
        for i in range(len(arrays["name"])):
            points, visible = pixel_points(arrays, i, "wflw98")
            assert visible.sum() > 90
            # several faces share an image: each row is one of them, to within a pixel
            errors = [np.abs(points[visible] - t[visible]).max() for t in truth[arrays["name"][i]]]
            assert min(errors) < 1.0
            if not arrays["mirrored"][i]:
                matched.append((str(arrays["name"][i]), int(np.argmin(errors))))
    assert sorted(matched) == sorted((n, k) for n, faces_ in truth.items() for k in range(len(faces_)))


def test_dlib_xml_boxes_serve_as_detections(data_dir, tmp_path):
    folder = data_dir / "samples" / "dlib" / "examples" / "faces"
    out = tmp_path / "dlibxml"
    assert run_prepare("dlibxml", "--source", folder, "--size", 48, "--out", out, "--no-mirror") == 0
    report = json.loads(open(f"{out}_report.json").read())
    assert report["counts"]["given"] == 43 and report["counts"]["skipped"] == 0
    assert any("training.xml: no landmark parts, not used" in n for n in report["datasets"][0]["notes"])
    train, test = load(f"{out}_train.npz"), load(f"{out}_test.npz")
    check_contract(train, "ibug68", 48)
    assert len(train["name"]) == 18 and len(test["name"]) == 25  # the XML files' own training/testing roles
    root = ElementTree.parse(folder / "training_with_face_landmarks.xml").getroot()
    first = root.find("./images/image/box")
    given = [float(first.get(k)) for k in ("left", "top", "width", "height")]
    detection = np.array([given[0], given[1], given[0] + given[2], given[1] + given[3]])
    np.testing.assert_allclose(train["box"][0], faces.crop_box_from_detection(detection), atol=1e-4)
    parts = np.array([[float(p.get("x")), float(p.get("y"))] for p in first.findall("part")])
    points, visible = pixel_points(train, 0, "ibug68")
    assert np.abs(points[visible] - parts[visible]).max() < 0.01




def test_points_left_empty_in_a_csv_are_unlabelled_and_said_to_be(data_dir, tmp_path):
    """An empty coordinate cell of YouTube68's CSV became an unlabelled point without a word."""
    from .conftest import copy_youtube68_subset

    source = copy_youtube68_subset(data_dir, tmp_path / "youtube68", train_subjects=4, per_subject=3, test_faces=4)
    path = source / "training_frames_keypoints.csv"
    rows = list(csv.reader(path.open()))
    rows[2][5] = ""  # the second face's point 2, x
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    out = tmp_path / "yt"
    assert run_prepare("youtube68", "--source", source, "--size", 32, "--out", out, workers=1) == 0
    notes = json.loads(open(f"{out}_report.json").read())["datasets"][0]["notes"]
    assert any(n.startswith("1 faces have points without a position") and f"training/{rows[2][0]}" in n for n in notes)
