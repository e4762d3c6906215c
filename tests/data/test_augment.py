"""Augmentation on real faces: the image and its landmarks move together.

A small magenta disc is drawn on a real 300-W / YouTube68 face crop at a
landmark; after augmentation the disc must sit where the transformed landmark
says, for every geometric transform alone and all of them together.  The settings string and
the maths on synthetic arrays are tested in ``tests/unit/test_augment.py``.
"""

import csv

import cv2
import numpy as np
import pytest

from facelandmarks.data import faces
from facelandmarks.data.augment.augmenter import Augmenter
from facelandmarks.data.augment.config import AugmentConfig
from facelandmarks.data.augment.geometry import affine_matrices, apply_augmentation, warp_images
from facelandmarks.landmarks import IBUG68, mirror_landmarks

pytestmark = pytest.mark.data

SIZE = 128
MARKER_RADIUS = 2.5
# Pixels between a marker's centroid after augmentation and its transformed landmark.  Bilinear
# resampling keeps a disc's centroid to about 0.1 px; a half-pixel convention slip (a wrong
# rotation centre moves flipped points by a whole pixel) does not pass.
MARKER_TOLERANCE = 0.35
# Landmarks that carry the marker, one per face: eye corners, nose, mouth corners.
MARKED = (36, 45, 39, 42, 30, 48, 54, 33)


def read_pts(path):
    body = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def load_rgb(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return image[..., ::-1].copy()


def magenta_score(images):
    """How magenta each pixel is: min(R - G, B - G), 0 for skin, hair, black fill."""
    images = np.asarray(images, np.float32)
    return np.clip(np.minimum(images[..., 0] - images[..., 1], images[..., 2] - images[..., 1]), 0, None)


def crop(image, points):
    box = faces.crop_box_from_landmarks(points)
    return faces.crop_face(image, box, SIZE), faces.points_to_crop(points, box)


@pytest.fixture(scope="module")
def real_faces(data_dir):
    """Eight real face crops (four 300-W AFW, four YouTube68) with no magenta of their own."""
    crops, uvs = [], []
    for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:8]:
        image_crop, uv = crop(load_rgb(pts.with_suffix(".jpg")), read_pts(pts))
        if magenta_score(image_crop).max() < 30 and len(crops) < 4:
            crops.append(image_crop), uvs.append(uv)
    folder = data_dir / "youtube68"
    with open(folder / "training_frames_keypoints.csv") as handle:
        rows = list(csv.reader(handle))[1:12]
    for row in rows:
        points = np.array(row[1:], np.float64).reshape(-1, 2)
        image_crop, uv = crop(load_rgb(folder / "training" / row[0]), points)
        if magenta_score(image_crop).max() < 30 and len(crops) < 8:
            crops.append(image_crop), uvs.append(uv)
    assert len(crops) == 8, "not enough magenta-free faces to mark"
    return np.stack(crops), np.stack(uvs).astype(np.float32), np.ones((8, 68), bool)


def draw_markers(images, landmarks, indices):
    """A magenta disc at landmark ``indices[i]`` of image ``i``.

    Returns the marked images and the landmarks with each marked point moved
    onto its disc's exact centroid (the pixel disc is up to 0.3 px off its
    centre), so a half-pixel slip of the augmentation shows.
    """
    marked, snapped = images.copy(), landmarks.copy()
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    for i, index in enumerate(indices):
        px, py = landmarks[i, index] * SIZE - 0.5
        disc = (xs - px) ** 2 + (ys - py) ** 2 <= MARKER_RADIUS**2
        marked[i][disc] = (255, 0, 255)
        snapped[i, index] = (np.array([xs[disc].mean(), ys[disc].mean()]) + 0.5) / SIZE
    return marked, snapped


def marker_centres(images):
    """Centroid (pixels) of the magenta in each image; NaN where there is none."""
    centres = []
    for score in magenta_score(images):
        weight = np.where(score > 30, score, 0.0)
        if weight.sum() == 0:
            centres.append((np.nan, np.nan))
            continue
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        centres.append(((weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()))
    return np.array(centres)


def exact_params(batch, rotation=0.0, translate=(0.0, 0.0), flip=False):
    """No photometric change and the same given geometry for every image."""
    params = Augmenter(AugmentConfig.none(), IBUG68).sample_params(batch, SIZE)
    flips = np.full(batch, flip)
    points, warp = affine_matrices(
        np.full(batch, rotation), np.ones(batch), np.tile(translate, (batch, 1)), np.zeros((batch, 2)), flips, SIZE
    )
    params.update(points=points, warp=warp, flip=flips)
    return params


def test_markers_sit_on_their_landmarks_before_augmentation(real_faces):
    images, landmarks, _ = real_faces
    marked, snapped = draw_markers(images, landmarks, MARKED)
    found = marker_centres(marked)
    np.testing.assert_allclose(found, snapped[np.arange(8), MARKED] * SIZE - 0.5, atol=1e-4)
    expected = landmarks[np.arange(8), MARKED] * SIZE - 0.5
    assert np.abs(found - expected).max() < 0.3


GEOMETRIC = {
    "rotation": "rotation=25@1",
    "scale": "scale=0.3@1",
    "translate": "translate=0.1@1",
    "shear": "shear=15@1",
    "flip": "flip=1",
    "all": "rotation=20@1,scale=0.2@1,translate=0.08@1,shear=10@1,flip=0.5",
}


@pytest.mark.backend
@pytest.mark.parametrize("name", GEOMETRIC)
def test_marker_follows_its_landmark(real_faces, name):
    images, landmarks, visible = real_faces
    augmenter = Augmenter(AugmentConfig.parse(GEOMETRIC[name]), IBUG68, seed=3)
    params = augmenter.sample_params(8, SIZE)
    marked, landmarks = draw_markers(images, landmarks, MARKED)
    out_images, out_landmarks, out_visible = augmenter.apply(marked, landmarks, visible, params)
    flipped = params["flip"]
    # After a flip the marked point carries its mirror's index (the subject's right eye corner
    # becomes the left one of the mirrored face).
    new_index = np.where(flipped, IBUG68.mirror_array[list(MARKED)], MARKED)
    expected = out_landmarks[np.arange(8), new_index] * SIZE - 0.5
    found = marker_centres(out_images)
    assert out_visible[np.arange(8), new_index].all()
    error = np.linalg.norm(found - expected, axis=1)
    assert error.max() < MARKER_TOLERANCE, f"{name}: marker off its landmark by {np.round(error, 2)} px"
    moved = np.linalg.norm(expected - (landmarks[np.arange(8), MARKED] * SIZE - 0.5), axis=1)
    assert np.median(moved) > 2.0, f"{name}: the transform hardly moved the points ({moved})"
    if name == "flip":
        assert flipped.all()
        # Point 36 (subject's right eye, image left) is now index 45, on the image's right.
        assert new_index[0] == 45 and found[0, 0] > SIZE / 2
        # ... and index 36 now holds the other eye's corner, far from the marker.
        assert np.linalg.norm(out_landmarks[0, 36] * SIZE - 0.5 - found[0]) > 10
    if name == "all":
        assert 0 < flipped.sum() < 8


@pytest.mark.backend
def test_points_pushed_outside_become_invisible(real_faces):
    images, landmarks, visible = real_faces
    visible = visible.copy()
    visible[:, 27] = False  # nose bridge: unlabelled, must stay invisible though it stays inside
    augmenter = Augmenter(AugmentConfig.none(), IBUG68)
    jaw_right = 14  # on the subject's left cheek: image right, pushed past the edge
    marked, landmarks = draw_markers(images, landmarks, [jaw_right] * 4 + [30] * 4)
    out_images, out_landmarks, out_visible = augmenter.apply(
        marked, landmarks, visible, exact_params(8, translate=(0.4, 0.0))
    )
    np.testing.assert_allclose(out_landmarks, landmarks + [0.4, 0.0], atol=1e-5)
    inside = np.all((out_landmarks >= 0) & (out_landmarks <= 1), axis=-1)
    assert not inside.all() and inside.any()
    np.testing.assert_array_equal(out_visible, inside & visible)
    assert not out_visible[:, 27].any()
    assert not out_visible[:4, jaw_right].any()
    found = marker_centres(out_images)
    assert np.isnan(found[:4]).all(), "markers pushed out of the crop are still in the image"
    np.testing.assert_allclose(found[4:], out_landmarks[4:, 30] * SIZE - 0.5, atol=MARKER_TOLERANCE)


@pytest.mark.backend
def test_random_geometry_keeps_the_visibility_rule(real_faces):
    images, landmarks, visible = real_faces
    visible = visible.copy()
    visible[::2, 60:] = False
    augmenter = Augmenter(AugmentConfig.parse("translate=0.3@1,scale=0.4@1,flip=0.5"), IBUG68, seed=5)
    params = augmenter.sample_params(8, SIZE)
    _, out_landmarks, out_visible = augmenter.apply(images, landmarks, visible, params)
    order = np.where(params["flip"][:, None], IBUG68.mirror_array[None], np.arange(68)[None])
    inside = np.all((out_landmarks >= 0) & (out_landmarks <= 1), axis=-1)
    np.testing.assert_array_equal(out_visible, np.take_along_axis(visible, order, 1) & inside)
    assert (~inside).any()


@pytest.mark.backend
def test_exact_quarter_turn_and_flip_match_numpy_and_landmarks_py(real_faces):
    images, landmarks, visible = real_faces
    augmenter = Augmenter(AugmentConfig.none(), IBUG68)
    turned, turned_landmarks, _ = augmenter.apply(images, landmarks, visible, exact_params(8, rotation=90))
    # Clockwise on screen: the image rotates like np.rot90(k=-1) and (u, v) -> (1 - v, u).
    np.testing.assert_allclose(turned, np.rot90(images, k=-1, axes=(1, 2)), atol=1e-2)
    np.testing.assert_allclose(turned_landmarks, np.stack([1 - landmarks[..., 1], landmarks[..., 0]], -1), atol=1e-6)
    flipped, flipped_landmarks, flipped_visible = augmenter.apply(
        images, landmarks, visible, exact_params(8, flip=True)
    )
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    reference_landmarks, reference_visible = mirror_landmarks(landmarks, visible, IBUG68)
    np.testing.assert_allclose(flipped_landmarks, reference_landmarks, atol=1e-6)
    np.testing.assert_array_equal(flipped_visible, reference_visible)


PHOTOMETRIC = {
    "brightness": "brightness=0.3@1",
    "contrast": "contrast=0.5@1",
    "noise": "noise=20@1",
    "occlusion": "occlusion=1,occlusion_size=0.5",
}


@pytest.mark.backend
@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_transforms_leave_landmarks_alone(real_faces, name):
    images, landmarks, visible = real_faces
    augmenter = Augmenter(AugmentConfig.parse(PHOTOMETRIC[name]), IBUG68, seed=11)
    params = augmenter.sample_params(8, SIZE)
    out, out_landmarks, out_visible = augmenter.apply(images, landmarks, visible, params)
    np.testing.assert_array_equal(out_landmarks, landmarks)
    np.testing.assert_array_equal(out_visible, visible)  # also under occlusion patches
    source = images.astype(np.float32)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    assert np.abs(out - source).mean() > 1.0
    if name == "brightness":
        shifted = source + params["brightness"][:, None, None, None]
        unclipped = (shifted > 0) & (shifted < 255)
        np.testing.assert_allclose(out[unclipped], shifted[unclipped], atol=1e-3)
    if name == "contrast":
        mean = source.mean(axis=(1, 2, 3), keepdims=True)
        expected = np.clip((source - mean) * params["contrast"][:, None, None, None] + mean, 0, 255)
        np.testing.assert_allclose(out, expected, atol=1e-2)
    if name == "noise":
        residual = (out - source)[(source > 60) & (source < 195)].reshape(-1)
        assert abs(residual.mean()) < 0.5
        per_image = [(out[i] - source[i])[(source[i] > 60) & (source[i] < 195)].std() for i in range(8)]
        np.testing.assert_allclose(per_image, params["noise_std"], rtol=0.05, atol=0.05)
    if name == "occlusion":
        ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
        for i, (x0, y0, x1, y1) in enumerate(params["occlusion"]):
            patch = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
            assert patch.sum() > 0.25**2 * 0.5**2 * SIZE**2 * 0.2  # at least partly inside the crop
            np.testing.assert_array_equal(out[i][~patch], source[i][~patch])
            assert np.abs(out[i][patch].mean() - params["occlusion_gray"][i]) < 8


@pytest.mark.backend
@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect"])
def test_warp_agrees_with_keras_affine_transform(real_faces, fill_mode):
    from keras import ops

    images = real_faces[0].astype(np.float32)
    rng = np.random.default_rng(0)
    _, warp = affine_matrices(
        rng.uniform(-30, 30, 8), rng.uniform(0.7, 1.3, 8), rng.uniform(-0.2, 0.2, (8, 2)),
        rng.uniform(-10, 10, (8, 2)), rng.random(8) < 0.5, SIZE,
    )
    ours = np.asarray(ops.convert_to_numpy(warp_images(images, warp, fill_mode, 0.0)))
    transform = np.concatenate([warp.reshape(8, 6), np.zeros((8, 2), np.float32)], axis=1)
    reference = ops.convert_to_numpy(ops.image.affine_transform(images, transform, fill_mode=fill_mode))
    assert np.abs(ours - reference).max() < 0.01


@pytest.mark.backend
def test_same_seed_same_batches_other_seed_other_batches(real_faces):
    images, landmarks, visible = real_faces
    config = AugmentConfig.parse("default,noise=10@1,occlusion=0.5")
    first, again, other = (Augmenter(config, "ibug68", seed=s) for s in (7, 7, 8))
    out_first, out_again, out_other = (a(images, landmarks, visible) for a in (first, again, other))
    for x, y in zip(out_first, out_again):
        np.testing.assert_array_equal(x, y)
    assert np.abs(out_first[0] - out_other[0]).mean() > 1.0
    assert np.abs(out_first[1] - out_other[1]).max() > 0.01
    next_batch = first(images, landmarks, visible)
    assert np.abs(next_batch[0] - out_first[0]).mean() > 1.0


@pytest.mark.backend
def test_none_passes_batches_through_and_bad_batches_are_refused(real_faces):
    images, landmarks, visible = real_faces
    augmenter = Augmenter(AugmentConfig.none(), IBUG68)
    out, out_landmarks, out_visible = augmenter(images, landmarks, visible)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(out_landmarks, landmarks)
    np.testing.assert_array_equal(out_visible, visible)
    with pytest.raises(ValueError, match=r"\(8, 68, 2\).*\(8, 15, 2\)"):
        augmenter(images, landmarks[:, :15], visible)
    with pytest.raises(ValueError, match="square"):
        augmenter(images[:, :100], landmarks, visible)
    with pytest.raises(ValueError, match="visible must be bool"):
        augmenter(images, landmarks, visible.astype(np.float32))


@pytest.mark.backend
def test_apply_augmentation_runs_eagerly_like_the_compiled_path(real_faces):
    images, landmarks, visible = real_faces
    config = AugmentConfig()
    compiled = Augmenter(config, IBUG68, seed=2)
    params = compiled.sample_params(8, SIZE)
    fast = compiled.apply(images, landmarks, visible, params)
    eager = apply_augmentation(images, landmarks, visible, params, IBUG68.mirror_array)
    from keras import ops

    np.testing.assert_allclose(ops.convert_to_numpy(eager[0]), fast[0], atol=1e-2)
    np.testing.assert_allclose(ops.convert_to_numpy(eager[1]), fast[1], atol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(eager[2]), fast[2])
