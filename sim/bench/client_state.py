"""`python -m sim.bench.client_state`: what client state costs per round, SCAFFOLD against FedAvg.

    python -m sim.bench.client_state --dataset-path /path/to/cifar10.tar.gz --rounds 8
    python -m sim.bench.client_state --quick                  # seconds, synthetic data

Runs the cross-device workload (1,000 clients, 50 a round) through `python -m sim` with
`strategy=fedavg` and `strategy=scaffold`, alternately `--repeats` times each, on the same
data, partition and seed, with `client.momentum=0` for both (SCAFFOLD's setting). SCAFFOLD
ships each sampled client's control variate and the server's in every message, takes
the new ones back, and commits them to the run directory at every checkpoint: that
is the whole difference. Prints the median steady round (rounds 2 on) and peak memory of
each, and SCAFFOLD / FedAvg as ratios (target: round time within 1.25x). Writes
`client_state.csv` into `--out` (default `results/bench/client-state-<date>-<time>/`).
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from sim.bench import workloads as wl
from sim.bench.measure import median_round_s, run_harness

log = logging.getLogger("sim.bench.client_state")
STRATEGIES = ("fedavg", "scaffold")
TARGET_RATIO = 1.25


def main(argv: list[str] | None = None) -> int:
    """Run the pairs and print the table."""
    parser = argparse.ArgumentParser(prog="python -m sim.bench.client_state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-path", default=os.environ.get("SIM_CIFAR10_ARCHIVE"), help="CIFAR-10 copy")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each strategy, alternating")
    parser.add_argument("--quick", action="store_true", help="synthetic data at test size")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("results/bench") / f"client-state-{datetime.now():%Y-%m-%d-%H-%M-%S}"
    base = wl.workload_overrides("cross-device", args.rounds, args.dataset_path, args.quick,
                                 ["client.momentum=0", *args.overrides])
    rows = []
    for repeat in range(args.repeats):
        for strategy in STRATEGIES:
            run_dir = out / f"{strategy}-{repeat}" / "run"
            result = run_harness([*base, f"strategy={strategy}"], run_dir)
            if result.returncode != 0:
                log.error("%s run failed (exit %d), see %s", strategy, result.returncode, result.log_path)
                return 1
            history = pd.read_csv(run_dir / "history.csv")
            rows.append({"strategy": strategy, "repeat": repeat, "median_round_s": median_round_s(history),
                         "peak_pss_mb": round(result.peak_pss_mb, 1), "final_central_acc": history["central_acc"].iloc[-1],
                         "run_dir": str(run_dir)})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "client_state.csv", index=False)
    print(table.drop(columns="run_dir").to_string(index=False))
    medians = table.groupby("strategy")[["median_round_s", "peak_pss_mb"]].median()
    ratio = medians.loc["scaffold", "median_round_s"] / medians.loc["fedavg", "median_round_s"]
    memory = medians.loc["scaffold", "peak_pss_mb"] / medians.loc["fedavg", "peak_pss_mb"]
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    print(f"SCAFFOLD / FedAvg round time: {ratio:.3f} (target <= {TARGET_RATIO}: {verdict}); peak memory: {memory:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
