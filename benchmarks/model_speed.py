"""Parameters and CPU inference time per face of every registered model.

Each model is built at its default input size (``REGISTRY``) with K
landmarks and random weights (speed does not depend on the weights), warmed
up, then timed on batches of one face with ``predict_on_batch`` (the
compiled inference path).  The table gives the median and the fastest of the
timed calls in milliseconds.  ``inception_bottleneck`` is timed twice: the
head alone (what training on a bottleneck file costs) and with the InceptionV3
feature extraction a new photo needs first.

Run it niced on a quiet machine; the backend is the one ``KERAS_BACKEND``
selects::

    nice python benchmarks/model_speed.py
    KERAS_BACKEND=jax nice python benchmarks/model_speed.py --models mobilenetv2 heatmap
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from tqdm import tqdm

from facelandmarks.cli.common import OneLineParser
from facelandmarks.machine import cpu_description
from facelandmarks.runtime import startup


def time_calls(predict, batch, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``predict(batch)`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        np.asarray(predict(batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(predict(batch))
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def bottleneck_pipeline(num_points: int):
    """InceptionV3 features (299 px) followed by the bottleneck head, as one model."""
    import keras

    from facelandmarks.models import backbones, build_model

    backbone = backbones.build_backbone("inception", (299, 299, 3), pooling="avg")
    head = build_model("inception_bottleneck", (backbone.output.shape[-1],), num_points)
    pixels = keras.Input((299, 299, 3), name="pixels")
    return keras.Model(pixels, head(backbone(pixels)), name="inception_bottleneck_pipeline")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", metavar="NAME", help="models to time (default: all; models.py --list names them)")
    parser.add_argument("--num-points", type=int, default=68, help="landmarks K (default 68)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.warmup, args.repeats, args.num_points) < 1:  # --num-points 0: build_model's traceback
        parser.error(f"--warmup, --repeats and --num-points must be >= 1, got {args.warmup}, {args.repeats} and "
                     f"{args.num_points}")
    startup()  # Keras and its backend without their start-up INFO lines, after --help has answered
    import keras

    from facelandmarks.models import FEATURES, REGISTRY, build_model, get_spec

    args.models = args.models or list(REGISTRY)
    unknown = [name for name in args.models if name not in REGISTRY]
    if unknown:
        parser.error(f"--models: {', '.join(unknown)} not registered; choose from {', '.join(REGISTRY)}")

    rng = np.random.default_rng(0)
    rows = []
    jobs = [(name, None) for name in args.models]
    if "inception_bottleneck" in args.models:
        jobs.insert(jobs.index(("inception_bottleneck", None)) + 1, ("inception_bottleneck", "with InceptionV3 features"))
    for name, variant in tqdm(jobs, desc="models", unit="model"):
        spec = get_spec(name)
        if variant:
            model, shape = bottleneck_pipeline(args.num_points), (299, 299, 3)
        else:
            model, shape = build_model(name, spec.default_input_shape, args.num_points), spec.default_input_shape
        if spec.input_kind == FEATURES and not variant:
            batch = rng.random((1, *shape)).astype(np.float32)
        else:
            batch = rng.integers(0, 256, (1, *shape), dtype=np.uint8)
        times = time_calls(model.predict_on_batch, batch, args.warmup, args.repeats)
        rows.append((name + (f" ({variant})" if variant else ""), "x".join(map(str, shape)), model.count_params(),
                     statistics.median(times), min(times)))
        del model
        keras.backend.clear_session()

    print(f"\nbackend {keras.backend.backend()}, {cpu_description()}; "
          f"batch 1, K={args.num_points}, median / fastest of {args.repeats} calls")
    print(f"{'model':<48} {'input':<12} {'params':>12} {'ms/face':>9} {'fastest':>9}")
    for name, shape, params, median, fastest in rows:
        print(f"{name:<48} {shape:<12} {params:>12,} {median:>9.1f} {fastest:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
