"""Images/s of one training process against a two-worker MultiWorkerMirroredStrategy cluster (not a test).

    python benchmarks/cluster_speed.py --data dataset/ibug128_train.npz --faces 1024 --model scratch --size 96

Each configuration runs ``train.py`` for ``--epochs`` epochs in fresh processes
on this machine (the workers of the cluster talk over 127.0.0.1) and reads
the last epoch's duration from the chief's ``history.csv``; images/s counts
the faces every worker processed in that epoch.  On one machine the workers
share its cores, so this shows the strategy's overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import USER_ERRORS, OneLineParser, complain, error_line
from facelandmarks.data import npz
from facelandmarks.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_epoch_seconds(run_dir: Path) -> float:
    with open(run_dir / "history.csv", newline="") as handle:
        return float(list(csv.DictReader(handle))[-1]["epoch_seconds"])


class TrainingFailed(RuntimeError):
    """A training of the measurement failed: its line is what the benchmark says (exit status 2)."""


def run(workers: int, args, data: Path, work: Path) -> float:
    """Train with ``workers`` processes; the chief's last epoch in seconds (``TrainingFailed``: one did not end)."""
    run_dir = work / f"run-{workers}"
    command = [sys.executable, str(ROOT / "train.py"), args.model, "--data", str(data), "--run-dir", str(run_dir),
               "--epochs", str(args.epochs), "--batch", str(args.batch), "--size", str(args.size), "--workers", "1",
               "--preview-every", "0", "--augment", args.augment, "--val-fraction", "0.05"]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    if workers == 1:
        processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    else:
        cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(workers)]}
        processes = []
        for index in range(workers):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(command + ["--distribute", "multiworker"], env=dict(env, TF_CONFIG=tf_config),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate()
        if process.returncode:  # train.py's own line (an unknown --model, say), where a traceback dumped its stderr
            for other in processes:  # a worker left alone waits for its peer
                other.kill()
            last = [line for line in err.splitlines() if line.strip()][-1:] or [f"exit status {process.returncode}"]
            raise TrainingFailed(f"train.py with {workers} process(es) failed: {last[0].strip()}")
    return last_epoch_seconds(run_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared training npz")
    parser.add_argument("--faces", type=int, default=1024, help="faces taken from --data")
    parser.add_argument("--model", default="scratch", help="registered model to train (default scratch)")
    parser.add_argument("--size", type=int, default=96, help="input side in pixels (default 96)")
    parser.add_argument("--batch", type=int, default=32, help="per replica")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--augment", default="default", help="train.py --augment (default: default)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():  # a traceback from the npz reader
        parser.error(f"{args.data}: no such npz (prepare one with datagen.py, README's Workflow)")
    if min(args.faces, args.size, args.batch, args.epochs) < 1:
        parser.error("--faces, --size, --batch and --epochs must be >= 1")

    try:
        arrays = npz.load_npz(args.data)
    except USER_ERRORS as err:  # not an npz: was the reader's traceback
        parser.error(error_line(err, (args.data,)))
    rows = np.random.default_rng(0).permutation(len(arrays["landmarks"]))[: args.faces]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = npz.save_npz(work / "subset.npz", npz.subset(arrays, np.sort(rows)))
        del arrays
        table = []
        for workers in (1, 2):
            print(f"training with {workers} process(es), {args.epochs} epoch(s)...", file=sys.stderr, flush=True)
            try:
                seconds = run(workers, args, data, work)
            except TrainingFailed as err:  # as every benchmark tells a failure: one line, exit status 2 (it was 1)
                complain(f"cluster_speed.py: {err}")
                return 2
            train_faces = int(round(args.faces * 0.95))
            global_batch = args.batch * workers
            steps = train_faces // global_batch if workers > 1 else -(-train_faces // args.batch)
            images = steps * global_batch if workers > 1 else train_faces
            table.append((workers, seconds, images / seconds, global_batch))
    print(f"{args.model} at {args.size} px, {args.faces} faces, batch {args.batch} per replica, "
          f"epoch {args.epochs} timed, TensorFlow, {cpu_description()}")
    print("| processes | strategy | global batch | epoch s | images/s | vs 1 process |")
    print("|---|---|---|---|---|---|")
    base = table[0][2]
    for workers, seconds, speed, global_batch in table:
        strategy = "none" if workers == 1 else "MultiWorkerMirroredStrategy"
        print(f"| {workers} | {strategy} | {global_batch} | {seconds:.1f} | {speed:.1f} | {speed / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
