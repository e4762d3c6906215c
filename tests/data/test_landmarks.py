"""Landmark schemes: permutations checked against real data (MUCT's mirrored rows, 300-W and WFLW shapes)."""

import csv
import glob

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.landmarks import mirror_landmarks, mirror_pixel_landmarks

pytestmark = pytest.mark.data


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


