"""`python -m sim.bench`: the harness against the plain-PyTorch reference, per workload.

    python -m sim.bench --dataset-path /path/to/cifar10.tar.gz            # all four workloads
    python -m sim.bench --workloads cross-silo,cross-device --rounds 5 --dataset-path ...
    python -m sim.bench --quick --workloads cross-silo                     # seconds, synthetic data
    python -m sim.bench --workloads pfl-cifar10 --rounds 30 --dataset-path ...  # 1,500 rounds without --rounds
    python -m sim.bench --quick seed=1 dataset.data_dir=/tmp/data          # extra overrides for every run

For each workload, on the same data, partition and seed: the data cache and partition
manifest are prepared first (so neither run pays for them), then (a) the harness runs as
`python -m sim <overrides> hydra.run.dir=<out>/<workload>/harness` in a subprocess
while its memory is sampled (`sim.bench.measure`), then (b) the reference
(`sim.bench.reference`) runs in this process, its clients on `resources.client_cpus`
torch threads each and in the harness's summation order (`packs` = the harness's
workers), into `<out>/<workload>/reference`. One row per workload goes to
`<out>/bench.csv` (default out: `results/bench/<date>-<time>/`) and a table is printed.

Columns: median round times exclude rounds 0 and 1 (round 1 includes Ray's worker
start-up); `bound_s` is the ideal parallel round, the reference's median per-round
client time (training plus federated evaluation, summed over clients) divided by the
parallel workers, plus its central-evaluation time; `ratio` = harness / bound;
`packed_bound_s` is the same with clients indivisible: each round's slowest of the
harness's packs, timed in the reference (at least the bound; above it when one client
or pack holds more than its share of the round's examples), `packed_ratio` = harness / it;
`parallel_reference_round_s` is the median round of the reference run again with each
round's packs at once in one plain process per worker (`sim.bench.pack_pool`: no Flower,
no Ray; what plain processes reach on this machine, where two trainings at once run
slower than one alone), `parallel_ratio` = harness / it, `parallel_max_rel_diff` its
history against the harness's;
`start_s` is start to first round (launch to the round-0 row of history.csv);
`worker_startup_s` is round 1's extra time over the median round; `peak_pss_mb` is the
peak of the summed PSS of driver, Ray daemons and workers, `driver_pss_mb` the driver's own,
`driver_own_mb` the driver's less the shared memory it maps (Ray's object store, where
it put the training set: data, not the driver's own structures); `max_rel_diff` is the largest
relative difference between the two histories' metric columns: 0 up to float noise
when the harness still computes what the reference does, in the same order;
`partition_s` is a fresh partition of the workload's split (manifest, CSV and plot, into a
temporary folder; the runs themselves reuse the manifest);
`cpu_share` is the CPU time the reference's clients got per thread and wall second (about
1 on an idle machine; lower means other work shared the cores, and every timing of that
row is inflated by it); `load_1min` is the load average after the workload;
`final_acc` / `reference_final_acc` the last central accuracy of each run and
`wall_ratio` the harness's wall time (launch to exit: imports, Ray, every round) over
the reference's (data from the cache, partition, every round), targeted for pfl-cifar10.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sim.bench import workloads as wl
from sim.bench.measure import STEADY_FROM_ROUND, max_relative_difference, median_round_s, run_harness

log = logging.getLogger("sim.bench")

TABLE_COLUMNS = {  # bench.csv column -> printed header
    "workload": "workload",
    "workers": "workers",
    "harness_round_s": "harness s/round",
    "reference_round_s": "reference s/round (1 worker)",
    "bound_s": "ideal bound s",
    "ratio": "harness/bound",
    "packed_ratio": "harness/packed bound",
    "parallel_ratio": "harness/parallel reference",
    "start_s": "start->round 1 s",
    "worker_startup_s": "worker start-up s",
    "peak_pss_mb": "peak PSS MB",
    "driver_pss_mb": "driver PSS MB",
    "driver_own_mb": "driver less object store MB",
    "max_rel_diff": "max rel diff",
    "cpu_share": "cpu share",
}
BUSY_CPU_SHARE = 0.9  # below this the machine was busy with other work: timings are unreliable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads", default=",".join(wl.DEFAULT_WORKLOADS), help="comma-separated, from: " + ", ".join(wl.WORKLOADS)
    )
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="rounds per run; >= 3 (rounds 0 and 1 are not timed); default: the workload's own (10; pfl-cifar10 1500)",
    )
    parser.add_argument(
        "--dataset-path", default=os.environ.get("SIM_CIFAR10_ARCHIVE"),
        help="CIFAR-10 as an image-folder archive or directory (default: $SIM_CIFAR10_ARCHIVE)",
    )
    parser.add_argument("--quick", action="store_true", help="synthetic data and tiny client counts (for tests)")
    parser.add_argument("--no-parallel-reference", dest="parallel_reference", action="store_false",
                        help="skip the reference's second run with its packs in parallel processes")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/bench/<date>-<time>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides applied to every run, e.g. seed=1")
    args = parser.parse_args(argv)
    try:
        args.workloads = wl.parse_names(args.workloads)
    except ValueError as err:
        parser.error(str(err))
    if args.rounds is not None and args.rounds < STEADY_FROM_ROUND + 1:
        parser.error(f"--rounds={args.rounds}: needs >= {STEADY_FROM_ROUND + 1} so some rounds are timed")
    if not args.quick and not args.dataset_path and any(wl.WORKLOADS[n].data is None for n in args.workloads):
        parser.error("pass --dataset-path /path/to/cifar10 archive (or set SIM_CIFAR10_ARCHIVE), or use --quick")
    if args.out is None:
        args.out = Path("results") / "bench" / datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    return args


def prepare_data(cfg) -> float:
    """Decode/cache the data set and write the partition manifest before either run starts.

    Returns the seconds a fresh partition takes (the same split, with its manifest, CSV
    and plot, written once more into a temporary folder), whether or not the manifest
    under `partition.dir` already existed.
    """
    from sim.data import load_dataset
    from sim.partition.manifest import load_or_create_partition

    data = load_dataset(cfg.dataset, int(cfg.seed))
    args = (cfg.dataset.name, int(cfg.dataset.num_classes), int(cfg.num_clients), int(cfg.seed))
    load_or_create_partition(data.train_labels, cfg.partition, *args)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        load_or_create_partition(data.train_labels, OmegaConf.merge(cfg.partition, {"dir": scratch}), *args)
        return time.perf_counter() - started


def default_workers(cfg) -> int:
    """Clients at once on this machine when the harness's log does not say: CPUs / client_cpus."""
    cpus = cfg.resources.ray_cpus or len(os.sched_getaffinity(0))
    return max(1, int(float(cpus) / float(cfg.resources.client_cpus)))


def bench_workload(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload through the harness and the reference; return its bench.csv row."""
    from sim.bench.reference import run_reference

    overrides = wl.workload_overrides(name, args.rounds, args.dataset_path, args.quick, args.overrides)
    cfg = wl.compose(overrides)
    row: dict[str, Any] = {
        "workload": name, "rounds": int(cfg.num_rounds), "num_clients": int(cfg.num_clients),
        "clients_per_round": int(cfg.clients_per_round),
    }
    row["partition_s"] = prepare_data(cfg)
    folder = args.out / name
    harness = run_harness(overrides, folder / "harness")
    row.update(returncode=harness.returncode, harness_wall_s=harness.wall_s, start_s=harness.start_s,
               peak_pss_mb=harness.peak_pss_mb, peak_uss_mb=harness.peak_uss_mb,
               driver_pss_mb=harness.peak_driver_pss_mb, driver_own_mb=harness.peak_driver_own_mb,
               processes=harness.max_processes)
    if harness.returncode != 0:
        log.error("%s: the harness failed (exit %d); see %s", name, harness.returncode, harness.log_path)
        return row
    workers = harness.workers or default_workers(cfg)
    timings = run_reference(cfg, folder / "reference", packs=workers)
    ours = pd.read_csv(folder / "harness" / "history.csv")
    theirs = pd.read_csv(folder / "reference" / "history.csv")
    parallel = max(1, min(workers, int(cfg.clients_per_round)))
    steady = slice(STEADY_FROM_ROUND, None)
    client_s = np.add(timings["train_s"], timings["fed_eval_s"])[steady]
    central_s = np.asarray(timings["central_s"])[steady]
    bound_s = float(np.median(client_s / parallel + central_s))
    slowest_s = np.add(timings["train_slowest_s"], timings["fed_eval_slowest_s"])[steady]
    packed_bound_s = float(np.median(np.maximum(client_s / parallel, slowest_s) + central_s))
    harness_round_s = median_round_s(ours)
    round1 = ours.loc[ours["round"] == 1, "round_s"]
    row.update(
        workers=parallel,
        harness_round_s=harness_round_s,
        reference_round_s=median_round_s(theirs),
        reference_train_s=float(np.median(client_s)),
        reference_central_s=float(np.median(central_s)),
        bound_s=bound_s,
        ratio=harness_round_s / bound_s if bound_s > 0 else math.nan,
        packed_bound_s=packed_bound_s,
        packed_ratio=harness_round_s / packed_bound_s if packed_bound_s > 0 else math.nan,
        worker_startup_s=float(round1.iloc[0]) - harness_round_s if len(round1) else math.nan,
        reference_wall_s=timings["wall_s"],
        cpu_share=cpu_share(timings, steady),
        load_1min=os.getloadavg()[0],
        max_rel_diff=max_relative_difference(ours, theirs),
        final_acc=final_central_acc(ours),
        reference_final_acc=final_central_acc(theirs),
        wall_ratio=harness.wall_s / timings["wall_s"],
    )
    if args.parallel_reference:
        run_reference(cfg, folder / "parallel-reference", packs=workers, parallel=True)
        parallel = pd.read_csv(folder / "parallel-reference" / "history.csv")
        row.update(parallel_reference_round_s=median_round_s(parallel),
                   parallel_ratio=harness_round_s / median_round_s(parallel),
                   parallel_max_rel_diff=max_relative_difference(ours, parallel))
    return row


def final_central_acc(history: pd.DataFrame) -> float:
    """The last central accuracy in a history (nan when central evaluation was off)."""
    measured = history["central_acc"].dropna()
    return float(measured.iloc[-1]) if len(measured) else math.nan


def cpu_share(timings: dict[str, Any], steady: slice) -> float:
    """CPU the reference's clients got per thread and wall second: ~1 on an idle machine."""
    wall = float(np.sum(timings["train_s"][steady])) * int(timings["train_threads"])
    return float(np.sum(timings["train_cpu_s"][steady])) / wall if wall > 0 else math.nan


def _relative(a: float, b: float) -> float:
    """(a - b) / b, nan when either is missing."""
    return (a - b) / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def target_lines(table: pd.DataFrame) -> list[str]:
    """The targets beside what was measured (printed, never asserted)."""
    rows = {r["workload"]: r for r in table.to_dict("records")}

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = []
    for name, target in wl.RATIO_TARGETS.items():
        if name in rows and not math.isnan(rows[name].get("ratio", math.nan)):
            ratio, packed = rows[name]["ratio"], rows[name].get("packed_ratio", math.nan)
            parallel = rows[name].get("parallel_ratio", math.nan)
            lines.append(f"{name} harness/bound {ratio:.2f}  target <= {target:.2f}  {verdict(ratio <= target)}"
                         f"  (harness/packed bound {packed:.2f}; harness/parallel reference {parallel:.2f})")
    for name, target in wl.WALL_TARGETS.items():
        if name in rows and not math.isnan(rows[name].get("wall_ratio", math.nan)):
            row = rows[name]
            lines.append(
                f"{name} {row['rounds']} rounds: wall time harness {row['harness_wall_s']:.1f} s (launch to exit) / "
                f"reference {row['reference_wall_s']:.1f} s = {row['wall_ratio']:.2f}  target <= {target:.2f}  "
                f"{verdict(row['wall_ratio'] <= target)}; final central accuracy harness {row['final_acc']:.4f}, "
                f"reference {row['reference_final_acc']:.4f}"
            )
    for name, target in wl.ROUND_TARGETS_S.items():
        if name in rows and not math.isnan(rows[name].get("harness_round_s", math.nan)):
            seconds = rows[name]["harness_round_s"]
            lines.append(f"{name} median round {seconds * 1000:.1f} ms  target < {target * 1000:.0f} ms  "
                         f"{verdict(seconds < target)}")
    for (small, large), checks in wl.SCALE_PAIRS.items():
        if small in rows and large in rows:
            for key, label, tolerance in checks:
                change = _relative(rows[large].get(key, math.nan), rows[small].get(key, math.nan))
                lines.append(f"{large} vs {small} {label} {change:+.1%}  target <= +{tolerance:.0%}  "
                             f"{verdict(change <= tolerance)}")  # more clients may cost less, never more
    _, large = wl.SCALE_PAIR
    if large in rows:
        seconds = rows[large].get("partition_s", math.nan)
        lines.append(f"{large} fresh partition of {rows[large]['num_clients']:,} clients {seconds:.1f} s  "
                     f"target <= {wl.PARTITION_TARGET_S:.0f} s  {verdict(seconds <= wl.PARTITION_TARGET_S)}")
    for name, row in rows.items():
        start = row.get("start_s", math.nan)
        lines.append(f"{name} start to first round {start:.1f} s  target <= {wl.START_TARGET_S:.0f} s  "
                     f"{verdict(start <= wl.START_TARGET_S)}")
    for name, row in rows.items():
        mem = row.get("peak_pss_mb", math.nan)
        lines.append(f"{name} peak memory {mem:.0f} MB  target <= {wl.MEMORY_TARGET_MB:.0f} MB (default run)  "
                     f"{verdict(mem <= wl.MEMORY_TARGET_MB)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write bench.csv and print the table. Exit 1 if a harness run failed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from sim.run.console import quiet_libraries

    quiet_libraries(False)
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("bench output: %s", args.out)
    rows = []
    for name in args.workloads:
        rows.append(bench_workload(name, args))
        pd.DataFrame(rows).to_csv(args.out / "bench.csv", index=False)  # keep what is done so far
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "bench.csv", index=False)
    shown = table[[c for c in TABLE_COLUMNS if c in table.columns]].rename(columns=TABLE_COLUMNS)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("median rounds exclude rounds 0 and 1 (round 1 includes Ray worker start-up); start->round 1 = "
          "launch to history.csv's round-0 row; memory = summed PSS of driver, Ray daemons and workers")
    busy = table.loc[table["cpu_share"] < BUSY_CPU_SHARE, "workload"].tolist() if "cpu_share" in table else []
    if busy:
        print(f"WARNING: the machine was busy during {', '.join(busy)} (cpu share < {BUSY_CPU_SHARE}: the "
              f"reference's single-threaded clients got less than {BUSY_CPU_SHARE:.0%} of a core); "
              f"its timings and ratios are unreliable")
    print("targets (not asserted):")
    for line in target_lines(table):
        print("  " + line)
    print(f"bench.csv: {args.out / 'bench.csv'}")
    return 0 if (table["returncode"] == 0).all() else 1


if __name__ == "__main__":
    sys.exit(main())
