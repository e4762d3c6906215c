"""Training throughput of the real input pipeline against compute alone (not a test).

    python benchmarks/train_throughput.py --data dataset/ibug128_train.npz --model mobilenetv2 --size 128

Both modes run ``model.fit`` on the same compiled model for the same number of
steps: "pipeline" feeds ``LandmarkBatches`` (shuffled rows of the
full prepared set, on-the-fly augmentation, loader threads), "compute only"
feeds one constant in-memory batch.  The ratio of their images/s says how
much the data path costs; rounds alternate so drift hits both.  Peak memory
is the process's maximum resident set, with the whole set loaded.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import keras
import numpy as np

from facelandmarks.data import npz
from facelandmarks.data.augment.augmenter import Augmenter
from facelandmarks.data.augment.config import AugmentConfig
from facelandmarks.data.feeding import FaceParts, LandmarkBatches
from facelandmarks.models import build_model
from facelandmarks.models.losses import pack_targets
from facelandmarks.training import distribute
from facelandmarks.training.config import JIT_MODES, TrainConfig
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
    def __init__(self, warmup):
        super().__init__()
        self.warmup, self.times = warmup, []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def images_per_second(self, batch_size):
        t = self.times[self.warmup:]
        return batch_size * (len(t) - 1) / (t[-1] - t[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared training npz")
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="loader threads of the real pipeline")
    parser.add_argument("--augment", default="default")
    parser.add_argument("--jit-compile", default="auto", choices=JIT_MODES,
                        help="XLA for the train step (auto: off for TensorFlow on CPU)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="as train.py --mixed-precision (bfloat16 on a CPU, float16 on a GPU)")
    args = parser.parse_args(argv)
    policy = set_precision(args.mixed_precision)

    arrays = npz.load_npz(args.data)
    scheme = npz.scheme_of(arrays)
    parts = FaceParts(arrays, args.size)
    config = TrainConfig(model=args.model, data=args.data, run_dir="-", batch=args.batch,
                                  jit_compile=args.jit_compile)
    model = build_model(args.model, input_shape=(args.size, args.size, arrays["images"].shape[-1]),
                               num_points=scheme.num_points)
    _compile(model, config, scheme, distribute.Cluster())
    augmenter = Augmenter(AugmentConfig.parse(args.augment), scheme, seed=0)
    x0, lm0, vis0 = (a[: args.batch] for a in parts.get(0))
    constant = ConstantBatch(x0.astype(np.float32), pack_targets(lm0, vis0), args.steps + args.warmup)
    results = {"pipeline": [], "compute only": []}
    for _ in range(args.rounds):
        for mode in results:
            if mode == "pipeline":
                data = LandmarkBatches(parts, args.batch, augmenter, workers=args.workers, use_multiprocessing=False)
                steps = args.steps + args.warmup
            else:
                data, steps = constant, None
            timer = StepTimer(args.warmup)
            model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
            results[mode].append(timer.images_per_second(args.batch))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipeline, compute = np.median(results["pipeline"]), np.median(results["compute only"])
    print(f"{args.model} at {args.size} px, batch {args.batch}, {len(arrays['images'])} faces in memory, "
          f"backend {keras.config.backend()}, augment {args.augment!r}, {args.workers} loader threads, "
          f"XLA {resolve_jit_compile(args.jit_compile)}, precision {policy}")
    print("| mode | images/s (median of rounds) | rounds |")
    print("|---|---|---|")
    for mode, values in results.items():
        print(f"| {mode} | {np.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"| ratio pipeline / compute | {pipeline / compute:.3f} | |")
    print(f"peak resident memory: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
