"""history.csv writing and the summary derived from it."""

import json

import pandas as pd
import pytest

from sim.run.history import COLUMNS, HistoryWriter, plot_curves, summarize, write_json_atomic


def test_columns_are_the_contract():
    assert COLUMNS == (
        "round", "train_clients", "train_failures", "eval_clients", "eval_failures",
        "train_loss", "fed_eval_loss", "fed_eval_acc", "central_loss", "central_acc",
        "round_s", "elapsed_s",
    )


def test_rows_are_appended_with_empty_cells(tmp_path):
    path = tmp_path / "history.csv"
    writer = HistoryWriter(path)
    writer.append({"round": 0, "central_loss": 2.3, "central_acc": 0.1, "round_s": 0.5, "elapsed_s": 0.5})
    writer.append({"round": 1, "train_clients": 4, "train_failures": 0, "train_loss": 1.9,
                   "central_acc": 0.3, "central_loss": 1.8, "round_s": 1.0, "elapsed_s": 1.5})
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "0,,,,,,,,2.3,0.1,0.5,0.5"
    frame = pd.read_csv(path)
    assert frame["round"].tolist() == [0, 1]
    assert frame["train_clients"].isna().tolist() == [True, False]
    # reopening (a resumed run) appends instead of rewriting the header
    HistoryWriter(path).append({"round": 2})
    assert len(pd.read_csv(path)) == 3


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(KeyError):
        HistoryWriter(tmp_path / "h.csv").append({"round": 0, "accuracy": 1})


def test_summary_final_and_best(tmp_path):
    frame = pd.DataFrame({"round": [0, 1, 2, 3, 4], "central_acc": [0.1, 0.5, None, 0.4, 0.3],
                          "central_loss": [2.0, 1.0, None, 1.2, 1.3], "round_s": [0.2, 9.0, 1.0, 2.0, 4.0]})
    summary = summarize(frame, 12.3456, "partitions/x.npz", clients_at_once=3)
    assert summary == {
        "rounds": 4, "final_central_acc": 0.3, "final_central_loss": 1.3, "best_central_acc": 0.5,
        "best_round": 1, "wall_s": 12.346, "partition_manifest": "partitions/x.npz",
        "clients_at_once": 3, "median_round_s": 2.0,  # rounds 2..4: round 1 carries worker start-up
    }
    assert summarize(frame.head(2), 1.0, None)["median_round_s"] is None
    write_json_atomic(tmp_path / "summary.json", summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_plot_writes_png(tmp_path):
    frame = pd.DataFrame({c: [0.0, 1.0] for c in COLUMNS})
    plot_curves(frame, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
