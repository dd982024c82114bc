"""GPU shares on a machine without a GPU: logical GPUs in a private Ray, refusals.

Ray can be told it has GPUs it cannot see (`resources.ray_gpus=1`); it then packs client
tasks by their GPU share exactly as on a GPU machine, while each task, finding no CUDA,
trains on the CPU. Four stragglers that sleep 2 s each make the packing visible: at a
quarter GPU each, a round takes about 2 s (one after another it would take 8 s). That run
also names a dead RAY_ADDRESS, which a private Ray (`resources.address=null`) must ignore.
`sim.bench.gpu_check` itself needs a GPU; here only its refusal runs.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers import TINY, compose_config, run_cli, run_dirs

NO_GPU = not torch.cuda.is_available()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a visible GPU")
STRAGGLE_S = 2.0
LOGICAL_GPU = ["resources.ray_gpus=1", "resources.ray_cpus=4", "resources.server_device=cpu"]


# --- the CLI without a GPU -------------------------------------------------------------------


@pytest.mark.slow
@needs_no_gpu
@pytest.mark.parametrize("overrides", [["resources.client_gpus=0.25"], ["resources=gpu"]])
def test_gpu_share_without_gpu_is_refused_with_one_line(tmp_path, overrides):
    result = run_cli(overrides, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resources.client_gpus=0.25 needs a GPU"), result.stderr


@pytest.mark.slow
@needs_no_gpu
def test_gpu_check_fails_fast_without_gpu(tmp_path):
    result = run_cli(["--dataset-path", str(tmp_path / "none.tar.gz"), "--out", str(tmp_path / "out")],
                     cwd=tmp_path, timeout=60, module="sim.bench.gpu_check")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU is visible"), result.stderr
    assert not (tmp_path / "out").exists()


# --- logical GPUs in a private Ray ----------------------------------------------------------


@pytest.mark.slow  # starts a private Ray
def test_clients_at_once_follow_the_gpu_share_and_the_cpus():
    """Flower's pool arithmetic on a Ray told of 1 GPU and 4 CPUs: min(4 / 1, 1 / client_gpus)."""
    from sim.federation.ray_runtime import concurrency, ray_session

    expected = {1.0: 1, 0.5: 2, 0.25: 4, 0.1: 4}  # at 0.1 the 4 CPUs are the limit, not the GPU's 10
    base = compose_config(LOGICAL_GPU).resources
    with ray_session(base, verbose=False):
        for share, workers in expected.items():
            resources = compose_config([*LOGICAL_GPU, f"resources.client_gpus={share}"]).resources
            assert concurrency(resources) == workers, share


@pytest.mark.slow
def test_quarter_gpu_runs_four_clients_at_once(tmp_path, data_dir):
    """Two rounds of 4 FedMedian clients (one message each) that all sleep STRAGGLE_S."""
    overrides = [
        *TINY, "clients_per_round=4", "eval_clients_per_round=0", "strategy=fedmedian",
        "client.straggler_rate=1.0", f"client.straggler_delay_s={STRAGGLE_S}",
        "resources.client_gpus=0.25", *LOGICAL_GPU, f"dataset.data_dir={data_dir}",
    ]
    # a private Ray even where RAY_ADDRESS (or a `ray start` on this machine) names another cluster
    result = run_cli(overrides, cwd=tmp_path, timeout=150, env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "clients running at once: 4" in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2]
    assert history.loc[1:, "train_clients"].tolist() == [4, 4]
    assert (history.loc[1:, "train_failures"] == 0).all()  # every task ran (on the CPU: no CUDA here)
    # round 1 includes Ray's worker start-up; round 2 is the four sleeps side by side (8 s one by one)
    assert STRAGGLE_S <= history.loc[2, "round_s"] < 2 * STRAGGLE_S
