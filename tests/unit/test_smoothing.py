"""LandmarkSmoother on synthetic shapes: it steadies trembling points, follows a moving head without
lag, splits points exactly into motion and shape, and starts afresh where it should."""

import numpy as np
import pytest

from facelandmarks.inference.smoothing import (
    MOTION,
    SHAPE,
    EuroSettings,
    LandmarkSmoother,
    apply_similarity,
    fit_similarity,
    invert_similarity,
    smoothing_factor,
)

RNG = np.random.default_rng(0)
FACE = RNG.uniform(-50, 50, (68, 2))  # a "face" about 100 px wide
SIZE = 150.0  # its crop box side
FPS = 25.0


def pose(shape, angle=0.0, scale=1.0, shift=(320.0, 240.0)):
    c, s = np.cos(angle), np.sin(angle)
    return scale * shape @ np.array([[c, s], [-s, c]]) + shift


def run(frames, smoother=None, times=None):
    smoother = smoother or LandmarkSmoother()
    times = np.arange(len(frames)) / FPS if times is None else times
    return np.array([smoother(points, t, SIZE) for points, t in zip(frames, times)])


def jitter(points):
    """Mean frame-to-frame movement of the points (px)."""
    return float(np.linalg.norm(np.diff(points, axis=0), axis=2).mean())


def test_similarity_fit_recovers_a_pose_and_the_split_is_exact():
    points = pose(FACE, angle=0.3, scale=1.7, shift=(100.0, -20.0))
    params = fit_similarity(FACE, points)
    assert params == pytest.approx([1.7 * np.cos(0.3), 1.7 * np.sin(0.3), 100.0, -20.0])
    noisy = points + RNG.normal(0, 2.0, points.shape)
    params = fit_similarity(FACE, noisy)
    assert apply_similarity(params, invert_similarity(params, noisy)) == pytest.approx(noisy)


def test_a_trembling_still_face_is_steadied_and_stays_where_it_is():
    frames = pose(FACE) + RNG.normal(0, 1.0, (100, 68, 2))
    smoothed = run(frames)
    assert jitter(smoothed[10:]) < 0.3 * jitter(frames[10:])
    assert np.abs(smoothed[20:].mean(0) - pose(FACE)).max() < 0.5, "no drift: the mean stays on the face"


def test_a_moving_head_is_followed_without_lag():
    """A head turning in the picture plane, growing and crossing the frame at up to about one face
    size per second: the points stay within a tenth of a frame's move of it, where the same filters
    without their rise with speed (fixed low-passes at the still face's cutoffs) lag by pixels."""
    t = np.arange(50) / FPS
    frames = np.array([pose(FACE, 0.4 * np.sin(2 * tt), 1 + 0.2 * np.sin(3 * tt), (320 + 150 * np.sin(tt), 240.0))
                       for tt in t])
    step = np.linalg.norm(np.diff(frames, axis=0), axis=2).mean()
    lag = np.linalg.norm(run(frames)[5:] - frames[5:], axis=2).mean()
    assert lag < 0.1 * step, f"{lag:.3f} px behind, frames move {step:.2f} px"
    fixed = LandmarkSmoother(motion=EuroSettings(MOTION.min_cutoff, 0.0), shape=EuroSettings(SHAPE.min_cutoff, 0.0))
    assert np.linalg.norm(run(frames, fixed)[5:] - frames[5:], axis=2).mean() > 10 * lag


def test_an_expression_shows_within_a_few_frames():
    """The mouth (the last 20 points) opens by a tenth of the face size in one frame: the shape
    filter's speed rises with it and the points are there within 0.2 s."""
    opened = FACE.copy()
    opened[48:, 1] += 0.1 * SIZE * np.sign(opened[48:, 1] - opened[48:, 1].mean())
    frames = np.array([pose(FACE)] * 20 + [pose(opened)] * 20)
    smoothed = run(frames)
    gap = np.linalg.norm(smoothed - frames, axis=2)[:, 48:].mean(axis=1)
    full = np.linalg.norm(pose(opened) - pose(FACE), axis=1)[48:].mean()
    assert gap[20] < full, "it starts moving at once"
    assert gap[25] < 0.1 * full, f"after 0.2 s {gap[25]:.2f} px of a {full:.1f} px change are left"


def test_it_starts_afresh_on_a_gap_a_new_point_count_or_time_going_back():
    smoother = LandmarkSmoother()
    run(pose(FACE) + RNG.normal(0, 1.0, (10, 68, 2)), smoother)
    moved = pose(FACE, shift=(400.0, 200.0))
    bad = moved.copy()
    bad[3] = np.nan
    assert np.isnan(smoother(bad, 1.0, SIZE)[3]).all(), "points that are not finite come back as they are"
    assert smoother(moved, 1.04, SIZE) == pytest.approx(moved), "after them the filter starts again"
    smoother(moved + 1.0, 1.08, SIZE)
    assert smoother(moved, 0.5, SIZE) == pytest.approx(moved), "time going back starts again"
    assert smoother(moved[:5], 0.54, SIZE) == pytest.approx(moved[:5])
    assert smoother(moved, 0.58, 0.0) == pytest.approx(moved)


def test_settings_are_checked_and_the_factor_is_the_one_euro_formula():
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        EuroSettings(0.0, 1.0)
    with pytest.raises(ValueError, match="beta >= 0"):
        EuroSettings(1.0, -1.0)
    tau = 1 / (2 * np.pi * 2.0)
    assert smoothing_factor(2.0, 0.04) == pytest.approx(1 / (1 + tau / 0.04))
