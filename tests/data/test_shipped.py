"""The shipped-model folder: a run turned into float16 weights + settings loads like the run itself."""

import json

import numpy as np
import pytest

from facelandmarks.cli.models import main as models_main
from facelandmarks.data import npz
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.shipped import WEIGHTS_ENV, default_model_dir

pytestmark = [pytest.mark.data, pytest.mark.backend]


def test_a_shipped_run_predicts_like_the_run_and_is_the_default(tiny_run, tiny_ibug, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "weights" / "tiny"
    assert models_main(["--ship", str(tiny_run), "--to", str(dest)]) == 0
    config = json.loads((dest / "config.json").read_text())
    assert config["weights"] == "none" and "data" not in config and config["shipped_from"] == tiny_run.name
    # the data file stays behind; its datasets travel, so --init can tell whether a run validates on faces it saw
    trained = json.loads((tiny_run / "config.json").read_text())["data"]
    assert config["trained_on"] == sorted(set(npz.load_npz(trained)["source"].astype(str))) != []
    images = npz.load_npz(tiny_ibug["test"])["images"]
    original = Predictor.load(tiny_run).predict_crops(images)
    shipped = Predictor.load(dest).predict_crops(images)
    # float16 storage moves points by far less than a crop pixel (48 px crops: 1/48 = 0.02)
    assert np.abs(shipped - original).max() < 2e-3
    monkeypatch.setenv(WEIGHTS_ENV, str(dest))
    assert default_model_dir() == dest
    # the same batches as above: oneDNN's kernels may round the last bit differently at another batch size (AVX2)
    assert np.array_equal(Predictor.load().predict_crops(images), shipped)


def test_no_shipped_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="names no shipped model"):
        Predictor.load()
    assert models_main(["--ship", str(tmp_path / "missing"), "--to", str(tmp_path / "out")]) == 2


@pytest.mark.parametrize("step", ["_copy_as_float16", "replace_folder"])
def test_a_ship_stopped_before_its_files_are_whole_leaves_the_folder_as_it_was(step, tiny_run, tmp_path, monkeypatch,
                                                                               capsys):
    from facelandmarks.inference import ship

    dest = tmp_path / "w"
    assert models_main(["--ship", str(tiny_run), "--to", str(dest)]) == 0
    (dest / "config.json").write_text(json.dumps({**json.loads((dest / "config.json").read_text()), "an": "older"}))
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ship, step, stop)  # replace_folder: the new folder written whole, not swapped in
    assert models_main(["--ship", str(tiny_run), "--to", str(dest)]) == 130
    assert capsys.readouterr().err.strip() == f"models.py: interrupted; {dest} left as it was"
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # nothing of its own left beside it
