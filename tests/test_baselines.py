"""Accuracy curves guarded against committed baselines (`python -m sim.regress`).

The baselines in tests/baselines/ were made with these exact commands (refresh them on
purpose only: see the README, "Guarding accuracy curves in CI"):

    # synthetic, deterministic: one curve, checked with an absolute tolerance
    python -m sim <SYNTHETIC settings below> hydra.run.dir=/tmp/base/synthetic
    python -m sim.regress build /tmp/base/synthetic --out tests/baselines/synthetic_fedavg.csv

    # real CIFAR-10 (shared copy): a band over seeds 0..4; CI reruns seed 0 and checks it stays inside
    python -m sim -m experiment=cifar10_dirichlet dataset.path=... seed=0,1,2,3,4 hydra.sweep.dir=/tmp/base/cifar10
    python -m sim.regress build /tmp/base/cifar10 --out tests/baselines/cifar10_dirichlet_band.csv
"""

from __future__ import annotations

import pytest

from conftest import REPO, run_cli, run_dirs

pytestmark = pytest.mark.slow
BASELINES = REPO / "tests" / "baselines"
SYNTHETIC = [
    "dataset=synthetic", "dataset.num_train=2000", "dataset.num_test=500", "num_clients=10",
    "clients_per_round=5", "eval_clients_per_round=0", "num_rounds=8", "client.epochs=2",
    "client.lr=0.05", "client.batch_size=16",
]
CIFAR10 = ["experiment=cifar10_dirichlet"]  # 20 clients, Dirichlet(0.5), 10 rounds (conf/experiment/)


def _regress(run_dir, baseline, cwd):
    return run_cli([str(run_dir), "--baseline", str(baseline)], cwd=cwd, module="sim.regress", timeout=120)


def test_synthetic_curve_matches_its_baseline_and_a_slower_lr_fails(tmp_path, data_dir, ray_cluster_address):
    baseline = BASELINES / "synthetic_fedavg.csv"
    for name, extra in (("same", []), ("slow", ["client.lr=0.005"])):
        cwd = tmp_path / name
        cwd.mkdir()
        result = run_cli([*SYNTHETIC, *extra, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}"],
                         cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = run_dirs(cwd)
        check = _regress(run_dir, baseline, cwd)
        if name == "same":
            assert check.returncode == 0, check.stdout + check.stderr
        else:  # a 10x smaller learning rate bends the curve: exit 1 with the table of rounds
            assert check.returncode == 1, check.stdout + check.stderr
            assert "central_acc" in check.stdout and "round" in check.stdout


@pytest.mark.cifar10
def test_cifar10_curve_stays_in_the_seed_band(tmp_path, data_dir, cifar10_archive):
    result = run_cli([*CIFAR10, "seed=0", f"dataset.path={cifar10_archive}", f"dataset.data_dir={data_dir}"],
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    check = _regress(run_dir, BASELINES / "cifar10_dirichlet_band.csv", tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
