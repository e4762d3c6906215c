"""One forward + backward pass of MobileNetV2's single layers at 128 px, on TensorFlow and on JAX (not a test).

    python benchmarks/layer_speed.py --batch 64 --steps 10 --warmup 3

Where JAX's training time goes on a CPU, layer by layer: each row builds one Keras layer at a shape of
``keras.applications.MobileNetV2`` on a 128-px input (alpha 1) and times the gradient of a fixed linear
loss of its output with respect to its weights and its input: compiled with XLA (``jax.jit``) on JAX, a
``tf.function`` on TensorFlow (without XLA, as training runs there on a CPU; ``--tf-xla`` compiles it with
XLA too).  Each backend runs in a fresh process of its own, one after the other; a table row gives the
median milliseconds per step of each and their ratio.

Rows ``slices`` time the depthwise 3x3 written in ``keras.ops`` as nine shifted slices of the padded input
times per-channel weights, summed (stride 2 by slicing; ``facelandmarks.models.depthwise``): the same outputs
as ``DepthwiseConv2D`` (checked, within 1e-4) through XLA's elementwise code instead of its grouped
convolution.  The package computes JAX's 3x3 depthwise convolutions so; the plain depthwise rows time JAX's
own grouped convolution, as without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from facelandmarks import machine, runtime
from facelandmarks.cli.common import OneLineParser

# (name, layer kind, input height = width, input channels, output channels, stride)
LAYERS = [
    ("Conv1", "conv3", 128, 3, 32, 2),
    ("expanded_conv_depthwise", "depthwise", 64, 32, 32, 1),
    ("block_1_depthwise (stride 2)", "depthwise", 64, 96, 96, 2),
    ("block_2_depthwise", "depthwise", 32, 144, 144, 1),
    ("block_3_depthwise (stride 2)", "depthwise", 32, 144, 144, 2),
    ("block_4_depthwise", "depthwise", 16, 192, 192, 1),
    ("block_8_depthwise", "depthwise", 8, 384, 384, 1),
    ("block_15_depthwise", "depthwise", 4, 960, 960, 1),
    ("block_1_expand (1x1)", "conv1", 64, 16, 96, 1),
    ("block_2_expand (1x1)", "conv1", 32, 24, 144, 1),
    ("block_8_expand (1x1)", "conv1", 8, 64, 384, 1),
    ("block_1_expand_BN", "bn", 64, 96, 96, 1),
    ("block_1_expand_relu (ReLU6)", "relu6", 64, 96, 96, 1),
]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per layer (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    parser.add_argument("--backends", default="tensorflow,jax", help="comma-separated (default tensorflow,jax)")
    parser.add_argument("--only", default="", help="comma-separated layer kinds: conv3,depthwise,slices,conv1,bn,relu6")
    parser.add_argument("--tf-xla", action="store_true", help="compile TensorFlow's step with XLA too")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def make_layer(kind, channels, stride):
    import keras
    if kind == "conv3":
        return keras.layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False)
    if kind in ("depthwise", "slices"):
        return keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)
    if kind == "conv1":
        return keras.layers.Conv2D(channels, 1, use_bias=False)
    if kind == "bn":
        return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.999)
    return keras.layers.ReLU(6.0)


def make_step(layer, kind, stride, tf_xla):
    """A function of (weights, x) -> gradients of ``sum(output * c)`` with respect to both, compiled."""
    import keras
    from keras.src.backend import nn

    from facelandmarks.models.depthwise import depthwise_slices
    backend = keras.config.backend()
    xla_depthwise_conv = getattr(nn.depthwise_conv, "xla_depthwise_conv", nn.depthwise_conv)
    fixed = [v.value for v in layer.non_trainable_variables]
    options = {"training": True} if kind == "bn" else {}  # batch statistics, as in training

    def forward(weights, x):
        if kind == "slices":
            return depthwise_slices(x, weights[0], stride)
        if kind == "depthwise" and backend == "jax":  # JAX's own grouped convolution, as without the package
            return xla_depthwise_conv(x, weights[0], stride, "same")
        y, _ = layer.stateless_call(weights, fixed, x, **options)
        return y

    if backend == "jax":
        import jax

        def loss(weights, x, c):
            return (forward(weights, x) * c).sum()
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return forward, lambda w, x, c: jax.block_until_ready(grad(w, x, c))

    import tensorflow as tf

    @tf.function(jit_compile=tf_xla)
    def grad(weights, x, c):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            tape.watch(x)
            value = tf.reduce_sum(forward(weights, x) * c)
        return tape.gradient(value, (weights, x))
    return forward, lambda w, x, c: [g.numpy() for g in tf.nest.flatten(grad(w, x, c))]


def measure(args) -> list[dict]:
    runtime.startup()
    import keras
    import numpy as np
    rng = np.random.default_rng(0)
    kinds = set(runtime.comma_list(args.only)) or {"conv3", "depthwise", "slices", "conv1", "bn", "relu6"}
    rows = []
    for name, kind, size, cin, cout, stride in LAYERS:
        for variant in (kind, "slices") if kind == "depthwise" else (kind,):
            if variant not in kinds:
                continue
            layer = make_layer(variant, cout, stride)
            layer.build((args.batch, size, size, cin))
            x = keras.ops.convert_to_tensor(rng.normal(size=(args.batch, size, size, cin)).astype("float32"))
            weights = [v.value for v in layer.trainable_variables]
            forward, step = make_step(layer, variant, stride, args.tf_xla)
            out = keras.ops.convert_to_numpy(forward(weights, x))
            c = keras.ops.convert_to_tensor(rng.normal(size=out.shape).astype("float32"))
            if variant == "slices":  # the same outputs as the backend's own convolution
                reference = keras.ops.convert_to_numpy(make_step(layer, "depthwise", stride, args.tf_xla)[0](weights, x))
                assert np.abs(out - reference).max() < 1e-4, f"{name}: slices differ by {np.abs(out - reference).max()}"
            for _ in range(args.warmup):
                step(weights, x, c)
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step(weights, x, c)
                times.append(time.perf_counter() - start)
            rows.append({"layer": name if variant == kind else f"{name} as slices", "kind": variant,
                         "shape": f"{size}x{size}x{cin} -> {cout}, stride {stride}", "ms": 1000 * float(np.median(times))})
    return rows


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.batch, args.steps) < 1 or args.warmup < 0:
        parser.error("--batch and --steps must be >= 1, --warmup >= 0")
    if args.json:
        print(json.dumps(measure(args)))
        return 0
    backends = runtime.comma_list(args.backends)
    results = {}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    for backend in backends:  # a fresh process each: Keras chooses its backend once
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run([sys.executable, __file__, *forwarded, "--json"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"layer_speed.py: the {backend} run failed: {tail}", file=sys.stderr)
            return 2
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"forward + backward of single layers, MobileNetV2 at 128 px, batch {args.batch}, median of {args.steps} "
          f"steps after {args.warmup}; TensorFlow {'with' if args.tf_xla else 'without'} XLA; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(machine.cpu_description())
    print("| layer | input -> channels | " + " | ".join(f"{b} ms" for b in backends)
          + (" | jax / tensorflow |" if set(backends) >= {"jax", "tensorflow"} else " |"))
    print("|---" * (2 + len(backends) + (set(backends) >= {"jax", "tensorflow"})) + "|")
    first = results[backends[0]]
    for i, row in enumerate(first):
        cells = [f"{results[b][i]['ms']:.2f}" for b in backends]
        ratio = (f" | {results['jax'][i]['ms'] / results['tensorflow'][i]['ms']:.1f}x"
                 if set(backends) >= {"jax", "tensorflow"} else "")
        print(f"| {row['layer']} | {row['shape']} | " + " | ".join(cells) + ratio + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
