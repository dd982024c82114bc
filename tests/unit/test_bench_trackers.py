"""`sim.bench.trackers`: the rounds it compares and the ratio it prints."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from sim.bench.trackers import first_clean_round, summarize
from sim.run.history import COLUMNS


def history(round_s: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame({column: 0.5 for column in COLUMNS}, index=range(len(round_s)))
    return frame.assign(round=range(len(round_s)), round_s=round_s)


def run_dir_with(tmp_path, name: str, ready_after_round: int | None):
    folder = tmp_path / name
    folder.mkdir()
    if ready_after_round is not None:
        state = {"wandb": {"ready_after_round": ready_after_round, "last_round": 9, "seconds": {"start": 4.0}}}
        (folder / "trackers.json").write_text(json.dumps(state))
    return folder


def test_rounds_run_beside_a_trackers_start_up_are_left_out_for_every_logger(tmp_path):
    assert first_clean_round(run_dir_with(tmp_path, "none", None)) == 2  # no tracker: the usual steady rounds
    assert first_clean_round(run_dir_with(tmp_path, "fast", 0)) == 2
    assert first_clean_round(run_dir_with(tmp_path, "slow", 3)) == 5  # round 4 began before the start-up ended
    slow_start = [9.0, 5.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0]  # rounds 2-4 share the CPU with the start-up
    runs = [
        {"logger": "none", "history": history([9.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "first_round": 2,
         "tracker_ms": float("nan"), "tracker_start_s": float("nan")},
        {"logger": "wandb", "history": history(slow_start), "first_round": 5, "tracker_ms": 3.0, "tracker_start_s": 4.0},
    ]
    rows = summarize(runs)
    assert [r["from_round"] for r in rows] == [5, 5]
    assert rows[1]["ratio"] == pytest.approx(1.0)  # a one-off start-up is not a cost per round
    assert rows[1]["tracker_start_s"] == 4.0


def test_the_target_is_judged_per_repeat_so_drift_between_repeats_cancels():
    # the machine is twice as slow in repeat 1, where the tracker's only run landed; it costs 1%
    runs = [{"logger": name, "repeat": repeat, "history": history([9.0, 9.0] + [slowness * cost] * 4),
             "first_round": 2, "tracker_ms": 1.0, "tracker_start_s": 0.1}
            for name, repeat, slowness, cost in (("none", 0, 1.0, 1.0), ("none", 1, 2.0, 1.0),
                                                 ("tensorboard", 1, 2.0, 1.01))]
    rows = summarize(runs)
    assert rows[1]["paired_ratio"] == pytest.approx(1.01)
    assert (rows[1]["paired_min"], rows[1]["paired_max"]) == (pytest.approx(1.01), pytest.approx(1.01))
    assert rows[1]["ratio"] == pytest.approx(2.02 / 1.5)  # pooled: one slow run against one slow and one fast


def test_cpu_per_round_is_taken_between_the_readings_around_the_steady_rounds():
    from sim.bench.measure import cpu_per_round_ms

    # (rows written, helper processes' CPU s); 4 rows was never read (two rows landed between polls)
    readings = [(1, 0.0), (2, 0.0), (3, 0.05), (5, 0.1)]
    assert cpu_per_round_ms(readings, first_round=2) == pytest.approx(100 / 3)  # rounds 2-4: from 2 rows to 5
    assert cpu_per_round_ms(readings, first_round=3) == pytest.approx(25.0)
    assert cpu_per_round_ms(readings, first_round=4) != cpu_per_round_ms(readings, first_round=4)  # 5 is the last
    assert cpu_per_round_ms([], first_round=2) != cpu_per_round_ms([], first_round=2)  # nan


def test_the_cpu_a_logger_adds_is_its_thread_and_helpers_over_logger_none_as_a_share_of_the_round():
    def run(name, thread_ms, helper_s_per_round):
        readings = [(k, helper_s_per_round * k) for k in range(1, 8)]
        return {"logger": name, "repeat": 0, "history": history([9.0, 9.0] + [0.5] * 5), "first_round": 2,
                "tracker_ms": 1.0, "tracker_start_s": 0.1, "tracker_cpu_ms": thread_ms, "helper_cpu": readings}

    rows = summarize([run("none", math.nan, 0.001), run("wandb", 2.0, 0.004)])
    assert rows[1]["tracker_cpu_ms"] == 2.0 and rows[1]["helper_cpu_ms"] == pytest.approx(4.0)
    assert rows[0]["cpu_added_pct"] == 0
    assert rows[1]["cpu_added_pct"] == pytest.approx(100 * 0.005 / 0.5)  # 2 + 4 - 1 ms in a 0.5 s round: 1%
