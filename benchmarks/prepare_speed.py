"""How fast ``datagen.py prepare`` is, and whether its memory stays flat.

Prepares real 300-W and YouTube68 data at 128 px (each configuration in a
fresh process, so peaks do not carry over) and prints one table row per
configuration: faces, images per second, wall time, and peak resident memory:
the main process (``resource.getrusage``), the largest of its worker processes
(``getrusage`` of children and, for the forkserver's workers it cannot reap,
their ``VmHWM`` from /proc), and all of them together (sampled); and, over all of these processes, the
kernel's share of their CPU time and their minor page faults per face (the workers' from /proc, read
every half second until they exit).  The main process holds the output arrays, so its peak minus
the output size is the overhead, which should not grow with the number of
images.

    python benchmarks/prepare_speed.py                 # 300w, then 300w + youtube68
    python benchmarks/prepare_speed.py --configs both --size 64

Not a test: it takes minutes.  Run it ``nice``'d on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from facelandmarks.cli.common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "300w": ["300w"],
    "youtube68": ["youtube68"],
    "both": ["300w", "youtube68"],
}


def default_data_dir() -> Path:
    return Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _cpu_and_faults(pid: int) -> tuple[int, int, int] | None:
    """(user ticks, system ticks, minor faults) of a live process, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]), int(fields[12]), int(fields[7])  # utime, stime, minflt (stat fields 14, 15, 10)


def _memory_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the peak memory of this process's descendants (the worker pool).

    The workers come from datagen's forkserver, so they are grandchildren
    that this process never reaps and ``RUSAGE_CHILDREN`` does not see them;
    their own high-water marks (``VmHWM``) are read from /proc instead.
    """

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.largest_kb, self.tree_kb = interval, 0, 0
        self.usage = {}  # worker pid -> its last (user ticks, system ticks, minor faults)
        self.stopped = threading.Event()

    def run(self):
        me = os.getpid()
        while not self.stopped.wait(self.interval):
            pids = _descendants(me)
            self.largest_kb = max([self.largest_kb] + [_memory_kb(p, "VmHWM") for p in pids])
            for pid in pids:
                usage = _cpu_and_faults(pid)
                if usage is not None:
                    self.usage[pid] = usage
            current = _memory_kb(me, "VmRSS") + sum(_memory_kb(p, "VmRSS") for p in pids)
            self.tree_kb = max(self.tree_kb, current)


def run_inner(config: str, data_dir: Path, size: int, workers: int, out_dir: Path) -> dict:
    """Prepare one configuration in this process; return its measurements."""
    from facelandmarks.data.prepare import PrepareOptions, prepare

    datasets = [(name, str(data_dir / name)) for name in CONFIGS[config]]
    options = PrepareOptions(size=size, out=str(out_dir / config), workers=workers)  # its bar on the parent's stderr
    sampler = TreeMemory()
    before = resource.getrusage(resource.RUSAGE_SELF)
    sampler.start()
    started = time.perf_counter()
    report = prepare(datasets, options)
    wall = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    after, ticks = resource.getrusage(resource.RUSAGE_SELF), os.sysconf("SC_CLK_TCK")
    user = after.ru_utime - before.ru_utime + sum(u[0] for u in sampler.usage.values()) / ticks
    system = after.ru_stime - before.ru_stime + sum(u[1] for u in sampler.usage.values()) / ticks
    faults = after.ru_minflt - before.ru_minflt + sum(u[2] for u in sampler.usage.values())
    output_bytes = sum(os.path.getsize(o["path"]) for o in report["outputs"].values())
    return {
        "config": config,
        "listed": report["counts"]["listed"],
        "written": report["counts"]["written"],
        "fallback": report["counts"]["fallback"],
        "rows": sum(o["faces"] for o in report["outputs"].values()),
        "wall_s": wall,
        "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_peak_mb": max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, sampler.largest_kb) / 1024,
        "tree_peak_mb": sampler.tree_kb / 1024,
        "output_mb": output_bytes / 2**20,
        "cpu_s": user + system,
        "kernel_share": system / max(user + system, 1e-9),
        "faults_per_face": faults / max(report["counts"]["listed"], 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="folder holding 300w/ and youtube68/ (default $FACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--configs", default="300w,both", help=f"comma-separated, of {', '.join(CONFIGS)} (default 300w,both)")
    parser.add_argument("--size", type=int, default=128, help="crop size (default 128)")
    parser.add_argument("--workers", type=int, default=0, help="prepare --workers (default one per CPU)")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.inner:
        from facelandmarks.cli.common import USER_ERRORS, error_line

        try:
            print(json.dumps(run_inner(args.inner, args.data, args.size, args.workers, args.out_dir)))
        except USER_ERRORS as err:  # prepare's own line (a bad --size, an unreadable annotation), not its traceback
            print(f"prepare_speed.py: {error_line(err)}", file=sys.stderr)
            return 2
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    missing = [str(args.data / name) for name in dict.fromkeys(n for c in configs for n in CONFIGS[c])
               if not (args.data / name).is_dir()]
    if missing:  # the preparing process's traceback
        parser.error(f"{', '.join(missing)}: no such folder (--data: the face data; $FACE_DATA_DIR sets the default)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="prepare_speed_") as tmp:
        for config in configs:
            print(f"preparing {config} at {args.size} px ...", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--inner", config, "--data", str(args.data), "--size", str(args.size),
                       "--workers", str(args.workers), "--out-dir", tmp]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # stderr: prepare's progress bar
            if done.returncode != 0:  # its complaint is on stderr already
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            for path in Path(tmp).glob(f"{config}_*"):
                path.unlink()
    from facelandmarks.machine import cpu_description

    print(f"\ndatagen.py prepare at {args.size} px, {args.workers or os.cpu_count()} worker(s); {cpu_description()}\n")
    header = ("datasets", "faces", "written", "fallback", "rows out", "images/s", "wall s",
              "main peak MB", "largest worker MB", "all processes MB", "output MB", "main - output MB",
              "CPU s, all processes", "kernel share of CPU time", "minor faults per face")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {'+'.join(CONFIGS[r['config']])} | {r['listed']} | {r['written']} | {r['fallback']} | {r['rows']} | "
            f"{r['listed'] / r['wall_s']:.1f} | {r['wall_s']:.0f} | {r['main_peak_mb']:.0f} | {r['children_peak_mb']:.0f} | "
            f"{r['tree_peak_mb']:.0f} | "
            f"{r['output_mb']:.0f} | {r['main_peak_mb'] - r['output_mb']:.0f} | {r['cpu_s']:.0f} | "
            f"{r['kernel_share']:.1%} | "
            f"{r['faults_per_face']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
