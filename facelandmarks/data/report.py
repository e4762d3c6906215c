"""The end-of-run summary of ``prepare`` and its report files (``PREFIX_report.json`` / ``.txt``)."""

from __future__ import annotations

import re
from collections import Counter

SUMMARY_SKIPS_SHOWN = 10


def counted(n: int, noun: str) -> str:
    """'1 face', '2 faces'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_summary(report: dict, report_txt: str, report_json: str) -> str:
    """The end-of-run summary: per dataset, counts, outputs, warnings, skips."""
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
    for side, out in report["outputs"].items():  # '1 faces', '1 subjects' were in the singular nowhere
        faces, subjects = counted(out["faces"], "face"), counted(out["subjects"], "subject")
        if "shards" in out:
            lines.append(f"  {side}: {faces} in {counted(out['shards'], 'shard')}, {subjects} -> {out['path']}")
            continue
        lines.append(
            f"  {side}: {faces} ({out['originals']} + {out['mirrored']} mirrored"
            f" + {out['vflipped']} vertically flipped), {subjects} -> {out['path']}"
        )
    if report["subjects_on_both_sides"]:
        lines.append(f"  WARNING: {len(report['subjects_on_both_sides'])} subjects on both sides (--official-split keep)")
    lines += [f"  WARNING: {w}" for w in report.get("warnings", [])]
    skips = report["skips"]
    if skips:
        reasons = Counter(re.sub(r" for .*| \(.*|: .*", "", s["reason"]) for s in skips)
        lines.append("  skipped by reason: " + "; ".join(f"{r}: {n}" for r, n in reasons.most_common()))
        for s in skips[:SUMMARY_SKIPS_SHOWN]:
            lines.append(f"    {s['dataset']}: {s['file']}: {s['reason']}")
        if len(skips) > SUMMARY_SKIPS_SHOWN:
            lines.append(f"    ... {len(skips) - SUMMARY_SKIPS_SHOWN} more in {report_txt}")
    lines.append(f"  set {report['set_id']}; report: {report_json}, {report_txt} ({report['seconds']} s)")
    return "\n".join(lines)


def report_text(summary: str, skips: list[dict]) -> str:
    """``PREFIX_report.txt``: the summary, then every skipped face with its reason."""
    return summary + "\n\nAll skipped faces:\n" + "".join(f"  {s['dataset']}: {s['file']}: {s['reason']}\n" for s in skips)
