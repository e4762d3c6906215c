"""``prepare``: read, crop, split, mirror and write one or more datasets as train/test npz files."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelandmarks.data import npz
from facelandmarks.data.cropping import (
    CroppedFace,
    CropSettings,
    FaceSkipped,
    _iterate_crops,
)
from facelandmarks.data.readers import READERS
from facelandmarks.data.records import DATASETS, FaceRecord, Skip
from facelandmarks.data.splits import (
    SplitOptions,
    _shared_subjects,
    assign_splits,
    check_subject_split,
)
from facelandmarks.landmarks import get_scheme, mirror_landmarks

SUMMARY_SKIPS_SHOWN = 10


class SplitBuffer:
    """Preallocated arrays of one output file, filled face by face.

    ``np.empty`` only reserves address space: rows never written (skipped
    faces) cost no memory.
    """

    def __init__(self, capacity: int, size: int, channels: int, num_points: int):
        self.images = np.empty((capacity, size, size, channels), np.uint8)
        self.landmarks = np.empty((capacity, num_points, 2), np.float32)
        self.visible = np.empty((capacity, num_points), bool)
        self.box = np.empty((capacity, 4), np.float32)
        self.mirrored = np.zeros(capacity, bool)
        self.vflipped = np.zeros(capacity, bool)
        self.strings = {"subject": [], "name": [], "source": [], "detection": [], "path": []}
        self.count = 0

    def add(self, face: CroppedFace, record: FaceRecord, image, landmarks, visible, mirrored=False, vflipped=False):
        i = self.count
        self.images[i] = image
        self.landmarks[i] = landmarks
        self.visible[i] = visible
        self.box[i] = face.box
        self.mirrored[i] = mirrored
        self.vflipped[i] = vflipped
        strings = (("subject", record.subject), ("name", record.name), ("source", record.source),
                   ("detection", face.detection), ("path", record.image_path or ""))
        for key, value in strings:
            self.strings[key].append(value)
        self.count += 1

    def arrays(self, scheme: str) -> dict[str, np.ndarray]:
        n = self.count
        out = {
            "images": self.images[:n],
            "landmarks": self.landmarks[:n],
            "visible": self.visible[:n],
            "box": self.box[:n],
            "mirrored": self.mirrored[:n],
            "vflipped": self.vflipped[:n],
            "scheme": np.array(scheme),
        }
        for key, values in self.strings.items():
            out[key] = np.array(values, dtype=str) if values else np.zeros(0, "<U1")
        return out


def _add_with_copies(buffer: SplitBuffer, face: CroppedFace, record: FaceRecord, scheme, mirror: bool, vflip: bool):
    buffer.add(face, record, face.image, face.landmarks, face.visible)
    if mirror:
        uv, visible = mirror_landmarks(face.landmarks, face.visible, scheme)
        _, labelled = mirror_landmarks(face.landmarks, face.labelled, scheme)
        uv[~labelled] = 0.0
        buffer.add(face, record, face.image[:, ::-1], uv, visible, mirrored=True)
    if vflip:
        # The seed's vertical flip: y' = 1 - y, identities unchanged.
        uv = face.landmarks.copy()
        uv[:, 1] = np.where(face.labelled, 1.0 - uv[:, 1], 0.0)
        buffer.add(face, record, face.image[::-1], uv, face.visible, vflipped=True)


@dataclass
class PrepareOptions:
    """Everything ``prepare`` needs besides the datasets; see ``prepare --help``."""

    size: int
    out: str
    gray: bool = False
    mirror: bool = True
    vflip: bool = False
    fallback: bool = True
    workers: int = 0
    upsample: int = 0
    compress: bool = False
    progress: bool = True
    shard_size: int = 0
    split: SplitOptions = field(default_factory=SplitOptions)

    def __post_init__(self):
        if not 8 <= self.size <= 4096:
            raise ValueError(f"size must be between 8 and 4096 pixels, got {self.size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per CPU), got {self.workers}")
        if self.upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {self.upsample}")
        if self.shard_size < 0:
            raise ValueError(f"shard size must be >= 0 (0: one file per side), got {self.shard_size}")
        frac = self.split.test_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"test fraction must be in [0, 1], got {frac}")
        if self.split.test_subjects is not None and self.split.test_subjects < 0:
            raise ValueError(f"test subjects must be >= 0, got {self.split.test_subjects}")
        if self.split.official_split not in ("auto", "keep", "ignore"):
            raise ValueError(f"official split must be auto, keep or ignore, got {self.split.official_split!r}")


class ShardedBuffer:
    """Faces of one side written ``shard_size`` rows at a time to numbered npz files.

    Memory stays at one shard whatever the dataset's size; ``finish`` writes
    the manifest (``PREFIX_train.shards.json``) that ``train.py --data`` reads.
    """

    def __init__(self, prefix: Path, shard_size: int, copies: int, size: int, channels: int, num_points: int,
                 scheme: str, compress: bool):
        self.prefix, self.shard_size, self.scheme, self.compress = prefix, shard_size, scheme, compress
        self.shape = (size, size, channels)
        self.buffer = SplitBuffer(shard_size + copies, size, channels, num_points)
        self._fresh = lambda: SplitBuffer(shard_size + copies, size, channels, num_points)
        self.shards, self.subjects = [], set()
        self.count = 0

    def add(self, face, record, scheme, mirror: bool, vflip: bool) -> None:
        before = self.buffer.count
        _add_with_copies(self.buffer, face, record, scheme, mirror, vflip)
        self.count += self.buffer.count - before
        self.subjects.add(record.subject)
        if self.buffer.count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer.count == 0:
            return
        path = npz.shard_path(self.prefix, len(self.shards))
        arrays = self.buffer.arrays(self.scheme)
        npz.validate(arrays, path)
        npz.save_npz(path, arrays, compress=self.compress)
        self.shards.append({"file": str(path), "faces": int(self.buffer.count)})
        self.buffer = self._fresh()

    def finish(self) -> Path:
        self.flush()
        return npz.write_manifest(f"{self.prefix}{npz.MANIFEST_SUFFIX}", self.shards, self.scheme, self.shape)


def output_paths(prefix: str | os.PathLike) -> dict[str, Path]:
    prefix = str(prefix)
    return {
        "train": Path(f"{prefix}_train.npz"),
        "test": Path(f"{prefix}_test.npz"),
        "report_json": Path(f"{prefix}_report.json"),
        "report_txt": Path(f"{prefix}_report.txt"),
    }


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare(datasets: list[tuple[str, str]], options: PrepareOptions) -> dict:
    """Read, crop, split and write one or more datasets of one scheme.

    Args:
        datasets: ``(dataset name, source folder)`` pairs, combined into one output.
        options: sizes, flags and split rules.

    Returns:
        The report (also written to ``PREFIX_report.json``; its text form to
        ``PREFIX_report.txt`` and stdout).
    """
    started = time.time()
    if not datasets:
        raise ValueError("no dataset given")
    for name, _ in datasets:
        if name not in READERS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    listings = [READERS[name](source) for name, source in datasets]
    schemes = {listing.scheme for listing in listings}
    if len(schemes) != 1:
        described = ", ".join(f"{listing.dataset} is {listing.scheme}" for listing in listings)
        raise ValueError(f"cannot combine datasets of different landmark schemes ({described}); prepare them separately")
    scheme_name = schemes.pop()
    scheme = get_scheme(scheme_name)

    records, sides, dataset_reports, allowed_overlap = [], [], [], set()
    for listing in listings:
        listing_sides, split_text, overlap_ok = assign_splits(listing, options.split)
        if overlap_ok:
            allowed_overlap |= _shared_subjects([r.subject for r in listing.records], listing_sides)
        records += listing.records
        sides += listing_sides
        dataset_reports.append({
            "dataset": listing.dataset, "source": listing.source, "scheme": listing.scheme,
            "listed": listing.listed, "split": split_text, "notes": list(listing.notes),
        })
    if not records:
        skipped = sum(len(listing.skips) for listing in listings)
        raise ValueError(f"no usable faces in {', '.join(s for _, s in datasets)} ({skipped} annotated faces without an image)")
    check_subject_split(
        [r.subject for r, s in zip(records, sides) if s == "train"],
        [r.subject for r, s in zip(records, sides) if s == "test"],
        allowed_overlap,
    )

    copies = 1 + options.mirror + options.vflip
    channels = 1 if options.gray else 3
    n_train = sides.count("train")
    if options.shard_size:
        # shards hold random samples of the faces, not one dataset or subject after another
        order = np.random.default_rng(options.split.seed).permutation(len(records))
        records, sides = [records[i] for i in order], [sides[i] for i in order]
        buffers = {
            side: ShardedBuffer(Path(f"{options.out}_{side}"), options.shard_size, copies, options.size, channels,
                                scheme.num_points, scheme_name, options.compress)
            for side in ("train", "test")
        }
    else:
        buffers = {
            "train": SplitBuffer(n_train * copies, options.size, channels, scheme.num_points),
            "test": SplitBuffer(len(records) - n_train, options.size, channels, scheme.num_points),
        }
    skips = [skip for listing in listings for skip in listing.skips]
    counts = Counter()
    notes = Counter()
    note_example = {}
    settings = CropSettings(options.size, options.gray, options.fallback, options.upsample)
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
            _add_with_copies(buffers[side], outcome, record, scheme, mirror, vflip)
    progress.close()

    written = counts["dlib"] + counts["landmarks"] + counts["given"]
    if written == 0:
        raise ValueError(f"every face was skipped ({len(skips)}); first: {skips[0].file}: {skips[0].reason}")
    paths = output_paths(options.out)
    outputs = {}
    for side in ("train", "test") if options.shard_size else ():
        manifest = buffers[side].finish()
        outputs[side] = {"path": str(manifest), "faces": buffers[side].count, "shards": len(buffers[side].shards),
                         "subjects": len(buffers[side].subjects)}
    for side in () if options.shard_size else ("train", "test"):
        arrays = buffers[side].arrays(scheme_name)
        npz.validate(arrays, paths[side])
        npz.save_npz(paths[side], arrays, compress=options.compress)
        outputs[side] = {
            "path": str(paths[side]),
            "faces": int(buffers[side].count),
            "originals": int(buffers[side].count - arrays["mirrored"].sum() - arrays["vflipped"].sum()),
            "mirrored": int(arrays["mirrored"].sum()),
            "vflipped": int(arrays["vflipped"].sum()),
            "subjects": len(set(buffers[side].strings["subject"])),
        }
        del arrays
    listed = sum(listing.listed for listing in listings)
    report = {
        "scheme": scheme_name,
        "size": options.size,
        "channels": channels,
        "datasets": dataset_reports,
        "counts": {
            "listed": listed,
            "read": counts["read"],
            "detected": counts["dlib"],
            "fallback": counts["landmarks"],
            "given": counts["given"],
            "written": written,
            "skipped": len(skips),
        },
        "notes": [f"{n} faces: {note} (e.g. {note_example[note]})" for note, n in notes.items()],
        "outputs": outputs,
        "subjects_on_both_sides": sorted(allowed_overlap),
        "seconds": round(time.time() - started, 1),
        "skips": [s.as_dict() for s in skips],
    }
    summary = format_summary(report, paths)
    _write_text_atomically(paths["report_json"], json.dumps(report, indent=1) + "\n")
    full = summary + "\n\nAll skipped faces:\n" + "".join(f"  {s.source}: {s.file}: {s.reason}\n" for s in skips)
    _write_text_atomically(paths["report_txt"], full)
    print(summary)
    return report


def format_summary(report: dict, paths: dict[str, Path]) -> str:
    """The end-of-run summary: per dataset, counts, outputs, skips."""
    c = report["counts"]
    lines = [f"Prepared {report['scheme']} faces at {report['size']} px ({report['channels']} channel(s)):"]
    for d in report["datasets"]:
        lines.append(f"  {d['dataset']} ({d['source']}): {d['listed']} annotated faces; split {d['split']}")
        lines += [f"    note: {n}" for n in d["notes"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    lines.append(
        f"  read {c['read']} / detected by dlib {c['detected']} / fallback box from landmarks {c['fallback']}"
        f" / given box {c['given']} / skipped {c['skipped']} (of {c['listed']} annotated faces)"
    )
    for side, out in report["outputs"].items():
        if "shards" in out:
            lines.append(f"  {side}: {out['faces']} faces in {out['shards']} shards, {out['subjects']} subjects -> {out['path']}")
            continue
        lines.append(
            f"  {side}: {out['faces']} faces ({out['originals']} + {out['mirrored']} mirrored"
            f" + {out['vflipped']} vertically flipped), {out['subjects']} subjects -> {out['path']}"
        )
    if report["subjects_on_both_sides"]:
        lines.append(f"  WARNING: {len(report['subjects_on_both_sides'])} subjects on both sides (--official-split keep)")
    skips = report["skips"]
    if skips:
        reasons = Counter(re.sub(r" for .*| \(.*", "", s["reason"]) for s in skips)
        lines.append("  skipped by reason: " + "; ".join(f"{r}: {n}" for r, n in reasons.most_common()))
        for s in skips[:SUMMARY_SKIPS_SHOWN]:
            lines.append(f"    {s['dataset']}: {s['file']}: {s['reason']}")
        if len(skips) > SUMMARY_SKIPS_SHOWN:
            lines.append(f"    ... {len(skips) - SUMMARY_SKIPS_SHOWN} more in {paths['report_txt']}")
    lines.append(f"  report: {paths['report_json']}, {paths['report_txt']} ({report['seconds']} s)")
    return "\n".join(lines)
