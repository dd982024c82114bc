"""Device check: the cross-device workload on one GPU at several GPU fractions.

    python -m sim.bench.gpu_check --dataset-path .devdata/cifar10-jpeg.tar.gz
    python -m sim.bench.gpu_check --dataset-path P --rounds 5 --fractions 1.0,0.5,0.25,0.1 --amp --out DIR

Prints the GPU's name, then the median round time of the benchmark's cross-device workload
(1,000 clients, 50 a round, batch 10; `sim.bench.workloads`) for the plain-PyTorch
reference (`sim.bench.reference`: clients one after another in this process, on the GPU)
and for the harness (`python -m sim`, `resources=gpu`, clients and central evaluation on
the GPU) at each `resources.client_gpus` fraction. `ray_cpus` is this machine's CPU count
and `client_cpus=1`, so on a 16-core machine the GPU share sets the clients at once: 1, 2,
4, 10. Medians exclude rounds 0 and 1 (round 1 includes Ray's worker start-up);
`vs_reference` = harness / reference. GPU memory is `nvidia-smi --query-compute-apps`
sampled every 0.5 s, the peak per process, CUDA context included: `gpu_mib_per_client` is
the largest Ray worker's, `gpu_clients` how many workers used the GPU ('n/a' without
nvidia-smi). No CPU run is made (compare `python -m sim.bench --workloads cross-device` on
a CPU machine). Writes `<out>/gpu_check.csv` (default out `results/gpu_check/<date>-<time>`)
with the runs beside it. No run starts after `--budget-s`, so the check ends within about
4 minutes. Exit 2: no GPU visible or bad arguments; 1: a harness run failed.

Setup here, once, from the repository root. The device gets only the repository, and its
image (Python 3.12, torch) lacks Flower, Ray and Hydra: they travel as one stripped cp312
folder (38 MB packed) beside the 19 MB CIFAR-10 archive, under the tool's 64 MiB:

    mkdir -p .devdata && echo /.devdata/ >> .git/info/exclude && cp "$SIM_CIFAR10_ARCHIVE" .devdata/cifar10-jpeg.tar.gz
    rm -rf /tmp/w312 /tmp/site312
    P="--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux2014_x86_64"
    P="$P --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
    .venv/bin/pip download -q --no-deps $P -d /tmp/w312 ray==2.55.1 flwr==1.42.0 flwr-datasets==0.6.1 \
      datasets==4.8.5 hydra-core==1.3.8 omegaconf==2.3.1 grpcio==1.85.3 grpcio-health-checking==1.81.1 \
      protobuf==6.33.6 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 pycryptodome==3.24.1 iterators==0.0.2 \
      alembic==1.20.1 mako==1.4.3 sqlalchemy==2.1.9 fastapi==0.138.2 starlette==1.3.1 pydantic==2.14.4 \
      pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 jsonschema==4.26.0 \
      jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 dill==0.4.1 \
      multiprocess==0.70.19 tomli==2.5.0 tomli-w==1.2.0 wcwidth==0.9.4 typer==0.20.1 click==8.5.1 \
      rich==14.3.4 fsspec==2026.2.0
    .venv/bin/pip install -q --no-index --no-deps --no-compile --target /tmp/site312 $P /tmp/w312/*.whl
    cp -r .venv/lib/python3.11/site-packages/antlr4* /tmp/site312/   # 4.9.3 has no wheel; pure Python
    (cd /tmp/site312/ray && rm -rf rllib tune train serve data jars dashboard/client/build \
      && strip -s core/src/ray/raylet/raylet core/src/ray/gcs/gcs_server)
    find /tmp/site312 -name '*.so' -exec strip --strip-unneeded {} +
    tar -C /tmp -cf - site312 | xz -T0 > .devdata/site312.tar.xz

On the device, as one line (tool `run`, carry [".devdata"], timeout_s 330):

    set -o pipefail; nvidia-smi -L; tar -C /tmp -xJf .devdata/site312.tar.xz || exit 3;
    export PYTHONPATH=/tmp/site312 PYTHONUNBUFFERED=1;
    python3 -c "from importlib.metadata import version as v; import torch, flwr, ray, hydra, datasets;
    print({p: v(p) for p in ('torch', 'flwr', 'ray', 'pyarrow', 'numpy', 'fsspec')})" || exit 3;
    timeout 300 python3 -m sim.bench.gpu_check --dataset-path .devdata/cifar10-jpeg.tar.gz --out results/gpu_check
    2>&1 | tee $OUT/gpu_check.log; rc=$?; cp results/gpu_check/gpu_check.csv $OUT/;
    tar -czf $OUT/runs.tgz -C results gpu_check; exit $rc
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from sim.bench import workloads as wl
from sim.bench.measure import STEADY_FROM_ROUND, median_round_s, run_harness

log = logging.getLogger("sim.bench.gpu_check")
WORKLOAD = "cross-device"
SMI_QUERY = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
MIN_RUN_S = 30.0  # a harness run is not started with less of the budget left
COLUMNS = ["run", "gpu", "amp", "client_gpus", "workers", "median_round_s", "vs_reference", "round1_s", "start_s",
           "wall_s", "gpu_mib_per_client", "gpu_clients", "driver_gpu_mib", "torch_peak_alloc_mib", "returncode"]
SHOWN = ["run", "client_gpus", "workers", "median_round_s", "vs_reference", "round1_s", "gpu_mib_per_client",
         "gpu_clients", "driver_gpu_mib", "returncode"]


def parse_fractions(text: str) -> list[float]:
    """`"1.0,0.5"` -> [1.0, 0.5]; each a GPU share in (0, 1]."""
    try:
        fractions = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise ValueError(f"--fractions={text!r}: must be comma-separated numbers in (0, 1]") from None
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"--fractions={text!r}: must be comma-separated numbers in (0, 1]")
    return fractions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.bench.gpu_check",
        description="The cross-device workload on one GPU at several resources.client_gpus fractions, "
        "against the plain-PyTorch reference on the same GPU; needs a visible CUDA GPU.",
    )
    parser.add_argument("--dataset-path", default=os.environ.get("SIM_CIFAR10_ARCHIVE"),
                        help="CIFAR-10 image-folder archive or directory (default: $SIM_CIFAR10_ARCHIVE)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run; >= 3 (rounds 0 and 1 are not timed)")
    parser.add_argument("--fractions", default="1.0,0.5,0.25,0.1", help="resources.client_gpus values, comma-separated")
    parser.add_argument("--amp", action="store_true", help="client.amp=true (bfloat16 autocast) in every run")
    parser.add_argument("--budget-s", type=float, default=210.0,
                        help=f"seconds after which no harness run starts (a run is stopped {MIN_RUN_S:g} s past it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/gpu_check/<date>-<time>)")
    args = parser.parse_args(argv)
    try:
        args.fractions = parse_fractions(args.fractions)
    except ValueError as err:
        parser.error(str(err))
    if args.rounds < STEADY_FROM_ROUND + 1:
        parser.error(f"--rounds={args.rounds}: needs >= {STEADY_FROM_ROUND + 1} so some rounds are timed")
    if args.out is None:
        args.out = Path("results") / "gpu_check" / datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    return args


def parse_compute_apps(text: str) -> dict[int, float]:
    """nvidia-smi's `pid, used_memory` lines (MiB, no units) -> {pid: MiB}; odd lines are skipped."""
    used: dict[int, float] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                used[int(parts[0])] = float(parts[1])
            except ValueError:
                continue
    return used


class GpuMemorySampler:
    """Peak GPU memory per process from nvidia-smi, polled in a thread while the block runs."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.available = shutil.which("nvidia-smi") is not None
        self.peaks: dict[int, float] = {}
        self.commands: dict[int, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                text = subprocess.run(SMI_QUERY, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                text = ""
            for pid, mib in parse_compute_apps(text).items():
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), mib)
                if pid not in self.commands:
                    try:
                        self.commands[pid] = psutil.Process(pid).cmdline()
                    except psutil.Error:
                        self.commands[pid] = []
            self._stop.wait(self.interval)

    def __enter__(self) -> "GpuMemorySampler":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def split(self) -> tuple[list[float], float]:
        """(peaks of the harness's Ray workers, peak of its driver `python -m sim`), this process left out."""
        workers, driver = [], math.nan
        for pid, mib in self.peaks.items():
            command = self.commands.get(pid, [])
            if pid == os.getpid():
                continue
            if any(a == "-m" and b == "sim" for a, b in zip(command, command[1:])):
                driver = mib
            else:
                workers.append(mib)
        return workers, driver


def fraction_overrides(args: argparse.Namespace, fraction: float, cpus: int) -> list[str]:
    """The harness's overrides for one GPU fraction: the workload on the GPU, CPUs never the limit."""
    extra = ["resources=gpu", f"resources.client_gpus={fraction:g}", "resources.client_cpus=1",
             f"resources.ray_cpus={cpus}", "resources.server_device=cuda", f"client.amp={str(args.amp).lower()}"]
    return wl.workload_overrides(WORKLOAD, args.rounds, args.dataset_path, quick=False, extra=extra)


def check_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The reference on the GPU (client_gpus > 0 puts its clients there, server_device its evaluation)."""
    import torch

    from sim.bench.reference import run_reference

    cfg = wl.compose(fraction_overrides(args, 1.0, 1))
    torch.cuda.reset_peak_memory_stats()
    try:
        with GpuMemorySampler() as smi:
            timings = run_reference(cfg, args.out / "reference")
    except Exception:  # the harness runs still say something
        log.exception("the reference failed")
        return {"run": "reference", "returncode": 1}
    steady = timings["round_s"][STEADY_FROM_ROUND:]
    return {"run": "reference", "client_gpus": math.nan, "workers": 1, "returncode": 0,
            "median_round_s": float(np.median(steady)) if steady else math.nan,
            "round1_s": timings["round_s"][1], "wall_s": timings["wall_s"],
            "gpu_mib_per_client": smi.peaks.get(os.getpid(), math.nan),
            "torch_peak_alloc_mib": torch.cuda.max_memory_allocated() / 2**20}


def check_fraction(args: argparse.Namespace, fraction: float, cpus: int, timeout: float) -> dict[str, Any]:
    """One harness run at `resources.client_gpus=fraction`; its gpu_check.csv row."""
    folder = args.out / f"client_gpus_{fraction:g}"
    with GpuMemorySampler() as smi:
        run = run_harness(fraction_overrides(args, fraction, cpus), folder / "harness", timeout=timeout)
    workers, driver = smi.split()
    row = {"run": "harness", "client_gpus": fraction, "workers": run.workers, "returncode": run.returncode,
           "start_s": run.start_s, "wall_s": run.wall_s, "driver_gpu_mib": driver,
           "gpu_mib_per_client": max(workers) if workers else math.nan,
           "gpu_clients": len(workers) if smi.available else math.nan}
    history = folder / "harness" / "history.csv"
    if history.exists():
        rounds = pd.read_csv(history)
        row["median_round_s"] = median_round_s(rounds)
        round1 = rounds.loc[rounds["round"] == 1, "round_s"]
        row["round1_s"] = float(round1.iloc[0]) if len(round1) else math.nan
    if run.returncode != 0:
        tail = run.log_path.read_text(errors="replace").splitlines()[-15:]
        log.error("client_gpus=%g: the harness failed (exit %d); end of %s:\n%s",
                  fraction, run.returncode, run.log_path, "\n".join(tail))
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the check; write gpu_check.csv and print the table. 2: no GPU, 1: a harness run failed."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU is visible (torch.cuda.is_available() is False): "
              "sim.bench.gpu_check measures GPU runs; run it on a GPU machine", file=sys.stderr)
        return 2
    if not args.dataset_path:
        print("error: pass --dataset-path /path/to/cifar10 archive (or set SIM_CIFAR10_ARCHIVE)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from sim.bench.__main__ import prepare_data
    from sim.run.console import quiet_libraries

    quiet_libraries(False)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    name, cpus = torch.cuda.get_device_name(0), len(os.sched_getaffinity(0))
    print(f"GPU: {name}; torch {torch.__version__}; {cpus} CPUs; amp {args.amp}; output {args.out}", flush=True)
    prepare_data(wl.compose(fraction_overrides(args, 1.0, cpus)))
    rows = [check_reference(args)]
    for fraction in args.fractions:
        left = args.budget_s - (time.perf_counter() - started)
        if left < MIN_RUN_S:
            log.warning("budget spent: client_gpus=%g skipped", fraction)
            rows.append({"run": "skipped", "client_gpus": fraction, "returncode": math.nan})
            continue
        rows.append(check_fraction(args, fraction, cpus, timeout=left + MIN_RUN_S))
        pd.DataFrame(rows).to_csv(args.out / "gpu_check.csv", index=False)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["gpu"], table["amp"] = name, args.amp
    table["vs_reference"] = table["median_round_s"] / rows[0].get("median_round_s", math.nan)
    table.to_csv(args.out / "gpu_check.csv", index=False)
    print(table[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a"))
    print(f"median rounds exclude rounds 0 and 1; GPU MiB from nvidia-smi (CUDA context included); "
          f"reference torch peak allocated {rows[0].get('torch_peak_alloc_mib', math.nan):.0f} MiB; "
          f"total {time.perf_counter() - started:.0f} s; gpu_check.csv: {args.out / 'gpu_check.csv'}")
    harness = table[table["run"] == "harness"]
    return 0 if len(harness) and (harness["returncode"] == 0).all() else 1


if __name__ == "__main__":
    sys.exit(main())
