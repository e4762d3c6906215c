"""Masked landmark losses and the NME metric on synthetic points: hand-computed values, masking, gradients, serialisation;
the example loss of docs/models.md ("Adding a loss"), registered as that section says."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from facelandmarks.models import losses

pytestmark = pytest.mark.backend


def gradient(fn, x: np.ndarray) -> np.ndarray:
    """d fn(x) / dx for a scalar keras.ops function, on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = fn(tensor)
        return tape.gradient(value, tensor).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: fn(t))(x))
    raise RuntimeError(f"gradient helper has no implementation for backend {backend!r}")


def value(loss, y_true, y_pred) -> float:
    return float(ops.convert_to_numpy(loss(y_true, y_pred)))


# Three points, the last hidden: its coordinates must never matter.
TRUE = np.array([[[0.2, 0.3], [0.6, 0.3], [0.4, 0.8]]], np.float32)
VISIBLE = np.array([[True, True, False]])
PRED = np.array([[[0.3, 0.3], [0.6, 0.1], [5.0, -7.0]]], np.float32)
# visible coordinate errors: x0 +0.1, y0 0, x1 0, y1 -0.2  (4 visible coordinates)


def test_pack_targets_layout_and_hidden_coordinates_are_zeroed():
    landmarks = TRUE.copy()
    landmarks[0, 2] = np.nan  # a dataset may hold NaN for a missing point
    packed = losses.pack_targets(landmarks, VISIBLE)
    assert packed.dtype == np.float32 and packed.shape == (1, 3, 3)
    np.testing.assert_array_equal(packed[0, :, 2], [1, 1, 0])
    np.testing.assert_array_equal(packed[0, 2], [0, 0, 0])
    np.testing.assert_array_equal(packed[0, :2, :2], TRUE[0, :2])
    with pytest.raises(ValueError, match=r"visible must be \(N, K\)"):
        losses.pack_targets(TRUE, VISIBLE[:, :2])


def test_mse_and_l1_match_hand_computation():
    y_true = losses.pack_targets(TRUE, VISIBLE)
    assert value(losses.get_loss("mse"), y_true, PRED) == pytest.approx((0.1**2 + 0.2**2) / 4, rel=1e-5)
    assert value(losses.get_loss("l1"), y_true, PRED) == pytest.approx((0.1 + 0.2) / 4, rel=1e-5)
    # (N, 2K) predictions are read as x0, y0, x1, y1, ...
    assert value(losses.get_loss("mse"), y_true, PRED.reshape(1, 6)) == pytest.approx(0.0125, rel=1e-5)


def test_wing_matches_hand_computation_on_both_branches():
    # crop_size 100: w = 0.1, eps = 0.02 in normalised units.  The 0.1 error sits exactly
    # at w (linear branch), 0.2 is beyond it; add a small error for the log branch.
    pred = PRED.copy()
    pred[0, 1, 0] = 0.6 + 0.01
    y_true = losses.pack_targets(TRUE, VISIBLE)
    w, eps = 0.1, 0.02
    c = w - w * math.log(1 + w / eps)
    expected = ((0.1 - c) + w * math.log(1 + 0.01 / eps) + (0.2 - c)) / 4
    loss = losses.get_loss("wing", crop_size=100)
    assert value(loss, y_true, pred) == pytest.approx(expected, rel=1e-4)
    # ... which is the pixel Wing loss (w = 10 px, eps = 2 px) on a 100-px crop, divided by 100.
    pixel_errors = np.array([10.0, 1.0, 20.0])
    pixel_wing = np.where(pixel_errors < 10, 10 * np.log1p(pixel_errors / 2), pixel_errors - (10 - 10 * math.log(6)))
    assert value(loss, y_true, pred) == pytest.approx(pixel_wing.sum() / 4 / 100, rel=1e-4)


def test_cgd_matches_hand_computation():
    y_true = losses.pack_targets(TRUE, VISIBLE)
    # One visible pair (0, 1): true length 0.4, predicted |(0.3,0.3)-(0.6,0.1)| = sqrt(0.13).
    cgd = abs(math.sqrt(0.09 + 0.04) - 0.4)
    mse = 0.0125
    assert value(losses.get_loss("cgd"), y_true, PRED) == pytest.approx(mse + 0.01 * cgd, rel=1e-5)
    assert value(losses.get_loss("cgd", alpha=1.0), y_true, PRED) == pytest.approx(mse + cgd, rel=1e-5)
    # All three visible: mean over the three pairs.
    all_visible = losses.pack_targets(TRUE, np.ones((1, 3), bool))
    pred = TRUE.copy()
    pred[0, 2] = [0.4, 1.0]  # only point 2 moves, by 0.2 in y
    d_true = [0.4, math.dist((0.2, 0.3), (0.4, 0.8)), math.dist((0.6, 0.3), (0.4, 0.8))]
    d_pred = [0.4, math.dist((0.2, 0.3), (0.4, 1.0)), math.dist((0.6, 0.3), (0.4, 1.0))]
    expected = 0.2**2 / 6 + 1.0 * np.mean(np.abs(np.subtract(d_pred, d_true)))
    assert value(losses.get_loss("cgd", alpha=1.0), all_visible, pred) == pytest.approx(expected, rel=1e-5)


def synthetic_faces(count=8, points=76, seed=0):
    """Random faces with MUCT-like gaps: some faces miss a run of jaw points, some a scattered few."""
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(0.1, 0.9, (count, points, 2)).astype(np.float32)
    visible = np.ones((count, points), bool)
    visible[1::2, :6] = False
    visible &= rng.random((count, points)) > 0.1
    return landmarks, visible


def visible_points_alone(name, landmarks, visible, pred) -> float:
    """The loss by hand from the visible points alone: a mean over the batch's visible coordinates (CGD with
    alpha 1 adds the mean over its visible pairs), every face weighing by what it sees."""
    gap = (pred - landmarks)[visible]  # (visible points, 2)
    w, eps = 10 / 128, 2 / 128  # the Wing defaults on their 128 px crop
    formulas = {"mse": gap**2, "l1": np.abs(gap), "cgd": gap**2,
                "wing": np.where(np.abs(gap) < w, w * np.log1p(np.abs(gap) / eps),
                                 np.abs(gap) - (w - w * math.log(1 + w / eps)))}
    if name not in formulas:
        pytest.fail(f"loss {name!r}: add its per-coordinate value at its default options, in numpy, to "
                    "visible_points_alone in tests/unit/test_losses.py")
    per_coordinate = formulas[name]
    if name != "cgd":
        return float(per_coordinate.mean())
    gaps = []
    for points, seen, guess in zip(landmarks, visible, pred):
        a, b = np.triu_indices(seen.sum(), 1)
        gaps += list(np.abs(np.linalg.norm(guess[seen][a] - guess[seen][b], axis=-1)
                            - np.linalg.norm(points[seen][a] - points[seen][b], axis=-1)))
    return float(per_coordinate.mean() + np.mean(gaps))


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_hidden_points_change_neither_value_nor_gradient(name):
    landmarks, visible = synthetic_faces()
    assert (~visible).sum() >= 5 and visible.sum() >= 5
    packed = losses.pack_targets(landmarks, visible)
    packed[~visible, :2] = 1e3  # whatever a hidden ground-truth point holds is never read either
    y_true = ops.convert_to_tensor(packed)
    rng = np.random.default_rng(1)
    pred = (landmarks + rng.normal(0, 0.05, landmarks.shape)).astype(np.float32)
    moved = pred.copy()
    moved[~visible] = rng.normal(0, 50, ((~visible).sum(), 2))  # wild predictions where nothing is known
    loss = losses.get_loss(name, **({"alpha": 1.0} if name == "cgd" else {}))
    fn = lambda p: loss(y_true, p)  # noqa: E731
    assert value(loss, y_true, pred) == pytest.approx(value(loss, y_true, moved), rel=1e-6)
    # ... and equals the loss of the visible points alone, each face keeping only what it sees (by hand)
    assert value(loss, y_true, pred) == pytest.approx(visible_points_alone(name, landmarks, visible, pred), rel=1e-5)
    grad, grad_moved = gradient(fn, pred), gradient(fn, moved)
    np.testing.assert_allclose(grad, grad_moved, rtol=1e-5, atol=1e-9)
    assert np.all(grad[~visible] == 0) and np.abs(grad[visible]).sum() > 0


def test_wing_options_reach_the_formula():
    # width 4 px, curvature 1 px on a 40 px crop: w = 0.1, eps = 0.025; errors 0.05 (log branch) and 0.3 (linear)
    y_true = losses.pack_targets(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), bool))
    pred = np.array([[[0.05, -0.3]]], np.float32)
    w, eps = 0.1, 0.025
    expected = (w * math.log(1 + 0.05 / eps) + 0.3 - (w - w * math.log(1 + w / eps))) / 2
    loss = losses.get_loss("wing", width=4, curvature=1, crop_size=40)
    assert value(loss, y_true, pred) == pytest.approx(expected, rel=1e-5)
    assert value(losses.get_loss("wing", crop_size=40), y_true, pred) != pytest.approx(expected, rel=1e-3)


def test_wing_norm_points_scales_each_face_by_its_normalising_distance():
    # Four faces, points 0 and 1 the normalising pair, point 2 off by 0.01 in x on every face.
    # Pair distances 0.2 and 0.4 (mean 0.3: scales 1.5 and 0.75), a face with the pair hidden
    # (scale 1), and one with distance 0.01, whose scale 30 is clipped to 4.
    true = np.zeros((4, 3, 2), np.float32)
    true[:, 1, 0] = [0.2, 0.4, 0.7, 0.01]
    visible = np.ones((4, 3), bool)
    visible[2, 1] = False
    pred = true.copy()
    pred[:, 2, 0] += 0.01
    mean = (0.2 + 0.4 + 0.01) / 3  # the hidden pair does not count
    scales = np.array([mean / 0.2, mean / 0.4, 1.0, 4.0])
    w, eps = 10 / 128, 2 / 128
    per_face = w * np.log1p(0.01 * scales / eps)  # one erring coordinate per face, in the log branch
    y_true = losses.pack_targets(true, visible)
    loss = losses.get_loss("wing", norm_points=[0, 1])
    assert value(loss, y_true, pred) == pytest.approx(per_face.sum() / (2 * visible.sum()), rel=1e-5)
    plain = w * np.log1p(0.01 / eps) * 4 / (2 * visible.sum())
    assert value(losses.get_loss("wing"), y_true, pred) == pytest.approx(plain, rel=1e-5)
    # the gradient of a face grows with its scale (the log branch's slope w / (eps + x) included)
    grad = gradient(lambda p: loss(y_true, p), pred)[:, 2, 0]
    expected = w / (eps + 0.01 * scales) * scales / (2 * visible.sum())
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.get_config()["norm_points"] == [0, 1]
    assert value(restored, y_true, pred) == pytest.approx(value(loss, y_true, pred), rel=1e-6)


@pytest.mark.parametrize("bad", [[0], [1, 1], [-1, 2], [0.5, 2], "36,45", [True, 2]])
def test_wing_norm_points_must_be_two_different_indices(bad):
    with pytest.raises(ValueError, match="wing loss norm_points must be two different point indices >= 0"):
        losses.get_loss("wing", norm_points=bad)


def test_wing_norm_points_outside_the_scheme_is_one_clear_error():
    y_true = losses.pack_targets(TRUE, VISIBLE)
    with pytest.raises(ValueError, match=r"wing loss norm_points \[36, 45\] outside the 3 landmarks"):
        losses.get_loss("wing", norm_points=[36, 45])(y_true, PRED)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_batch_without_visible_points_gives_zero_not_nan(name):
    y_true = losses.pack_targets(TRUE, np.zeros((1, 3), bool))
    loss = losses.get_loss(name)
    assert value(loss, y_true, PRED) == 0.0
    grad = gradient(lambda p: loss(y_true, p), PRED)
    assert np.all(grad == 0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_a_perfect_prediction_gives_a_finite_gradient(name):
    """Predictions on their targets, and a hidden point's on the 0 ``pack_targets`` puts there, leave the value and the
    gradient finite: a point's distance as ``ops.sqrt`` of its squares, with no constant under it, gives NaN there on
    both backends (docs/models.md, "Masking"), and backpropagation carries it into every weight."""
    visible = np.array([[True, True, False]])
    y_true = losses.pack_targets(TRUE, visible)
    pred = np.where(visible[..., None], TRUE, 0.0).astype(np.float32)
    loss = losses.get_loss(name)
    assert np.isfinite(value(loss, y_true, pred))
    grad = gradient(lambda p: loss(y_true, p), pred)
    assert np.all(np.isfinite(grad)), f"loss {name!r}: the gradient at a perfect prediction is {grad.tolist()}"


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_serialise_and_reload(name):
    options = {"wing": {"crop_size": 64, "width": 8.0}, "cgd": {"alpha": 0.5}}.get(name, {})
    loss = losses.get_loss(name, **options)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    y_true = losses.pack_targets(TRUE, VISIBLE)
    assert value(restored, y_true, PRED) == pytest.approx(value(loss, y_true, PRED), rel=1e-6)


def test_get_loss_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown loss 'huber'; known: mse, l1, wing, cgd"):
        losses.get_loss("huber")
    with pytest.raises(ValueError, match="loss 'mse' has no option.*alpha"):
        losses.get_loss("mse", alpha=0.1)
    with pytest.raises(ValueError, match="cgd alpha must be a number >= 0, got -1"):
        losses.get_loss("cgd", alpha=-1)
    with pytest.raises(ValueError, match="wing loss crop_size must be a positive number, got 0"):
        losses.get_loss("wing", crop_size=0)


class HalfL1(losses.MaskedLandmarkLoss):
    """A loss registered in LOSSES alone, as docs/models.md's "Adding a loss" adds one."""

    def __init__(self, factor: float = 0.5, *, offset: float = 0.0, name: str = "half_l1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.factor, self.offset = factor, offset

    def masked_loss(self, points, mask, pred):
        return losses.masked_coordinate_mean(self.factor * ops.abs(pred - points) + self.offset, mask)


def test_a_loss_in_LOSSES_takes_its_keyword_arguments_as_options(monkeypatch):
    """One registry: the options get_loss accepts are the class's own keyword arguments (a second table of
    options once made a loss added to LOSSES alone a KeyError), past Keras' name, reduction and dtype."""
    monkeypatch.setitem(losses.LOSSES, "half_l1", HalfL1)
    assert losses.loss_options("half_l1") == ("factor", "offset")
    assert losses.loss_options("wing") == ("width", "curvature", "crop_size", "norm_points")
    assert losses.loss_options("mse") == ()
    y_true = losses.pack_targets(TRUE, VISIBLE)
    assert value(losses.get_loss("half_l1", factor=2.0), y_true, PRED) == pytest.approx(2 * (0.1 + 0.2) / 4, rel=1e-5)
    with pytest.raises(ValueError, match=r"^loss 'half_l1' has no option\(s\) factr; its options: factor, offset$"):
        losses.get_loss("half_l1", factr=2.0)
    with pytest.raises(ValueError, match="loss 'mse' has no option.*reduction; its options: none"):
        losses.get_loss("mse", reduction="none")


def doc_example_loss() -> type:
    """The class of the Python fence of docs/models.md's "Adding a loss", run where it goes: in losses.py."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    section = text.split("## Adding a loss", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)
    namespace = dict(vars(losses))
    exec(compile(code, "docs/models.md (example loss)", "exec"), namespace)
    return namespace["SmoothL1Loss"]


def test_the_doc_example_loss_registers_and_passes_every_losss_checks(monkeypatch):
    monkeypatch.setitem(losses.LOSSES, "smooth_l1", doc_example_loss())
    assert losses.loss_options("smooth_l1") == ("beta",)
    y_true = losses.pack_targets(TRUE, VISIBLE)
    # errors 0.1 and 0.2 beyond beta 0.05 (linear), on 4 visible coordinates
    loss = losses.get_loss("smooth_l1", beta=0.05)
    assert value(loss, y_true, PRED) == pytest.approx((0.1 - 0.025 + 0.2 - 0.025) / 4, rel=1e-5)
    assert value(losses.get_loss("smooth_l1", beta=0.5), y_true, PRED) == pytest.approx(
        (0.5 * 0.1**2 + 0.5 * 0.2**2) / 0.5 / 4, rel=1e-5)
    with pytest.raises(ValueError, match="^smooth_l1 beta must be a positive number, got 0$"):
        losses.get_loss("smooth_l1", beta=0)
    with pytest.raises(ValueError, match="^loss 'smooth_l1' has no option\\(s\\) bta; its options: beta$"):
        losses.get_loss("smooth_l1", bta=0.1)
    # hidden points: no value, no gradient
    landmarks, visible = synthetic_faces()
    y_true = ops.convert_to_tensor(losses.pack_targets(landmarks, visible))
    rng = np.random.default_rng(2)
    pred = (landmarks + rng.normal(0, 0.05, landmarks.shape)).astype(np.float32)
    moved = pred.copy()
    moved[~visible] = rng.normal(0, 50, ((~visible).sum(), 2))
    loss = losses.get_loss("smooth_l1")
    gap = np.abs(pred - landmarks)[visible]
    by_hand = np.where(gap < 0.02, 0.5 * gap**2 / 0.02, gap - 0.01).mean()
    assert value(loss, y_true, moved) == pytest.approx(value(loss, y_true, pred), rel=1e-6)
    assert value(loss, y_true, pred) == pytest.approx(by_hand, rel=1e-5)
    grad = gradient(lambda p: loss(y_true, p), moved)
    assert np.all(grad[~visible] == 0) and np.abs(grad[visible]).sum() > 0
    test_batch_without_visible_points_gives_zero_not_nan("smooth_l1")
    test_losses_serialise_and_reload("smooth_l1")


def test_nme_metric_matches_hand_computation():
    # Face 0: eye corners (points 0, 1) 0.4 apart; errors 0.1 and 0 on the visible points -> 0.05 / 0.4.
    # Face 1: its normalising point 1 is hidden -> not scored.
    true = np.concatenate([TRUE, TRUE])
    visible = np.array([[True, True, False], [True, False, True]])
    pred = np.concatenate([PRED, TRUE])
    pred[0, 1] = TRUE[0, 1]
    metric = losses.NormalizedMeanError(norm_points=(0, 1))
    metric.update_state(losses.pack_targets(true, visible), pred)
    assert float(metric.result()) == pytest.approx(100 * 0.05 / 0.4, rel=1e-5)
    # A second batch accumulates: face NMEs 12.5 % and 0 % -> mean 6.25 %.
    metric.update_state(losses.pack_targets(TRUE, np.ones((1, 3), bool)), TRUE)
    assert float(metric.result()) == pytest.approx(6.25, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0




@pytest.mark.backend
def test_box_normalised_nme_metric_matches_the_metrics_module():
    """The training metric for schemes without eye corners (``normalize: box``) agrees with metrics.box_size."""
    from facelandmarks import metrics as numpy_metrics

    rng = np.random.default_rng(3)
    gt = rng.uniform(0.2, 0.8, (6, 5, 2)).astype(np.float32)
    pred = (gt + rng.normal(0, 0.02, gt.shape)).astype(np.float32)
    visible = np.ones((6, 5), np.float32)
    visible[1, 2] = 0
    metric = losses.NormalizedMeanError("box")
    metric.update_state(losses.pack_targets(gt, visible), pred)
    errors = np.where(visible > 0, np.linalg.norm(pred - gt, axis=-1), 0).sum(1) / visible.sum(1)
    expected = 100 * np.mean(errors / numpy_metrics.box_size(gt, visible > 0))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-4)
    assert losses.NormalizedMeanError.from_config(metric.get_config()).box


ROOT = Path(__file__).resolve().parents[2]


def listed_losses(help_text: str) -> list[str]:
    """The loss names ``train.py --help`` gives for ``--loss``."""
    flat = " ".join(help_text.split())
    found = re.search(r"--loss LOSS masked landmark loss: one of (.+?) \(", flat)
    assert found, f"--help gives --loss no list of losses:\n{help_text}"
    return found.group(1).split(", ")


def help_of_train_py(folder: Path) -> str:
    """``python train.py --help`` run in ``folder`` (its own facelandmarks/), checking that Keras stays unloaded."""
    code = ("import contextlib, runpy, sys; sys.argv = ['train.py', '--help']\n"
            "with contextlib.suppress(SystemExit): runpy.run_path('train.py', run_name='__main__')\n"
            "print('LOADED', *[m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text, loaded = done.stdout.split("LOADED")
    assert loaded.split() == []  # the list is read without loading Keras
    return text


def test_train_py_help_lists_every_registered_loss():
    # --help listed "mse, l1, wing, cgd", written by hand: a loss added to LOSSES was not among them
    assert listed_losses(help_of_train_py(ROOT)) == list(losses.LOSSES)


def test_a_loss_added_as_docs_models_md_says_is_in_train_py_help(tmp_path):
    """The doc example put into a copy of losses.py as "Adding a loss" says: the class above LOSSES, one entry in it."""
    shutil.copytree(ROOT / "facelandmarks", tmp_path / "facelandmarks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "train.py", tmp_path / "train.py")
    path = tmp_path / "facelandmarks" / "models" / "losses.py"
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    example = re.search(r"^```python\n(.*?)^```", text.split("## Adding a loss", 1)[1], re.S | re.M).group(1)
    source = path.read_text()
    assert source.count("\nLOSSES = {\n") == 1
    path.write_text(source.replace("\nLOSSES = {\n", f"\n{example}\n\nLOSSES = {{\n    \"smooth_l1\": SmoothL1Loss,\n"))
    # once: a checkout that has added the example as the doc says already lists it
    assert listed_losses(help_of_train_py(tmp_path)) == list(dict.fromkeys(["smooth_l1", *losses.LOSSES]))


def test_a_loss_registered_from_python_is_in_train_py_help(monkeypatch):
    from facelandmarks.cli.train import build_parser

    monkeypatch.setitem(losses.LOSSES, "smooth_l1", doc_example_loss())
    assert listed_losses(build_parser().format_help()) == [*losses.LOSSES]
