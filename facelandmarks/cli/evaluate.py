"""Compare trained runs on a test set, or run one on photos and video."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from facelandmarks import runtime
from facelandmarks.cli.common import USER_ERRORS, OneLineParser, complain, error_line, script_main, stopped
from facelandmarks.data.detect_size import MIN_DETECT_SIDE, checked_max_side
from facelandmarks.data.faces import MIN_SCORE
from facelandmarks.data.report import counted
from facelandmarks.inference.align import MAX_SIZE as MAX_ALIGN
from facelandmarks.inference.align import MIN_SIZE as MIN_ALIGN
from facelandmarks.inference.photos import IMAGE_SUFFIXES, VIDEO_SUFFIXES, run_on_images
from facelandmarks.inference.video import REDETECT_EVERY, run_on_video
from facelandmarks.inference.video_files import counts_its_frames

EPILOG = """examples:
  python evaluate.py --image photo.jpg              # the shipped model -> out/photo.jpg_landmarks.png and .json
  python evaluate.py --image shots/ --align 112 --out out/shots   # a folder; also each face upright, 112 x 112
  python evaluate.py --video clip.mp4               # -> out/clip_landmarks.mp4 and .jsonl (--video 0: a camera)
  python evaluate.py runs/mobilenetv2-128 --image photo.jpg       # a run of yours (train.py --run-dir)
  python evaluate.py runs/mobilenetv2-128 --data dataset/ibug128_test.npz --baseline dlib --flip-test --out results/x

exit status:
  0    done
  1    --image: no face found in the photo (in any of the photos)
  2    a usage or input error, reported in one line on stderr, "evaluate.py: PATH: what is wrong": a missing,
       truncated or corrupt file (npz, run folder, photo), a folder without photos, an output folder that
       cannot be written (checked before any work; such an error makes no folder), an option of another mode
       (--crops with --video), a video file (AVI, MP4, MOV) that ends before the frames its header lists (the
       frames read are kept; a Matroska/WebM file lists none: a note, status 0)
  130  interrupted (Ctrl-C); a video's files are finished as they stand, and play; --image finishes the photo
       it writes (its overlay, JSON and crops all of this run) and says how many it marked; --data leaves the
       tables and plots an earlier evaluation wrote into --out as they were (the new ones are moved in together)
  143  terminated (SIGTERM: kill, timeout): as Ctrl-C
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="evaluate.py", description=__doc__, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*",
                        help="run directories written by train.py (none: the model shipped in weights/)")
    parser.add_argument("--data", help="test npz (or shard manifest, .shards.json): writes the comparison tables and plots")
    parser.add_argument("--image", nargs="+", metavar="PHOTO",
                        help="photos or folders of photos (results of all in --out; a folder's own overlays, crops "
                             "and chips are not marked again)")
    parser.add_argument("--video", help="a video file or a camera index")
    parser.add_argument("--out", help="output folder (--data, --image) or video file (--video; the points go beside "
                                      "it as .jsonl, --align's face videos as OUT_face<ID>_aligned.mp4; a folder gets "
                                      "VIDEO_landmarks.mp4); default: "
                                      "results/RUN (--data, RUN the first run's folder name), out/ (--image), "
                                      "out/VIDEO_landmarks.mp4 (--video)")
    parser.add_argument("--baseline", choices=["none", "dlib"], default="none",
                        help="add dlib's stock 68-point predictor: on ibug68 data, or on data of a markup whose scheme "
                             "says where its points lie in iBUG 68 (\"ibug68\"; docs/own-landmarks.md), on those points")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="score only matching faces: KEY=VALUE or KEY~TEXT on a per-face key "
                             "(source=youtube68, path~youtube68/test/); repeat to combine")
    parser.add_argument("--no-timing", action="store_true", help="--data: skip the ms/face measurement")
    parser.add_argument("--max-frames", type=int, help="stop a video after this many frames")
    parser.add_argument("--flip-test", action="store_true",
                        help="average each face's prediction with that of its mirror image (left/right points swapped "
                             "back); with --data, adds these rows beside the plain ones")
    parser.add_argument("--recrop", action="store_true",
                        help="predict each face again on the crop cut around its first prediction, as dataset "
                             "preparation cuts one from landmarks, and average the two (twice the time; with "
                             "--flip-test four passes); with --data, adds these rows after the others")
    parser.add_argument("--min-score", type=float,
                        help=f"--image, --video: keep dlib detections scoring at least this (default {MIN_SCORE}; "
                             "lower finds more faces and more false ones, 0 keeps all)")
    parser.add_argument("--detect-max-side", type=int, metavar="PX",
                        help="--image, --video: look for faces in a copy of each photo or frame longer than PX, shrunk to PX on its "
                             "longer side (crops and points still from the photo itself): faster on large photos, "
                             "but faces under about 40 px in the copy (80 in one of more than 2.5 Mpx) are missed, and some others come and go "
                             f"(docs/evaluation.md); 0: the photo itself (default); {MIN_DETECT_SIDE} or more")
    parser.add_argument("--crops", action="store_true",
                        help="--image: also write an enlarged crop of every face with its points (PHOTO_face<i>.png)")
    parser.add_argument("--align", type=int, metavar="SIZE",
                        help="--image, --video: also write every face upright in a SIZE x SIZE chip placed by its "
                             "landmarks (the eyes, nose and mouth where ArcFace-style recognition at 112 px expects "
                             "them): --image PHOTO_aligned<i>.png, matrix and points in the JSON; --video a video per "
                             "tracked face beside the overlay (out/VIDEO_landmarks_face<ID>_aligned.mp4; --out OUT.mp4: "
                             "OUT_face<ID>_aligned.mp4), a chip for each frame that lists the face in the points "
                             f"file, from the points the overlay draws; SIZE {MIN_ALIGN}-{MAX_ALIGN} px")
    parser.add_argument("--align-padding", type=float, default=0.0, metavar="P",
                        help="--align: show P more of the chip's view on each side (default 0; 0.25 shows the "
                             "whole head on most faces)")
    parser.add_argument("--redetect-every", type=int, default=REDETECT_EVERY, metavar="N",
                        help=f"--video: run the face detector every N frames (default {REDETECT_EVERY}) and whenever a "
                             "tracked face is lost; between detections each face is cropped from its previous "
                             "landmarks. 1 detects on every frame")
    parser.add_argument("--no-smooth", action="store_true",
                        help="--video: write each frame's raw points (default: smoothed over time, which steadies "
                             "a still face's points and hardly moves a moving one's)")
    parser.add_argument("--runtime", choices=["auto", "keras", "onnx", "litert"], default="auto",
                        help="auto (default): a run's export (export.py) when it is as new as the run and its runtime "
                             "is installed, else Keras; keras, onnx, litert: that one (rows of exports are labelled). "
                             "An export folder runs in ONNX Runtime or LiteRT, a .onnx / .tflite file in its own")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores): an exported model's, and "
                                                    "Keras's on TensorFlow (Keras on JAX runs on all cores: refused)")
    parser.add_argument("--verbose", action="store_true", help="show the backend's start-up log lines")
    return parser


@script_main
def main(argv=None) -> int:
    """Exit status as ``EPILOG`` says; a user's error is one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    modes = [m for m in ("data", "image", "video") if getattr(args, m)]
    if len(modes) != 1:
        hint = next(filter(None, map(_mode_hint, args.runs)), None) if not modes else None
        complain("evaluate.py: give exactly one of --data, --image, --video" + (f" ({hint})" if hint else ""))
        return 2
    if args.image:  # a run directory written after the photos (--image PHOTO RUN) is the run
        args.runs += [p for p in args.image if _is_run(Path(p))]
        args.image = [p for p in args.image if not _is_run(Path(p))]
        if not args.image:
            complain("evaluate.py: --image names run directories only; give it photos or folders of photos")
            return 2
    if problem := _misplaced_option(args, modes[0]):
        complain(f"evaluate.py: {problem}")
        return 2
    if not args.data and len(args.runs) > 1:
        complain(f"evaluate.py: --{modes[0]} takes one run directory, got {len(args.runs)} ({', '.join(args.runs)})"
                 + (": give the photos after --image" if args.image else ""))
        return 2
    if not args.runs:
        from facelandmarks.inference.shipped import default_model_dir

        try:
            args.runs = [str(default_model_dir())]
        except FileNotFoundError as err:
            complain(f"evaluate.py: {err}")
            return 2
    if problem := _unexported(args.runs, args.runtime):
        complain(f"evaluate.py: {problem}")
        return 2
    args.out = args.out or default_out(args)
    if args.video and _names_a_folder(args.out):  # a folder, as --image takes one
        args.out = str(Path(args.out) / Path(default_out(args)).name)
    if through_keras := [run for run in args.runs if _needs_keras(Path(run), args.runtime)]:
        runtime.startup(args.verbose)
        from facelandmarks.inference import keras_settings

        try:  # Keras on TensorFlow runs on --threads (it ran on all cores, in silence and then with a line saying so)
            keras_settings.set_threads(args.threads, ", ".join(through_keras), "--threads ")
        except ValueError as err:  # JAX: no setting for it, refused before anything loads
            complain(f"evaluate.py: {err}")
            return 2
    try:
        return _run(args)
    except KeyboardInterrupt as err:
        word, status = stopped(err)
        complain(f"\nevaluate.py: {word}" + (f" {err.progress}" if hasattr(err, "progress") else ""))
        return status
    except USER_ERRORS as err:
        complain(f"evaluate.py: {error_line(err, (args.data,))}")
        return 2


# options that only one or two of --data, --image, --video use, with the value that means "not given"
ONLY_FOR = {"baseline": (("data",), "none"), "where": (("data",), []), "crops": (("image",), False),
            "align": (("image", "video"), None), "align_padding": (("image", "video"), 0.0),
            "min_score": (("image", "video"), None), "detect_max_side": (("image", "video"), None), "max_frames": (("video",), None),
            "redetect_every": (("video",), REDETECT_EVERY), "no_smooth": (("video",), False),
            "no_timing": (("data",), False)}  # --image and --video time nothing (it was taken in silence)


def _misplaced_option(args, mode: str) -> str | None:
    """The line for an option given where it does nothing (``--crops`` with ``--video``), or None."""
    for name, (modes, unset) in ONLY_FOR.items():
        if mode not in modes and getattr(args, name) != unset:
            where = " and ".join(f"--{m}" for m in modes)
            return f"--{name.replace('_', '-')} works with {where}, not --{mode}"
    out = Path(args.out or "")
    if mode == "image" and out.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES) and not _names_a_folder(args.out):
        return (f"{args.out}: --out for --image is a folder (each photo's overlay and points go into it as "
                f"PHOTO_landmarks.png and .json), not a {out.suffix} file")
    if args.align_padding != 0.0 and args.align is None:
        return "--align-padding works with --align SIZE"
    if args.align is not None and not MIN_ALIGN <= args.align <= MAX_ALIGN:
        return f"--align must be between {MIN_ALIGN} and {MAX_ALIGN} px, got {args.align}"
    if not math.isfinite(args.align_padding) or args.align_padding < 0:  # once a line naming no option, after the photo
        return f"--align-padding must be 0 or more, got {args.align_padding:g}"
    if args.min_score is not None and math.isnan(args.min_score):  # the detector said so without naming the option
        return "--min-score must be a number, got nan"
    try:
        checked_max_side(args.detect_max_side, "--detect-max-side")
    except ValueError as err:
        return str(err)
    for name in ("threads", "max_frames", "redetect_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {value}"
    return None


def _is_run(path: Path) -> bool:
    """A run directory (a config.json and weights, or no photos beside it), pipeline run or export (folder or model
    file): not a folder of photos that happens to hold a config.json."""
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.photos import image_files

    if path.is_dir():
        if (path / "pipeline.json").is_file() or (path / runtimes.EXPORT_FILE).is_file():
            return True
        weights = any((path / name).is_file() for name in ("best.weights.h5", "last.weights.h5", "model.keras"))
        return (path / "config.json").is_file() and (weights or not image_files(path))
    return path.suffix in (".onnx", ".tflite")


def _names_a_folder(out: str) -> bool:
    """Whether ``--out`` names a folder: an existing one, or one written as a folder (``out/``)."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


def _mode_hint(given: str) -> str | None:
    """For a photo, folder of photos, video or npz typed where a run goes (``evaluate.py photo.jpg``, a first try):
    the option it needs, or None."""
    from facelandmarks.inference.photos import image_files

    path = Path(given)
    if path.is_dir():
        return f"{given} is a folder of photos: --image {given}" if not _is_run(path) and image_files(path) else None
    kinds = {**dict.fromkeys(IMAGE_SUFFIXES, ("a photo", "--image")), **dict.fromkeys(VIDEO_SUFFIXES, ("a video", "--video")),
             ".npz": ("a test set", "--data")}
    what, option = kinds.get(path.suffix.lower(), (None, None)) if path.is_file() else (None, None)
    return f"{given} is {what}: {option} {given}" if what else None


def default_out(args) -> str:
    """Where results go without ``--out``: ``results/RUN`` for --data, ``out/`` for --image,
    ``out/<video name>_landmarks.mp4`` for --video (``out/camera<N>_landmarks.mp4`` for a camera)."""
    if args.data:
        run = Path(args.runs[0]).resolve()
        return str(Path("results") / (run.stem if run.suffix in (".onnx", ".tflite") else run.name))
    if args.image:
        return "out"
    name = f"camera{args.video}" if str(args.video).isdigit() else Path(args.video).stem
    return str(Path("out") / f"{name}_landmarks.mp4")


def _unexported(runs: list[str], runtime_name: str) -> str | None:
    """The line for the first run without the export ``--runtime onnx`` or ``litert`` asks for, or None: before any
    run is scored (a second run not exported ended an evaluation once the first was scored). Pipelines, and paths
    that are no folder, say what is wrong with them as they load."""
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.predictor import unrunnable

    if runtime_name not in runtimes.RUNTIMES:
        return None
    for run in map(Path, runs):
        if run.is_dir() and not (run / "pipeline.json").is_file() and (problem := unrunnable(run, runtime_name)):
            return problem
    return None


def _needs_keras(run: Path, runtime_name: str) -> bool:
    """Whether loading ``run`` with ``runtime_name`` needs Keras (exports run without it; errors surface later)."""
    from facelandmarks.inference import runtimes
    from facelandmarks.inference.predictor import exported_for

    if (run / "pipeline.json").is_file():
        return not ((run / "stage1" / runtimes.EXPORT_FILE).is_file()
                    or (runtime_name != "keras" and (run / runtimes.EXPORT_DIR / "pipeline.json").is_file()))
    try:
        return exported_for(run, runtime_name) is None
    except ValueError:
        return False


def _run(args) -> int:
    import facelandmarks.pipelines  # noqa: F401  (pipeline runs load like single models; no backend imported)

    check_output_folder(Path(args.out).parent if args.video else Path(args.out))  # before hours of scoring, not after
    load = {"runtime": args.runtime, "threads": args.threads}
    if args.data:
        from facelandmarks.evaluation.evaluate import evaluate_runs

        evaluate_runs(args.runs, args.data, args.out, baseline=args.baseline, timing=not args.no_timing,
                      where=args.where, flip_test=args.flip_test, recrop=args.recrop, **load)
        print((Path(args.out) / "results.md").read_text())
        curves = "curves, " if (Path(args.out) / "curves.png").is_file() else "no learning curves (no run's history.csv), "
        print(f"tables, {curves}CED and gallery in {args.out}")
        return 0
    align = (args.align, args.align_padding) if args.align is not None else None
    if args.image:
        counts = run_on_images(args.runs[0], args.image, args.out, args.flip_test, args.min_score, args.crops,
                               recrop=args.recrop, align=align, detect_max_side=args.detect_max_side, **load)
        _export_hint(Path(args.runs[0]), args.runtime)
        return 0 if counts["done"] else 1  # a folder fails only when no photo had a face
    result = run_on_video(args.runs[0], args.video, args.out, args.max_frames, args.flip_test,
                          redetect_every=args.redetect_every, min_score=args.min_score, recrop=args.recrop,
                          smooth=not args.no_smooth, align=align, detect_max_side=args.detect_max_side,
                          note=lambda text: complain(f"evaluate.py: {text}"), **load)
    chips = ", ".join(result["aligned"].values())
    aligned = (f", aligned faces in {chips}" if chips else ", no aligned faces (no face found)") if align else ""
    print(f"{counted(result['frames'], 'frame')}, {counted(result['faces'], 'face')}, {result['fps']} frames/s "
          f"(detector on {counted(result['detections'], 'frame')}, tracking on {result['tracked']}, "
          f"{counted(result['kept'], 'face')} the detector missed kept by tracking) -> {result['output']}, "
          f"points in {result['points']}{aligned}")
    _export_hint(Path(args.runs[0]), args.runtime)
    expected = min(result["listed"], args.max_frames or result["listed"])
    if result["reached"] < expected - max(1, expected // 100):  # a file cut short ended as if the clip had, status 0
        if counts_its_frames(args.video):
            complain(f"evaluate.py: {args.video}: {result['frames']} of the {result['listed']} frames its header lists "
                     "could be read (the file is cut short or damaged); the overlay and points hold those")
            return 2
        complain(f"evaluate.py: note: {args.video}: {counted(result['frames'], 'frame')} read, where its duration x frame rate makes "
                 f"{result['listed']} (a sound track running on past the last frame, or a file cut short)")
    return 0


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder that cannot be written, before the work; creates nothing (the results' writers make
    the folders --out lacks once there is something to write): of those, the nearest existing one must be writable.
    (It was made here, so a missing or corrupt photo, or a run that did not load, left an empty --out behind.)"""
    from facelandmarks.data.errors import OutputError, check_writable

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder and not existing.is_dir():
        raise OutputError(f"{folder}: cannot write there ({existing} is a file)")
    check_writable(existing)


def _export_hint(run: Path, runtime_name: str) -> None:
    """After photos or video marked through Keras because a run had no export that could run: say why, and how to
    get one (with the extras export.py and a runtime need: a plain [jax] install lacks both)."""
    from facelandmarks.inference import runtimes

    if runtime_name != "auto" or runtimes.is_export(run) or (run / "pipeline.json").is_file():
        return
    problem = runtimes.export_problem(run)
    if problem is None:  # an export ran, without Keras
        return
    import keras

    print(f"ran through Keras on {keras.backend.backend()}: {problem}; an export runs without Keras, 2.3-2.7x "
          f"faster per face on one thread ({runtime.help_for_this_install('docs/inference.md')})")
