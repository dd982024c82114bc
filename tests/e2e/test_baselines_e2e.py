"""Accuracy curves guarded against the committed baselines (`python -m sim.regress`), end to end.

The synthetic curve is deterministic and checked with an absolute tolerance that other CPU
kernels stay inside; a 10x slower learning rate must fail it. On the shared CIFAR-10 copy,
seeds NOT in the band (HELD_OUT) are run and their mean curve (accuracy and loss) must stay
inside the band, while the same runs with 30 % less gain above chance, and a run with a 10x
smaller learning rate, must fail. The slower-rate run stops after SLOW_ROUNDS rounds and is
checked against the band's first rounds, where it already lags. How the baselines were
made: tests/helpers/baselines.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from helpers.baselines import (BASELINES, CIFAR10, CIFAR10_BAND, HELD_OUT, HELD_OUT_METRICS, SYNTHETIC,
                               SYNTHETIC_TOLERANCE, less_gain)
from helpers import run_cli, run_dirs, sweep_run_dirs
from sim.regress import check, mean_history
from sim.report import read_history


SLOW_ROUNDS = 2  # the 10x-smaller-rate CIFAR-10 run: rounds run and checked


def _regress_synthetic(run_dir, baseline, cwd):
    return run_cli([str(run_dir), "--baseline", str(baseline), "--floor", str(SYNTHETIC_TOLERANCE)],
                   cwd=cwd, module="sim.regress", timeout=120)


@pytest.mark.slow
def test_synthetic_curve_matches_its_baseline_and_a_slower_lr_fails(tmp_path, data_dir):
    """One sweep: the 10x slower rate first, then the baseline's own settings on the Ray workers it left."""
    baseline = BASELINES / "synthetic_fedavg.csv"
    settings = [arg for arg in SYNTHETIC if not arg.startswith("client.lr=")]
    assert len(settings) == len(SYNTHETIC) - 1
    result = run_cli(["-m", *settings, "client.lr=0.002,0.02", f"dataset.data_dir={data_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ray kept from the previous job, with 2 idle worker(s)" in result.stdout + result.stderr
    slow, same = sweep_run_dirs(tmp_path)
    verdict = _regress_synthetic(same, baseline, tmp_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    verdict = _regress_synthetic(slow, baseline, tmp_path)  # a 10x smaller learning rate bends the curve: exit 1
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert "central_acc" in verdict.stdout and "round" in verdict.stdout  # with the table of rounds


@pytest.mark.slow
@pytest.mark.cifar10
def test_cifar10_held_out_seeds_stay_in_the_band_and_weaker_curves_fail(tmp_path, data_dir, cifar10_archive,
                                                                        ray_cluster_address):
    common = [*CIFAR10, f"dataset.path={cifar10_archive}", f"dataset.data_dir={data_dir}",
              f"resources.address={ray_cluster_address}"]
    runs = {}
    slow_args = ["seed=100", "client.lr=0.002", f"num_rounds={SLOW_ROUNDS}"]  # the experiment trains at 0.02
    seeds = "seed=" + ",".join(str(s) for s in HELD_OUT)
    for name, args in (("held_out", ["-m", *common, seeds]), ("slow", [*common, *slow_args])):  # held out: a sweep
        cwd = tmp_path / name
        cwd.mkdir()
        result = run_cli(args, cwd=cwd, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = sweep_run_dirs(cwd) if "-m" in args else run_dirs(cwd)
    held_out = runs["held_out"]
    assert len(held_out) == len(HELD_OUT)
    check_cli = _regress_runs(held_out, CIFAR10_BAND, tmp_path)
    assert check_cli.returncode == 0, check_cli.stdout + check_cli.stderr  # the mean's accuracy is inside
    mean = mean_history([read_history(r) for r in held_out])
    band = pd.read_csv(CIFAR10_BAND)
    assert not check(less_gain(mean, 0.3), band, runs=len(HELD_OUT), metrics=HELD_OUT_METRICS).empty
    first_rounds = tmp_path / "band_first_rounds.csv"  # the band up to the slow run's last round
    band[band["round"] <= SLOW_ROUNDS].to_csv(first_rounds, index=False)
    slow = _regress_runs(runs["slow"], first_rounds, tmp_path)  # a 10x smaller learning rate
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "central_acc" in slow.stdout and "round" in slow.stdout


def _regress_runs(run_dirs_: list, baseline, cwd):
    return run_cli(["check", *map(str, run_dirs_), "--baseline", str(baseline), "--metrics", ",".join(HELD_OUT_METRICS)],
                   cwd=cwd, module="sim.regress", timeout=120)
