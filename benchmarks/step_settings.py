"""The whole training step (compute only) under backend and XLA settings, each in a fresh process (not a test).

    python benchmarks/step_settings.py --data dataset/ibug128_train.npz --model mobilenetv2_heatmap --batch 64 \\
        --run tensorflow --run "jax xla-depthwise" --run jax --run "jax --xla_cpu_use_onednn=true"

Each ``--run`` is a backend, then any XLA_FLAGS for it, then optionally the word ``slices`` or
``xla-depthwise``.  ``slices``: the model's 3x3 depthwise convolutions (MobileNetV2's, and on JAX the
decoder's separable convolutions' too) computed as nine shifted slices times per-channel weights in
keras.ops (``facelandmarks.models.depthwise``) instead of the backend's grouped convolution, as the package
does on JAX by itself.  ``xla-depthwise``: JAX's own grouped convolution (``FACELANDMARKS_JAX_DEPTHWISE=xla``),
as before the package used the slices.  Each run builds the model as training does (``fit._compile``: the
project's loss, optimizer and ``--jit-compile`` choice), feeds one constant batch to ``train_on_batch`` for
``--warmup`` untimed steps (compilation included) and times ``--steps`` more; peak memory is the process's
maximum resident set, the whole npz loaded.  The runs go one after the other, so a table compares settings
on one machine within minutes.
An XLA_FLAGS of the environment is kept for runs that name none.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from facelandmarks import machine, runtime
from facelandmarks.cli.common import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared training npz (one batch of it is fed)")
    parser.add_argument("--model", default="mobilenetv2_heatmap", help="registered model (default mobilenetv2_heatmap)")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (default 128)")
    parser.add_argument("--batch", type=int, default=64, help="faces per step (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, compilation included (default 2)")
    parser.add_argument("--run", action="append", default=[],
                        help="'BACKEND [XLA flags] [slices]', repeatable (default: tensorflow, then jax)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def measure(args, slices: bool) -> dict:
    runtime.startup()
    import keras
    import numpy as np

    from facelandmarks.data import npz
    from facelandmarks.data.feeding import FaceParts
    from facelandmarks.models import build_model
    from facelandmarks.models.losses import pack_targets
    from facelandmarks.training import distribute
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import _compile, resolve_jit_compile

    if slices:  # on any backend (the package does it on JAX unless FACELANDMARKS_JAX_DEPTHWISE=xla)
        from keras.src.backend import nn

        from facelandmarks.models import depthwise
        depthwise.use_slices(nn)
    arrays = npz.load_npz(args.data)
    scheme = npz.scheme_of(arrays)
    parts = FaceParts(arrays, args.size)
    config = TrainConfig(model=args.model, data=args.data, run_dir="-", batch=args.batch)
    model = build_model(args.model, input_shape=(args.size, args.size, arrays["images"].shape[-1]),
                        num_points=scheme.num_points)
    _compile(model, config, scheme, distribute.Cluster())
    x, lm, vis = (a[: args.batch] for a in parts.get(0))
    x, y = x.astype(np.float32), pack_targets(lm, vis)
    start = time.perf_counter()
    for _ in range(args.warmup):
        loss = model.train_on_batch(x, y)
    warm = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {"backend": keras.config.backend(), "xla": resolve_jit_compile(config.jit_compile),
            "images_per_second": args.batch / float(np.median(times)), "warmup_s": warm,
            "loss": float(np.ravel(loss)[0]), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        parser.error(f"{args.data}: no such npz (prepare one with datagen.py, README's Workflow)")
    if min(args.size, args.batch, args.steps) < 1 or args.warmup < 1:
        parser.error("--size, --batch, --steps and --warmup must be >= 1")
    if args.json:
        print(json.dumps(measure(args, os.environ.get("STEP_SETTINGS_SLICES") == "1")))
        return 0
    runs = args.run or ["tensorflow", "jax"]
    rows = []
    for run in runs:
        words = run.split()
        if not words or words[0] not in ("tensorflow", "jax"):
            parser.error(f"--run {run!r}: start with a backend, tensorflow or jax")
        slices = "slices" in words[1:]
        flags = " ".join(w for w in words[1:] if w not in ("slices", "xla-depthwise"))
        env = {**os.environ, "KERAS_BACKEND": words[0], "STEP_SETTINGS_SLICES": "1" if slices else "0",
               runtime.JAX_DEPTHWISE_ENV: "xla" if "xla-depthwise" in words[1:] else "slices"}
        if flags:
            env["XLA_FLAGS"] = flags
        child = [a for a in argv if a != "--run" and a not in runs]
        done = subprocess.run([sys.executable, __file__, *child, "--json"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"step_settings.py: run {run!r} failed: {tail}", file=sys.stderr)
            return 2
        rows.append((run, flags or env.get("XLA_FLAGS", ""), json.loads(done.stdout.strip().splitlines()[-1])))
        print(f"done: {run}", file=sys.stderr)
    print(f"{args.model} at {args.size} px, batch {args.batch}, one constant batch (compute only), train_on_batch, "
          f"median of {args.steps} steps after {args.warmup}")
    print(machine.cpu_description())
    print("| run | XLA_FLAGS | jit_compile | images/s | warm-up s (compilation included) | loss after | peak memory MB |")
    print("|---|---|---|---|---|---|---|")
    for run, flags, result in rows:
        print(f"| {run} | {flags or '(none)'} | {result['xla']} | {result['images_per_second']:.1f} | "
              f"{result['warmup_s']:.1f} | {result['loss']:.4f} | {result['peak_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
