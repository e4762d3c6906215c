"""Datasets into the toolkit's one npz format.

Errors the user can cause -- a missing or corrupt input file, a bad option, an unwritable or full
output location, a refused archive -- print one line, ``datagen.py COMMAND: PATH: what is wrong``,
and exit with status 2 (``EXIT_INPUT``); argparse's own usage errors use 2 as well.  Ctrl-C exits
with 130 (SIGTERM with 143) and leaves the previous outputs as they were.  A traceback means a bug in the toolkit.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from facelandmarks import runtime
from facelandmarks.cli.common import OneLineParser, complain, script_main, stopped
from facelandmarks.data import npz
from facelandmarks.data.download import (
    MUCT_URL,
    ArchiveError,
    DownloadError,
    download_muct,
)
from facelandmarks.data.errors import OutputError
from facelandmarks.data.info import describe
from facelandmarks.data.prepare import MAX_UPSAMPLE, PrepareOptions, prepare
from facelandmarks.data.readers import READERS
from facelandmarks.data.records import CSV_LAYOUTS, CSV_ORIGIN_CHOICES, CSV_ORIGINS, AnnotationError, ReaderOptions
from facelandmarks.data.splits import DEFAULT_TEST_FRACTION, SplitError, SplitOptions
from facelandmarks.scheme_files import resolve_scheme
from facelandmarks.training.values import seed_problem

EXIT_INPUT = 2
EPILOG = (
    "exit status: 0 done; 2 a problem with the input, the options or the output location, told in one line "
    "'datagen.py COMMAND: PATH: what is wrong' (previous outputs are left as they were); 130 interrupted (Ctrl-C), "
    "143 terminated (SIGTERM), previous outputs left as they were too."
)
EXAMPLES = """examples (each COMMAND --help says more):
  python datagen.py prepare 300w --source ../shared/data/300w youtube68 --source ../shared/data/youtube68 \\
      --size 128 --out dataset/ibug128          # -> dataset/ibug128_train.npz, dataset/ibug128_test.npz
  python datagen.py prepare csv --source points.csv --scheme my12.json --csv-subject-column 1 \\
      --csv-first-coordinate 2 --size 128 --out dataset/my12   # your own markup (docs/own-landmarks.md)
  python datagen.py info dataset/ibug128_train.npz

"""
# The toolkit's own errors: each message starts with the file, folder or option at fault.
KNOWN_ERRORS = (AnnotationError, SplitError, DownloadError, ArchiveError, npz.DatasetError, OutputError, ValueError)


def _seed(text: str) -> int:
    """A seed numpy takes (``training.config.seed_problem``); argparse names the flag on an error."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if seed_problem(value):
        raise argparse.ArgumentTypeError(seed_problem(text))  # names the text as typed
    return value


def _csv_origin(text: str) -> int:
    """``--csv-origin``: 0 or 1; argparse names the flag on an error."""
    if text.strip() not in {str(origin) for origin in CSV_ORIGINS}:
        raise argparse.ArgumentTypeError(f"{CSV_ORIGIN_CHOICES}, got {text!r}")
    return int(text)


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = OneLineParser(
        prog="datagen.py",
        description="Landmarked face datasets into one npz format: download, prepare, select-points, bottleneck, info.",
        epilog=EXAMPLES + textwrap.fill(EPILOG, 79),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    down = sub.add_parser("download", help="fetch and extract the official MUCT release", epilog=EPILOG)
    down.add_argument("dataset", choices=["muct"], help="dataset to download (muct)")
    down.add_argument("--dest", required=True, help="folder to download and extract into")
    down.add_argument("--url", default=MUCT_URL, help=f"base URL of the tarballs, or a folder holding them (default {MUCT_URL})")
    down.add_argument("--delete-archives", action="store_true", help="remove each tarball once extracted")
    down.add_argument("--quiet", action="store_true", help="no progress bars")

    prep = sub.add_parser(
        "prepare",
        help="datasets -> PREFIX_train.npz, PREFIX_test.npz",
        description=(
            "Crop faces with dlib, move the landmarks, split by subject, mirror the training faces. "
            "Several 'DATASET --source DIR' pairs of one landmark scheme combine into one output, "
            "e.g. 'prepare 300w --source data/300w youtube68 --source data/youtube68 --size 128 --out dataset/ibug128'. "
            "The outputs replace the previous ones as one set (PREFIX.manifest.json lists it): a kill, an error or a "
            "full disk leaves the whole old set or the whole new one."
        ),
        epilog=EPILOG,
    )
    prep.add_argument("datasets", nargs="+", type=_dataset_name, metavar="DATASET", help=f"one of {', '.join(READERS)}")
    prep.add_argument("--source", action="append", required=True, help="dataset folder, or for kaggle, coco, csv, dlibxml its file (one per DATASET, in order)")
    prep.add_argument("--size", type=int, required=True, help="side of the square crops in pixels")
    prep.add_argument("--out", required=True, help="output prefix: writes PREFIX_train.npz, PREFIX_test.npz, PREFIX_report.json/.txt")
    prep.add_argument("--gray", action="store_true", help="1-channel (grayscale) images")
    prep.add_argument("--no-mirror", dest="mirror", action="store_false", help="do not add mirrored training faces")
    prep.add_argument("--vflip", action="store_true", help="also add vertically flipped training faces (y' = 1 - y, the seed's augmentation)")
    prep.add_argument("--no-fallback", dest="fallback", action="store_false", help="skip faces dlib does not find instead of boxing them from the landmarks")
    prep.add_argument("--test-fraction", type=float, help=f"fraction of subjects to test (hash split default {DEFAULT_TEST_FRACTION}; MUCT default 82/276)")
    prep.add_argument("--test-subjects", type=int, help="MUCT: the first N subjects to test")
    prep.add_argument("--seed", type=_seed, default=0, help="seed of the hash-based subject split and of the order "
                      "of faces in shards (default 0)")
    prep.add_argument(
        "--official-split", choices=("auto", "keep", "ignore"), default="auto",
        help="a dataset's own train/test folders or lists: auto keeps them unless they share subjects "
        "(YouTube68's do), keep always, ignore never (default auto)",
    )
    prep.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    prep.add_argument("--shard-size", type=int, default=0,
                      help="write numbered shards of N faces (up to 2 more: a face's copies stay with it) and a PREFIX_{train,test}.shards.json manifest "
                           "(for sets larger than memory; train.py streams them)")
    prep.add_argument("--upsample", type=int, default=0, help="dlib upsampling before detection (one more is tried on a miss); "
                      f"0-{MAX_UPSAMPLE}: each step doubles the photo's side, 4x the memory and time")
    prep.add_argument("--compress", action="store_true", help="write compressed npz files")
    prep.add_argument("--jpeg", type=int, default=0, metavar="QUALITY",
                      help="store the crops as JPEG of this quality (1-100; 95 makes a 128-px set about 11x smaller, "
                           "pixels off by about 1 grey level; mirrored faces stay exact); default 0: raw pixels")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.add_argument("--scheme", help="coco, csv, dlibxml: the markup, a scheme file (.json/.yaml, docs/own-landmarks.md) "
                      "or a scheme name (coco default: categories[0]'s keypoints; dlibxml default: ibug68)")
    prep.add_argument("--images", help="coco, csv: folder the image names are relative to (default: the annotation file's)")
    prep.add_argument("--use-bbox", action="store_true", help="coco: the annotations' bbox is the face detection (no dlib)")
    prep.add_argument("--csv-image-column", type=int, default=0, help="csv: 0-based column of the image name (default 0)")
    prep.add_argument("--csv-first-coordinate", type=int, default=1,
                      help="csv: 0-based column of the first coordinate; 2K coordinates run to the end of the row (default 1)")
    prep.add_argument("--csv-layout", choices=CSV_LAYOUTS, default="xy",
                      help="csv: xy (x0,y0,x1,y1...) or xxyy (all x, then all y) (default xy)")
    prep.add_argument("--csv-subject-column", type=int,
                      help="csv: 0-based column naming each face's person: the split keeps a person's faces on one "
                           "side (default: each image is its own subject)")
    prep.add_argument("--csv-no-header", dest="csv_header", action="store_false", help="csv: the first row is data, not a header")
    prep.add_argument("--csv-origin", type=_csv_origin, default=0, metavar="{0,1}",
                      help="csv: the pixel the coordinates count from: 0 (default; pixel centres on integers) or 1 "
                           "(iBUG's .pts, MATLAB and many annotation tools: 1 is subtracted from each)")

    pick = sub.add_parser(
        "select-points", help="a prepared npz with a subset of its points, as a scheme of your own", epilog=EPILOG,
        description="Keep the points --points (in that order) of every face, e.g. the eye corners, nose tip and mouth "
                    "corners of ibug68: 'select-points --data dataset/ibug128_train.npz --scheme face5.json "
                    "--points 36,45,30,48,54 --out dataset/face5_train.npz'. The scheme's pairs must agree with the "
                    "data's mirror (mirrored faces are in the data already).",
    )
    pick.add_argument("--data", required=True, help="prepared npz")
    pick.add_argument("--scheme", required=True, help="the new markup (its K points): a scheme file or a built-in name")
    pick.add_argument("--points", required=True, help="comma-separated indices into the data's points, one per new point")
    pick.add_argument("--out", required=True, help="output npz")

    bott = sub.add_parser("bottleneck", help="frozen-backbone features for head-only training", epilog=EPILOG)
    bott.add_argument("--backbone", required=True, help="inception, resnet50 or mobilenetv2")
    bott.add_argument("--data", required=True, help="input dataset npz (from prepare)")
    bott.add_argument("--out", required=True, help="output npz (features instead of images)")
    bott.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file (default imagenet)")
    bott.add_argument("--batch-size", type=int, default=32, help="images per forward pass of the backbone (default 32; lower it if memory runs short)")
    bott.add_argument("--verbose", action="store_true", help="show the backend's start-up log lines")

    info = sub.add_parser("info", help="summary of dataset files", epilog=EPILOG)
    info.add_argument("files", nargs="+", help="npz files, shard manifests (.shards.json) or set manifests (.manifest.json)")
    return parser, {"download": down, "prepare": prep, "select-points": pick, "bottleneck": bott, "info": info}


def parse_command(argv: list[str]) -> tuple[str, argparse.ArgumentParser, argparse.Namespace] | None:
    """The command, its parser and its options as ``main`` reads ``argv``; None, after the help, without a command.

    Usage errors exit through argparse (``SystemExit``), so a test can parse a command line without running it.
    """
    parser, commands = _build_parsers()
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # --help, or an error naming the valid commands
        parser.print_help()
        return None
    command, sub = argv[0], commands[argv[0]]
    # parse_intermixed_args pairs repeated DATASET and --source by order.
    args = sub.parse_intermixed_args(argv[1:])
    if command == "prepare" and len(args.source) != len(args.datasets):
        sub.error(f"{len(args.datasets)} dataset(s) but {len(args.source)} --source: give one --source per dataset")
    return command, sub, args


@script_main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = parse_command(argv)
    if parsed is None:
        return EXIT_INPUT
    command, _, args = parsed
    try:
        _run(command, args)
    except KNOWN_ERRORS as err:
        return _fail(command, str(err))
    except OSError as err:  # anything the file system refuses that no check above foresaw
        return _fail(command, f"{err.filename or '?'}: {err.strerror or err}")
    except KeyboardInterrupt as err:
        word, status = stopped(err)
        complain(f"datagen.py {command}: {word}; previous outputs left as they were")
        return status
    return 0


def _dataset_name(text: str) -> str:
    """A dataset's name in any case (300W, MUCT); another word is refused with the name it may have meant."""
    if text.lower() in READERS:  # the registry itself: a reader added there is a name here
        return text.lower()
    close = [d for d in READERS if d.startswith(text.lower()[:3])]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}: {hint}choose from {', '.join(READERS)}")


def _fail(command: str, message: str) -> int:
    """The one line of a user-caused error."""
    complain(f"datagen.py {command}: {' '.join(message.split())}")
    return EXIT_INPUT


def _run(command: str, args: argparse.Namespace) -> None:
    if command == "prepare":
        options = PrepareOptions(
            size=args.size, out=args.out, gray=args.gray, mirror=args.mirror, vflip=args.vflip,
            fallback=args.fallback, workers=args.workers, upsample=args.upsample, compress=args.compress,
            jpeg=args.jpeg,
            shard_size=args.shard_size, progress=not args.quiet,
            split=SplitOptions(args.test_fraction, args.test_subjects, args.seed, args.official_split),
            reader=ReaderOptions(
                scheme=resolve_scheme(args.scheme) if args.scheme else None, images=args.images, use_bbox=args.use_bbox,
                csv_image_column=args.csv_image_column, csv_first_coordinate=args.csv_first_coordinate,
                csv_layout=args.csv_layout, csv_header=args.csv_header, csv_subject_column=args.csv_subject_column,
                csv_origin=args.csv_origin,
            ),
        )
        prepare(list(zip(args.datasets, args.source)), options)
    elif command == "select-points":
        try:
            indices = [int(v) for v in args.points.split(",")]
        except ValueError:
            raise ValueError(f"--points: comma-separated integers, got {args.points!r}") from None
        if npz.is_manifest(args.data):  # it said "not an npz file"
            raise ValueError(f"{args.data}: a shard set; select-points reads one npz file (run it on each shard, "
                             f"or prepare the set without --shard-size)")
        if Path(args.out).resolve() == Path(args.data).resolve():
            raise ValueError(f"{args.out}: --out is the --data file; write the selected points to another file "
                             "(replacing it would lose the data's own points)")
        npz.check_output_file(args.out)  # a file of a prepared set, an unwritable folder
        # the crops are not touched: JPEG-packed ones are written back as they were read
        arrays = npz.select_points(npz.load_npz(args.data, decode_images=False), resolve_scheme(args.scheme), indices)
        npz.save_npz(args.out, arrays)
        box = npz.landmark_box(arrays)  # for recrop and video: where the crops' box lies around the points kept
        print(f"{args.out}: {len(arrays['landmarks'])} faces, {len(indices)} points ({arrays['scheme']})"
              + (f"; the crops' box is {box[0]:.2f} x their span, centre {box[1]:+.2f}, {box[2]:+.2f} of it from theirs" if box else ""))
    elif command == "download":
        download_muct(args.dest, args.url, progress=not args.quiet, keep_archives=not args.delete_archives)
    elif command == "bottleneck":
        runtime.startup(args.verbose)
        from facelandmarks.models.features import bottleneck  # loads Keras: only this command needs it

        bottleneck(args.data, args.out, args.backbone, args.weights, args.batch_size)
    else:
        for path in args.files:
            print(describe(path))
