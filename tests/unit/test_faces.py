"""Crop boxes and the pixel <-> crop coordinate maps on synthetic images (dlib on real photos: ``tests/data/test_faces.py``)."""

import re

import numpy as np
import pytest

from facelandmarks.data import faces


def test_crop_round_trip_and_border():
    box = np.array([-20.0, 10.0, 80.0, 110.0], np.float32)
    pts = np.array([[0.0, 10.0], [50.5, 60.25]])
    back = faces.points_from_crop(faces.points_to_crop(pts, box), box)
    np.testing.assert_allclose(back, pts, atol=1e-4)
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = faces.crop_face(image, box, 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert (crop == 200).all()  # outside the image replicates the border


@pytest.mark.parametrize("box", [[600, 150, 980, 530], [-100, -50, 500, 550], [1700, 900, 2100, 1300],
                                 [-900, -900, -500, -500], [60, 60, 160, 160]])
def test_a_large_face_shrinks_only_its_region_and_looks_as_from_the_whole_photo(box):
    """Crops larger than twice the output shrink only the box's part of the photo: the same picture as shrinking
    the whole one up to the phase of the averaging grid; boxes partly or wholly outside the photo replicate its
    border either way; small reductions are the same pixels."""
    yy, xx = np.mgrid[0:1080, 0:1920]
    photo = np.stack([(xx / 7.5) % 256, (yy / 4.3) % 256, 128 + 100 * np.sin(xx / 23.0 + yy / 31.0)], -1).astype(np.uint8)
    region, whole = faces.crop_face(photo, box, 128), faces.crop_face(photo, box, 128, whole_photo=True)
    assert region.shape == whole.shape == (128, 128, 3)
    difference = np.abs(region.astype(int) - whole)
    if box[2] - box[0] <= 256:
        assert not difference.any()
    elif box[2] < 0:  # wholly outside: the photo's corner pixel, replicated
        assert (region == photo[0, 0]).all()
    else:
        assert difference.any()  # the region path was taken
        # whole k x k blocks against averaging to twice the output: 0.16-0.30 grey levels on average, at most 2;
        # a region cut 1 px off its origin: 0.63-1.02, up to 4-5 at the 99th percentile
        assert difference.mean() < 0.45 and np.percentile(difference, 99) <= 2


def test_a_cut_short_photo_is_one_line_and_the_image_libraries_stay_quiet(tmp_path, capfd):
    """A truncated JPEG once came back half grey (and marked), with libjpeg's "Premature end of JPEG file"
    printed twice; a truncated PNG printed libpng's error before ours."""
    import cv2

    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for suffix, says in ((".jpg", "truncated JPEG"), (".png", "truncated PNG")):
        data = cv2.imencode(suffix, pixels)[1].tobytes()
        whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
        whole.write_bytes(data)
        cut.write_bytes(data[: len(data) * 9 // 10])
        assert faces.read_rgb(whole).shape == (120, 160, 3)
        with pytest.raises(ValueError, match=f"^{cut}: cannot read image: {says}"):
            faces.as_photo(cut)
    unended = tmp_path / "unended.jpg"  # every pixel there, only the 2-byte end marker missing: OpenCV's file reader
    unended.write_bytes((tmp_path / "whole.jpg").read_bytes()[:-2])  # takes it, so the photo reader does too
    assert np.array_equal(faces.read_rgb(unended), faces.read_rgb(tmp_path / "whole.jpg"))
    assert capfd.readouterr().err == ""


def test_decoders_on_several_threads_leave_stderr_as_it_was(tmp_path):
    """Each decode borrows the process's stderr; threads once swapped it for one another's temporary files."""
    import os
    import threading

    import cv2

    path = tmp_path / "p.jpg"
    path.write_bytes(cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    before = os.fstat(2)
    threads = [threading.Thread(target=lambda: [faces.read_rgb(path) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_empty_box_is_an_error():
    with pytest.raises(ValueError, match="empty or non-finite crop box"):
        faces.crop_face(np.zeros((10, 10, 3), np.uint8), [5, 5, 5, 9], 16)


def test_detection_from_crop_box_inverts_crop_box_from_detection():
    det = np.array([100.0, 50.0, 180.0, 130.0], np.float32)
    np.testing.assert_allclose(faces.detection_from_crop_box(faces.crop_box_from_detection(det)), det, atol=1e-3)


def test_a_photo_is_an_image_array_or_the_path_of_an_image_file(tmp_path):
    import cv2

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # red on the left, blue on the right
    rgb[:, 20:] = (0, 0, 255)
    path = tmp_path / "flag.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    for given in (path, str(path)):
        assert np.array_equal(faces.as_photo(given), rgb)
    assert np.array_equal(faces.as_photo(rgb), rgb) and faces.as_photo(rgb[..., :1]).shape == (20, 30)
    assert faces.as_photo(np.dstack([rgb, rgb[..., :1]])).shape == (20, 30, 3)  # RGBA: the alpha channel dropped
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'missing.jpg'}: no such photo"):
        faces.as_photo(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match=f"^{text}: cannot read image"):
        faces.as_photo(str(text))
    with pytest.raises(ValueError, match="expected a uint8 image, got float32"):
        faces.as_photo(rgb.astype(np.float32))
    for shape in [(50,), (20, 30, 2), (0, 30, 3), (2, 20, 30, 3)]:
        with pytest.raises(ValueError, match=rf"expected an image of shape .*got \({shape[0]},"):
            faces.as_photo(np.zeros(shape, np.uint8))


def test_a_batch_or_a_list_of_photos_is_refused_saying_one_photo_a_call():
    """predict([a, b]) said 'expected a uint8 image, got <U9' for two paths and named a 4-D shape for a batch."""
    rgb = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^expected an image of shape \(H, W\) or \(H, W, C\), C 1, 3 or 4, got "
                                         r"\(2, 20, 30, 3\): one photo a call$"):
        faces.as_photo(np.stack([rgb, rgb]))
    for photos in (["a.jpg", "b.jpg"], (rgb, rgb), [rgb]):
        with pytest.raises(ValueError, match=rf"^expected one photo \(a uint8 array or an image file's path\), got a "
                                             rf"{type(photos).__name__} of {len(photos)}: one photo a call$"):
            faces.as_photo(photos)


def test_bytes_and_float_images_are_refused_saying_what_to_pass():
    """A photo file's bytes said 'expected a uint8 image, got |S...' and a float image (matplotlib's imread of a PNG:
    float32 in 0..1) named its dtype only."""
    import cv2

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # red on the left: the hint's decoding gives RGB
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV encodes BGR
    assert ok
    with pytest.raises(ValueError, match=r"^expected one photo \(a uint8 array or an image file's path\), got bytes: "
                                         r"decode them first, e\.g\. cv2\.imdecode\(np\.frombuffer\(data, np\.uint8\), "
                                         r"cv2\.IMREAD_COLOR\)\[\.\.\., ::-1\] \(RGB, turned by the EXIF orientation\)$"):
        faces.as_photo(encoded.tobytes())
    data = encoded.tobytes()  # what the hint says to do gives the photo
    assert np.array_equal(faces.as_photo(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]), rgb)
    with pytest.raises(ValueError, match=r"^expected a uint8 image, got float32: scale it to 0\.\.255 and convert it "
                                         r"first, e\.g\. \(image \* 255\)\.round\(\)\.astype\(np\.uint8\) for values in "
                                         r"0\.\.1$"):
        faces.as_photo(rgb.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"^expected a uint8 image, got uint16: scale it to 0\.\.255 and convert it "
                                         r"first, e\.g\. \(image // 257\)\.astype\(np\.uint8\) for 16-bit values$"):
        faces.as_photo(rgb.astype(np.uint16))


def test_the_conversion_a_refusal_shows_fits_the_images_values():
    """Every dtype but uint16 was told '(image * 255).round().astype(np.uint8) for values in 0..1': an int64 photo (numpy
    arithmetic on a uint8 one) or a float one in 0..255 converted so wraps round to another picture."""
    rgb = np.arange(20 * 30 * 3, dtype=np.int64).reshape(20, 30, 3) % 256
    for image, hint in ((rgb, "image.clip(0, 255).astype(np.uint8) for values in 0..255"),
                        (rgb.astype(np.float32), "image.round().clip(0, 255).astype(np.uint8) for values in 0..255"),
                        (rgb.astype(np.float64) / 255, "(image * 255).round().astype(np.uint8) for values in 0..1"),
                        (rgb > 127, "image.astype(np.uint8) * 255 for a mask")):
        with pytest.raises(ValueError, match=re.escape(f"got {image.dtype}: scale it to 0..255 and convert it first, e.g. "
                                                       f"{hint}") + "$") as refused:
            faces.as_photo(image)
        converted = eval(refused.value.args[0].split("e.g. ")[1].split(" for ")[0], {"np": np, "image": image})
        assert converted.dtype == np.uint8 and faces.as_photo(converted).shape == (20, 30, 3)
        if image.dtype != bool:  # the conversion gives the photo back
            assert np.array_equal(converted, rgb), image.dtype
    with pytest.raises(ValueError, match=r"^expected a uint8 image, got <U5$"):
        faces.as_photo(np.array([["photo"]]))
