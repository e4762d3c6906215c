"""Train a registered landmark model on a prepared npz."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facelandmarks.landmarks import REFINED_REGIONS
from facelandmarks.training.config import JIT_MODES, OPTIMIZERS, SCHEDULES, TrainConfig
from facelandmarks.training.fit import fit


def parse_json_options(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"{flag}: not a JSON object ({err}): {text!r}")
    if not isinstance(value, dict):
        raise SystemExit(f"{flag}: expected a JSON object like '{{\"dropout\": 0.3}}', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="registered model name (python models.py --list)")
    parser.add_argument("--data", help="training npz (images, or features for inception_bottleneck)")
    parser.add_argument("--val", help="validation npz; default: a by-subject split of --data")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of faces (whole subjects) held out for validation")
    parser.add_argument("--run-dir", required=True, help="where checkpoints, logs and config go")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last epoch")
    parser.add_argument("--size", type=int, help="input size in pixels (images are resized); default: the npz's")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32, help="batch size per replica (= the batch on one device)")
    parser.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    parser.add_argument("--schedule", default="plateau", choices=SCHEDULES,
                        help="plateau: halve on a val_loss plateau; cosine: cosine decay to 1%% over --epochs")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience in epochs")
    parser.add_argument("--min-delta", type=float, default=1e-4,
                        help="smallest drop of the validation loss that counts as an improvement, for early "
                             "stopping and the plateau schedule alike (default 1e-4, Keras' plateau default)")
    parser.add_argument("--loss", default="mse", help="mse, l1, wing or cgd (masked by visibility)")
    parser.add_argument("--loss-options", default="{}", help='JSON, e.g. \'{"alpha": 0.01}\' for cgd')
    parser.add_argument("--weights", default="none", help="backbone weights: none, imagenet (download) or a local file")
    parser.add_argument("--init", help="start from a trained run (its best weights) or a .weights.h5 of the same "
                                       "model, input size and points: fine-tuning on new data")
    parser.add_argument("--train-blocks", type=int, help="retrain the last N backbone blocks (-1: all)")
    parser.add_argument("--model-options", default="{}", help="JSON of extra builder arguments")
    parser.add_argument("--augment", default="default",
                        help='"default", "light", "none", or e.g. "rotation=15,scale=0.1,flip=0.5,brightness=0.2" (see augment.py)')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", action="store_true", help="float16 on GPU, bfloat16 on CPU")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="autoencoder reconstruction epochs")
    parser.add_argument("--preview-every", type=int, default=5, help="epochs between TensorBoard preview images (0: off)")
    parser.add_argument("--workers", type=int, default=2, help="threads preparing batches (1: in the training thread)")
    parser.add_argument("--distribute", default="none", choices=["none", "mirrored", "multiworker", "data-parallel"],
                        help="mirrored: all GPUs here (TF); multiworker: a TF_CONFIG cluster (TF); "
                             "data-parallel: all devices (JAX). --batch is then per replica and the learning "
                             "rate scales with the number of replicas")
    parser.add_argument("--jit-compile", default="auto", choices=JIT_MODES,
                        help="XLA-compile train steps; auto: off for TensorFlow on CPU (slower there), on otherwise")
    pipeline = parser.add_argument_group("coarse-to-fine pipelines (model name cascade, regions or boxes)")
    pipeline.add_argument("--stage1", help="run directory of the global model to refine")
    pipeline.add_argument("--boxes", help="regions: run directory of a box network (train.py boxes)")
    pipeline.add_argument("--refiner", default="scratch", help="registered model used for each region refiner")
    pipeline.add_argument("--box-model", default="resnet_scratch", help="registered model used for the box network")
    pipeline.add_argument("--patch-size", type=int, default=32, help="refiner input size in pixels")
    pipeline.add_argument("--margin", type=float, default=0.25, help="region box margin per side, fraction of its size")
    pipeline.add_argument("--regions", default=",".join(REFINED_REGIONS),
                          help="comma-separated regions to refine (the jaw stays with stage 1)")
    pipeline.add_argument("--copies", type=int, default=4, help="jittered patches per training face")
    return parser


def train_pipeline(args, config) -> dict:
    from facelandmarks.pipelines.config import PipelineConfig
    from facelandmarks.pipelines.train import train_boxes, train_pipeline

    if args.model == "boxes":
        config.model = args.box_model
        return train_boxes(config, margin=args.margin)
    if not args.stage1:
        raise ValueError(f"train.py {args.model} needs --stage1 RUN_DIR (the global model to refine)")
    pipeline = PipelineConfig(
        kind=args.model, stage1=args.stage1, run_dir=args.run_dir, boxes=args.boxes, refiner=args.refiner,
        patch_size=args.patch_size, margin=args.margin, copies=args.copies,
        regions=[r.strip() for r in args.regions.split(",") if r.strip()],
    )
    return train_pipeline(pipeline, config)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    pipeline = args.model in ("cascade", "regions", "boxes")
    if args.resume and not pipeline:
        config = TrainConfig.load(run_dir / "config.json")
        if "--epochs" in (argv if argv is not None else sys.argv):
            config.epochs = args.epochs
    else:
        if not args.model or not (args.data or (pipeline and args.stage1)):
            raise SystemExit("train.py: a model name and --data are required (or --resume with --run-dir)")
        config = TrainConfig(
            model=args.model, data=args.data, val=args.val, val_fraction=args.val_fraction, run_dir=args.run_dir,
            size=args.size, epochs=args.epochs, batch=args.batch, optimizer=args.optimizer, lr=args.lr,
            schedule=args.schedule, patience=args.patience, min_delta=args.min_delta, loss=args.loss,
            loss_options=parse_json_options(args.loss_options, "--loss-options"), weights=args.weights, init=args.init,
            train_blocks=args.train_blocks, model_options=parse_json_options(args.model_options, "--model-options"),
            augment=args.augment, seed=args.seed, mixed_precision=args.mixed_precision,
            pretrain_epochs=args.pretrain_epochs, preview_every=args.preview_every, workers=args.workers,
            distribute=args.distribute, jit_compile=args.jit_compile,
        )
    try:
        summary = train_pipeline(args, config) if pipeline else fit(config, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python train.py --resume --run-dir {run_dir}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"train.py: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
