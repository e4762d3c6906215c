"""NME (eye-corner and pupil normalisation, masked points, regions), AUC, failure rate and CED against values computed by hand."""

import numpy as np
import pytest

from facelandmarks import metrics
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


def test_mean_offset_by_hand_signed_masked_and_per_face():
    pred, gt, visible = faces_with_known_errors()
    # face 0: point 5 off by (3, 4): the mean over 15 points is (0.2, 0.267), normalised by 10;
    # face 1: every visible point 0.5 right, the masked one (1000 off) left out
    x, y = metrics.mean_offset(pred, gt, visible, KAGGLE15)
    assert x == pytest.approx(100 * (3 / 15 / 10 + 0.5 / 10) / 2)
    assert y == pytest.approx(100 * (4 / 15 / 10) / 2)
    # opposite leans cancel, unlike NME
    pred[1] = gt[1] - (pred[0] - gt[0])
    visible[1] = True
    assert metrics.mean_offset(pred, gt, visible, KAGGLE15) == pytest.approx((0.0, 0.0))
    summary = metrics.summarize(pred, gt, visible, KAGGLE15)
    assert summary["nme"] > 0 and summary["offset_x"] == pytest.approx(0.0) and summary["offset_y"] == pytest.approx(0.0)


def test_mean_offset_leaves_out_unscorable_faces():
    rng = np.random.default_rng(2)
    gt = rng.random((3, 68, 2)) * 100
    visible = np.ones((3, 68), bool)
    pred = gt.copy()
    pred[0] += [-1.0, 2.0]
    pred[1] += [500.0, 500.0]
    visible[1, 45] = False  # no normalising distance: not scored
    pred[2] += [-1.0, 2.0]
    x, y = metrics.mean_offset(pred, gt, visible, IBUG68)
    norm = metrics.normalising_distance(gt, visible, IBUG68)
    assert x == pytest.approx(100 * np.mean([-1.0 / norm[0], -1.0 / norm[2]]))
    assert y == pytest.approx(100 * np.mean([2.0 / norm[0], 2.0 / norm[2]]))


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


def muct_face_with_pupils():
    """One muct76 face: outer eye corners (27, 32) 40 apart, pupils (31, 36) 20 apart; every prediction off by 5."""
    gt = np.random.default_rng(4).uniform(0, 100, (1, 76, 2))
    gt[0, 27], gt[0, 32] = [30, 50], [70, 50]
    gt[0, 31], gt[0, 36] = [40, 50], [60, 50]
    return gt + [3.0, 4.0], gt


def test_corner_and_pupil_normalisation_by_hand():
    pred, gt = muct_face_with_pupils()
    visible = np.ones((1, 76), bool)
    assert metrics.nme_per_face(pred, gt, visible, MUCT76)[0] == pytest.approx(5 / 40)
    assert metrics.nme_per_face(pred, gt, visible, "muct76", by="pupils")[0] == pytest.approx(5 / 20)
    summary = metrics.summarize(pred, gt, visible, MUCT76)
    assert summary["nme"] == pytest.approx(12.5) and summary["nme_pupils"] == pytest.approx(25.0)
    # a hidden pupil leaves the face unscorable by pupils only
    visible[0, 36] = False
    assert np.isnan(metrics.nme_per_face(pred, gt, visible, MUCT76, by="pupils")[0])
    assert metrics.nme_per_face(pred, gt, visible, MUCT76)[0] == pytest.approx(5 / 40)
    summary = metrics.summarize(pred, gt, visible, MUCT76)
    assert np.isnan(summary["nme_pupils"]) and summary["faces"] == 1


def test_normalisation_that_does_not_exist_is_a_clear_error():
    gt = np.zeros((1, 68, 2))
    visible = np.ones((1, 68), bool)
    with pytest.raises(ValueError, match="scheme ibug68 has no pupils"):
        metrics.nme_per_face(gt, gt, visible, IBUG68, by="pupils")
    with pytest.raises(ValueError, match="by must be 'corners' or 'pupils', got 'nose'"):
        metrics.nme_per_face(gt, gt, visible, IBUG68, by="nose")
    with pytest.raises(ValueError, match="scheme ibug68/mouth has no normalising points"):
        metrics.nme_per_face(gt[:, :20], gt[:, :20], visible[:, :20], "ibug68/mouth")


def test_coincident_eye_corners_leave_the_face_unscored():
    gt = np.random.default_rng(5).random((2, 68, 2))
    gt[1, 45] = gt[1, 36]
    nme = metrics.nme_per_face(gt + 0.01, gt, np.ones((2, 68), bool), IBUG68)
    assert np.isfinite(nme[0]) and np.isnan(nme[1])


def test_nme_is_scale_and_translation_free():
    rng = np.random.default_rng(6)
    gt = rng.random((5, 68, 2))
    pred = gt + rng.normal(0, 0.02, gt.shape)
    visible = rng.random((5, 68)) > 0.1
    visible[:, [36, 45]] = True
    unit = metrics.nme_per_face(pred, gt, visible, IBUG68)
    pixels = metrics.nme_per_face(pred * 256 + 17, gt * 256 + 17, visible, IBUG68)
    np.testing.assert_allclose(pixels, unit, rtol=1e-9)
    # and (N, 2K) predictions are read as x0, y0, x1, ...
    np.testing.assert_allclose(metrics.nme_per_face(pred.reshape(5, -1), gt, visible, IBUG68), unit)


def test_region_nme_counts_only_the_regions_points():
    gt = np.random.default_rng(7).random((1, 68, 2))
    gt[0, 36], gt[0, 45] = [0.3, 0.4], [0.7, 0.4]  # 0.4 apart
    pred = gt.copy()
    pred[0, 48:68] += [0.0, 0.04]  # the mouth only
    pred[0, 30] += [0.08, 0.0]  # and the nose tip
    visible = np.ones((1, 68), bool)
    mouth = IBUG68.regions["mouth"]
    assert metrics.nme_per_face(pred, gt, visible, IBUG68, points=mouth)[0] == pytest.approx(0.04 / 0.4)
    assert metrics.nme_per_face(pred, gt, visible, IBUG68, points=IBUG68.regions["nose"])[0] == pytest.approx(0.08 / 9 / 0.4)
    assert metrics.nme_per_face(pred, gt, visible, IBUG68, points=IBUG68.regions["jaw"])[0] == 0.0
    # a region whose points are all hidden has no NME
    visible[0, list(mouth)] = False
    assert np.isnan(metrics.nme_per_face(pred, gt, visible, IBUG68, points=mouth)[0])


def test_ced_steps_at_the_errors():
    nme = np.array([0.02, 0.05, 0.05, 0.20, np.nan])
    xs, ys = metrics.ced(nme, 0.10, steps=10)
    np.testing.assert_allclose(xs, np.linspace(0, 0.1, 11))
    # a face counts once its error is reached (<=); the 0.2 face never within 0.1; NaN is not a face
    np.testing.assert_allclose(ys, [0, 0, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75])
    assert np.all(np.diff(ys) >= 0)


def test_threshold_boundaries_and_no_scored_face():
    nme = np.array([0.0, 0.08, 0.10])
    # an error equal to the threshold is not a failure, and scores zero area
    assert metrics.failure_rate(nme, 0.08) == pytest.approx(1 / 3)
    assert metrics.failure_rate(nme, 0.10) == 0.0
    assert metrics.auc(nme, 0.10) == pytest.approx((1.0 + 0.2 + 0.0) / 3)
    assert metrics.auc(np.zeros(4), 0.08) == 1.0
    empty = np.array([np.nan, np.nan])
    assert np.isnan(metrics.auc(empty, 0.1)) and np.isnan(metrics.failure_rate(empty, 0.1))
    assert np.isnan(metrics.ced(empty, 0.1, steps=4)[1]).all()


def test_summary_thresholds_by_hand():
    # kaggle15: eye centres (0, 1) 10 apart; face i has every point off by errors[i] in x
    errors = np.array([0.2, 0.5, 0.9, 1.5])
    gt = np.zeros((4, 15, 2))
    gt[:, :, 0] = np.arange(15) * 10.0
    pred = gt.copy()
    pred[..., 0] += errors[:, None]
    summary = metrics.summarize(pred, gt, np.ones((4, 15), bool), KAGGLE15, thresholds=(0.08, 0.1))
    nme = errors / 10
    assert summary["faces"] == 4 and summary["unscored"] == 0
    assert summary["nme"] == pytest.approx(100 * nme.mean())
    assert summary["fr@0.08"] == pytest.approx(50.0) and summary["fr@0.1"] == pytest.approx(25.0)
    assert summary["auc@0.1"] == pytest.approx(np.mean([0.8, 0.5, 0.1, 0.0]))
    assert summary["auc@0.08"] == pytest.approx(np.mean([1 - 0.02 / 0.08, 1 - 0.05 / 0.08, 0.0, 0.0]))
    assert summary["nme_pupils"] == pytest.approx(summary["nme"])  # kaggle15's pupils are its eye centres
    assert {f"nme_{r}" for r in KAGGLE15.regions} <= set(summary)


def test_prediction_that_is_not_finite_fails_the_face_not_drops_it():
    # kaggle15: eye centres 10 apart; every face 0.5 off (NME 0.05) but for the prediction's NaN and inf
    gt = np.zeros((4, 15, 2))
    gt[:, :, 0] = np.arange(15) * 10.0
    pred = gt + [0.5, 0.0]
    visible = np.ones((4, 15), bool)
    pred[1] = np.nan  # no point at all
    pred[2, 7] = [np.nan, 3.0]  # one point lost
    pred[3, 4, 1] = np.inf
    nme = metrics.nme_per_face(pred, gt, visible, KAGGLE15)
    assert nme[0] == pytest.approx(0.05) and np.isposinf(nme[1:]).all()
    summary = metrics.summarize(pred, gt, visible, KAGGLE15, thresholds=(0.1,))
    # scored as failures: dropped, they would leave one face at 5 % NME, AUC 0.5 and no failure
    assert summary["faces"] == 4 and summary["unscored"] == 0
    assert summary["fr@0.1"] == pytest.approx(75.0) and summary["auc@0.1"] == pytest.approx(0.5 / 4)
    assert np.isposinf(summary["nme"])
    # a hidden point's prediction still never counts, finite or not
    visible[2, 7] = False
    assert metrics.nme_per_face(pred, gt, visible, KAGGLE15)[2] == pytest.approx(0.05)


def test_ground_truth_that_is_not_finite_is_unavailable():
    gt = np.random.default_rng(8).random((2, 68, 2))
    pred = gt + [0.01, 0.0]
    visible = np.ones((2, 68), bool)
    gt[0, 10] = np.nan  # a point the annotation lacks: left out, as if hidden
    gt[1, 45] = np.nan  # a normalising point: the face is not scored
    nme = metrics.nme_per_face(pred, gt, visible, IBUG68)
    assert nme[0] == pytest.approx(0.01 / np.linalg.norm(gt[0, 36] - gt[0, 45])) and np.isnan(nme[1])
