"""``models.py --ship`` keeps the run's epoch history beside its float16 weights (tiny synthetic runs, no face data).

A model may continue later from weights committed to the repository (``--init``): its folder says which epochs
made it, and what reads a shipped folder (``Predictor.load``, ``--init``, ``evaluate.py``) reads it as before."""

import json
import math

import numpy as np
import pytest

from facelandmarks.cli import models as models_cli
from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.evaluation.evaluate import evaluate_runs, history_losses
from facelandmarks.inference.predictor import Predictor
from tests.unit.test_train_errors import TINY, faces


@pytest.mark.backend
def test_a_shipped_folder_carries_its_runs_history_and_loads_evaluates_and_continues_as_before(tmp_path, capsys):
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    run, shipped, later = tmp_path / "run", tmp_path / "weights" / "tiny", tmp_path / "later"
    assert train_cli.main([*TINY, "--epochs", "2", "--batch", "4", "--data", str(data), "--run-dir", str(run)]) == 0
    assert models_cli.main(["--ship", str(run), "--to", str(shipped)]) == 0
    assert (shipped / "history.csv").read_bytes() == (run / "history.csv").read_bytes()
    assert sorted(p.name for p in shipped.iterdir()) == ["best.weights.h5", "config.json", "history.csv"]

    images = npz.load_npz(data)["images"]
    np.testing.assert_allclose(Predictor.load(shipped, runtime="keras").predict_crops(images),
                               Predictor.load(run, runtime="keras").predict_crops(images), atol=2e-3)
    # an evaluation of the shipped folder shows its run's losses and learning curve
    (row,) = evaluate_runs([shipped], data, tmp_path / "eval", timing=False, gallery_faces=2)
    losses = history_losses(run)
    assert math.isfinite(losses[0]) and (row["train_loss"], row["val_loss"], row["best_epoch"]) == losses
    assert (tmp_path / "eval" / "curves.png").is_file()

    # a run continued from it keeps its own epochs and names where the earlier ones are
    assert train_cli.main([*TINY, "--batch", "4", "--data", str(data), "--run-dir", str(later), "--init", str(shipped)]) == 0
    assert json.loads((later / "config.json").read_text())["init"] == str(shipped)
    assert len((later / "history.csv").read_text().splitlines()) == 2  # header and its one epoch
    # shipped over the folder from a run without a history: the earlier model's epochs are not this one's
    (later / "history.csv").unlink()
    assert models_cli.main(["--ship", str(later), "--to", str(shipped)]) == 0
    assert sorted(p.name for p in shipped.iterdir()) == ["best.weights.h5", "config.json"]
    assert "shipped" in capsys.readouterr().out


@pytest.mark.backend
def test_a_shipped_run_with_its_head_at_10x_leaves_the_rate_behind_with_its_init(tmp_path):
    """The shipped settings drop ``init``, so they drop ``--head-lr-scale`` (refused without --init) and its layers
    too: the folder's config.json still works as a --config, with or without an --init of its own."""
    from facelandmarks.cli.train import resolve_config
    from facelandmarks.landmarks import Scheme
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from tests.unit.test_init_head import FACE5, PICKED

    arrays = faces(24)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = dict(model="mlp", batch=8, epochs=1, augment="none", model_options={"hidden_units": [4]}, preview_every=0)
    fit(TrainConfig(data=str(ibug), run_dir=str(tmp_path / "ibug"), **common), verbose=0)
    fit(TrainConfig(data=str(five), run_dir=str(tmp_path / "five"), init=str(tmp_path / "ibug"), head_lr_scale=10.0,
                    **common), verbose=0)
    assert json.loads((tmp_path / "five" / "config.json").read_text())["head_lr_scale"] == 10.0
    shipped = tmp_path / "weights" / "five"
    assert models_cli.main(["--ship", str(tmp_path / "five"), "--to", str(shipped)]) == 0
    settings = json.loads((shipped / "config.json").read_text())
    assert not {"init", "head_lr_scale", "head_lr_layers"} & set(settings)
    config, _ = resolve_config(["--config", str(shipped / "config.json"), "--data", str(five), "--run-dir", "r"])
    assert config.init is None and config.head_lr_scale is None
