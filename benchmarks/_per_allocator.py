"""Run a benchmark once per allocator, in fresh processes (``train_throughput.py --allocator``, ``predict_batches.py
--allocator``): glibc as it comes, tuned as the scripts tune it (``runtime.tune_allocator``), tcmalloc preloaded.

Not a benchmark (no ``--help``).  A benchmark imports it as ``_per_allocator`` when run as ``python benchmarks/NAME.py``
(its folder leads ``sys.path``), and as ``benchmarks._per_allocator`` from the repository root (a test's import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from facelandmarks.machine import tcmalloc_library
from facelandmarks.runtime import MALLOC_ENV


def measure_per_allocator(script: str, argv: list, tcmalloc: bool = False) -> list | None:
    """Run a benchmark ``script`` with ``argv`` and ``--json`` in fresh processes: glibc's allocator as it
    comes, tuned, and (``tcmalloc``) tcmalloc preloaded where it is installed.

    Each run's progress (its stderr) shows as it comes, after a line naming the allocator.  Returns ``[(label, the
    JSON of the run's last line)]``, or None after one line saying which run failed and why (the run's own last
    line, which it stands in for); the caller exits with status 2.  The glibc runs drop ``LD_PRELOAD``, so they run
    on glibc even when this process has tcmalloc.
    """
    variants = [("glibc default", {MALLOC_ENV: "0"}), ("tuned (runtime.tune_allocator)", {MALLOC_ENV: "1"})]
    if tcmalloc:
        library = tcmalloc_library()
        if library is None:
            print("tcmalloc is not installed (apt install libtcmalloc-minimal4): measuring glibc only", file=sys.stderr)
        else:
            preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), library]))
            label = f"tcmalloc ({os.path.basename(library)}, LD_PRELOAD)"
            variants.append((label, {MALLOC_ENV: "0", "LD_PRELOAD": preload}))
    name, rows = os.path.basename(script), []
    for number, (label, extra) in enumerate(variants, start=1):
        env = {**os.environ, **extra}
        if "LD_PRELOAD" not in extra:
            env.pop("LD_PRELOAD", None)
        print(f"measuring with {label} ({number} of {len(variants)})...", file=sys.stderr, flush=True)
        with tempfile.TemporaryFile() as out:
            process = subprocess.Popen([sys.executable, script, *argv, "--json"], env=env, stdout=out,
                                       stderr=subprocess.PIPE)
            last = _relay_but_last_line(process.stderr)
            status = process.wait()
            out.seek(0)
            lines = out.read().decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1]) if status == 0 else None
        except (IndexError, ValueError):
            result = None
        if result is None:
            last = last.strip()
            if last.startswith(f"{name}: "):  # the run's own one-line complaint, without the name it repeats
                last = last[len(name) + 2:]
            why = last or (f"exit status {status}" if status > 0 else f"killed by signal {-status}" if status
                           else "no result line on its stdout")
            print(f"{name}: the run with {label} failed: {why}", file=sys.stderr)
            return None
        if last:
            sys.stderr.write(last)
        rows.append((label, result))
    return rows


def _relay_but_last_line(pipe) -> str:
    """Pass what a child writes to ``pipe`` on to stderr as it comes (a progress bar's updates too), except its last
    complete line when nothing follows it: returned instead, unwritten, for the caller to write or stand in for."""
    import codecs

    decoder, held = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    while True:
        chunk = os.read(pipe.fileno(), 65536)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            text = held + text
            ends = text.rfind("\n") + 1  # complete lines, then a line still being written
            if "\r" in text[ends:]:  # a progress bar's update: shown at once
                cut = len(text)
            else:  # the line being written, or, where none is, the last complete line
                cut = ends if ends < len(text) else text.rfind("\n", 0, len(text) - 1) + 1
            text, held = text[:cut], text[cut:]
            sys.stderr.write(text)
            sys.stderr.flush()
        if not chunk:
            pipe.close()
            return held
