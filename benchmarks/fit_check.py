"""Where a trained run's error comes from: fit, augmentation, dropout or the head (a diagnostic, not a test).

    python benchmarks/fit_check.py runs/mobilenetv2-128 --faces 640

Rebuilds the run's own training/validation split (``config.json``) and prints
mean NME (% of the outer-eye-corner distance for iBUG-68) on:

* training faces as they are, with the model in inference mode: about equal
  to the validation figure means the model *underfits* (it does not fit its
  own training faces better than new people);
* the same faces in training mode (dropout on, batch-norm batch statistics)
  and under the run's augmentation: what the training log's ``nme`` mixes in;
* validation faces;
* ``--refit-head``: a new head (the run's hidden widths, with and without
  dropout) fitted with the run's loss on frozen pooled features of the
  un-augmented training faces, early-stopped on validation.  If it beats the
  run, the head and its training data, not the backbone, hold the run back.

Models without a ``head_dense1`` layer (heatmap models) skip the refit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from facelandmarks.cli.common import OneLineParser, complain
from facelandmarks.runtime import startup


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory written by train.py")
    parser.add_argument("--faces", type=int, default=640, help="training faces to score (a random sample; 0: all)")
    parser.add_argument("--batch", type=int, default=64, help="faces per prediction batch (default 64)")
    parser.add_argument("--refit-head", action="store_true", help="also fit a new head on frozen pooled features")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sample, the augmentation, the training-mode rows' dropout and a refitted head "
                             "(default 0): a second run with the same seed prints the same table")
    return parser


def parse_args(argv=None):
    """The arguments and the run's settings, read as ``train.py --resume`` reads them (``TrainConfig.load``): a
    config.json that cannot be used is one line naming it and the key (it was a traceback, or another reading)."""
    from facelandmarks.cli.common import error_line
    from facelandmarks.training.config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    path = Path(args.run) / "config.json"
    if not path.is_file():  # a traceback from the config reader, after Keras loaded
        parser.error(f"{args.run}: not a run directory (no config.json)")
    if (Path(args.run) / "pipeline.json").is_file():  # it said 'cascade takes features, not images'
        parser.error(f"{args.run}: a pipeline run; fit_check looks at one model: give its stage 1 "
                     f"({pipeline_stage1(Path(args.run))})")
    try:
        config = TrainConfig.load(path)
    except ValueError as err:  # a shipped model's names no data: "no data or run_dir: not the config.json of ..."
        parser.error(error_line(err))
    if not config.data:
        parser.error(f"{args.run}: its config.json names no training data; fit_check needs a run trained by train.py, "
                     "whose data it reads again")
    if config.input_kind != "image":
        parser.error(f"{args.run}: {config.model} takes features, not images; fit_check needs an image model")
    return args, config


def pipeline_stage1(run: Path) -> str:
    """The stage 1 a pipeline run's ``pipeline.json`` names, else what to look for."""
    try:
        stage1 = json.loads((run / "pipeline.json").read_text()).get("stage1")
    except (OSError, ValueError, AttributeError):
        stage1 = None
    return str(stage1) if stage1 else "the stage1 its pipeline.json names"


def refuse(line: str) -> None:
    """``line`` as every benchmark tells a failure: one line naming the script, exit status 2 (it was 1, unnamed)."""
    complain(f"fit_check.py: {line}")
    raise SystemExit(2)


if __name__ == "__main__":
    parse_args()  # --help and a wrong flag answer before Keras loads

startup()  # Keras and its backend without their start-up INFO lines (before any import that loads them)

import keras
import numpy as np

from facelandmarks import metrics
from facelandmarks.cli.common import USER_ERRORS, error_line
from facelandmarks.data import npz
from facelandmarks.data.augment.augmenter import Augmenter
from facelandmarks.data.augment.config import AugmentConfig
from facelandmarks.data.feeding import load_split, model_inputs, scheme_for
from facelandmarks.inference.predictor import Predictor
from facelandmarks.models import losses
from facelandmarks.models.heads import dense_stack, landmark_output


def predict(model, x, batch: int, training_mode: bool = False, progress: bool = False) -> np.ndarray:
    """Outputs of ``model`` on ``x`` in batches; ``training_mode`` runs dropout and batch-norm as in training."""
    if not training_mode:
        with contextlib.redirect_stdout(sys.stderr if progress else sys.stdout):  # Keras's bar went into the table
            return model.predict(x, batch_size=batch, verbose=1 if progress else 0)
    out = [keras.ops.convert_to_numpy(model(np.asarray(x[i:i + batch], np.float32), training=True))
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


def mean_nme(pred, arrays, scheme) -> float:
    return 100.0 * float(np.mean(metrics.nme_per_face(pred, arrays["landmarks"], arrays["visible"], scheme)))


def refit_head(features, train, val_features, val, units, dropout, loss, scheme, seed):
    """A new dense head (the registry's) on frozen features, early-stopped on validation; returns (train NME, val NME)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(features.shape[1:])
    x = dense_stack(inputs, units, dropout, "head")
    head = keras.Model(inputs, landmark_output(x, train["landmarks"].shape[1]))
    head.compile(keras.optimizers.Adam(1e-3), loss=loss)
    head.fit(features, losses.pack_targets(train["landmarks"], train["visible"]), batch_size=64, epochs=100, verbose=0,
             validation_data=(val_features, losses.pack_targets(val["landmarks"], val["visible"])),
             callbacks=[keras.callbacks.EarlyStopping(patience=6, restore_best_weights=True)])
    return (mean_nme(head.predict(features, verbose=0), train, scheme),
            mean_nme(head.predict(val_features, verbose=0), val, scheme))


def main(argv=None) -> None:
    args, config = parse_args(argv)
    run = Path(args.run)
    try:
        train, val = load_split(config)
    except USER_ERRORS as err:  # its data moved or damaged: a traceback
        refuse(f"{error_line(err, (config.data, config.val))} (the data of {run / 'config.json'})")
    if val is None:
        refuse(f"{run}: trained without validation data; nothing to compare with")
    if not isinstance(train, dict):
        refuse(f"{run}: sharded training data ({config.data}); fit_check needs an npz")
    scheme = scheme_for(train)
    keras.utils.set_random_seed(args.seed)  # before the model's dropout layers draw their seeds: training-mode rows repeat
    model = Predictor.load(run, runtime="keras").model
    size = model.inputs[0].shape[1]
    rng = np.random.default_rng(args.seed)
    count = len(train["landmarks"]) if args.faces <= 0 else min(args.faces, len(train["landmarks"]))
    sample = npz.subset(train, np.sort(rng.choice(len(train["landmarks"]), count, replace=False)))
    x = model_inputs(sample, size)
    augmenter = Augmenter(AugmentConfig.parse(config.augment), scheme, seed=args.seed)
    x_aug, lm_aug, vis_aug = augmenter(x, sample["landmarks"], sample["visible"])
    augmented = {"landmarks": lm_aug, "visible": vis_aug}
    x_val = model_inputs(val, size)

    rows = [
        ("training faces, as they are", "inference", mean_nme(predict(model, x, args.batch, progress=True), sample, scheme)),
        ("training faces, as they are", "training", mean_nme(predict(model, x, args.batch, True), sample, scheme)),
        (f"training faces, augmented ({config.augment})", "inference",
         mean_nme(predict(model, x_aug, args.batch), augmented, scheme)),
        (f"training faces, augmented ({config.augment})", "training",
         mean_nme(predict(model, x_aug, args.batch, True), augmented, scheme)),
        ("validation faces", "inference", mean_nme(predict(model, x_val, args.batch, progress=True), val, scheme)),
    ]
    if args.refit_head:
        names = [layer.name for layer in model.layers]
        if "head_dense1" not in names:
            print(f"{config.model} has no dense head (head_dense1): no refit")
        else:
            pooled = keras.Model(model.inputs, model.get_layer("head_dense1").input)
            units = [model.get_layer(n).units for n in names if n.startswith("head_dense")]
            loss = losses.get_loss(config.loss, **config.loss_options)
            full_x = model_inputs(train, size)
            features = predict(pooled, full_x, args.batch, progress=True)
            val_features = predict(pooled, x_val, args.batch)
            run_dropout = model.get_layer("head_dropout1").rate if "head_dropout1" in names else 0.0
            for dropout in sorted({0.0, float(run_dropout)}):
                fit_train, fit_val = refit_head(features, train, val_features, val, units, dropout, loss, scheme, args.seed)
                rows.append((f"new head {units}, dropout {dropout:g}, all training faces", "inference", fit_train))
                rows.append((f"new head {units}, dropout {dropout:g}: validation", "inference", fit_val))

    print(f"\n{run} ({config.model}, {count} training faces sampled, {len(val['landmarks'])} validation faces)\n")
    print("| faces | mode | NME % |\n|---|---|---|")
    for what, mode, value in rows:
        print(f"| {what} | {mode} | {value:.2f} |")


if __name__ == "__main__":
    main()
