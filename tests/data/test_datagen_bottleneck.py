"""datagen.py bottleneck: frozen-backbone features replace the images, every other key is kept."""

import numpy as np
import pytest

from facelandmarks.cli.datagen import main

pytestmark = [pytest.mark.data, pytest.mark.backend]


@pytest.fixture(scope="module")
def dlib_faces(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bottleneck") / "dlib48"
    folder = data_dir / "samples" / "dlib" / "examples" / "faces"
    args = ["prepare", "dlibxml", "--source", str(folder / "testing_with_face_landmarks.xml"), "--size", "48",
            "--out", str(out), "--test-fraction", "0.5", "--quiet"]
    assert main(args) == 0
    return out


def test_bottleneck_keeps_every_key_but_images(dlib_faces, data_dir, tmp_path, capsys):
    weights = data_dir.parent / "weights" / "mobilenet_v2_imagenet_notop.weights.h5"
    source = f"{dlib_faces}_train.npz"
    out = tmp_path / "train_mobilenetv2.npz"
    assert main(["bottleneck", "--backbone", "mobilenetv2", "--data", source, "--out", str(out),
                         "--weights", str(weights), "--batch-size", "8"]) == 0
    with np.load(source, allow_pickle=False) as data:
        before = {k: data[k] for k in data.files}
    with np.load(out, allow_pickle=False) as data:
        after = {k: data[k] for k in data.files}
    assert set(after) == (set(before) - {"images"}) | {"features", "backbone"}
    for key in set(before) - {"images"}:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    n = len(before["images"])
    assert after["features"].dtype == np.float32 and after["features"].shape == (n, 1280)
    assert str(after["backbone"]) == "mobilenetv2"
    assert np.isfinite(after["features"]).all() and after["features"].std(axis=0).mean() > 0
    # a face and its mirror are different inputs: their features differ
    assert not np.allclose(after["features"][0], after["features"][1])
    # the ImageNet weights were really loaded: random weights give other features
    random = tmp_path / "random.npz"
    assert main(["bottleneck", "--backbone", "mobilenetv2", "--data", source, "--out", str(random),
                         "--weights", "none", "--batch-size", "8"]) == 0
    with np.load(random, allow_pickle=False) as data:
        assert not np.allclose(data["features"], after["features"])
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "1280 per face from mobilenetv2" in capsys.readouterr().out
    # a bottleneck file has no images to extract from
    assert main(["bottleneck", "--backbone", "mobilenetv2", "--data", str(out), "--out", str(tmp_path / "again.npz"),
                         "--weights", "none"]) == 2
    assert "has no images" in capsys.readouterr().err
