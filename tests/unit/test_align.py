"""Aligned face chips (``inference.align``) on synthetic photos: a face drawn in a known place comes back upright."""

import json

import cv2
import numpy as np
import pytest

from facelandmarks import landmarks, scheme_files
from facelandmarks.inference.align import TEMPLATE_112, AlignedFace, align_face, anchors, similarity, template

RNG = np.random.default_rng(0)


def chip_face() -> tuple[np.ndarray, np.ndarray]:
    """A 112-px chip with soft blobs at the template's eyes, nose and mouth corners, and iBUG-68 points whose
    anchors lie exactly on the template (each eye's six contour points on a circle around its centre)."""
    points = RNG.uniform(20, 92, (68, 2))
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    ring = 6.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points[36:42], points[42:48] = TEMPLATE_112[0] + ring, TEMPLATE_112[1] + ring
    points[30], points[48], points[54] = TEMPLATE_112[2], TEMPLATE_112[3], TEMPLATE_112[4]
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float64)
    chip = np.zeros((112, 112, 3))
    for (x, y), colour in zip(TEMPLATE_112, ([255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255])):
        chip += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 6.0**2))[..., None] * colour
    return np.clip(chip, 0, 255).astype(np.uint8), points


def turn(angle_deg: float, scale: float, shift) -> np.ndarray:
    """(2, 3) rotation by ``angle_deg`` and ``scale``, then ``shift``."""
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def test_similarity_recovers_a_rotation_scale_and_shift_and_never_mirrors():
    source = RNG.normal(size=(7, 2)) * 40
    matrix = turn(37.0, 1.7, (12.0, -5.0))
    assert np.allclose(similarity(source, source @ matrix[:, :2].T + matrix[:, 2]), matrix)
    mirrored = source * [-1, 1]
    fitted = similarity(source, mirrored)
    assert np.linalg.det(fitted[:, :2]) >= 0  # a mirror image is no similarity: the best one without it
    with pytest.raises(ValueError, match="coincide"):
        similarity(np.ones((3, 2)), source[:3])


@pytest.mark.parametrize("angle", [0.0, 30.0, -60.0, 170.0])
def test_a_turned_and_enlarged_face_comes_back_upright_in_place(angle):
    chip, points = chip_face()
    to_photo = turn(angle, 3.0, (450.0, 500.0))  # a 336-px wide face in a 900 x 1000 photo, turned
    photo = cv2.warpAffine(chip, to_photo, (900, 1000), flags=cv2.INTER_CUBIC)
    photo_points = points @ to_photo[:, :2].T + to_photo[:, 2]
    face = align_face(photo, photo_points, "ibug68", size=112)
    assert face.image.shape == (112, 112, 3) and face.image.dtype == np.uint8
    assert np.allclose(face.points, points, atol=1e-6)  # every point where it was drawn
    assert np.allclose(face.to_photo(face.points), photo_points, atol=1e-6)
    assert np.abs(face.image.astype(float) - chip).mean() < 0.3  # the blobs where they were (0.02-0.05; 1 px off: 0.66)
    record = json.loads(json.dumps(face.to_json()))
    assert record["size"] == 112 and np.allclose(record["matrix"], face.matrix, atol=1e-5)


def test_size_scales_and_padding_widens_the_view_about_the_same_centre():
    chip, points = chip_face()
    groups, at112 = template("ibug68")
    _, at224 = template("ibug68", size=224)
    assert np.allclose((at224 + 0.5), 2 * (at112 + 0.5))
    _, padded = template("ibug68", size=112, padding=0.25)
    centre = np.array([56.0, 56.0]) - 0.5
    assert np.allclose(padded - centre, (at112 - centre) / 1.5)
    face = align_face(chip, points, size=168, padding=0.25)  # 112 / 1.5 * 1.5: the anchors as far apart as at 112
    assert np.allclose(np.linalg.norm(face.points[45] - face.points[36]), np.linalg.norm(points[45] - points[36]))
    assert groups[0] == tuple(range(36, 42)) and len(groups) == 5


def test_a_large_reduction_averages_instead_of_aliasing():
    """A 1-px checkerboard face nine times the chip's size: area averaging gives grey, bare warping a pattern."""
    board = ((np.indices((2000, 2000)).sum(axis=0) % 2) * 255).astype(np.uint8)
    _, points = chip_face()
    to_photo = turn(20.0, 9.3, (700.0, 300.0))  # the whole chip inside the board
    face = align_face(board, points @ to_photo[:, :2].T + to_photo[:, 2], size=112)  # gray input: one channel back
    assert face.image.shape == (112, 112, 1)
    assert abs(face.image.mean() - 127.5) < 3 and face.image.std() < 8
    bare = cv2.warpAffine(board, face.matrix, (112, 112), flags=cv2.INTER_LINEAR)
    assert bare.std() > 3 * face.image.std()  # what the shrinking is there for


def test_other_markups_align_by_their_eye_and_mouth_regions_or_say_what_they_lack(tmp_path):
    groups, where = anchors("muct76")  # pupils and the mouth's centre: three anchors
    assert groups[:2] == [(31,), (36,)] and len(groups) == 3
    assert anchors("kaggle15")[0][:2] == [(1,), (0,)]  # its pupils are listed left first: taken by their regions
    kaggle = np.zeros((15, 2))
    kaggle[[1, 4, 5]] = [[30.0, 40.0], [36.0, 40.0], [24.0, 40.0]]  # right eye centre and corners (image left)
    kaggle[[0, 2, 3]] = [[66.0, 40.0], [60.0, 40.0], [72.0, 40.0]]
    kaggle[10], kaggle[[12, 11, 13, 14]] = [48.0, 58.0], [[36.0, 75.0], [60.0, 75.0], [48.0, 72.0], [48.0, 80.0]]
    kaggle[6:10] = [[58.0, 30.0], [76.0, 30.0], [38.0, 30.0], [20.0, 30.0]]
    chip = align_face(np.zeros((96, 96, 3), np.uint8), kaggle, "kaggle15", size=112)
    assert np.allclose(chip.points[[1, 0]], TEMPLATE_112[:2], atol=3.0)  # upright, eyes in place: not squashed
    assert 0.9 < np.sqrt(np.linalg.det(chip.matrix[:, :2])) < 1.2
    assert np.allclose(where[2], TEMPLATE_112[3:].mean(axis=0))
    assert anchors("wflw98")[0][0] == (96,)
    file = tmp_path / "face5.json"
    file.write_text(json.dumps({"name": "face5-test", "points": ["r", "l", "n", "mr", "ml"],
                                "pairs": [["r", "l"], ["mr", "ml"]], "normalize": ["r", "l"],
                                "regions": {"eyes": ["r", "l"], "mouth": ["mr", "ml"]}}))
    scheme = scheme_files.load_scheme(file)
    with pytest.raises(ValueError, match="scheme 'face5-test': aligning a face needs its eyes and mouth: regions"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.zeros((5, 2)), scheme)
    regions = {"right_eye": ["r"], "left_eye": ["l"], "mouth": ["mr", "ml"]}
    file.write_text(json.dumps({**json.loads(file.read_text()), "name": "face5-regions", "regions": regions}))
    scheme = scheme_files.load_scheme(file)
    eyes_mouth = np.array([[20.0, 20], [40, 20], [30, 30], [24, 40], [36, 40]])
    face = align_face(np.zeros((60, 60, 3), np.uint8), eyes_mouth, scheme, size=112)
    assert np.allclose(face.points[:2], TEMPLATE_112[:2], atol=2.0)  # two eyes and a mouth: nearly exact
    assert landmarks.get_scheme("face5-regions") is scheme


@pytest.mark.parametrize("size, padding, points, problem", [
    # the size's and padding's lines named no parameter ('an aligned face must be a whole number ...')
    (8, 0.0, np.zeros((68, 2)), "^size must be a whole number of at least 16 px .*, got 8$"),
    (112.5, 0.0, np.zeros((68, 2)), "^size must be a whole number"),
    (112, -0.1, np.zeros((68, 2)), r"^padding must be 0 or more \(.*\), got -0.1$"),
    (112, 0.0, np.zeros((5, 2)), "68 points; got an array of shape"),
    (112, 0.0, np.full((68, 2), np.nan), "missing"),
])
def test_bad_requests_say_what_is_wrong(size, padding, points, problem):
    with pytest.raises(ValueError, match=problem):
        align_face(np.zeros((50, 50, 3), np.uint8), points, "ibug68", size=size, padding=padding)


def test_an_aligned_face_is_a_plain_record():
    face = AlignedFace(np.zeros((16, 16, 3), np.uint8), np.array([[2.0, 0, 1], [0, 2.0, 3]]), np.zeros((68, 2)))
    assert np.allclose(face.to_photo([[1.0, 3.0]]), [[0.0, 0.0]])


def test_predictor_align_names_its_size_and_padding_before_looking_for_faces():
    # a photo without a face took any size in silence (an empty list); with faces the line named no parameter
    from facelandmarks.inference.predictor import Predictor

    predictor = Predictor.load()
    wall = np.full((80, 80, 3), 128, np.uint8)
    assert predictor.align(wall) == []
    with pytest.raises(ValueError, match="^size must be a whole number of at least 16 px"):
        predictor.align(wall, size=8)
    with pytest.raises(ValueError, match="^padding must be 0 or more"):
        predictor.align(wall, padding=float("nan"))
