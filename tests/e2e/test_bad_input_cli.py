"""Bad input through the CLI: one line naming the key, exit code 2, nothing left behind.

Every case runs as `python -m sim` runs it, all in one interpreter (`helpers.run_cli_batch`:
a refusal costs less than Python's start-up); two of them also as separate processes.
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers import run_cli, run_cli_batch

pytestmark = pytest.mark.slow  # a `python -m sim` subprocess each
NO_GPU_ONLY = [  # refused only where no GPU is visible (and no cluster address is set)
    (["resources.client_gpus=0.25"], "resources.client_gpus"),
    (["resources=gpu", "resources.client_gpus=0"], "resources.server_device"),
]

BAD = [
    ["num_rounds=0"], ["num_clients=0"], ["clients_per_round=0"], ["client.batch_size=0"],
    ["client.epochs=0"], ["client.lr=0"], ["client.lr=-1"], ["num_clients=10", "clients_per_round=11"],
    ["partition=dirichlet", "partition.alpha=0"], ["partition=dirichlet", "partition.alpha=-0.5"],
    ["partition=shard", "num_clients=1000", "partition.shards_per_client=100"],
    ["partition=pathological", "partition.classes_per_client=11"],
    ["resources.client_gpus=0.25", "resources.ray_gpus=0"], ["resources.client_gpus=1.5"], ["client.failure_rate=1.2"],
    ["partition.val_fraction=1.0"], ["num_rounds=abc"], ["dataset.path=/does/not/exist"],
    ["eval_clients_per_round=101"], ["client.momentum=1.0"], ["seed=-1"], ["round_timeout=0"],
    [f"resources.client_cpus={(os.cpu_count() or 1) + 1}"],  # more than a private Ray would have
]
KEYS = ["num_rounds", "num_clients", "clients_per_round", "client.batch_size", "client.epochs", "client.lr",
        "client.lr", "clients_per_round", "partition.alpha", "partition.alpha", "partition.shards_per_client",
        "partition.classes_per_client", "resources.client_gpus", "resources.client_gpus", "client.failure_rate",
        "partition.val_fraction", "num_rounds", "dataset.path", "eval_clients_per_round", "client.momentum",
        "seed", "round_timeout", "resources.client_cpus"]


CASES = [*zip(BAD, KEYS), *(pytest.param(o, k, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible"))
                           for o, k in NO_GPU_ONLY)]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict[str, tuple]:
    """{case id: (CompletedProcess, its working directory)} for every case, run in one batch."""
    cases = [(list(overrides), tmp_path_factory.mktemp("case")) for overrides in [*BAD, *(o for o, _ in NO_GPU_ONLY)]]
    results = run_cli_batch(cases)
    return {" ".join(args): (result, cwd) for (args, cwd), result in zip(cases, results)}


@pytest.mark.parametrize("overrides,key", CASES, ids=[" ".join(b) for b in BAD] + [" ".join(o) for o, _ in NO_GPU_ONLY])
def test_bad_override_is_refused_with_one_line(overrides, key, refusals):
    result, tmp_path = refusals[" ".join(overrides)]
    _assert_refused(result, key, tmp_path)


@pytest.mark.parametrize("overrides,key", [(["num_rounds=abc"], "num_rounds"), (["dataset.path=/does/not/exist"], "dataset.path")])
def test_bad_override_in_its_own_process(overrides, key, tmp_path):
    _assert_refused(run_cli(overrides, cwd=tmp_path, timeout=60), key, tmp_path)


def _assert_refused(result, key: str, tmp_path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {key}"), lines[0]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))
    assert not (tmp_path / "partitions").exists() and not (tmp_path / "data").exists()
