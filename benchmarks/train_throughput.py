"""Training throughput of the real input pipeline against compute alone (not a test).

    python benchmarks/train_throughput.py --data dataset/ibug128_train.npz --model mobilenetv2 --size 128

Both modes run ``model.fit`` on the same compiled model for the same number of
steps: "pipeline" feeds ``LandmarkBatches`` (shuffled rows of the
full prepared set, on-the-fly augmentation, loader threads), "compute only"
feeds one constant in-memory batch.  The ratio of their images/s says how
much the data path costs; rounds alternate so drift hits both.  Peak memory
is the process's maximum resident set, with the whole set loaded.

Beside images/s each row reports where the CPU time of its timed steps went: the kernel's share of
user + system time, and minor page faults per step (memory handed back to the kernel and faulted in
again).  ``--allocator both`` runs the whole measurement twice in fresh processes, glibc's allocator
as it comes (``FACELANDMARKS_MALLOC=0``) and tuned as training tunes it (``runtime.tune_allocator``),
and prints both in one table: the before/after of one run on one machine.  ``--allocator all`` adds
a third process with tcmalloc preloaded (``LD_PRELOAD``), where it is installed.

    python benchmarks/train_throughput.py --data dataset/ibug128_train.npz --steps 6 --warmup 2 --rounds 1 --allocator both
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from facelandmarks import machine, runtime
from facelandmarks.cli.common import OneLineParser
from facelandmarks.training.config import JIT_MODES

try:
    import _per_allocator  # python benchmarks/NAME.py: this folder leads sys.path
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _per_allocator


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared training npz")
    parser.add_argument("--model", default="mobilenetv2", help="registered model (default mobilenetv2)")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (default 128)")
    parser.add_argument("--batch", type=int, default=32, help="faces per step (default 32)")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both modes, alternating (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="loader threads of the real pipeline")
    parser.add_argument("--augment", default="default", help="train.py --augment of the pipeline (default: default)")
    parser.add_argument("--jit-compile", default="auto", choices=JIT_MODES,
                        help="XLA for the train step (auto: off for TensorFlow on CPU)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="as train.py --mixed-precision (bfloat16 on a CPU, float16 on a GPU)")
    parser.add_argument("--allocator", choices=["tuned", "both", "all"], default="tuned",
                        help="both: measure glibc's allocator as it comes and tuned, in two fresh processes; "
                             "all: and tcmalloc preloaded, where it is installed")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The arguments, each checked that can be without Keras (a traceback each, once)."""
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():  # a traceback from the npz reader
        parser.error(f"{args.data}: no such npz (prepare one with datagen.py, README's Workflow)")
    if min(args.size, args.batch, args.rounds) < 1 or args.steps < 2 or args.warmup < 0 or args.workers < 0:
        parser.error("--size, --batch and --rounds must be >= 1, --steps >= 2, --warmup and --workers >= 0")
    return args


if __name__ == "__main__":
    parse(build_parser(), sys.argv[1:])  # --help, a wrong flag or a bad count answer before Keras loads (4 s)

runtime.startup()  # Keras and its backend without their start-up INFO lines (before any import that loads them)

import keras
import numpy as np
from tqdm import tqdm

from facelandmarks.cli.common import USER_ERRORS, error_line
from facelandmarks.data import npz
from facelandmarks.data.augment.augmenter import Augmenter
from facelandmarks.data.augment.config import AugmentConfig
from facelandmarks.data.feeding import FaceParts, LandmarkBatches
from facelandmarks.models import build_model
from facelandmarks.models.losses import pack_targets
from facelandmarks.training import distribute
from facelandmarks.training.callbacks import AllocatorSettings
from facelandmarks.training.config import TrainConfig
from facelandmarks.training.fit import _compile, resolve_jit_compile, set_precision


class ConstantBatch(keras.utils.PyDataset):
    def __init__(self, x, y, steps):
        super().__init__()
        self.x, self.y, self.steps = x, y, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.x, self.y


class StepTimer(keras.callbacks.Callback):
    """Wall time, CPU time (user/system) and minor page faults over the timed steps."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup, self.times, self.usage = warmup, [], []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
        self.usage.append(resource.getrusage(resource.RUSAGE_SELF))

    def images_per_second(self, batch_size):
        t = self.times[self.warmup:]
        return batch_size * (len(t) - 1) / (t[-1] - t[0])

    def kernel_share_and_faults(self):
        share, faults = machine.kernel_share_and_faults(self.usage[self.warmup], self.usage[-1])
        return share, faults / max(len(self.usage) - 1 - self.warmup, 1)


def run_both(argv, allocators: str) -> int:
    """The same measurement in fresh processes: glibc as it comes, tuned, and (``all``) tcmalloc preloaded
    where it is installed; one table."""
    rows = _per_allocator.measure_per_allocator(__file__, [a for a in argv if a not in ("--allocator", allocators)],
                                                tcmalloc=allocators == "all")
    if rows is None:
        return 2  # measure_per_allocator said which run failed, in one line
    print(rows[0][1]["title"])
    print(machine.cpu_description())
    print("| allocator | mode | images/s | kernel share of CPU time | minor faults per step |")
    print("|---|---|---|---|---|")
    for label, result in rows:
        for mode, values in result["modes"].items():
            print(f"| {label} | {mode} | {values['images_per_second']:.1f} | {values['kernel_share']:.1%} | "
                  f"{values['faults_per_step']:,.0f} |")
        print(f"| {label} | ratio pipeline / compute | {result['ratio']:.3f} | | |")
    base = rows[0][1]["modes"]["pipeline"]["images_per_second"]
    for label, result in rows[1:]:
        print(f"pipeline images/s, {label.split(' (')[0]} / glibc default: {result['modes']['pipeline']['images_per_second'] / base:.2f}x")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(parser, argv)
    if args.allocator in ("both", "all"):
        return run_both(argv, args.allocator)
    policy = set_precision(args.mixed_precision)

    try:  # not an npz, an unknown --model or --augment: were tracebacks
        arrays = npz.load_npz(args.data)
        if len(arrays["images"]) < (args.steps + args.warmup) * args.batch:  # the pipeline's epoch ran dry: a traceback
            parser.error(f"{args.data}: {len(arrays['images'])} faces, fewer than --steps + --warmup batches of --batch "
                         f"({args.steps} + {args.warmup} of {args.batch}) take")
        scheme = npz.scheme_of(arrays)
        parts = FaceParts(arrays, args.size)
        config = TrainConfig(model=args.model, data=args.data, run_dir="-", batch=args.batch, jit_compile=args.jit_compile)
        model = build_model(args.model, input_shape=(args.size, args.size, arrays["images"].shape[-1]),
                            num_points=scheme.num_points)
        augmenter = Augmenter(AugmentConfig.parse(args.augment), scheme, seed=0)
    except USER_ERRORS as err:
        parser.error(error_line(err, (args.data,)))
    _compile(model, config, scheme, distribute.Cluster())
    x0, lm0, vis0 = (a[: args.batch] for a in parts.get(0))
    constant = ConstantBatch(x0.astype(np.float32), pack_targets(lm0, vis0), args.steps + args.warmup)
    results = {"pipeline": [], "compute only": []}
    usage = {"pipeline": [], "compute only": []}
    progress = tqdm(total=args.rounds * len(results), desc="rounds x modes", unit="fit", leave=False)  # seconds to minutes each
    for _ in range(args.rounds):
        for mode in results:
            if mode == "pipeline":
                data = LandmarkBatches(parts, args.batch, augmenter, workers=args.workers, use_multiprocessing=False)
                steps = args.steps + args.warmup
            else:
                data, steps = constant, None
            timer = StepTimer(args.warmup)
            model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[AllocatorSettings(), timer], verbose=0)
            results[mode].append(timer.images_per_second(args.batch))
            usage[mode].append(timer.kernel_share_and_faults())
            progress.update(1)
    progress.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipeline, compute = np.median(results["pipeline"]), np.median(results["compute only"])
    title = (f"{args.model} at {args.size} px, batch {args.batch}, {len(arrays['images'])} faces in memory, "
             f"backend {keras.config.backend()}, augment {args.augment!r}, {args.workers} loader threads, "
             f"XLA {resolve_jit_compile(args.jit_compile)}, precision {policy}")
    if args.json:  # one row of a --allocator table, which names the allocator itself
        print(json.dumps({"title": title, "ratio": pipeline / compute, "modes": {
            mode: {"images_per_second": float(np.median(results[mode])),
                   "kernel_share": float(np.median([u[0] for u in usage[mode]])),
                   "faults_per_step": float(np.median([u[1] for u in usage[mode]]))} for mode in results}}))
        return 0
    print(f"{title}, allocator {machine.preloaded_allocator()}")
    print(machine.cpu_description())
    print("| mode | images/s (median of rounds) | rounds | kernel share of CPU time | minor faults per step |")
    print("|---|---|---|---|---|")
    for mode, values in results.items():
        share = np.median([u[0] for u in usage[mode]])
        faults = np.median([u[1] for u in usage[mode]])
        print(f"| {mode} | {np.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} | {share:.1%} | {faults:,.0f} |")
    print(f"| ratio pipeline / compute | {pipeline / compute:.3f} | | | |")
    print(f"peak resident memory: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
