"""train.py / training.py on real faces: run directory, TensorBoard, resume, bottleneck training."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.training.callbacks import cosine_lr
from facelandmarks.training.config import TrainConfig
from facelandmarks.training.fit import fit

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.data


def history(run_dir):
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})  # 0: keep every event
    accumulator.Reload()
    return accumulator, set(accumulator.Tags()["tensors"])


@pytest.mark.backend
def test_run_directory_holds_everything_to_reuse_the_run(tiny_run, tiny_ibug):
    import keras

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == "scratch" and config["scheme"] == "ibug68" and config["num_points"] == 68
    assert config["data"] == str(tiny_ibug["train"]) and config["input_shape"] == [48, 48, 3]
    for name in ("best.weights.h5", "last.weights.h5", "model.keras", "history.csv", "state.json", "summary.json"):
        assert (tiny_run / name).is_file(), name
    with h5py.File(tiny_run / "best.weights.h5") as handle:
        assert "layers" in handle and "optimizer" in handle  # HDF5 weights + optimizer state
    rows = history(tiny_run)
    assert len(rows) == 7 and {"loss", "val_loss", "val_nme", "learning_rate"} <= set(rows[0])
    val_losses = [float(r["val_loss"]) for r in rows]
    assert min(val_losses) < val_losses[0], "training did not lower the validation loss"

    # model.keras carries the best weights: same predictions as best.weights.h5 in a fresh model
    from facelandmarks.models import build_model

    val = npz.load_npz(tiny_ibug["test"])
    x = val["images"][:4].astype(np.float32)
    loaded = keras.models.load_model(tiny_run / "model.keras", compile=False)
    fresh = build_model("scratch", input_shape=(48, 48, 3), num_points=68)
    fresh.load_weights(tiny_run / "best.weights.h5")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-5)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["best_epoch"] == int(np.argmin(val_losses)) + 1
    assert summary["stopped_by"] == "epoch budget"  # patience 15 never ran out in 7 epochs


@pytest.mark.backend
def test_tensorboard_has_losses_nme_learning_rate_and_preview_images(tiny_run):
    train_acc, train_tags = tensorboard_tags(tiny_run / "logs" / "train")
    assert {"epoch_loss", "epoch_nme", "epoch_learning_rate"} <= train_tags
    assert len(train_acc.Tensors("epoch_loss")) == 7
    _, val_tags = tensorboard_tags(tiny_run / "logs" / "validation")
    assert {"epoch_loss", "epoch_nme"} <= val_tags
    previews, tags = tensorboard_tags(tiny_run / "logs" / "previews")
    events = previews.Tensors("validation predictions")
    assert [e.step for e in events] == [2, 5]  # every 3 epochs
    png = events[-1].tensor_proto.string_val[2]  # [width, height, encoded PNG]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_early_stopping_fires_when_no_epoch_beats_the_best_by_min_delta(tmp_path, tiny_ibug):
    import keras

    # min_delta 1.0 is far above any change of this wing loss: only the first epoch counts as an
    # improvement, so with patience 2 the run stops after epoch 3 of its budget of 8. The callbacks see only
    # the losses: a small MLP gives them as well as the scratch CNN
    run_dir = tmp_path / "run"
    config = TrainConfig(
        model="mlp", data=str(tiny_ibug["train"]), run_dir=str(run_dir), val_fraction=0.2, epochs=8, batch=16,
        lr=2e-3, loss="wing", patience=2, min_delta=1.0, preview_every=0, workers=1, seed=1,
        model_options={"hidden_units": [32], "dropout": 0.0},
    )
    summary = fit(config, verbose=0)
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert summary["epochs"] == 3 and summary["stopped_by"] == "early stopping"
    assert json.loads((run_dir / "config.json").read_text())["min_delta"] == 1.0
    # model.keras holds the lowest validation loss, whichever epoch early stopping counted as its best
    val_losses = [float(r["val_loss"]) for r in rows]
    assert summary["best_epoch"] == int(np.argmin(val_losses)) + 1
    # --resume of a run early stopping ended trains nothing and leaves its summary (it once trained two epochs more)
    written = (run_dir / "summary.json").read_text()
    assert fit(config, resume=True, verbose=0) == summary
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2] and (run_dir / "summary.json").read_text() == written
    saved = keras.models.load_model(run_dir / "model.keras", compile=False)
    best = keras.models.load_model(run_dir / "model.keras", compile=False)
    best.load_weights(run_dir / "best.weights.h5")
    for a, b in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ValueError, match="min-delta"):
        TrainConfig(model="scratch", data="x.npz", run_dir="-", min_delta=-0.1).validate()


def test_existing_run_is_never_overwritten(tiny_run, tiny_ibug, capsys):
    from facelandmarks.cli.train import main  # train.py's, in this process: one Keras start-up less

    before = (tiny_run / "best.weights.h5").read_bytes()
    code = main(["scratch", "--data", str(tiny_ibug["train"]), "--run-dir", str(tiny_run)])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert (tiny_run / "best.weights.h5").read_bytes() == before


# TensorFlow only: what it checks (callbacks' state, checkpoints) is backend-independent, and the
# JAX runs above already cover fitting; on JAX it would add two minutes to CI.
def test_killed_run_resumes_with_the_right_epoch_and_learning_rate(tmp_path, tiny_ibug, capsys):
    # a small MLP, not the scratch CNN: the callbacks' state and the checkpoints are what is checked, and its epochs
    # (traced again by the resume) took 2 s each; 10 of them leave the kill after epoch 1 eight epochs to land in
    epochs = 10
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "mlp", "--model-options", '{"hidden_units": [32]}', "--data",
               str(tiny_ibug["train"]), "--run-dir", str(run_dir), "--epochs", str(epochs), "--batch", "16", "--schedule", "cosine",
               "--lr", "0.004", "--augment", "none", "--workers", "1", "--preview-every", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            state = run_dir / "state.json"
            if state.is_file() and json.loads(state.read_text())["epoch"] >= 1:
                break
            if process.poll() is not None:
                pytest.fail("training ended before it could be interrupted")
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 240 s")
        os.killpg(process.pid, signal.SIGKILL)  # as hard as a power cut
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stopped_at = json.loads((run_dir / "state.json").read_text())["epoch"]
    assert stopped_at < epochs - 1, "the run finished before it was killed"

    # the resume reads only what the killed process left: train.py's main, in this process
    from facelandmarks.cli.train import main

    capsys.readouterr()
    code = main(["--resume", "--run-dir", str(run_dir)])
    result = capsys.readouterr()
    assert code == 0, result.err[-2000:]
    assert f"resuming {run_dir} at epoch {stopped_at + 2}" in result.out
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs)), "an epoch is missing or repeated"
    schedule = cosine_lr(0.004, epochs)
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [schedule(e) for e in range(epochs)], rtol=1e-5)
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == epochs - 1


@pytest.mark.backend
def test_bottleneck_features_train_the_inception_bottleneck_head(tmp_path, tiny_ibug, data_dir):
    from facelandmarks.models.features import bottleneck

    weights = data_dir.parent / "weights" / "mobilenet_v2_imagenet_notop.weights.h5"
    features = tmp_path / "features.npz"
    bottleneck(tiny_ibug["train"], features, backbone="mobilenetv2", weights=str(weights), batch_size=32)
    arrays = npz.load_npz(features)
    assert arrays["features"].dtype == np.float32 and arrays["features"].ndim == 2
    config = TrainConfig(
        model="inception_bottleneck", data=str(features), run_dir=str(tmp_path / "head"), val_fraction=0.2,
        epochs=3, batch=16, workers=1,
    )
    summary = fit(config, verbose=0)
    assert summary["epochs"] == 3 and np.isfinite(summary["val_nme"])
    assert json.loads((tmp_path / "head" / "config.json").read_text())["input_kind"] == "features"


def test_images_cannot_feed_a_features_model(tmp_path, tiny_ibug):
    config = TrainConfig(model="inception_bottleneck", data=str(tiny_ibug["train"]), run_dir=str(tmp_path / "r"), epochs=1)
    with pytest.raises(ValueError, match="takes features but .* holds images"):
        fit(config, verbose=0)


def test_init_starts_from_a_trained_run_and_names_a_misfit(tmp_path, tiny_run, tiny_ibug, capsys):
    import keras

    from facelandmarks.cli.train import main

    # a learning rate too small to move anything: the new run's weights are the trained run's
    run = tmp_path / "finetuned"
    assert main(["scratch", "--data", str(tiny_ibug["train"]), "--run-dir", str(run), "--val-fraction", "0.2",
                       "--epochs", "1", "--batch", "16", "--lr", "1e-10", "--init", str(tiny_run),
                       "--preview-every", "0", "--seed", "1"]) == 0
    assert json.loads((run / "config.json").read_text())["init"] == str(tiny_run)
    trained = keras.models.load_model(tiny_run / "model.keras", compile=False).get_weights()
    started = keras.models.load_model(run / "model.keras", compile=False).get_weights()
    for a, b in zip(trained, started):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # so its first validation epoch scores what the trained run's best epoch did
    best = min(history(tiny_run), key=lambda row: float(row["val_loss"]))
    assert float(history(run)[0]["val_nme"]) == pytest.approx(float(best["val_nme"]), rel=1e-3)

    capsys.readouterr()
    assert main(["resnet_scratch", "--data", str(tiny_ibug["train"]), "--run-dir", str(tmp_path / "misfit"),
                       "--epochs", "1", "--init", str(tiny_run / "best.weights.h5")]) == 2
    err = capsys.readouterr().err
    assert "best.weights.h5" in err and "nothing to start from" in err
    assert main(["scratch", "--data", str(tiny_ibug["train"]), "--run-dir", str(tmp_path / "nowhere"),
                       "--epochs", "1", "--init", str(tmp_path / "no-such-run")]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_resumed_run_trains_on_the_batches_of_an_uninterrupted_one(tmp_path, tiny_ibug):
    # Keras' fit shuffled the batches' order again with Python's random module, whose state a resumed
    # run does not have: its epoch 2 trained in another order and ended with other weights. The order of the
    # batches is the data feeding's and the resume's business, not the model's: a small MLP (no dropout) shows it
    def config(run_dir, epochs):
        return TrainConfig(
            model="mlp", data=str(tiny_ibug["train"]), run_dir=str(tmp_path / run_dir), val_fraction=0.2,
            epochs=epochs, batch=16, schedule="constant", model_options={"hidden_units": [32], "dropout": 0.0},
            preview_every=0, workers=1,
        )

    fit(config("whole", 2), verbose=0)
    fit(config("resumed", 1), verbose=0)
    fit(config("resumed", 2), resume=True, verbose=0)
    whole, resumed = history(tmp_path / "whole"), history(tmp_path / "resumed")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in whole]
    with h5py.File(tmp_path / "whole" / "last.weights.h5") as a, h5py.File(tmp_path / "resumed" / "last.weights.h5") as b:
        a["layers"].visititems(lambda name, item: np.testing.assert_array_equal(item[()], b["layers"][name][()])
                               if isinstance(item, h5py.Dataset) else None)


def test_a_new_budget_is_what_the_next_resume_goes_on_to(tmp_path, tiny_ibug, capsys):
    from facelandmarks.cli.train import resolve_config

    # --resume --epochs 3 killed in epoch 3 and resumed again without --epochs: config.json still said 1 epoch,
    # so that resume trained nothing and printed the first sitting's summary (the budget is the run's, not the
    # model's: a small MLP)
    run_dir = tmp_path / "run"
    config = TrainConfig(model="mlp", data=str(tiny_ibug["train"]), run_dir=str(run_dir), val_fraction=0.2,
                         epochs=1, batch=16, preview_every=0, workers=1, model_options={"hidden_units": [32]})
    fit(config, verbose=0)
    fit(replace(config, epochs=2), resume=True, verbose=0)
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    assert resolve_config(["--resume", "--run-dir", str(run_dir)])[0].epochs == 2
    # a run at the end of its budget says so (it said 'resuming at epoch 3' and then ran nothing)
    capsys.readouterr()
    fit(replace(config, epochs=2), resume=True, verbose=0)
    assert f"{run_dir} already ran its 2 epochs; --epochs N gives it a new budget" in capsys.readouterr().out
