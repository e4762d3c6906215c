"""The npz dataset schema (``facelandmarks.data.npz``) on synthetic arrays: round trip, validation, atomic writes."""

import os

import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.data.npz import DatasetError


def dataset(n=3, k=15, size=8, scheme="kaggle15", seed=0):
    """A small dataset that follows the schema."""
    rng = np.random.default_rng(seed)
    visible = rng.random((n, k)) > 0.2
    landmarks = rng.uniform(0, 1, (n, k, 2)).astype(np.float32)
    landmarks[~visible] = 0.0
    return {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "landmarks": landmarks,
        "visible": visible,
        "subject": np.array([f"test/{i // 2}" for i in range(n)]),
        "scheme": np.array(scheme),
        "box": np.tile(np.float32([0, 0, size, size]), (n, 1)),
        "name": np.array([f"face_{i}.png" for i in range(n)]),
        "mirrored": np.arange(n) % 2 == 1,
    }


@pytest.mark.parametrize("compress", [False, True])
def test_save_and_load_round_trip(tmp_path, compress):
    arrays = dataset()
    path = npz.save_npz(tmp_path / "sub" / "faces.npz", arrays, compress=compress)
    assert path == tmp_path / "sub" / "faces.npz" and path.is_file()
    assert os.listdir(tmp_path / "sub") == ["faces.npz"]  # no temporary file left behind
    loaded = npz.load_npz(path)
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert npz.scheme_of(loaded).name == "kaggle15"
    with np.load(path, allow_pickle=False) as plain:  # a plain npz: no pickles, readable by numpy alone
        assert sorted(plain.files) == sorted(arrays)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = npz.save_npz(tmp_path / "faces.npz", dataset())
    before = path.read_bytes()

    class Unsaveable:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        npz.save_npz(path, {**dataset(seed=1), "zzz": Unsaveable()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["faces.npz"]


def test_the_valid_dataset_and_a_features_file_pass():
    npz.validate(dataset())
    features = {k: v for k, v in dataset().items() if k != "images"}
    features["features"] = np.zeros((3, 1280), np.float32)
    npz.validate(features)
    hidden_nan = dataset()
    hidden_nan["landmarks"][~hidden_nan["visible"]] = np.nan  # a hidden point may hold anything
    npz.validate(hidden_nan)


def _with(key, value):
    arrays = dataset()
    arrays[key] = value
    return arrays


def _without(*keys):
    return {k: v for k, v in dataset().items() if k not in keys}


def _nan_visible():
    arrays = dataset()
    i, j = np.argwhere(arrays["visible"])[0]
    arrays["landmarks"][i, j, 0] = np.nan
    return arrays


BAD = {
    "landmarks float64": (
        _with("landmarks", dataset()["landmarks"].astype(np.float64)),
        r"landmarks must be float32 \(N, 15, 2\) for scheme kaggle15, got float64 \(3, 15, 2\)",
    ),
    "landmarks of another scheme": (
        _with("landmarks", np.zeros((3, 68, 2), np.float32)),
        r"landmarks must be float32 \(N, 15, 2\) for scheme kaggle15, got float32 \(3, 68, 2\)",
    ),
    "visible as 0/1": (_with("visible", dataset()["visible"].astype(np.uint8)), r"visible must be bool \(N, 15\), got uint8"),
    "visible too short": (_with("visible", dataset()["visible"][:, :14]), r"visible must be bool \(N, 15\), got bool \(3, 14\)"),
    "images float": (
        _with("images", dataset()["images"].astype(np.float32)),
        r"images must be uint8 \(N, S, S, 1\|3\), got float32 \(3, 8, 8, 3\)",
    ),
    "images not square": (_with("images", dataset()["images"][:, :, :6]), r"images must be uint8 .*\(3, 8, 6, 3\)"),
    "images with alpha": (_with("images", np.zeros((3, 8, 8, 4), np.uint8)), r"images must be uint8 .*\(3, 8, 8, 4\)"),
    "box of two corners": (_with("box", np.zeros((3, 2, 2), np.float32)), r"box must be \(N, 4\), got \(3, 2, 2\)"),
    "box with infinity": (_with("box", np.full((3, 4), np.inf, np.float32)), "box contains NaN or infinity"),
    "subject short": (_with("subject", np.array(["a", "b"])), "subject has 2 rows, landmarks has 3"),
    "mirrored long": (_with("mirrored", np.zeros(4, bool)), "mirrored has 4 rows, landmarks has 3"),
    "visible point NaN": (_nan_visible(), "visible landmarks contain NaN or infinity"),
    "no visible": (_without("visible"), r"missing key\(s\) visible"),
    "no images": (_without("images"), r"missing key\(s\) images \(or features\)"),
    "no scheme, no box": (_without("scheme", "box"), r"missing key\(s\) scheme, box"),
    "unknown scheme": (_with("scheme", np.array("ibug69")), "unknown landmark scheme 'ibug69'"),
}


@pytest.mark.parametrize("case", BAD)
def test_validate_names_the_file_and_the_key(case):
    arrays, message = BAD[case]
    with pytest.raises(DatasetError, match=f"^faces.npz: {message}"):
        npz.validate(arrays, "faces.npz")


def test_load_names_the_file_it_cannot_use(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(DatasetError, match=f"{missing}: no such dataset file"):
        npz.load_npz(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(DatasetError, match=f"{garbage}: not an npz file"):
        npz.load_npz(garbage)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**dataset(), "subject": np.array(["a", 1, None], dtype=object)})
    with pytest.raises(DatasetError, match=f"{pickled}: not a readable npz file"):
        npz.load_npz(pickled)
    wrong = npz.save_npz(tmp_path / "wrong.npz", _with("visible", dataset()["visible"].astype(np.uint8)))
    with pytest.raises(DatasetError, match=f"{wrong}: visible must be bool"):
        npz.load_npz(wrong)
    assert npz.load_npz(wrong, validate_schema=False)["visible"].dtype == np.uint8


def test_subset_and_concatenate_keep_the_file_level_keys():
    arrays = dataset(n=4)
    part = npz.subset(arrays, [3, 1])
    assert str(part["scheme"]) == "kaggle15" and list(part["name"]) == ["face_3.png", "face_1.png"]
    np.testing.assert_array_equal(part["images"], arrays["images"][[3, 1]])
    npz.validate(part)
    joined = npz.concatenate([part, npz.subset(arrays, [0])])
    assert list(joined["name"]) == ["face_3.png", "face_1.png", "face_0.png"] and str(joined["scheme"]) == "kaggle15"
    npz.validate(joined)
    other = dataset(k=68, scheme="ibug68")
    with pytest.raises(ValueError, match=r"different schemes: \['ibug68', 'kaggle15'\]"):
        npz.concatenate([arrays, other])


def _faces_with_copies(channels=3, size=32):
    """Smooth crops (JPEG's kind of picture), each original followed by its copies as ``prepare`` writes them."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows, mirrored, vflipped = [], [], []
    for i in range(3):
        base = np.stack([128 + 100 * np.sin(3 * xx + i + c) * np.cos(2 * yy - c) for c in range(channels)], -1)
        base = base.astype(np.uint8)
        rows += [base, base[:, ::-1], base[::-1]]
        mirrored += [False, True, False]
        vflipped += [False, False, True]
    rows.append(rows[0][:, ::-1] // 2)  # marked mirrored but not a copy of any row: it keeps its own JPEG
    mirrored.append(True)
    vflipped.append(False)
    n = len(rows)
    arrays = dataset(n=n, size=size)
    arrays.update(images=np.stack(rows), mirrored=np.array(mirrored), vflipped=np.array(vflipped))
    return arrays


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_packed_images_load_as_images_and_copies_stay_exact(tmp_path, channels):
    arrays = _faces_with_copies(channels)
    raw = npz.save_npz(tmp_path / "raw.npz", arrays)
    path = npz.save_npz(tmp_path / "packed.npz", arrays, jpeg=95)
    with np.load(path, allow_pickle=False) as stored:  # the pixels are not stored raw
        assert "images" not in stored.files and int(stored["images_jpeg_quality"]) == 95
        np.testing.assert_array_equal(stored["images_copy_of"], [-1, 0, 0, -1, 3, 3, -1, 6, 6, -1])
    assert path.stat().st_size < raw.stat().st_size
    loaded = npz.load_npz(path)
    assert set(loaded) == set(arrays)
    images = loaded["images"]
    assert images.dtype == np.uint8 and images.shape == arrays["images"].shape
    assert np.abs(images.astype(int) - arrays["images"]).mean() < 2.0  # JPEG's loss, small at quality 95
    for i in (1, 4, 7):
        np.testing.assert_array_equal(images[i], images[i - 1][:, ::-1])
        np.testing.assert_array_equal(images[i + 1], images[i - 1][::-1])
    for key in ("landmarks", "visible", "name", "mirrored", "vflipped"):
        np.testing.assert_array_equal(loaded[key], arrays[key], err_msg=key)
    low = npz.load_npz(npz.save_npz(tmp_path / "low.npz", arrays, jpeg=20))["images"]
    assert np.abs(low.astype(int) - arrays["images"]).mean() > np.abs(images.astype(int) - arrays["images"]).mean()


def test_damaged_jpeg_packed_images_name_the_file(tmp_path):
    path = npz.save_npz(tmp_path / "packed.npz", _faces_with_copies(), jpeg=90)
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    broken = dict(arrays, images_jpeg=np.zeros_like(arrays["images_jpeg"]))
    np.savez(tmp_path / "zeros.npz", **broken)
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'zeros.npz'}: damaged JPEG-packed images .*row 0 decodes to nothing"):
        npz.load_npz(tmp_path / "zeros.npz")
    short = dict(arrays, images_jpeg=arrays["images_jpeg"][:-10])
    np.savez(tmp_path / "short.npz", **short)
    with pytest.raises(DatasetError, match=r"short.npz: damaged JPEG-packed images \(images_jpeg_offsets"):
        npz.load_npz(tmp_path / "short.npz")
    forward = dict(arrays, images_copy_of=np.where(arrays["images_copy_of"] == 0, 3, arrays["images_copy_of"]).astype(np.int32))
    np.savez(tmp_path / "forward.npz", **forward)
    with pytest.raises(DatasetError, match="images_copy_of must point back"):
        npz.load_npz(tmp_path / "forward.npz")
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "images_shape"})
    with pytest.raises(DatasetError, match="lack images_shape"):
        npz.load_npz(tmp_path / "partial.npz")
    for quality in (-1, 101):
        with pytest.raises(ValueError, match="JPEG quality must be 1-100"):
            npz.save_npz(tmp_path / "bad.npz", _faces_with_copies(), jpeg=quality)
    assert not (tmp_path / "bad.npz").exists()


def test_info_never_rounds_hidden_points_to_all_visible(tmp_path):
    # 200 faces, point 0 hidden on one: 99.5 % of faces see it, and the file's points are not "100.0%" visible
    from facelandmarks.data.info import describe

    arrays = dataset(n=200)
    arrays["visible"] = np.ones_like(arrays["visible"])
    arrays["visible"][0, 0] = False
    path = npz.save_npz(tmp_path / "faces.npz", arrays)
    line = next(line for line in describe(path).splitlines() if "visible:" in line)
    assert line == "  visible: 99.97% of points; 1 faces with hidden points; least visible points: 0 (99.5%), 1 (100%), 2 (100%)"
