"""`python -m sim.bench.flwr_paths`: one workload run the Flower ways, side by side in one run.

    python -m sim.bench.flwr_paths --dataset-path /path/to/cifar10.tar.gz --rounds 5
    python -m sim.bench.flwr_paths --quick                      # synthetic data, seconds per round

On the same data, partition, seed and overrides (default workload: cross-silo, 10
clients, all of them every round), one after another:

    sim       `python -m sim`                                   (the harness's own driver)
    flwr-run  `flwr run .` on Flower's Simulation Runtime       (fresh local SuperLink, own FLWR_HOME and ports;
                                                                 `num-supernodes` = the harness's workers, so
                                                                 the same packs; the clients' CPUs and GPUs
                                                                 as `resources.client_cpus`/`client_gpus`)
    deploy    `python -m sim.deploy --supernodes N`             (a SuperLink and one SuperNode per client,
                                                                 fast polls, ClientApps forked warm)
    deploy-flower  the same with `--nodes flower`              (Flower's own SuperNodes: 3 s polls,
                                                                 a new process per message)
    flower-floor   `flwr run` of an app that does nothing but   (`sim/bench/flower_floor.py`: Flower's own
                   one message and its reply                     start, which no app can go below)

Per path: median round time over rounds >= 2 (`sim.bench.measure.median_round_s`), its
ratio to `sim`, start to first round (launch to the round-0 row of history.csv, which
includes starting the SuperLink and SuperNodes), wall time, and the largest relative
difference of the metric columns from `sim`. For flower-floor, start is launch to its first
reply, and `listing_s` on the flwr-run row is Flower's CLI listing this checkout's files
for the FAB (`.venv/` included), part of `flwr run .`'s start. Targets (issue 10): flwr-run
round <= 1.10x, deploy <= 1.5x, start to first round <= 15 s. Rows go to `<out>/flwr_paths.csv`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from sim.bench import flower_floor
from sim.bench import workloads as wl
from sim.bench.measure import max_relative_difference, median_round_s
from sim.deploy.processes import PROJECT, flwr_environment, free_port, local_superlinks, stop_tree

log = logging.getLogger("sim.bench")
PATHS = ("sim", "flwr-run", "deploy", "deploy-flower", "flower-floor")


def _run(command: list[str], cwd: Path, env: dict | None, history_glob: str, log_path: Path, timeout: float):
    """Run `command`; return (return code, wall s, start-to-round-0 s, run directory or None)."""
    launched, launched_wall = time.perf_counter(), time.time()
    with log_path.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        start_s = math.nan
        while proc.poll() is None:
            if math.isnan(start_s):
                for history in cwd.glob(history_glob):
                    if len(history.read_bytes().splitlines()) >= 2:
                        start_s = history.stat().st_mtime - launched_wall
            if time.perf_counter() - launched > timeout:
                proc.kill()
            time.sleep(0.2)
    wall = time.perf_counter() - launched
    found = sorted(cwd.glob(history_glob))
    return proc.returncode, wall, start_s, (found[-1].parent if found else None)


def simulation_resources(overrides: list[str]) -> str:
    """`flwr run`'s federation-config keys for the clients' resources `python -m sim` gives them.

    Flower's own default is 2 CPUs per client: on a 2-CPU machine one client at a time,
    where `python -m sim` (`resources.client_cpus=1`) runs two.
    """
    from sim.config.compose import compose_config

    resources = compose_config(overrides).resources
    return (f"client-resources-num-cpus={int(math.ceil(float(resources.client_cpus)))} "
            f"client-resources-num-gpus={float(resources.client_gpus)}")


def bench(overrides: list[str], supernodes: int, workers: int, out: Path, timeout: float,
          paths: tuple[str, ...] = PATHS) -> pd.DataFrame:
    """The paths (`PATHS`, or those of them in `paths`) on `overrides`; one row each, `sim` first."""
    rows, histories = [], {}
    glob = "results/*/*/history.csv"
    for name in ["sim", *(p for p in paths if p != "sim")]:
        cwd = out / name
        cwd.mkdir(parents=True, exist_ok=True)
        env, home = None, cwd / ".flwr"
        if name in ("flwr-run", "flower-floor"):  # a local SuperLink of its own: own FLWR_HOME and ports
            env = flwr_environment(flwr_home=home)
            env.update(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()), FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
        marks = cwd / "marks.txt"
        if name == "sim":
            command = [sys.executable, "-m", "sim", *overrides]
        elif name == "flwr-run":
            command = ["flwr", "run", str(PROJECT), "--stream", "--run-config",
                       f"overrides={json.dumps(' '.join(overrides))}",
                       "--federation-config", f"num-supernodes={workers} {simulation_resources(overrides)}"]
        elif name == "flower-floor":
            command = ["flwr", "run", str(flower_floor.make_project(cwd / "app")), "--stream",
                       "--run-config", f"marks={json.dumps(str(marks))}",
                       "--federation-config", f"num-supernodes={workers} {simulation_resources(overrides)}"]
        else:
            own = ["--nodes", "flower"] if name == "deploy-flower" else []
            command = [sys.executable, "-m", "sim.deploy", "--supernodes", str(supernodes), *own, *overrides]
        log.info("%s: %s", name, " ".join(command))
        launched = time.time()
        try:
            code, wall, start_s, run_dir = _run(command, cwd, env, glob, cwd / f"{name}.log", timeout)
        finally:
            for link in local_superlinks(home):  # flwr run leaves its local SuperLink up: stop it by pid
                stop_tree(link)
        if name == "flower-floor":
            start_s = flower_floor.first_reply_s(marks, launched)
        history = pd.read_csv(run_dir / "history.csv") if run_dir else None
        histories[name] = history
        rows.append({
            "path": name, "returncode": code, "round_s": median_round_s(history) if history is not None else math.nan,
            "start_s": round(start_s, 2), "wall_s": round(wall, 1), "run_dir": str(run_dir),
            "listing_s": round(flower_floor.listing_s(PROJECT), 2) if name == "flwr-run" else math.nan,
        })
    table = pd.DataFrame(rows)
    base = table.loc[0, "round_s"]
    table["ratio"] = (table["round_s"] / base).round(3)
    table["max_rel_diff"] = [
        max_relative_difference(histories["sim"], h) if h is not None and histories["sim"] is not None else math.nan
        for h in histories.values()
    ]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench.flwr_paths", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="cross-silo", choices=sorted(wl.WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataset-path", default=None, help="CIFAR-10 archive or folder (omit with --quick)")
    parser.add_argument("--quick", action="store_true", help="synthetic data and the workload's quick shape")
    parser.add_argument("--workers", type=int, default=2, help="SuperNodes of the Simulation Runtime (= sim's workers)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)} (sim always runs)")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for every path")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.paths.split(",")) - set(PATHS))
    if unknown:
        parser.error(f"--paths {','.join(unknown)}: unknown; choose from {','.join(PATHS)}")
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s")
    workload = wl.WORKLOADS[args.workload]
    if args.quick:
        overrides = ["dataset=synthetic", "dataset.num_train=2000", "dataset.num_test=500", *workload.quick]
    else:
        if not args.dataset_path:
            parser.error("--dataset-path is required without --quick")
        overrides = [f"dataset.path={Path(args.dataset_path).resolve()}", *workload.overrides]
    overrides += [f"num_rounds={args.rounds}", "checkpoint_every=0", *args.extra]
    supernodes = int(next(o for o in overrides if o.startswith("num_clients=")).split("=")[1])
    out = (args.out or PROJECT / "results" / "bench" / f"flwr-{datetime.now():%Y-%m-%d-%H-%M-%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=out))
    overrides.append(f"dataset.data_dir={data_dir}")  # one cache for every path
    table = bench(overrides, supernodes, args.workers, out, args.timeout, tuple(args.paths.split(",")))
    table.to_csv(out / "flwr_paths.csv", index=False)
    print(table.drop(columns=["run_dir"]).to_string(index=False))
    print(f"rows in {out / 'flwr_paths.csv'}")
    return 0 if (table["returncode"] == 0).all() else 1


if __name__ == "__main__":
    sys.exit(main())
