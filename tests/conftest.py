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
    """One data/cache folder for the whole test run, shared by the xdist workers: each source is decoded once.

    The cache publishes by an atomic rename (sim/data/cache.py), so workers may fill it at once.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base folder, above every worker's own
    path = root / "shared-data"
    path.mkdir(exist_ok=True)
    return path


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
def cifar10_archive(data_dir) -> Path:
    """The shared CIFAR-10 JPEG archive (decoded into `data_dir` once per test run, under a lock), or skip."""
    if not CIFAR10_ARCHIVE.exists():
        pytest.skip(f"shared CIFAR-10 copy not found at {CIFAR10_ARCHIVE}")
    from filelock import FileLock

    from sim.data import load_dataset

    with FileLock(str(data_dir / "cifar10.lock")):  # one worker decodes, the others then map the cache
        load_dataset(compose_config([f"dataset.path={CIFAR10_ARCHIVE}", f"dataset.data_dir={data_dir}"]).dataset, 0)
    return CIFAR10_ARCHIVE


# --- the fast tier: `pytest -m "not slow"` starts no Ray and no `python -m sim` --------------------------

RAY_PROCESS_MARKERS = ("gcs_server", "raylet", "/ray/_private/", "/ray/dashboard/", "/ray/autoscaler/")


def starts_ray_or_cli(args) -> bool:
    """Whether a command line is a `python -m sim...` run or a Ray component (which ray.init spawns)."""
    words = [str(w) for w in (args if isinstance(args, (list, tuple)) else str(args).split())]
    cli = any(w == "-m" and i + 1 < len(words) and words[i + 1].split(".")[0] == "sim" for i, w in enumerate(words))
    return cli or any(marker in w for w in words for marker in RAY_PROCESS_MARKERS)


@pytest.fixture(autouse=True)
def fast_tier_guard(request, monkeypatch):
    """Fail a test not marked slow that starts Ray or a `python -m sim` process: mark it slow."""
    if request.node.get_closest_marker("slow"):
        return
    if "ray_cluster_address" in request.fixturenames:
        pytest.fail("uses a Ray cluster: mark the test @pytest.mark.slow", pytrace=False)
    original = subprocess.Popen.__init__

    def guarded(self, args, *more, **kwargs):
        if starts_ray_or_cli(args):
            pytest.fail(f"starts Ray or python -m sim: mark the test @pytest.mark.slow ({str(args)[:160]})",
                        pytrace=False)
        original(self, args, *more, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.fixture
def task_identity():
    """Flower's runtime names the running task before messages are built; in-process strategy tests do the same."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
