"""`sim.bench.trackers`: the rounds it compares and the ratio it prints."""

from __future__ import annotations

import json

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
