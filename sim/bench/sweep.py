"""`python -m sim.bench.sweep`: does a sweep's driver stay flat from job to job?

    python -m sim.bench.sweep                          # 8 small synthetic jobs
    python -m sim.bench.sweep --jobs 4 client.lr=0.05  # extra overrides for every job

A Hydra multirun runs all its jobs in one driver process, so anything a job leaves
behind (reference cycles, freed-but-kept malloc arenas, Ray state) adds up over a long
sweep. This runs one real sweep, `python -m sim -m seed=0,...,N-1 <overrides>`, and
prints from its `sweep.csv` each job's driver RSS (taken when the job ends) and median
round, then the last job against the second as ratios (the first job pays one-off
imports and caches), and the processes of the sweep still alive after it exited (Ray's
included: there must be none). Nothing is asserted; the figures are for the reader.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
import psutil

from sim.bench.measure import TAG_VARIABLE, carries_tag

SMALL_JOB = (
    "dataset=synthetic", "dataset.num_train=600", "dataset.num_test=200", "num_clients=6",
    "clients_per_round=3", "eval_clients_per_round=2", "num_rounds=5", "client.batch_size=16",
)
EXIT_GRACE_S = 10.0  # how long processes may take to exit after the sweep before they count as left
SHOWN = ["seed", "status", "wall_s", "median_round_s", "driver_rss_mb"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m sim.bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the sweep (seeds 0..jobs-1); >= 3")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: results/bench/sweep-<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on top of the small synthetic job")
    args = parser.parse_args(argv)
    if args.jobs < 3:
        parser.error(f"--jobs={args.jobs}: needs >= 3 (the first job is not compared)")
    if args.out is None:
        args.out = Path("results") / "bench" / datetime.now().strftime("sweep-%Y-%m-%d-%H-%M-%S")
    return args


def tagged_processes(tag: str, wait_s: float = EXIT_GRACE_S) -> list[str]:
    """Command lines of live processes whose environment carries `TAG_VARIABLE=tag`.

    Polls for up to `wait_s`: Ray's daemons may still be exiting just after the driver did.
    """
    deadline = time.monotonic() + wait_s
    while True:
        alive = [
            " ".join(proc.info["cmdline"] or [])[:120]
            for proc in psutil.process_iter(["cmdline", "status"])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and carries_tag(proc.pid, tag)
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def ratio_lines(table: pd.DataFrame) -> list[str]:
    """The last job against the second: driver memory and median round."""
    second, last = table.iloc[1], table.iloc[-1]
    return [
        f"driver RSS     job {len(table)} / job 2: {last['driver_rss_mb'] / second['driver_rss_mb']:.3f}"
        f"  ({second['driver_rss_mb']:.0f} -> {last['driver_rss_mb']:.0f} MB)",
        f"median round   job {len(table)} / job 2: {last['median_round_s'] / second['median_round_s']:.3f}"
        f"  ({second['median_round_s']:.3f} -> {last['median_round_s']:.3f} s)",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, print the table, the ratios and any leftover process. Exit 1 if a job failed."""
    args = parse_args(argv)
    tag = uuid.uuid4().hex
    seeds = ",".join(str(s) for s in range(args.jobs))
    command = [sys.executable, "-m", "sim", "-m", f"seed={seeds}", *SMALL_JOB, *args.overrides,
               f"hydra.sweep.dir={args.out.resolve()}"]
    print("sweep:", " ".join(command), flush=True)
    done = subprocess.run(command, env={**os.environ, TAG_VARIABLE: tag}, capture_output=True, text=True)
    left = tagged_processes(tag)
    sweep_csv = args.out / "sweep.csv"
    if not sweep_csv.exists():
        print(f"error: the sweep wrote no {sweep_csv} (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1
    table = pd.read_csv(sweep_csv)
    print(table[[c for c in SHOWN if c in table.columns]].to_string(index=False))
    for line in ratio_lines(table):
        print(line)
    print(f"processes of the sweep alive after it: {len(left)}")
    for line in left:
        print("  " + line)
    print(f"sweep.csv: {sweep_csv}")
    return 0 if done.returncode == 0 and (table["status"] == "completed").all() else 1


if __name__ == "__main__":
    sys.exit(main())
