"""``prepare``: read, crop, split, mirror and write one or more datasets as one set of train/test npz files.

The run checks everything it can before the long work: the options, the output location (a staging
folder and a probe file are written beside ``--out``, and the free space is compared with the
largest set the faces can make), the annotations, and the split (a subject on both sides, or a side
left empty that was asked for, is an error).  Only then are faces cropped.  The outputs -- train,
test or their shards, the report -- are written into the staging folder and replace the previous
set in one commit (``fileset.py``): a kill, an error or a full disk leaves the whole old set or the
whole new one, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelandmarks.data.buffers import ShardedBuffer, SplitBuffer, add_with_copies, write_npz
from facelandmarks.data.cropping import (
    CALIBRATION_FACES,
    CALIBRATION_MIN_FACES,
    CropSettings,
    FaceSkipped,
    _iterate_crops,
    calibrate_landmark_box,
)
from facelandmarks.data.errors import OutputError
from facelandmarks.data.fileset import SetWriter, manifest_path, read_manifest
from facelandmarks.data.readers import READERS, READS_A_FILE, TAKE_OPTIONS
from facelandmarks.data.records import AnnotationError, ReaderOptions, Skip, check_listing
from facelandmarks.data.report import format_summary, report_text
from facelandmarks.data.splits import (
    SplitOptions,
    _shared_subjects,
    assign_splits,
    check_subject_split,
    empty_side_warning,
)
from facelandmarks.landmarks import get_scheme, is_builtin
from facelandmarks.scheme_files import builtin_landmark_box, scheme_json

SIDES = ("train", "test")
# dlib's detector finds faces down to about 80 px (faces.FaceDetector); each upsampling step doubles the photo's side
# (4x the memory and time, and one more is tried on a miss), so 3 (8x: faces of about 10 px) is as far as it is worth
# going: 4 took 22 s and 1 GB for each photo of 640 px, 5 more than 3.6 GB, and a mistyped 9 exhausts the memory
MAX_UPSAMPLE = 3


@dataclass
class PrepareOptions:
    """Everything ``prepare`` needs besides the datasets; see ``prepare --help``.

    Invalid values raise ValueError with a message that starts with the option's name.
    """

    size: int
    out: str
    gray: bool = False
    mirror: bool = True
    vflip: bool = False
    fallback: bool = True
    workers: int = 0
    upsample: int = 0
    compress: bool = False
    jpeg: int = 0
    progress: bool = True
    shard_size: int = 0
    split: SplitOptions = field(default_factory=SplitOptions)
    reader: ReaderOptions = field(default_factory=ReaderOptions)

    def __post_init__(self):
        if not 8 <= self.size <= 4096:
            raise ValueError(f"--size: must be between 8 and 4096 pixels, got {self.size}")
        if self.workers < 0:
            raise ValueError(f"--workers: must be >= 0 (0: one per CPU), got {self.workers}")
        if not 0 <= self.jpeg <= 100:
            raise ValueError(f"--jpeg: a JPEG quality 1-100 (0: raw pixels), got {self.jpeg}")
        if not 0 <= self.upsample <= MAX_UPSAMPLE:
            raise ValueError(f"--upsample: must be between 0 and {MAX_UPSAMPLE} (each step doubles the photo's side, "
                             f"4x the memory and time; {MAX_UPSAMPLE} finds faces of about 10 px), got {self.upsample}")
        if self.shard_size < 0:
            raise ValueError(f"--shard-size: must be >= 0 (0: one file per side), got {self.shard_size}")
        frac = self.split.test_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"--test-fraction: must be in [0, 1], got {frac}")
        if self.split.test_subjects is not None and self.split.test_subjects < 0:
            raise ValueError(f"--test-subjects: must be >= 0, got {self.split.test_subjects}")
        if self.split.official_split not in ("auto", "keep", "ignore"):
            raise ValueError(f"--official-split: must be auto, keep or ignore, got {self.split.official_split!r}")
        out = str(self.out)
        if not out or out.endswith(("/", os.sep)) or Path(out).is_dir() or Path(out).name in (".", ".."):
            raise ValueError(f"--out {out}: a prefix such as dataset/ibug128 (files PREFIX_train.npz ...), not a folder")


def output_paths(prefix: str | os.PathLike) -> dict[str, Path]:
    prefix = str(prefix)
    return {
        "train": Path(f"{prefix}_train.npz"),
        "test": Path(f"{prefix}_test.npz"),
        "report_json": Path(f"{prefix}_report.json"),
        "report_txt": Path(f"{prefix}_report.txt"),
    }


# A share of faces boxed from their landmarks (dlib found none where the points are) past which the summary warns:
# 148 of 5,429 read (2.7 %) in 300-W + YouTube68; 38 of 101 (38 %) in a CSV of MUCT faces read in the wrong layout.
FALLBACK_WARN_SHARE = 0.2
FALLBACK_WARN_FACES = 10


def _check_sources(datasets: list[tuple[str, str]]) -> None:
    """Two sources of which one holds the other (or the same twice) would read their faces twice, under two
    subject names, so a photo could land on both sides of the split: an error naming both."""
    for name, source in datasets:
        if not Path(source).exists():
            kind = "file or folder" if name in READS_A_FILE else "folder"
            raise ValueError(f"{source}: no such {kind} (--source)")
        if name not in READS_A_FILE and not Path(source).is_dir():  # its own file named here was "no such file in it"
            raise ValueError(f"{source}: a file, not a folder (--source): {name} reads the dataset's folder, the one "
                             "that holds its annotation files (docs/data.md, Supported datasets)")
    resolved = [(source, Path(source).resolve()) for _, source in datasets]
    for i, (a, path_a) in enumerate(resolved):
        for b, path_b in resolved[i + 1:]:
            if path_a == path_b or path_a in path_b.parents or path_b in path_a.parents:
                raise ValueError(f"--source {a} and --source {b}: one holds the other, so their faces would be read "
                                 f"twice and could be on both sides of the split (give the folder once)")


def prepare(datasets: list[tuple[str, str]], options: PrepareOptions) -> dict:
    """Read, crop, split and write one or more datasets of one scheme as one set.

    Args:
        datasets: ``(dataset name, source folder)`` pairs, combined into one output.
        options: sizes, flags and split rules.

    Returns:
        The report (also written to ``PREFIX_report.json``; its text form to
        ``PREFIX_report.txt`` and stdout).

    Raises:
        ValueError (``AnnotationError``, ``SplitError``, ``OutputError`` ...):
            naming the file, folder or option at fault.  The previous set is
            then unchanged.
    """
    started = time.time()
    if not datasets:
        raise ValueError("DATASET: no dataset given")
    for name, _ in datasets:
        if name not in READERS:
            raise ValueError(f"{name}: unknown dataset; known: {', '.join(READERS)}")
    _check_sources(datasets)
    if str(options.out).endswith(".npz"):
        raise ValueError(f"--out {options.out}: a prefix, not a file: prepare writes PREFIX_train.npz, PREFIX_test.npz "
                         f"and PREFIX_report.* (drop the .npz)")
    writer = SetWriter(options.out)  # the output location is checked before anything is read
    earlier = _earlier_set(writer)
    try:
        report, summary = _prepare_into(writer, datasets, options, started)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    print(summary)
    if earlier:
        print(f"  replaced the earlier set {earlier} of {options.out}_* (its files the new set has not are removed)")
    return report


def _earlier_set(writer: SetWriter) -> str | None:
    """The id of the set at the output's prefix before this run, which the new one replaces (None: none there)."""
    try:
        return read_manifest(manifest_path(writer.folder, writer.name))["set_id"]
    except (OSError, ValueError):
        return None


# the reader options each reader takes; given to another, one is an error rather than ignored
READER_USES = {"coco": ("scheme", "images", "use_bbox"), "dlibxml": ("scheme",),
               "csv": ("scheme", "images", "csv_image_column", "csv_first_coordinate", "csv_layout", "csv_header",
                       "csv_subject_column", "csv_origin")}


def _read(name: str, source: str, reader: ReaderOptions):
    """The dataset's listing; ``--scheme`` and the reader options go to the readers that take them."""
    if reader.scheme is not None and name not in TAKE_OPTIONS:
        raise ValueError(f"--scheme: dataset {name} has its own fixed markup; --scheme is for {', '.join(TAKE_OPTIONS)}")
    defaults = ReaderOptions()
    for option in ("images", "use_bbox", *READER_USES["csv"][2:]):
        if getattr(reader, option) != getattr(defaults, option) and option not in READER_USES.get(name, ()):
            users = [dataset for dataset, uses in READER_USES.items() if option in uses]
            raise ValueError(f"--{option.replace('_', '-')}: dataset {name} does not use it (it is for "
                             f"{', '.join(users)})")
    try:
        listing = READERS[name](source, reader) if name in TAKE_OPTIONS else READERS[name](source)
    except AnnotationError:
        raise
    except ValueError as err:  # a reader's own float('x') or int(''): say at least which dataset and folder
        raise AnnotationError(f"{name} ({source}): {err}") from None
    check_listing(listing)
    if not listing.listed:  # a header and no rows, an empty list: once "no usable faces (0 annotated faces skipped)"
        raise AnnotationError(f"{source}: no annotated faces in it ({name}: the annotations hold no face; a file cut "
                              "short, or the wrong one?)")
    return listing


class _Plan:
    """The records to crop, their sides, and what the summary says about each dataset."""

    def __init__(self, datasets, options: PrepareOptions):
        listings = [_read(name, source, options.reader) for name, source in datasets]
        schemes = {listing.scheme for listing in listings}
        if len(schemes) != 1:
            described = ", ".join(f"{listing.dataset} is {listing.scheme}" for listing in listings)
            raise ValueError(f"{', '.join(s for _, s in datasets)}: cannot combine datasets of different landmark "
                             f"schemes ({described}); prepare them separately")
        self.scheme_name = schemes.pop()
        self.records, self.sides, self.dataset_reports, self.allowed_overlap = [], [], [], set()
        own = []
        for listing in listings:
            split = assign_splits(listing, options.split)
            if split.overlap_allowed:
                self.allowed_overlap |= _shared_subjects([r.subject for r in listing.records], split.sides)
            if listing.records:
                own.append(split.own)
            self.records += listing.records
            self.sides += split.sides
            partial = [r for r in listing.records if not np.all(r.labelled)]
            gaps = [f"{len(partial)} faces have points without a position (as annotated: MUCT's hidden points, "
                    f"empty cells, visibility 0); those points are unlabelled and leave the loss and the metrics "
                    f"(e.g. {partial[0].name})"] if partial else []
            # a reader's "... give the split" is untrue where its split was not used (--official-split ignore, or
            # one that shares subjects): the split's text says what was done instead
            notes = [n for n in listing.notes if split.own or not n.endswith("give the split")]
            self.dataset_reports.append({
                "dataset": listing.dataset, "source": listing.source, "scheme": listing.scheme,
                "listed": listing.listed, "split": split.text, "notes": notes + gaps,
            })
        self.skips = [skip for listing in listings for skip in listing.skips]
        self.listed = sum(listing.listed for listing in listings)
        self.sources = [f"{listing.dataset} ({listing.source})" for listing in listings]
        if not self.records:
            first = f"; first: {self.skips[0].file}: {self.skips[0].reason}" if self.skips else ""
            raise ValueError(f"{', '.join(self.sources)}: no usable faces ({len(self.skips)} annotated faces skipped{first})")
        subjects = [r.subject for r in self.records]
        check_subject_split([s for s, side in zip(subjects, self.sides) if side == "train"],
                            [s for s, side in zip(subjects, self.sides) if side == "test"], self.allowed_overlap)
        warning = empty_side_warning(self.sources, self.sides, subjects, options.split, all(own))
        self.warnings = [warning] if warning else []


def _prepare_into(writer: SetWriter, datasets, options: PrepareOptions, started: float) -> tuple[dict, str]:
    """Everything but the commit: the whole set is written into ``writer``'s staging folder."""
    plan = _Plan(datasets, options)
    scheme = get_scheme(plan.scheme_name)
    copies = 1 + options.mirror + options.vflip
    channels = 1 if options.gray else 3
    _check_free_space(writer, plan, options, copies, channels, scheme.num_points)
    records, sides = plan.records, plan.sides
    # a markup of its own: where dlib's box lies around its points, measured (its points may span less of the face);
    # the data carries it, so runs and exports of it cut their crops around predicted points the same way
    calibrated = None
    if not is_builtin(scheme.name):
        if options.progress:  # dlib on up to 90 photos in this process: seconds to a minute before the bar starts
            print(f"measuring dlib's box around {scheme.name}'s points on up to {CALIBRATION_FACES} faces ...",
                  file=sys.stderr, flush=True)
        calibrated = calibrate_landmark_box(records, options.upsample)
    landmark_box = calibrated[0] if calibrated else None
    if options.shard_size:
        # shards hold random samples of the faces, not one dataset or subject after another
        order = np.random.default_rng(options.split.seed).permutation(len(records))
        records, sides = [records[i] for i in order], [sides[i] for i in order]
        buffers = {side: ShardedBuffer(writer, side, options.shard_size, copies, options.size, channels,
                                       scheme.num_points, plan.scheme_name, options.compress, options.jpeg, landmark_box)
                   for side in SIDES}
    else:
        n_train = sides.count("train")
        buffers = {
            "train": SplitBuffer(n_train * copies, options.size, channels, scheme.num_points),
            "test": SplitBuffer(len(records) - n_train, options.size, channels, scheme.num_points),
        }
    counts, notes, note_example, skips = _crop_all(records, sides, buffers, scheme, options, calibrated)
    skips = plan.skips + skips
    written = counts["dlib"] + counts["landmarks"] + counts["given"]
    if written == 0:
        kinds = Counter(re.split(r" for | \(|: ", skip.reason, maxsplit=1)[0] for skip in skips)
        raise ValueError(f"{', '.join(plan.sources)}: every face was skipped ({len(skips)}: "
                         f"{', '.join(f'{n} {kind}' for kind, n in kinds.most_common())}); first: "
                         f"{skips[0].file}: {skips[0].reason}; nothing written")
    warnings = plan.warnings + [
        f"{side} is empty: every one of its {sides.count(side)} faces was skipped (see the reasons below)"
        for side in SIDES if sides.count(side) and not buffers[side].count
    ]
    boxed = counts["landmarks"] / max(counts["read"], 1)
    if counts["landmarks"] >= FALLBACK_WARN_FACES and boxed > FALLBACK_WARN_SHARE:
        warnings.append(f"{counts['landmarks']} of {counts['read']} faces ({100 * boxed:.0f} %) were boxed from their "
                        "landmarks: dlib found no face where their points lie (2.7 % of 300-W and YouTube68's). So many "
                        "suggest points in another order, layout (--csv-layout) or scale than the images'")
    outputs = _write_outputs(writer, buffers, plan.scheme_name, options, landmark_box)
    report = {
        "scheme": plan.scheme_name,
        "size": options.size,
        "channels": channels,
        "set_id": writer.set_id,
        "datasets": plan.dataset_reports,
        "counts": {
            "listed": plan.listed, "read": counts["read"], "detected": counts["dlib"], "fallback": counts["landmarks"],
            "given": counts["given"], "written": written, "skipped": len(skips),
        },
        "notes": [f"{n} faces: {note} (e.g. {note_example[note]})" for note, n in notes.items()],
        "outputs": outputs,
        "warnings": warnings,
        "subjects_on_both_sides": sorted(plan.allowed_overlap),
        "seconds": round(time.time() - started, 1),
        "skips": [s.as_dict() for s in skips],
    }
    paths = output_paths(options.out)
    summary = format_summary(report, str(paths["report_txt"]), str(paths["report_json"]))
    writer.write_text(paths["report_json"].name, json.dumps(report, indent=1) + "\n")
    writer.write_text(paths["report_txt"].name, report_text(summary, report["skips"]))
    return report, summary


def _crop_all(records, sides, buffers, scheme, options: PrepareOptions, calibrated=None):
    """Crop every record (in a process pool) into the buffer of its side; returns counts, notes and skips.
    ``calibrated``: ``cropping.calibrate_landmark_box``'s measurement for a markup of its own (None: a built-in's
    own, ``builtin_landmark_box``, or iBUG 68's)."""
    counts, notes, note_example, skips = Counter(), Counter(), {}, []
    settings = CropSettings(options.size, options.gray, options.fallback, options.upsample,
                            landmark_box=calibrated[0] if calibrated else builtin_landmark_box(scheme))
    if calibrated:
        (scale, dx, dy), measured, example = calibrated
        note = (f"measured dlib's box around {scheme.name}'s points: side {scale:.2f} x their span, centre {dx:+.2f}, "
                f"{dy:+.2f} of it from theirs (to match detections and box the faces dlib misses; stored with the "
                f"data, its runs and exports, for crops around predicted points)")
        notes[note], note_example[note] = measured, example
    elif not is_builtin(scheme.name) and records:  # once silent: such a set was boxed as iBUG 68's with no word
        note = (f"dlib's box around {scheme.name}'s points not measured (fewer than {CALIBRATION_MIN_FACES} of its faces "
                "had a dlib detection holding their points): boxed as iBUG 68's points are, and the data stores no box "
                "of its own; prepare more faces of this markup to measure it")
        notes[note], note_example[note] = len(records), records[0].name
    workers = options.workers or os.cpu_count() or 1
    from tqdm import tqdm

    progress = tqdm(total=len(records), desc="prepare", unit="face", disable=not options.progress, file=sys.stderr)
    for index, outcome in _iterate_crops(records, settings, workers):
        record = records[index]
        progress.update(1)
        if isinstance(outcome, FaceSkipped):
            skips.append(Skip(record.source, record.name, outcome.reason))
            counts["read"] += outcome.image_read
            continue
        counts["read"] += 1
        counts[outcome.detection] += 1
        for note in outcome.notes:
            notes[note] += 1
            note_example.setdefault(note, record.name)
        side = sides[index]
        mirror, vflip = side == "train" and options.mirror, side == "train" and options.vflip
        if options.shard_size:
            buffers[side].add(outcome, record, scheme, mirror, vflip)
        else:
            add_with_copies(buffers[side], outcome, record, scheme, mirror, vflip)
    progress.close()
    return counts, notes, note_example, skips


def _write_outputs(writer: SetWriter, buffers, scheme_name: str, options: PrepareOptions, landmark_box=None) -> dict:
    """Write both sides into the staged set (a scheme of your own's definition with ``landmark_box``, measured);
    returns the report's ``outputs``."""
    outputs = {}
    for side in SIDES:
        buffer = buffers[side]
        if options.shard_size:
            manifest = buffer.finish()
            outputs[side] = {"path": manifest, "faces": buffer.count, "shards": len(buffer.shards),
                             "subjects": len(buffer.subjects)}
            continue
        arrays = buffer.arrays(scheme_name, writer.set_id)
        if not is_builtin(scheme_name):  # the definition travels with the data (npz.scheme_of registers it)
            arrays["scheme_json"] = np.array(scheme_json(scheme_name, landmark_box))
        file_name = output_paths(options.out)[side].name
        write_npz(writer, file_name, arrays, options.compress, options.jpeg)
        copies = int(arrays["mirrored"].sum()), int(arrays["vflipped"].sum())
        outputs[side] = {
            "path": str(writer.final(file_name)),
            "faces": int(buffer.count),
            "originals": int(buffer.count - sum(copies)),
            "mirrored": copies[0],
            "vflipped": copies[1],
            "subjects": len(set(buffer.strings["subject"])),
        }
        del arrays
    return outputs


def _check_free_space(writer: SetWriter, plan: _Plan, options: PrepareOptions, copies: int, channels: int,
                      num_points: int) -> None:
    """Stop before the long work when the disk cannot hold the largest set these faces can make.

    Uncompressed npz sizes are known from the shapes; compressed ones are not,
    so ``--compress`` runs are checked against a third of that, ``--jpeg`` ones against a fifth.
    """
    rows = plan.sides.count("train") * copies + plan.sides.count("test")
    longest = sum(max(len(str(getattr(r, key) or "")) for r in plan.records) for key in ("subject", "name", "source", "image_path"))
    per_row = options.size * options.size * channels + num_points * 9 + 18 + 4 * (longest + 9)
    needed = int(rows * per_row * 1.05) + (1 << 20)
    if options.jpeg:
        needed //= 5
    elif options.compress:
        needed //= 3
    free = shutil.disk_usage(writer.staging).free
    if needed > free:
        raise OutputError(f"{writer.folder}: the new set needs up to {needed / 1e6:.0f} MB and only {free / 1e6:.0f} MB "
                          "are free (the previous set stays until the new one is complete)")
