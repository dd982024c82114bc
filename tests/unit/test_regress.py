"""Tests of `sim.regress`: band numbers, the check's verdicts, means of runs, `main`'s exit codes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers.regress import CLI_SEEDS, NAN, baseline, history, write_run
from sim.regress import VIOLATION_COLUMNS, build_band, check, main, mean_history, mean_of_runs_scale
from sim.report import UnusableInput


SEEDS = [[0.25, 0.5, 0.5, 0.5], [0.5, 0.5, 0.75, 1.0], [0.75, 0.5, NAN]]


def test_build_band_numbers_are_exact():
    band = build_band([history(a) for a in SEEDS], ["central_acc"])
    expected = pd.DataFrame({
        "round": [0, 1, 2, 3],
        "central_acc_mean": [0.5, 0.5, 0.625, 0.75],
        "central_acc_std": [0.25, 0.0, math.sqrt(0.03125), math.sqrt(0.125)],
        "central_acc_min": [0.25, 0.5, 0.5, 0.5],
        "central_acc_max": [0.75, 0.5, 0.75, 1.0],
        "central_acc_n": [3, 3, 2, 2],
    })
    pd.testing.assert_frame_equal(band, expected, check_exact=True)


def test_build_band_of_one_run_has_zero_std_and_two_metrics():
    band = build_band([history([0.1, NAN, 0.3])], ["central_acc", "central_loss"])
    assert list(band.columns) == ["round"] + [f"{m}_{s}" for m in ("central_acc", "central_loss")
                                              for s in ("mean", "std", "min", "max", "n")]
    assert band["central_acc_std"].tolist()[::2] == [0.0, 0.0]
    assert band["central_acc_n"].tolist() == [1, 0, 1]
    assert math.isnan(band.loc[1, "central_acc_mean"]) and math.isnan(band.loc[1, "central_acc_std"])
    assert band["central_loss_mean"].tolist()[::2] == [1.9, 1.7]


def test_check_passes_inside_and_uses_the_floor_where_std_is_small():
    band = build_band([history(a) for a in SEEDS], ["central_acc"])
    # round 1 has std 0: the floor 0.02 allows 0.48..0.52, both edges included
    inside = check(history([0.5, 0.52, 0.625, 0.75]), band)
    assert list(inside.columns) == VIOLATION_COLUMNS and inside.empty
    assert check(history([0.5, 0.48, 1.0, 0.2]), band, k=3, floor=0.02).empty  # 3 std are wide
    out = check(history([0.5, 0.5201, 0.625, 0.75]), band)
    assert out["round"].tolist() == [1]


def test_check_reports_a_curve_ten_times_lower():
    band = build_band([history(a) for a in SEEDS], ["central_acc"])
    out = check(history([0.05, 0.05, 0.0625, 0.075, 0.08]), band, k=1.0, floor=0.02)
    expected = pd.DataFrame({
        "round": [0, 1, 2, 3],
        "metric": ["central_acc"] * 4,
        "value": [0.05, 0.05, 0.0625, 0.075],
        "expected": [0.5, 0.5, 0.625, 0.75],
        "low": [0.25, 0.48, 0.625 - math.sqrt(0.03125), 0.75 - math.sqrt(0.125)],
        "high": [0.75, 0.52, 0.625 + math.sqrt(0.03125), 0.75 + math.sqrt(0.125)],
    })
    pd.testing.assert_frame_equal(out, expected, check_exact=True)


def test_single_curve_with_stored_and_default_tolerance():
    baseline = pd.DataFrame({"round": [0, 1, 2], "central_acc": [0.1, 0.5, 0.75],
                             "central_acc_tol": [NAN, 0.25, NAN]})
    run = history([0.125, 0.25, 0.5])
    out = check(run, baseline, tol=0.05)
    assert out["round"].tolist() == [2]
    assert out[["expected", "low", "high"]].iloc[0].tolist() == [0.75, 0.7, 0.8]
    assert check(run, baseline, tol=0.25).empty
    assert check(run, baseline.drop(columns="central_acc_tol"), tol=0.05)["round"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (history([0.5, 0.5, 0.6]).drop(columns="central_acc"), "no column central_acc"),
        (history([0.5, 0.5]), r"no rounds 2, 3 \(it ends at round 1\), baseline expects central_acc up to round 3"),
        (history([0.5, NAN, 0.6, 0.7]), "no central_acc at rounds 1"),
        (history([]), "no rows"),
    ],
)
def test_unusable_runs_raise(run, message):
    band = build_band([history(a) for a in SEEDS], ["central_acc"])
    with pytest.raises(UnusableInput, match=message):
        check(run, band)


def test_rounds_the_baseline_leaves_empty_are_not_checked():
    band = build_band([history([0.5, NAN, 0.5])], ["central_acc"])
    assert check(history([0.5, NAN, 0.5, 0.0]), band).empty


# --- command line -------------------------------------------------------------------------


def test_build_cli_writes_the_band(baseline):
    written = pd.read_csv(baseline)
    pd.testing.assert_frame_equal(written, build_band([history(a) for a in CLI_SEEDS], ["central_acc"]),
                                  check_exact=True)
    assert baseline.read_text().splitlines()[0] == (
        "round,central_acc_mean,central_acc_std,central_acc_min,central_acc_max,central_acc_n")


def test_build_cli_takes_a_sweep_of_one_configuration_and_refuses_two(tmp_path, capsys):
    for i, acc in enumerate(SEEDS):
        write_run(tmp_path / "sweep" / str(i), acc, ["client.lr=0.1", f"seed={i}"])
    out = tmp_path / "b.csv"
    metrics = ["--metrics", "central_acc,central_loss"]
    assert main(["build", str(tmp_path / "sweep"), "--out", str(out), *metrics]) == 0
    assert pd.read_csv(out)["central_loss_n"].tolist() == [3, 3, 2, 2]
    write_run(tmp_path / "sweep" / "3", SEEDS[0], ["client.lr=0.5", "seed=0"])
    assert main(["build", str(tmp_path / "sweep"), "--out", str(out)]) == 2
    assert "2 configurations" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "sweep"), "--out", str(out), "--ignore", "client.lr"]) == 0
    assert main(["build", str(tmp_path / "sweep"), "--out", str(out), "--metrics", "accuracy"]) == 2


def test_check_cli_exit_codes_and_table(tmp_path, baseline, capsys):
    good = write_run(tmp_path / "good", [0.1, 0.51, 0.6, 0.72, 0.9])  # round 4: not in the baseline
    assert main(["check", str(good), "--baseline", str(baseline)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    low = write_run(tmp_path / "low", [a / 10 for a in CLI_SEEDS[0]])
    assert main([str(low), "--baseline", str(baseline)]) == 1  # shorthand for check
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL: 4 points")
    assert out[1].split() == ["round", "metric", "value", "expected", "low", "high"]
    assert out[2].split() == ["0", "central_acc", "0.0100", "0.1000", "0.0800", "0.1200"]
    assert [line.split()[0] for line in out[2:]] == ["0", "1", "2", "3"]
    assert len(out) == 6


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing column", "has no column central_acc"),
        ("short history", "it ends at round 1"),
        ("garbage baseline", "unreadable baseline"),
        ("empty baseline", "unreadable baseline"),
        ("baseline without metric", "at least one metric"),
        ("no history.csv", "no history.csv found"),
    ],
)
def test_check_cli_exits_2_with_one_line(tmp_path, baseline, capsys, case, message):
    run = write_run(tmp_path / "run", [0.5, 0.5, 0.6, 0.75])
    if case == "missing column":
        history([0.5] * 4).drop(columns="central_acc").to_csv(run / "history.csv", index=False)
    elif case == "short history":
        history([0.5, 0.5]).to_csv(run / "history.csv", index=False)
    elif case == "garbage baseline":
        baseline.write_bytes(b"\xff\xfe\x00\x81garbage\n")
    elif case == "empty baseline":
        baseline.write_text("")
    elif case == "baseline without metric":
        baseline.write_text("round,accuracy\n0,0.5\n")
    elif case == "no history.csv":
        (run / "history.csv").unlink()
    assert main(["check", str(run), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sim.regress: error: ") and message in err[0]


def test_the_mean_of_m_runs_is_held_to_a_band_narrowed_by_the_spread_of_a_mean():
    assert mean_of_runs_scale(1, 12) == pytest.approx(1.0)  # one run: the plain k * std check
    assert mean_of_runs_scale(2, 12) == pytest.approx(math.sqrt((1 / 2 + 1 / 12) / (1 + 1 / 12)))
    assert mean_of_runs_scale(3, 12) < mean_of_runs_scale(2, 12) < 1
    band = build_band([history([0.1, 0.3 + d]) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)], ["central_acc"])
    std = band["central_acc_std"][1]  # 0.079; k * std = 0.237 for one run
    low = history([0.1, 0.3 - 0.8 * 3 * std])  # 0.8 of the one-run allowance below the mean
    assert check(low, band, metrics=["central_acc"]).empty
    for runs in (2, 3):  # sqrt((1/m + 1/5) / (1 + 1/5)) = 0.76, 0.67 < 0.8: outside for a mean
        violations = check(low, band, metrics=["central_acc"], runs=runs)
        assert violations["round"].tolist() == [1]
        assert violations["low"][0] == pytest.approx(0.3 - 3 * std * mean_of_runs_scale(runs, 5))
    # the floor is not narrowed
    flat = build_band([history([0.1, 0.3])] * 3, ["central_acc"])
    assert check(history([0.1, 0.285]), flat, runs=3).empty


def test_mean_history_averages_rounds_every_run_has_and_keeps_empty_cells_empty():
    mean = mean_history([history([0.2, 0.4, 0.6]), history([0.4, NAN, 0.8, 0.9])])
    assert mean["round"].tolist() == [0, 1, 2]
    assert mean["central_acc"].tolist()[0] == pytest.approx(0.3) and math.isnan(mean["central_acc"][1])
    assert mean["central_acc"][2] == pytest.approx(0.7)


def test_check_cli_takes_several_runs_as_their_mean(tmp_path, capsys):
    band_path = tmp_path / "band.csv"
    build_band([history([0.1, 0.3 + d]) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)], ["central_acc"]).to_csv(band_path, index=False)
    a = write_run(tmp_path / "a", [0.1, 0.10])  # each alone inside k * std (0.237) of 0.3 ...
    b = write_run(tmp_path / "b", [0.1, 0.08])
    assert main(["check", str(a), "--baseline", str(band_path), "--metrics", "central_acc"]) == 0
    assert main(["check", str(b), "--baseline", str(band_path), "--metrics", "central_acc"]) == 0
    capsys.readouterr()
    # ... but their mean (0.09) is 0.21 below: outside the 0.181 (= 0.237 * 0.764) allowed for a mean of two
    assert main(["check", str(a), str(b), "--baseline", str(band_path), "--metrics", "central_acc"]) == 1
    assert "the mean of 2 runs" in capsys.readouterr().out
