"""NME, AUC, failure rate and CED against values computed by hand."""

import numpy as np
import pytest

from facelandmarks.evaluation import metrics
from facelandmarks.landmarks import IBUG68, KAGGLE15, MUCT76


def faces_with_known_errors():
    """Two kaggle15 faces; eye centres (points 0 and 1) 10 units apart."""
    gt = np.zeros((2, 15, 2))
    gt[:, :, 0] = np.arange(15)  # x = index
    gt[:, 0] = [0, 0]
    gt[:, 1] = [10, 0]
    pred = gt.copy()
    visible = np.ones((2, 15), bool)
    # face 0: point 5 off by (3, 4) -> error 5; all other errors 0
    pred[0, 5] += [3, 4]
    # face 1: every point off by 0.5 in x, and point 7 unavailable and wildly wrong
    pred[1, :, 0] += 0.5
    pred[1, 7] = [1000, 1000]
    visible[1, 7] = False
    return pred, gt, visible


def test_nme_by_hand():
    pred, gt, visible = faces_with_known_errors()
    nme = metrics.nme_per_face(pred, gt, visible, KAGGLE15)
    # face 0: mean error 5/15 over 15 points, normalised by 10
    assert nme[0] == pytest.approx(5 / 15 / 10)
    # face 1: 14 visible points each 0.5 off; the masked point does not count
    assert nme[1] == pytest.approx(0.5 / 10)


def test_masked_point_never_counts():
    pred, gt, visible = faces_with_known_errors()
    before = metrics.nme_per_face(pred, gt, visible, KAGGLE15)
    pred[1, 7] = [-5e6, 3e6]
    after = metrics.nme_per_face(pred, gt, visible, KAGGLE15)
    np.testing.assert_array_equal(before, after)


def test_auc_and_failure_rate_by_hand():
    nme = np.array([0.02, 0.05, 0.09, 0.20, np.nan])
    # AUC@0.1 = mean(1 - e/0.1 clipped) over the 4 scored faces = (0.8 + 0.5 + 0.1 + 0) / 4
    assert metrics.auc(nme, 0.10) == pytest.approx(0.35)
    assert metrics.failure_rate(nme, 0.10) == pytest.approx(0.25)
    assert metrics.failure_rate(nme, 0.08) == pytest.approx(0.5)
    # the exact formula agrees with integrating the step CED numerically
    xs, ys = metrics.ced(nme, 0.10, steps=100000)
    assert np.trapezoid(ys, xs) / 0.10 == pytest.approx(0.35, abs=1e-4)


def test_unscorable_face_when_normalising_point_missing():
    gt = np.random.default_rng(0).random((3, 68, 2))
    visible = np.ones((3, 68), bool)
    visible[1, 36] = False
    nme = metrics.nme_per_face(gt + 0.01, gt, visible, IBUG68)
    assert np.isnan(nme[1]) and not np.isnan(nme[[0, 2]]).any()
    summary = metrics.summarize(gt + 0.01, gt, visible, IBUG68)
    assert summary["faces"] == 2 and summary["unscored"] == 1


def test_summary_regions_and_pupils():
    rng = np.random.default_rng(1)
    gt = rng.random((4, 76, 2))
    pred = gt.copy()
    mouth = list(MUCT76.regions["mouth"])
    pred[:, mouth] += [0.0, 0.02]
    summary = metrics.summarize(pred, gt, np.ones((4, 76), bool), MUCT76)
    assert summary["nme_jaw"] == 0.0 and summary["nme_mouth"] > 0
    norm = np.linalg.norm(gt[:, 27] - gt[:, 32], axis=-1)
    assert summary["nme_mouth"] == pytest.approx(100 * np.mean(0.02 / norm))
    assert "nme_pupils" in summary
    assert summary["nme"] == pytest.approx(100 * np.mean(0.02 * len(mouth) / 76 / norm))


def test_masked_mse():
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[0.1, 0.2], [5.0, 5.0]]])
    assert metrics.masked_mse(pred, gt, np.array([[True, False]])) == pytest.approx((0.01 + 0.04) / 2)
