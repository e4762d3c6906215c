"""Landmark losses and the NME training metric, masked by visibility, in keras.ops.

Targets travel as one float32 array ``y_true`` of shape (N, K, 3): the x, y
normalised crop coordinates of each point and a 0/1 ``visible`` flag
(``pack_targets``).  Predictions are (N, K, 2) -- or (N, 2K), x0, y0, x1, ...
Every loss looks only at visible points: an unavailable point (MUCT's
hidden jaw, a Kaggle label nobody gave) contributes nothing to the value or
to the gradient, whatever the model predicts for it.  Losses are averaged
over the *visible coordinates of the whole batch* (2 per visible point), so
a batch with many hidden points weighs each seen point as much as a full
one; a batch with no visible point gives 0.

================  ==========================================================
name              loss
================  ==========================================================
``mse``           mean squared coordinate error (the seeds' loss)
``l1``            mean absolute coordinate error
``wing``          Wing loss (Feng et al., CVPR 2018), see ``WingLoss``
``cgd``           MSE + alpha x complete-graph distance (seed 004), see
                  ``CompleteGraphDistanceLoss``
================  ==========================================================

``get_loss(name, **options)`` builds one; all are registered Keras objects,
so a compiled model saved as ``.keras`` reloads with them.
``NormalizedMeanError`` reports the NME in percent during training, with the
conventions of ``metrics.py`` (per-face mean point error over visible points
divided by the ground-truth distance of the two normalising points; faces
whose normalising points are unavailable are not scored).
"""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution

from facelandmarks.data.feeding import pack_targets  # noqa: F401  (the target layout the losses unpack)
from facelandmarks.landmarks import get_scheme
from facelandmarks.models.backbones import PACKAGE
from facelandmarks.models.registry import NameTaken, defined_in


def unpack_targets(y_true, y_pred):
    """(points (N, K, 2), visible mask (N, K) float, prediction (N, K, 2)), all float32."""
    y_true = ops.cast(y_true, "float32")
    if len(y_true.shape) != 3 or y_true.shape[-1] != 3:
        raise ValueError(f"y_true must be (N, K, 3) = x, y, visible (see pack_targets), got shape {y_true.shape}")
    num_points = y_true.shape[1]
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1, num_points, 2))
    return y_true[..., :2], ops.cast(y_true[..., 2] > 0.5, "float32"), y_pred


def masked_coordinate_mean(values, mask):
    """Mean of (N, K, 2) ``values`` over visible coordinates; 0 when none is visible."""
    weights = ops.broadcast_to(mask[..., None], ops.shape(values))
    total = ops.sum(ops.where(weights > 0, values, 0.0))
    return total / ops.maximum(ops.sum(weights), 1.0)


def pair_distance(points, mask, pair, owner: str = ""):
    """(N,) true distance between the two points of ``pair``, and (N,) whether both are visible and apart.

    The normalising distance of NME (``NormalizedMeanError``) and of the wing loss's ``norm_points``;
    ``owner`` starts the error message for a pair outside the landmarks.
    """
    a, b = pair
    if max(a, b) >= points.shape[1]:
        raise ValueError(f"{owner}norm_points {list(pair)} outside the {points.shape[1]} landmarks")
    distance = ops.sqrt(ops.sum(ops.square(points[:, a] - points[:, b]), axis=-1))
    return distance, (mask[:, a] > 0) & (mask[:, b] > 0) & (distance > 0)


class MaskedLandmarkLoss(keras.losses.Loss):
    """Base class: unpacks ``y_true``, masks hidden points, returns one scalar per batch.

    Subclasses implement ``masked_loss(points, mask, pred)``.
    """

    def __init__(self, name: str, reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        points, mask, pred = unpack_targets(y_true, y_pred)
        # one scalar per batch, which Keras' reduction passes by: divided here by a tf.distribute strategy's
        # replicas, whose gradients are summed (as Keras divides its own losses)
        return scale_loss_for_distribution(self.masked_loss(points, mask, pred))

    def masked_loss(self, points, mask, pred):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanSquaredError(MaskedLandmarkLoss):
    """Mean squared error over the visible coordinates (the seeds' MSE, masked)."""

    def __init__(self, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)

    def masked_loss(self, points, mask, pred):
        return masked_coordinate_mean(ops.square(pred - points), mask)


@keras.saving.register_keras_serializable(package=PACKAGE)
def masked_mse(y_true, y_pred):
    """The masked MSE as a metric: not divided by a strategy's replicas, as the loss is for its gradients."""
    return MaskedMeanSquaredError().masked_loss(*unpack_targets(y_true, y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanAbsoluteError(MaskedLandmarkLoss):
    """Mean absolute error over the visible coordinates."""

    def __init__(self, name: str = "l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def masked_loss(self, points, mask, pred):
        return masked_coordinate_mean(ops.abs(pred - points), mask)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WingLoss(MaskedLandmarkLoss):
    """Wing loss (Feng et al., "Wing Loss for Robust Facial Landmark Localisation", CVPR 2018).

    Per coordinate error x::

        wing(x) = w ln(1 + |x| / eps)   if |x| < w
                  |x| - C               otherwise,  C = w - w ln(1 + w / eps)

    The paper's w = 10 and eps = 2 are pixels.  Coordinates here are
    normalised to the crop, so the loss uses w = width / crop_size and
    eps = curvature / crop_size; the value is then exactly the pixel Wing
    loss of the same prediction on a ``crop_size`` crop divided by
    ``crop_size`` (comparable in scale to ``l1``).  Pass the training crop
    size as ``crop_size``.

    With ``norm_points`` (the scheme's normalising pair, [36, 45] for
    ibug68) each face's errors are first scaled by ``d_mean / d_face``: the
    true distance of the pair averaged over the batch's faces, over the
    face's own, clipped to [1/4, 4] (``MAX_FACE_SCALE``).  A face then weighs
    in the loss as its errors weigh in its NME (a turned face, whose eye
    corners lie close together, counts more); faces whose pair is hidden
    keep their errors as they are.

    Args:
        width: w in pixels (default 10).
        curvature: eps in pixels (default 2).
        crop_size: side of the crop in pixels the pixel values refer to
            (default 128).
        norm_points: None (default) or two point indices: scale each face's
            errors by its NME's normalising distance, as above.
    """

    MAX_FACE_SCALE = 4.0

    def __init__(self, width: float = 10.0, curvature: float = 2.0, crop_size: float = 128.0, norm_points=None,
                 name: str = "wing", **kwargs):
        super().__init__(name=name, **kwargs)
        for label, value in (("width", width), ("curvature", curvature), ("crop_size", crop_size)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"wing loss {label} must be a positive number, got {value!r}")
        self.width, self.curvature, self.crop_size = float(width), float(curvature), float(crop_size)
        if norm_points is not None:
            pair = list(norm_points) if isinstance(norm_points, (list, tuple)) else []
            if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair) or pair[0] == pair[1]:
                raise ValueError(f"wing loss norm_points must be two different point indices >= 0, got {norm_points!r}")
            norm_points = tuple(pair)
        self.norm_points = norm_points

    def _face_scale(self, points, mask):
        """(N,) d_mean / d_face, clipped; 1 where the face's normalising pair is hidden or coincident."""
        distance, known = pair_distance(points, mask, self.norm_points, "wing loss ")
        mean = ops.sum(ops.where(known, distance, 0.0)) / ops.maximum(ops.sum(ops.cast(known, "float32")), 1.0)
        scale = ops.where(known, mean / ops.where(known, distance, 1.0), 1.0)
        return ops.clip(scale, 1.0 / self.MAX_FACE_SCALE, self.MAX_FACE_SCALE)

    def masked_loss(self, points, mask, pred):
        w = self.width / self.crop_size
        eps = self.curvature / self.crop_size
        c = w - w * math.log1p(w / eps)
        x = ops.abs(pred - points)
        if self.norm_points is not None:
            x = x * self._face_scale(points, mask)[:, None, None]
        wing = ops.where(x < w, w * ops.log1p(x / eps), x - c)
        return masked_coordinate_mean(wing, mask)

    def get_config(self):
        norm_points = None if self.norm_points is None else list(self.norm_points)
        return {**super().get_config(), "width": self.width, "curvature": self.curvature, "crop_size": self.crop_size,
                "norm_points": norm_points}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CompleteGraphDistanceLoss(MaskedLandmarkLoss):
    """MSE + alpha x complete-graph distance (CGD, seed 004).

    The face is a complete graph on its landmarks; CGD compares every edge's
    length in the prediction with the ground truth::

        CGD = mean over visible pairs i < j of | |p_i - p_j| - |t_i - t_j| |

    over every pair of points both visible, across the batch (seed 004's
    double sum over ordered pairs counts each pair twice and the diagonal as
    zero: the same quantity up to a constant factor).  The loss is
    ``masked MSE + alpha * CGD``.

    Args:
        alpha: weight of the CGD term (seed 004: 0.01).
    """

    def __init__(self, alpha: float = 0.01, name: str = "cgd", **kwargs):
        super().__init__(name=name, **kwargs)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"cgd alpha must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    @staticmethod
    def _pair_distances(points):
        diff = points[:, :, None, :] - points[:, None, :, :]
        # The small constant keeps the gradient of sqrt finite where two points coincide.
        return ops.sqrt(ops.sum(ops.square(diff), axis=-1) + 1e-12)

    def masked_loss(self, points, mask, pred):
        mse = masked_coordinate_mean(ops.square(pred - points), mask)
        k = points.shape[1]
        upper = ops.convert_to_tensor(np.triu(np.ones((k, k), np.float32), 1))
        pairs = mask[:, :, None] * mask[:, None, :] * upper[None]
        gap = ops.abs(self._pair_distances(pred) - self._pair_distances(points))
        cgd = ops.sum(ops.where(pairs > 0, gap, 0.0)) / ops.maximum(ops.sum(pairs), 1.0)
        return mse + self.alpha * cgd

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


LOSSES = {
    "mse": MaskedMeanSquaredError,
    "l1": MaskedMeanAbsoluteError,
    "wing": WingLoss,
    "cgd": CompleteGraphDistanceLoss,
}


def register_loss(name: str, loss_class: type) -> type:
    """Add ``loss_class`` to ``LOSSES`` as ``name`` from outside this module (a plugin: docs/models.md, "Adding a
    loss"); a name taken, or a class that is no ``MaskedLandmarkLoss``, is refused in one line."""
    if name in LOSSES:
        raise NameTaken(f"loss {name!r} is registered already (by {defined_in(LOSSES[name])}); give yours another name")
    if not (isinstance(loss_class, type) and issubclass(loss_class, MaskedLandmarkLoss)):
        raise ValueError(f"loss {name!r}: {loss_class!r} is not a subclass of MaskedLandmarkLoss")
    LOSSES[name] = loss_class
    return loss_class


# the keyword arguments of Keras' Loss, which every loss takes and none offers as an option
_BASE_ARGUMENTS = ("name", "reduction", "dtype")


def loss_options(name: str) -> tuple[str, ...]:
    """The options of registered loss ``name``: its class's keyword arguments, past Keras' own."""
    parameters = inspect.signature(LOSSES[name].__init__).parameters.values()
    return tuple(p.name for p in parameters if p.name != "self" and p.name not in _BASE_ARGUMENTS
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def get_loss(name: str, **options) -> MaskedLandmarkLoss:
    """A masked landmark loss by name, a key of ``LOSSES``: 'mse', 'l1', 'wing', 'cgd', ...

    Args:
        name: the loss.
        **options: that loss's options, the keyword arguments of its class (wing: width, curvature, crop_size,
            norm_points; cgd: alpha); an unknown one is a ``ValueError`` naming it and the loss's options.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    unknown = sorted(set(options) - set(loss_options(name)))
    if unknown:
        allowed = ", ".join(loss_options(name)) or "none"
        raise ValueError(f"loss {name!r} has no option(s) {', '.join(unknown)}; its options: {allowed}")
    return LOSSES[name](**options)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NormalizedMeanError(keras.metrics.Metric):
    """Mean NME in percent over the faces seen, for training logs.

    NME of a face = mean Euclidean distance between predicted and true
    visible points / distance between the two normalising points of the
    ground truth.  Faces without a visible point or with a hidden (or
    coincident) normalising point are not scored; with no scored face the
    result is 0.

    Args:
        norm_points: the two normalising point indices, a scheme name
            ('ibug68', 'muct76', ...) whose normalisation to use, or 'box':
            the size of the ground truth's box, sqrt(width x height) of its
            visible points (``metrics.box_size``), for schemes without eye corners.
        name: metric name in logs (default 'nme').
    """

    def __init__(self, norm_points=(36, 45), name: str = "nme", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(norm_points, str) and norm_points != "box":
            scheme = get_scheme(norm_points)
            norm_points = "box" if scheme.normalize == "box" else scheme.norm_points
        self.box = norm_points == "box"
        if self.box:
            norm_points = (0, 1)  # unused: the box normalises
        try:
            a, b = (int(i) for i in norm_points)
        except (TypeError, ValueError):
            raise ValueError(f"norm_points must be two point indices or a scheme name, got {norm_points!r}") from None
        if a == b or min(a, b) < 0:
            raise ValueError(f"norm_points must be two different indices >= 0, got {norm_points!r}")
        self.norm_points = (a, b)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        points, mask, pred = unpack_targets(y_true, y_pred)
        errors = ops.sqrt(ops.sum(ops.square(pred - points), axis=-1))
        seen = ops.sum(mask, axis=1)
        mean_error = ops.sum(ops.where(mask > 0, errors, 0.0), axis=1) / ops.maximum(seen, 1.0)
        if self.box:
            visible = mask[..., None] > 0
            low = ops.min(ops.where(visible, points, 1e9), axis=1)
            high = ops.max(ops.where(visible, points, -1e9), axis=1)
            side = ops.maximum(high - low, 0.0)
            norm = ops.sqrt(side[:, 0] * side[:, 1])
            scored = (seen > 1) & (norm > 0)
        else:
            norm, apart = pair_distance(points, mask, self.norm_points)
            scored = (seen > 0) & apart
        nme = ops.where(scored, mean_error / ops.where(scored, norm, 1.0), 0.0) * 100.0
        weight = ops.cast(scored, "float32")
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.total.assign_add(ops.sum(nme * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.where(self.count > 0, self.total / ops.maximum(self.count, 1e-12), 0.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"norm_points": "box" if self.box else list(self.norm_points), "name": self.name, "dtype": self.dtype}
