"""Custom layers of the landmark models, registered so saved ``.keras`` files reload."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from facelandmarks.models.backbones import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureTransform(keras.layers.Layer):
    """Element-wise view of a feature vector: 'identity', 'square' or 'sine' (seed 000's bottleneck)."""

    FUNCTIONS = ("identity", "square", "sine")

    def __init__(self, function: str, **kwargs):
        super().__init__(**kwargs)
        if function not in self.FUNCTIONS:
            raise ValueError(f"function must be one of {self.FUNCTIONS}, got {function!r}")
        self.function = function

    def call(self, inputs):
        if self.function == "square":
            return ops.square(inputs)
        if self.function == "sine":
            return ops.sin(inputs)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "function": self.function}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NearestUpsampling2D(keras.layers.Layer):
    """Nearest-neighbour upsampling of (N, H, W, C) by an integer ``factor``: each pixel becomes a factor x factor
    block, as ``keras.layers.UpSampling2D`` makes it, forward and backward alike (its gradient sums the same pairs).

    The copies are stacked, not repeated: under TensorFlow the gradient of ``ops.repeat`` (a tile) transposes an
    int32 shape, which oneDNN turns down with an ERROR line in the middle of a training ("oneDNN supports DT_INT32
    only on platforms with AVX-512. Falling back to the default Eigen-based implementation").
    """

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.factor = factor

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        rows = ops.reshape(ops.stack([inputs] * self.factor, axis=2), (-1, height * self.factor, width, channels))
        return ops.reshape(ops.stack([rows] * self.factor, axis=3),
                           (-1, height * self.factor, width * self.factor, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, height * self.factor, width * self.factor, channels)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CentreZoom(keras.layers.Layer):
    """The centre of square crops (N, S, S, C) enlarged to S px, in float32: the crops resized to ``larger`` px
    (bilinear, pixel centres at half pixels, as OpenCV and ``tf.image.resize`` do) and their centre S x S sliced out.
    The same numbers in Keras, ONNX Runtime and LiteRT (Keras's ``CenterCrop`` after ``Resizing`` put the ONNX
    export's points 10 crop px off; its LiteRT export was exact)."""

    def __init__(self, larger: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(larger, bool) or not isinstance(larger, int) or larger < 1:
            raise ValueError(f"larger must be a positive number of pixels, got {larger!r}")
        self.larger = larger

    def call(self, inputs):
        side = int(inputs.shape[1])
        start = (self.larger - side) // 2
        x = ops.image.resize(ops.cast(inputs, "float32"), (self.larger, self.larger), interpolation="bilinear")
        return x[:, start:start + side, start:start + side, :]

    def get_config(self):
        return {**super().get_config(), "larger": self.larger}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftArgmax2D(keras.layers.Layer):
    """Heatmap logits (N, H, W, K) -> expected position (N, K, 2) in normalised coordinates.

    A softmax over the H x W positions of each channel gives a probability
    map; the output is its mean position, ``x = sum p(i, j) (j + 0.5) / W``
    (likewise y): differentiable, sub-pixel, and in the same [0, 1] crop
    coordinates as the regressors (pixel centres at ``(p + 0.5) / S``).
    Computed in float32 whatever the global dtype policy.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        logits = ops.cast(inputs, "float32")
        _, height, width, channels = logits.shape
        flat = ops.reshape(ops.transpose(logits, (0, 3, 1, 2)), (-1, channels, height * width))
        probs = ops.reshape(ops.softmax(flat, axis=-1), (-1, channels, height, width))
        xs = (np.arange(width, dtype=np.float32) + 0.5) / width
        ys = (np.arange(height, dtype=np.float32) + 0.5) / height
        x = ops.sum(ops.sum(probs, axis=2) * xs, axis=-1)
        y = ops.sum(ops.sum(probs, axis=3) * ys, axis=-1)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3], 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelInPixelDecode(keras.layers.Layer):
    """PIPNet grid outputs -> expected position (N, K, 2) in normalised coordinates, differentiably.

    Inputs ``[scores, offsets]``: ``scores`` (N, H, W, K) logits, one map per
    point; ``offsets`` (N, H, W, 2K), channels x0, y0, x1, y1, ..., each cell's
    offset of the point from the cell's centre in cells.  A softmax over the
    H x W cells of each point gives ``p``; the output is
    ``x = sum p(i, j) (j + 0.5 + dx(i, j)) / W`` (likewise y), so cell (i, j)
    covers [j/W, (j+1)/W] in the same [0, 1] crop coordinates as the
    regressors, and a confident cell places its point anywhere its offset
    says.  With ``max_offset`` (in cells) the offsets pass a soft bound,
    ``max_offset * tanh(offset / max_offset)`` (slope 1 at 0), so a cell can
    only place its point within ``max_offset`` cells of its centre, and the
    score maps must do the finding.  Computed in float32 whatever the global
    dtype policy.

    With ``spread_weight`` > 0, training adds (``add_loss``) that weight times
    the *spread* of the cells' estimates around the output, ``sum p(i, j)
    |position(i, j) - x|`` per coordinate, averaged over points and faces (in
    crop units, like the ``l1`` and ``wing`` losses).  A coordinate loss alone
    only asks the weighted sum to be right, and the model learns to spread a
    point over several cells whose offsets add up to it; with the spread term
    the coordinate error plus the spread bounds the expected error of one cell
    drawn by its score, ``sum p |position - target|`` (triangle inequality), so
    every cell with weight must place the point on its own -- the target-free
    counterpart of PIPNet's loss on the true cell.  It uses no target, so
    it needs no visibility mask; inference is unchanged.

    ``zoom`` < 1: the network saw the centre ``zoom`` of the crop enlarged to the whole input
    (``localisation.zoom_layers``), so the grid covers that part; the points are mapped back to the whole
    crop, ``x zoom + (1 - zoom) / 2`` (the spread is taken before, in the grid's units).
    """

    def __init__(self, max_offset: float | None = None, spread_weight: float = 0.0, zoom: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or not 0 < zoom <= 1:
            raise ValueError(f"zoom must be a number in (0, 1], got {zoom!r}")
        self.zoom = float(zoom)
        if max_offset is not None and (isinstance(max_offset, bool) or not isinstance(max_offset, (int, float)) or max_offset <= 0):
            raise ValueError(f"max_offset must be None or a positive number of cells, got {max_offset!r}")
        self.max_offset = None if max_offset is None else float(max_offset)
        if isinstance(spread_weight, bool) or not isinstance(spread_weight, (int, float)) or not spread_weight >= 0:
            raise ValueError(f"spread_weight must be a number >= 0, got {spread_weight!r}")
        self.spread_weight = float(spread_weight)

    def call(self, inputs, training=None):
        scores, offsets = (ops.cast(t, "float32") for t in inputs)
        if self.max_offset is not None:
            offsets = self.max_offset * ops.tanh(offsets / self.max_offset)
        _, height, width, channels = scores.shape
        flat = ops.reshape(ops.transpose(scores, (0, 3, 1, 2)), (-1, channels, height * width))
        probs = ops.softmax(flat, axis=-1)  # (N, K, H*W)
        offsets = ops.reshape(offsets, (-1, height * width, channels, 2))
        offsets = ops.transpose(offsets, (0, 2, 1, 3))  # (N, K, H*W, 2)
        cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=-1)  # (H*W, 2), row-major like flat
        positions = (centres + offsets) / np.array([width, height], np.float32)
        points = ops.sum(probs[..., None] * positions, axis=2)
        if training and self.spread_weight > 0:
            spread = ops.sum(probs[..., None] * ops.abs(positions - points[:, :, None, :]), axis=2)  # (N, K, 2)
            self.add_loss(self.spread_weight * ops.mean(spread))
        if self.zoom != 1.0:  # the grid covered the crop's centre: back to the whole crop's coordinates
            points = points * self.zoom + (1.0 - self.zoom) / 2
        return points

    def compute_output_shape(self, input_shape):
        scores_shape = input_shape[0]
        return (scores_shape[0], scores_shape[3], 2)

    def get_config(self):
        return {**super().get_config(), "max_offset": self.max_offset, "spread_weight": self.spread_weight, "zoom": self.zoom}
