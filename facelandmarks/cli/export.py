"""Write a trained run, a coarse-to-fine pipeline or the shipped model for inference runtimes.

The export folder (default RUN/export) holds model.onnx (ONNX Runtime; its metadata carries the
settings, so the file alone is enough), model.tflite (LiteRT), saved_model/ (TensorFlow Serving)
and export.json (scheme, input size, what input and output mean, the weights it came from).
Predictor.load(FOLDER) and evaluate.py FOLDER --image/--video/--data run it without TensorFlow,
Keras or JAX; evaluate.py RUN --runtime onnx runs RUN/export.

examples:
  python export.py                                  # the shipped model -> weights/<name>/export
  python export.py runs/mobilenetv2-pip-128 --check dataset/ibug128_test.npz
  python export.py runs/cascade --format onnx --to /tmp/cascade-onnx
  python export.py RUN --format litert --quantize float16 --check dataset/ibug128_test.npz
  python export.py --quantize int8 --calibration dataset/ibug128_train.npz --check dataset/ibug128_test.npz \\
      --to weights/mobilenetv2-pip-128/export-int8
"""

from __future__ import annotations

import argparse
import os

from facelandmarks import runtime
from facelandmarks.cli.common import OneLineParser, complain, script_main, stopped

EPILOG = """exit status:
  0    exported
  2    a usage or input error, reported in one line on stderr: a missing or unreadable run, a format
       this machine cannot write (TensorFlow, tf2onnx, onnx are needed to export), a failed check
  130  interrupted (Ctrl-C); the previous export, if any, is left as it was
  143  terminated (SIGTERM: kill, timeout): as Ctrl-C
"""


def build_parser() -> argparse.ArgumentParser:
    from facelandmarks.inference.packages import DEFAULT_FORMATS
    from facelandmarks.inference.runtimes import CHECK_FACES, FORMATS, QUANTIZE

    parser = OneLineParser(prog="export.py", description=__doc__, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="run directory or pipeline run (none: the model shipped in weights/)")
    parser.add_argument("--to", metavar="FOLDER", help="export folder (default: RUN/export); it replaces an earlier export there, nothing else")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS),
                        help=f"formats to write (default: {' '.join(DEFAULT_FORMATS)})")
    parser.add_argument("--quantize", choices=QUANTIZE, default="none",
                        help="float16: LiteRT weights stored as float16 (half the file); int8: convolutions in 8-bit "
                             "integers in both runtimes (on one thread in LiteRT on an AVX-512 VNNI CPU 0.92x dlib's time, "
                             "float32 1.85x; no gain with AVX2 alone: docs/inference.md), calibrated on --calibration; "
                             "see --check for the NME change")
    parser.add_argument("--calibration", metavar="NPZ", help="--quantize int8: training faces (a prepared npz) whose "
                                                             "activations set the int8 ranges (200 of them are used)")
    parser.add_argument("--check", metavar="NPZ", help="a test npz: compare every runtime with Keras on its first "
                                                       "--check-faces faces (point difference, NME) into export.json")
    parser.add_argument("--check-faces", type=int, metavar="N",
                        help=f"--check: faces compared (default {CHECK_FACES})")
    parser.add_argument("--verbose", action="store_true", help="show the backend's and converters' log lines")
    return parser


def _through_tensorflow() -> str | None:
    """Where Keras would load JAX (``KERAS_BACKEND=jax`` or keras.json) and TensorFlow is installed, choose TensorFlow
    for this process and return the line saying so; else None. The converters that write ONNX and LiteRT files are
    TensorFlow's (on JAX Keras asked for jax2onnx, in its own words), and a run's weights are the same on either
    backend, so the export is the same file. Only JAX installed: the usual line naming the [export] extra."""
    import sys

    from facelandmarks.inference.packages import installed
    from facelandmarks.runtime import keras_backend

    if "keras" in sys.modules or keras_backend() != "jax" or not installed("tensorflow"):
        return None
    os.environ["KERAS_BACKEND"] = "tensorflow"
    return ("export.py: exporting through TensorFlow (its converters write the ONNX and LiteRT files; the weights are "
            "the same on JAX): KERAS_BACKEND=jax still trains and evaluates")


@script_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.check_faces is not None and args.check is None:  # it was taken in silence
        complain(f"export.py: --check-faces works with --check NPZ (got --check-faces {args.check_faces} alone)")
        return 2
    if note := _through_tensorflow():
        print(note)
    runtime.startup(args.verbose)
    import facelandmarks.pipelines  # noqa: F401  (pipeline runs export stage by stage)
    from facelandmarks.cli.common import USER_ERRORS, error_line
    from facelandmarks.inference.export import CHECK_FACES, export_run

    try:
        faces = CHECK_FACES if args.check_faces is None else args.check_faces
        export_run(args.run, args.to, tuple(args.format), args.quantize, args.check, faces, args.calibration)
    except KeyboardInterrupt as err:
        from facelandmarks.inference.swap import was_replaced

        word, status = stopped(err)
        if was_replaced(err):  # it said 'the previous export is unchanged' of a folder holding the new one
            complain(f"\nexport.py: {word} while deleting the export it replaced; the new export is in place (what "
                     "is left of the old one goes at the next export)")
        else:
            complain(f"\nexport.py: {word}; the previous export is unchanged")
        return status
    except (*USER_ERRORS, ImportError) as err:
        complain(f"export.py: {error_line(err, (args.check,))}")
        return 2
    return 0
