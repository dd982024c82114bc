"""Refusals as the user meets them: the README's "Common overrides" lines are composed,
validated and (for a Dirichlet split of CIFAR-10) drawn, one by one and two at a time, as a
new user would combine them; settings that cannot run end with one line and exit 2.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex

import pytest

from hydra import initialize_config_dir

from helpers.partition_draws import run_as_far_as_the_partition
from helpers import CONF_DIR, REPO, TINY, run_cli


def readme_override_lines() -> list[list[str]]:
    """The override arguments of every `python -m sim ...` line of the README's "Common overrides"."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Common overrides\s+```bash\n(.*?)```", text, re.S).group(1)
    lines = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("python -m sim ") and "--" not in line:
            lines.append(shlex.split(line)[3:])
    return lines


@pytest.mark.slow  # no Ray, but 45 compositions and seven flwr-datasets draws: ~10 s of CPU
def test_readme_override_lines_run_alone_and_two_at_a_time():
    lines = readme_override_lines()
    assert len(lines) >= 8 and ["partition=dirichlet", "partition.alpha=0.3"] in lines
    outcomes = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for combo in [*([line] for line in lines), *itertools.combinations(lines, 2)]:
            overrides = [arg for line in combo for arg in line]
            outcomes[" ".join(overrides)] = run_as_far_as_the_partition(overrides, composed=True)
    assert all(outcomes[" ".join(line)] == "ok" for line in lines), outcomes
    refused = {k: v for k, v in outcomes.items() if v != "ok"}
    # the one refusal: 1,000 clients on the smoke preset's 600 synthetic images (a clear one-line error)
    assert all("experiment=smoke" in k and v.startswith("num_clients=1000 is larger") for k, v in refused.items()), refused


def _one_line_exit_2(result, key: str) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_cli_refuses_a_dirichlet_split_that_cannot_be_drawn(tmp_path, data_dir):
    # 5,000 synthetic images over 400 clients: 12.5 each on average, so some client always has < 10
    result = run_cli([*TINY, f"dataset.data_dir={data_dir}", "dataset.num_train=5000", "num_clients=400",
                      "partition=dirichlet", "partition.alpha=0.3", "partition.min_partition_size=10"],
                     cwd=tmp_path, timeout=120)
    line = _one_line_exit_2(result, "partition.min_partition_size")
    assert "num_clients=400" in line and "partition.alpha=0.3" in line
    assert not list((tmp_path / "results").rglob("history.csv"))


@pytest.mark.slow
def test_cli_refuses_more_cpus_per_client_than_the_machine_has(tmp_path):
    result = run_cli([*TINY, f"resources.client_cpus={(os.cpu_count() or 1) + 1}"], cwd=tmp_path, timeout=60)
    _one_line_exit_2(result, "resources.client_cpus")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


@pytest.mark.slow
def test_cli_refuses_a_client_no_node_of_an_attached_cluster_can_host(tmp_path, data_dir, ray_cluster_address):
    # the shared cluster has one node with 1 CPU and no GPU
    for extra, key in ((["resources.client_cpus=2"], "resources.client_cpus"),
                       (["resources.client_gpus=0.5"], "resources.client_gpus")):
        cwd = tmp_path / key
        cwd.mkdir()
        result = run_cli([*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", *extra],
                         cwd=cwd, timeout=120)
        line = _one_line_exit_2(result, key)
        assert "fits on no node" in line and "1 CPU and 0 GPUs" in line, line
        assert not list((cwd / "results").rglob("history.csv"))
