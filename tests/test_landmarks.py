"""Landmark schemes: permutations checked against real data."""

import csv
import glob

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.landmarks import (
    SCHEMES,
    get_scheme,
    mirror_landmarks,
    mirror_pixel_landmarks,
)


def read_muct_opencv(data_dir):
    rows = {}
    with open(data_dir / "muct" / "muct-landmarks" / "muct76-opencv.csv") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        assert header[:4] == ["name", "tag", "x00", "y00"]
        for row in reader:
            rows[row[0]] = np.array(row[2:], np.float64).reshape(76, 2)
    return rows


def test_muct76_mirror_reproduces_every_ir_row(data_dir):
    rows = read_muct_opencv(data_dir)
    originals = [name for name in rows if not name.startswith("ir")]
    assert len(originals) == 3755
    worst = 0.0
    for name in originals:
        points = rows[name]
        visible = (points != 0).any(axis=1)
        mirrored = mirror_pixel_landmarks(points, "muct76", width=480)
        target = rows["ir" + name[1:]]
        seen = visible[landmarks.MUCT76.mirror_array]
        worst = max(worst, float(np.abs(mirrored[seen] - target[seen]).max()))
    assert worst <= 0.5, f"mirror of an i-row misses its ir-row by {worst} px"


def test_muct76_mirror_is_not_the_identity_or_plain_reversal(data_dir):
    # A wrong permutation (say, no swap) must fail the check above: prove the data can tell.
    rows = read_muct_opencv(data_dir)
    points, target = rows["i000qa-fn"], rows["ir000qa-fn"]
    naive = points.copy()
    naive[:, 0] = 479 - naive[:, 0]
    assert np.abs(naive - target).max() > 20


def test_norm_points_are_outer_eye_corners(data_dir):
    rows = read_muct_opencv(data_dir)
    frontal = np.mean([p for n, p in rows.items() if n.startswith("i0") and n[5] == "a"], axis=0)
    a, b = landmarks.MUCT76.norm_points
    eyes = frontal[list(landmarks.MUCT76.regions["right_eye"]) + list(landmarks.MUCT76.regions["left_eye"])]
    # the normalising points are the extreme x of all eye points
    assert frontal[a, 0] == pytest.approx(eyes[:, 0].min())
    assert frontal[b, 0] == pytest.approx(eyes[:, 0].max())


def _read_pts(path):
    lines = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(lines, np.float64).reshape(-1, 2)


@pytest.mark.parametrize("scheme_name", ["ibug68", "wflw98"])
def test_mirror_of_mean_shape_is_the_mean_shape(data_dir, scheme_name):
    """A symmetric population's mean shape maps onto itself under the mirror permutation."""
    if scheme_name == "ibug68":
        shapes = [_read_pts(p) for p in sorted(glob.glob(str(data_dir / "300w" / "afw" / "*.pts")))]
    else:
        files = glob.glob(str(data_dir / "wflw_annotations" / "WFLW_annotations" / "list_98pt_test" / "*.txt"))
        shapes = [np.array(line.split()[:196], np.float64).reshape(98, 2) for f in files for line in open(f)]
    shapes = np.stack(shapes)
    lo, hi = shapes.min(1, keepdims=True), shapes.max(1, keepdims=True)
    unit = (shapes - lo) / (hi - lo)
    mean = np.median(unit, axis=0)
    mirrored, _ = mirror_landmarks(mean[None], np.ones((1, len(mean)), bool), scheme_name)
    assert np.abs(mirrored[0] - mean).max() < 0.06
    # and a scrambled permutation would not pass
    rolled = mean[np.roll(np.arange(len(mean)), 1)]
    assert np.abs(rolled - mean).max() > 0.06


def test_schemes_are_consistent():
    for scheme in SCHEMES.values():
        covered = sorted(i for pts in scheme.regions.values() for i in pts)
        assert len(covered) == len(set(covered)), f"{scheme.name}: a point is in two regions"
        # mirroring maps each region onto itself or onto its left/right twin
        for region, pts in scheme.regions.items():
            twin = region.replace("left", "@").replace("right", "left").replace("@", "right")
            assert sorted(scheme.mirror[p] for p in pts) == sorted(scheme.regions[twin]), (scheme.name, region)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown landmark scheme 'ibug69'.*ibug68"):
        get_scheme("ibug69")


def test_mirror_twice_is_identity():
    rng = np.random.default_rng(0)
    pts = rng.random((3, 68, 2)).astype(np.float32)
    vis = rng.random((3, 68)) > 0.2
    p1, v1 = mirror_landmarks(pts, vis, "ibug68")
    p2, v2 = mirror_landmarks(p1, v1, "ibug68")
    np.testing.assert_allclose(p2, pts, atol=1e-6)
    np.testing.assert_array_equal(v2, vis)


def test_derived_region_and_box_schemes():
    eye = get_scheme("ibug68/left_eye")
    assert eye.num_points == 6 and eye.norm_points is None
    boxes = get_scheme("muct76/boxes")
    assert boxes.num_points == 4 * len(landmarks.REFINED_REGIONS)
    # mirroring box corners of a face equals the boxes of the mirrored face
    rng = np.random.default_rng(3)
    points = rng.random((68, 2)).astype(np.float32)
    scheme = get_scheme("ibug68/boxes")

    def corners(pts):
        out = []
        for region in landmarks.REFINED_REGIONS:
            p = pts[list(landmarks.IBUG68.regions[region])]
            (x0, y0), (x1, y1) = p.min(0), p.max(0)
            out += [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
        return np.array(out, np.float32)

    mirrored_face, _ = mirror_landmarks(points, np.ones(68, bool), "ibug68")
    mirrored_boxes, _ = mirror_landmarks(corners(points), np.ones(scheme.num_points, bool), scheme)
    np.testing.assert_allclose(mirrored_boxes, corners(mirrored_face), atol=1e-6)
    with pytest.raises(ValueError, match="no region 'ears'"):
        get_scheme("ibug68/ears")
