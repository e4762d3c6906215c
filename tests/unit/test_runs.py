"""``training.runs.flip_averaged``, the flip test, with a toy detector: no face data, no backend."""

import numpy as np

from facelandmarks.landmarks import Scheme
from facelandmarks.training.runs import flip_averaged

# Two eyes, a nose, two mouth corners. The detector below numbers the points of a row from the left of the image, so
# on a mirrored crop point 0 is the other eye: the mirror permutation swaps 0 and 1, 3 and 4.
SCHEME = Scheme(name="toy5", num_points=5, mirror=(1, 0, 2, 4, 3), norm_points=(0, 1), pupils=None)
SIZE = 16
ROWS = ((0, 1), (2,), (3, 4))  # the points of the eye row, the nose row and the mouth row, top to bottom


def faces(count: int, seed: int):
    """Black crops with one white pixel per point, and the points in crop coordinates at the pixel centres."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, SIZE, SIZE, 3), np.uint8)
    points = np.zeros((count, 5, 2), np.float32)
    for image, face in zip(images, points):
        for row, indices in zip(np.sort(rng.choice(SIZE, 3, replace=False)), ROWS):
            for index, column in zip(indices, np.sort(rng.choice(SIZE, len(indices), replace=False))):
                image[row, column] = 255
                face[index] = ((column + 0.5) / SIZE, (row + 0.5) / SIZE)
    return images, points


def detect(batch: np.ndarray) -> np.ndarray:
    """The points of ``faces``' crops, read from their pixels: exactly mirror-equivariant, with no mirror code."""
    found = np.zeros((len(batch), 5, 2), np.float32)
    for image, face in zip(batch, found):
        rows = [row for row in range(SIZE) if image[row].any()]
        for row, indices in zip(rows, ROWS):
            for index, column in zip(indices, np.flatnonzero(image[row, :, 0])):
                face[index] = ((column + 0.5) / SIZE, (row + 0.5) / SIZE)
    return found


def test_a_mirror_equivariant_detector_keeps_its_points():
    """No swap of left and right, or x un-mirrored to x or to 1 - x - 1 / width, moves the average off the points
    the detector finds on the crops themselves."""
    images, points = faces(6, seed=0)
    np.testing.assert_allclose(detect(images), points, atol=1e-6)  # the detector reads the crops right
    mirrored = detect(images[:, :, ::-1])
    assert np.abs(mirrored - points).max() > 0.1  # and the mirrored crops give other points: a wrong map shows
    np.testing.assert_allclose(flip_averaged(detect, images, SCHEME), points, atol=1e-6)
    flat = flip_averaged(lambda batch: detect(batch).reshape(len(batch), -1), images, SCHEME)  # (M, 2K), x0, y0, ...
    np.testing.assert_allclose(flat, points, atol=1e-6)


def test_a_detector_biased_one_way_is_averaged_with_its_mirror_image():
    """A shift to the right of the image cancels (on the mirrored crop it is a shift to the left of the face); a shift
    down of point 0 (the eye on the left of the image) is shared by it and its mirror twin, point 1."""
    images, points = faces(6, seed=1)

    def biased(batch):
        found = detect(batch)
        found[:, :, 0] += 0.05
        found[:, 0, 1] += 0.04
        return found

    expected = points.copy()
    expected[:, (0, 1), 1] += 0.02
    np.testing.assert_allclose(flip_averaged(biased, images, SCHEME), expected, atol=1e-6)


def test_the_detector_sees_the_batch_then_its_mirror_image_in_one_call():
    images, _ = faces(3, seed=2)
    seen = []

    def recording(batch):
        seen.append(batch.copy())
        return detect(batch)

    flip_averaged(recording, images, SCHEME)
    assert len(seen) == 1 and seen[0].shape == (6, SIZE, SIZE, 3)
    np.testing.assert_array_equal(seen[0][:3], images)
    np.testing.assert_array_equal(seen[0][3:], images[:, :, ::-1])
