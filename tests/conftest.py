"""Shared test helpers: config composition, the shared CIFAR-10 copy, CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
CIFAR10_ARCHIVE = Path(
    os.environ.get("SIM_CIFAR10_ARCHIVE", REPO.parent / "shared" / "cifar10" / "cifar10-jpeg.tar.gz")
)

# A run small enough for seconds on two cores: synthetic data, few clients, few rounds.
TINY = [
    "dataset=synthetic",
    "dataset.num_train=600",
    "dataset.num_test=200",
    "num_clients=6",
    "clients_per_round=3",
    "eval_clients_per_round=2",
    "num_rounds=2",
    "client.batch_size=16",
    "client.epochs=1",
]


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """The real config tree composed with `overrides`, as the CLI would see it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides or [], return_hydra_config=return_hydra_config)


def run_cli(args: list[str], cwd: Path, timeout: float = 240, module: str = "sim", env: dict | None = None):
    """`python -m <module> args...` in `cwd`; returns the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def run_dirs(cwd: Path) -> list[Path]:
    """Run directories (those holding a history.csv) under `cwd/results`, oldest first."""
    return sorted(p.parent for p in (cwd / "results").rglob("history.csv"))


def processes_started_by(pid: int) -> list[psutil.Process]:
    """Every live process below `pid`: its private Ray instance (GCS, raylet, agents, workers)."""
    return psutil.Process(pid).children(recursive=True)


def still_alive(processes: list[psutil.Process], wait_s: float = 10.0) -> list[str]:
    """Command lines of the `processes` still running (zombies count as gone) after up to `wait_s`."""
    deadline = time.time() + wait_s
    while True:
        alive = []
        for proc in processes:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(proc.cmdline())[:200])
            except psutil.Error:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data/cache folder for the whole session, so each source is decoded once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def ray_cluster_address():
    """A one-node Ray cluster (2 CPUs) that several runs attach to, saving a Ray start each."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture
def cifar10_archive() -> Path:
    """The shared CIFAR-10 JPEG archive, or skip."""
    if not CIFAR10_ARCHIVE.exists():
        pytest.skip(f"shared CIFAR-10 copy not found at {CIFAR10_ARCHIVE}")
    return CIFAR10_ARCHIVE
