"""The augmentation maths in ``keras.ops``: one affine map per image, bilinear warp, noise, occlusion."""

from __future__ import annotations

import numpy as np

from facelandmarks.data.augment.config import FILL_MODES


def affine_matrices(
    rotation_deg: np.ndarray,
    scale: np.ndarray,
    translate: np.ndarray,
    shear_deg: np.ndarray,
    flip: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Compose per-image transforms into the landmark map and the image warp.

    The forward map in normalised crop coordinates is
    ``u' = s R H F (u - c) + c + t``: flip ``F`` first, then shear ``H``
    (horizontal, then vertical; area-preserving), rotation ``R`` (positive
    angles turn the face clockwise on screen, y pointing down) and zoom ``s``,
    all about the crop centre ``c``, then the shift ``t``.

    Args:
        rotation_deg: (B,) angles in degrees.
        scale: (B,) zoom factors.
        translate: (B, 2) shifts of x, y in crop sides.
        shear_deg: (B, 2) horizontal and vertical shear angles in degrees.
        flip: (B,) bool, mirror horizontally.
        size: crop side S in pixels.

    Returns:
        ``(points, warp)``, float32 (B, 2, 3) each: ``points`` maps input
        normalised coordinates to output ones; ``warp`` maps OUTPUT pixel
        coordinates to INPUT ones (pixel centres on integers), the inverse
        map an image resampler needs.
    """
    rotation = np.deg2rad(np.asarray(rotation_deg, np.float64))
    scale = np.asarray(scale, np.float64)
    translate = np.asarray(translate, np.float64).reshape(-1, 2)
    shear = np.tan(np.deg2rad(np.asarray(shear_deg, np.float64))).reshape(-1, 2)
    flip = np.asarray(flip, bool)
    batch = len(rotation)
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    if np.any(scale <= 0):
        raise ValueError(f"scale factors must be > 0, got {scale[scale <= 0]}")
    cos, sin = np.cos(rotation), np.sin(rotation)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    ones, zeros = np.ones(batch), np.zeros(batch)
    shear_x = np.stack([np.stack([ones, shear[:, 0]], -1), np.stack([zeros, ones], -1)], -2)
    shear_y = np.stack([np.stack([ones, zeros], -1), np.stack([shear[:, 1], ones], -1)], -2)
    shr = shear_x @ shear_y
    mirror = np.zeros((batch, 2, 2))
    mirror[:, 0, 0] = np.where(flip, -1.0, 1.0)
    mirror[:, 1, 1] = 1.0
    linear = rot @ shr @ mirror * scale[:, None, None]
    centre = np.full(2, 0.5)
    points = np.concatenate([linear, (centre - linear @ centre + translate)[:, :, None]], axis=2)
    # Pixels: p' = L (p - m) + m + S t with m = (S - 1) / 2; inverted for the warp.
    middle = np.full(2, (size - 1) / 2.0)
    inverse = np.linalg.inv(linear)
    offset = (middle - (inverse @ (middle + size * translate)[:, :, None])[:, :, 0])[:, :, None]
    warp = np.concatenate([inverse, offset], axis=2)
    return points.astype(np.float32), warp.astype(np.float32)


def warp_images(images, warp, fill_mode: str = "constant", fill_value: float = 0.0):
    """Resample each image through its affine map, bilinear.

    Args:
        images: float (B, H, W, C).
        warp: float32 (B, 2, 3); output pixel ``(x, y)`` samples input pixel
            ``warp @ (x, y, 1)`` (pixel centres on integers), as
            ``keras.ops.image.affine_transform`` does.
        fill_mode: ``constant``, ``nearest`` or ``reflect`` (about the edge).
        fill_value: value outside the image for ``constant``.

    Returns:
        float32 (B, H, W, C).
    """
    from keras import ops

    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode={fill_mode!r} must be one of {', '.join(FILL_MODES)}")
    batch, height, width, channels = images.shape
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    warp = ops.convert_to_tensor(warp, "float32")
    src_x = warp[:, 0, 0, None, None] * xs + warp[:, 0, 1, None, None] * ys + warp[:, 0, 2, None, None]
    src_y = warp[:, 1, 0, None, None] * xs + warp[:, 1, 1, None, None] * ys + warp[:, 1, 2, None, None]
    x0f, y0f = ops.floor(src_x), ops.floor(src_y)
    wx, wy = src_x - x0f, src_y - y0f
    x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
    flat = ops.reshape(ops.cast(images, "float32"), (-1, channels))
    first_of_image = (np.arange(batch, dtype=np.int32) * (height * width))[:, None, None]
    out = None
    for dy, weight_y in ((0, 1.0 - wy), (1, wy)):
        for dx, weight_x in ((0, 1.0 - wx), (1, wx)):
            xi, yi = x0 + dx, y0 + dy
            weight = weight_x * weight_y
            if fill_mode == "constant":
                inside = ops.logical_and(
                    ops.logical_and(xi >= 0, xi < width), ops.logical_and(yi >= 0, yi < height)
                )
                xi, yi = ops.clip(xi, 0, width - 1), ops.clip(yi, 0, height - 1)
            else:
                xi, yi = _fold_index(xi, width, fill_mode), _fold_index(yi, height, fill_mode)
            value = ops.take(flat, first_of_image + yi * width + xi, axis=0)
            if fill_mode == "constant":
                value = ops.where(inside[..., None], value, fill_value)
            term = value * weight[..., None]
            out = term if out is None else out + term
    return out


def _fold_index(index, length: int, fill_mode: str):
    from keras import ops

    if fill_mode == "nearest" or length == 1:
        return ops.clip(index, 0, length - 1)
    period = 2 * length  # reflect: d c b a | a b c d | d c b a
    folded = ops.mod(index, period)
    return ops.where(folded >= length, period - 1 - folded, folded)


# Box-Muller on 16-bit uniforms by table look-up: XLA's CPU cos/sin cost
# about 8x the rest of the noise.  u = (k + 0.5) / 65536.
_UNIFORM16 = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0


_BOX_MULLER_RADIUS = np.sqrt(-2.0 * np.log(_UNIFORM16)).astype(np.float32)


_BOX_MULLER_COS = np.cos(2.0 * np.pi * _UNIFORM16).astype(np.float32)


_BOX_MULLER_SIN = np.sin(2.0 * np.pi * _UNIFORM16).astype(np.float32)


def _hash32(x):
    """Chris Wellons' lowbias32 integer hash, uint32 -> uint32 (wrapping arithmetic)."""
    from keras import ops

    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x7FEB352D)))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x846CA68B)))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def gaussian_noise(key, shape):
    """Standard normal samples from a counter-based hash, in keras.ops.

    Deterministic in ``key`` and identical on every backend (integer
    arithmetic), with no host-side random numbers to generate or copy: each
    32-bit hash of (counter, key) gives two 16-bit uniforms, and Box-Muller
    turns them into two normal samples (tails cut at 4.9 sigma).

    Args:
        key: uint32 (2,).
        shape: static shape (B, ...) of the result.
    """
    from keras import ops

    batch, per_image = shape[0], int(np.prod(shape[1:]))
    pairs = (per_image + 1) // 2
    key = ops.convert_to_tensor(key, "uint32")
    counter = ops.cast(ops.reshape(ops.arange(batch * pairs, dtype="int32"), (batch, pairs)), "uint32")
    bits = _hash32(ops.add(_hash32(ops.bitwise_xor(counter, key[0])), key[1]))
    low = ops.cast(ops.bitwise_and(bits, ops.convert_to_tensor(np.uint32(0xFFFF))), "int32")
    high = ops.cast(ops.right_shift(bits, 16), "int32")
    radius = ops.take(_BOX_MULLER_RADIUS, low)
    cos, sin = ops.take(_BOX_MULLER_COS, high), ops.take(_BOX_MULLER_SIN, high)
    normal = ops.concatenate([radius * cos, radius * sin], axis=1)
    return ops.reshape(normal[:, :per_image], shape)


def apply_augmentation(images, landmarks, visible, params, mirror_index, fill_mode="constant", fill_value=0.0):
    """Apply sampled augmentation parameters to a batch, in keras.ops.

    Pure and shape-static: it can run eagerly, under ``jax.jit`` or XLA
    ``tf.function``, in a data loader or inside a training step.

    Args:
        images: uint8 or float (B, S, S, C), 0..255.
        landmarks: float32 (B, K, 2) normalised crop coordinates.
        visible: bool (B, K).
        params: dict from ``Augmenter.sample_params``: ``points``, ``warp``
            (B, 2, 3); ``flip`` bool (B,); ``contrast``, ``brightness``,
            ``noise_std`` (B,); ``occlusion`` (B, 4) pixel rectangles
            ``[x0, y0, x1, y1]`` (empty: none), ``occlusion_gray``,
            ``occlusion_std`` (B,); ``noise_key`` uint32 (2,), or None when
            no image gets noise or a patch.
        mirror_index: int (K,) the scheme's mirror permutation.
        fill_mode, fill_value: see ``warp_images``.

    Returns:
        ``(images, landmarks, visible)``: float32 0..255, float32, bool.
    """
    from keras import ops

    images = ops.convert_to_tensor(images)
    batch, height, width, channels = images.shape
    # Geometry: one warp, the same map for the points, identities swapped on flips.
    out = warp_images(images, params["warp"], fill_mode, fill_value)
    points = ops.convert_to_tensor(landmarks, "float32")
    matrix = ops.convert_to_tensor(params["points"], "float32")
    points = ops.einsum("bij,bkj->bki", matrix[:, :, :2], points) + matrix[:, None, :, 2]
    num_points = points.shape[1]
    identity = np.arange(num_points, dtype=np.int32)
    mirrored = ops.convert_to_tensor(np.asarray(mirror_index, np.int32))
    order = ops.where(ops.convert_to_tensor(params["flip"])[:, None], mirrored[None, :], identity[None, :])
    points = ops.take_along_axis(points, ops.repeat(order[:, :, None], 2, axis=2), axis=1)
    was_visible = ops.take_along_axis(ops.cast(visible, "int32"), order, axis=1) > 0
    inside = ops.all(ops.logical_and(points >= 0.0, points <= 1.0), axis=-1)
    visible_out = ops.logical_and(was_visible, inside)

    # Photometric: contrast about the image mean, brightness, noise, occlusion.
    per_image = lambda name: ops.reshape(ops.convert_to_tensor(params[name], "float32"), (-1, 1, 1, 1))  # noqa: E731
    mean = ops.mean(out, axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * per_image("contrast") + mean + per_image("brightness")
    if params.get("noise_key") is not None:
        normal = gaussian_noise(params["noise_key"], (batch, height, width, channels))
        out = out + normal * per_image("noise_std")
        rect = ops.convert_to_tensor(params["occlusion"], "float32")
        centres_x = np.arange(width, dtype=np.float32) + 0.5
        centres_y = np.arange(height, dtype=np.float32) + 0.5
        in_x = ops.logical_and(centres_x[None, :] >= rect[:, 0:1], centres_x[None, :] < rect[:, 2:3])
        in_y = ops.logical_and(centres_y[None, :] >= rect[:, 1:2], centres_y[None, :] < rect[:, 3:4])
        patch_mask = ops.logical_and(in_y[:, :, None, None], in_x[:, None, :, None])
        patch = per_image("occlusion_gray") + normal * per_image("occlusion_std")
        out = ops.where(patch_mask, patch, out)
    out = ops.clip(out, 0.0, 255.0)
    return out, points, visible_out
