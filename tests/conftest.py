"""Fixtures shared by tests/unit and tests/e2e (the helpers they import are in tests/helpers/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import CIFAR10_ARCHIVE, PORTABLE_NUMERICS, compose_config

# No test contacts the Hugging Face hub; set before any test module imports datasets/huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Every process a test starts (Ray, runs, workers) inherits these before it imports torch.
os.environ.update(PORTABLE_NUMERICS)


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


@pytest.fixture(scope="session")
def ray_cluster_address():
    """A one-node Ray cluster (1 CPU) that the runs of one test worker attach to, saving a Ray start each.

    One CPU: an attached run (one client per CPU) starts one Ray worker, not two. Each
    worker imports torch and Flower (about 3 s of CPU), and the suite is bound by CPU. Tests
    that start a private Ray only to check its processes (resume, kill, tracker resume, the
    sweep bench) give it one CPU as well (`resources.ray_cpus=1`); those about packs and
    concurrency (the baselines, the bench's reference, GPU shares, `flwr run`'s reference)
    run two clients at once.
    """
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
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


# --- the fast tier: `pytest -m "not slow"` (= tests/unit) starts no Ray and no `python -m sim` -----------

E2E_DIR = Path(__file__).resolve().parent / "e2e"


# Files that take longest (a minute or more on two cores) start first, the rest of tests/e2e
# next and tests/unit last: xdist (`--dist loadfile --no-loadscope-reorder`) hands out whole
# files in this order, so the short unit files fill the end and no long file starts last.
LONGEST_FIRST = ("test_baselines_e2e.py", "test_flwr_run_e2e.py", "test_strategies_e2e.py", "test_resume.py",
                 "test_bench.py", "test_single_run.py")


def _in_e2e(item) -> bool:
    return E2E_DIR in Path(str(item.fspath)).resolve().parents


def _file_order(item) -> tuple[int, int]:
    name = Path(str(item.fspath)).name
    return (0, LONGEST_FIRST.index(name)) if name in LONGEST_FIRST else ((1, 0) if _in_e2e(item) else (2, 0))


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e is slow (a test marked slow elsewhere belongs there); the longest files go first."""
    for item in items:
        if _in_e2e(item):
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} is marked slow: move it to tests/e2e/")
    items.sort(key=_file_order)  # stable: collection order within each group and file

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
