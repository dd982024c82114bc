"""Tests of `sim.report` on fake run and sweep directories: grouping by seed, numbers, files."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from sim.report import config_labels, find_runs, main, override_key
from test_regress import write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# config -> per-seed central_acc curves (rounds 0..3); round 3 of the last seed not measured
CURVES = {
    "client.lr=0.01": [[0.1, 0.3, 0.5, 0.6], [0.1, 0.35, 0.45, 0.5], [0.1, 0.2, 0.55, 0.7]],
    "client.lr=0.1": [[0.1, 0.6, 0.8, 0.75], [0.1, 0.5, 0.85, 0.9], [0.1, 0.65, 0.7, float("nan")]],
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A 2-configuration x 3-seed multirun directory, jobs 0..5 as Hydra numbers them."""
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    job = 0
    for lr, seeds in CURVES.items():
        for seed, acc in enumerate(seeds):
            write_run(root / str(job), acc, [lr, f"seed={seed}", "num_rounds=3"])
            job += 1
    (root / "6" / ".hydra").mkdir(parents=True)  # a job that failed before its first round
    return root


def expected_stats(curves: list[list[float]]) -> tuple[float, float, float, float]:
    """Mean and sample std of the final (last measured) and best central accuracy."""
    finals = [[a for a in c if a == a][-1] for c in curves]
    bests = [max(c) for c in curves]
    return (statistics.mean(finals), statistics.stdev(finals), statistics.mean(bests), statistics.stdev(bests))


def test_sweep_report_files_and_numbers(sweep, capsys, caplog):
    assert main([str(sweep)]) == 0
    assert (sweep / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert "6: has .hydra/ but no history.csv" in caplog.text

    csv = pd.read_csv(sweep / "report.csv")
    assert csv["config"].tolist() == ["client.lr=0.01", "client.lr=0.1"]  # num_rounds=3 is shared
    assert csv["client.lr"].tolist() == [0.01, 0.1] and csv["num_rounds"].tolist() == [3, 3]
    assert csv["n_seeds"].tolist() == [3, 3] and csv["seeds"].tolist() == ["0;1;2", "0;1;2"]
    assert csv["rounds_min"].tolist() == [3, 3] and csv["rounds_max"].tolist() == [3, 3]
    for row, curves in zip(csv.itertuples(), CURVES.values()):
        final_mean, final_std, best_mean, best_std = expected_stats(curves)
        assert row.final_central_acc_mean == pytest.approx(final_mean, abs=1e-12)
        assert row.final_central_acc_std == pytest.approx(final_std, abs=1e-12)
        assert row.best_central_acc_mean == pytest.approx(best_mean, abs=1e-12)
        assert row.best_central_acc_std == pytest.approx(best_std, abs=1e-12)
    # lr=0.1: finals 0.75, 0.9 and 0.7 (the last measured, round 2) -> mean 0.7833, std 0.1041
    assert csv.loc[1, "final_central_acc_mean"] == pytest.approx(2.35 / 3)

    md = (sweep / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| client.lr")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    final_mean, final_std, best_mean, best_std = expected_stats(CURVES["client.lr=0.1"])
    assert cells == ["client.lr=0.1", "3", f"{final_mean:.4f} ± {final_std:.4f}",
                     f"{best_mean:.4f} ± {best_std:.4f}", "3"]
    assert cells[2] == "0.7833 ± 0.1041"
    assert "`num_rounds=3`" in md and "![curves](report.png)" in md
    assert capsys.readouterr().out.splitlines()[3] == rows[1]  # the table is printed


def test_single_run_report_and_out_path(tmp_path, capsys):
    run = write_run(tmp_path / "run", [0.1, 0.4, 0.3], ["client.lr=0.05", "seed=7"])
    out = tmp_path / "elsewhere" / "cmp.png"
    assert main([str(run), "--out", str(out), "--band", "std"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and not (run / "report.png").exists()
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert len(csv) == 1 and csv.loc[0, "config"] == "client.lr=0.05" and csv.loc[0, "seeds"] == 7
    assert csv.loc[0, "final_central_acc_mean"] == 0.3 and csv.loc[0, "best_central_acc_mean"] == 0.4
    assert math.isnan(csv.loc[0, "final_central_acc_std"])  # no std from one seed
    table = capsys.readouterr().out.splitlines()
    assert table[2] == "| client.lr=0.05 | 1 | 0.3000 | 0.4000 | 2 |"
    assert table[2] in out.with_suffix(".md").read_text()


def test_unusable_directories_exit_2_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sim.report: error: {tmp_path / 'missing'}: no history.csv found",
                   f"sim.report: error: {tmp_path / 'empty'}: no history.csv found"]
    write_run(tmp_path / "blank", [float("nan")])
    assert main([str(tmp_path / "blank")]) == 2
    assert "no run has a measured central_acc" in capsys.readouterr().err


def test_find_runs_sorts_jobs_numerically_and_labels_drop_shared_overrides(tmp_path):
    for job in (10, 2, 1):
        write_run(tmp_path / str(job), [0.5])
    assert [p.name for p in find_runs(tmp_path)] == ["1", "2", "10"]
    assert find_runs(tmp_path / "2") == [tmp_path / "2"]
    labels, common = config_labels([("a=1", "b=2"), ("a=1", "b=3"), ("a=1",)])
    assert common == ["a=1"]
    assert list(labels.values()) == ["b=2", "b=3", "defaults"]
    assert [override_key(o) for o in ("+x.y=1", "++z=a=b", "~w")] == ["x.y", "z", "w"]
