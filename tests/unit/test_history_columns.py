"""An algorithm's own history columns: after the fixed ones, kept on resume, read by sim.regress and sim.report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.run.history import COLUMNS, EXTRA_COLUMNS, HistoryWriter
from sim.regress import main as regress
from sim.report import load_runs


def write_run(run_dir: Path, epsilons: list[float]) -> Path:
    run_dir.mkdir(parents=True)
    writer = HistoryWriter(run_dir / "history.csv")
    writer.add_columns(("epsilon",))
    for r, eps in enumerate(epsilons):
        writer.append({"round": r, "central_acc": 0.5, "central_loss": 1.0, "epsilon": eps})
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["strategy=dp_fixed_accounted"]))
    return run_dir


def test_extra_columns_follow_the_fixed_ones_and_must_match_on_resume(tmp_path):
    run = write_run(tmp_path / "run", [1.0, 2.0])
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == [*COLUMNS, "epsilon"] and history["epsilon"].tolist() == [1.0, 2.0]
    resumed = HistoryWriter(run / "history.csv")  # a resumed run adds the same columns: accepted
    resumed.add_columns(("epsilon",))
    with pytest.raises(ValueError, match="has columns"):
        HistoryWriter(run / "history.csv").add_columns(("control_norm",))
    with pytest.raises(KeyError, match="unknown history columns"):
        HistoryWriter(tmp_path / "plain.csv").append({"round": 0, "epsilon": 1.0})
    assert "epsilon" in EXTRA_COLUMNS  # documented


def test_regress_builds_and_checks_an_extra_column(tmp_path, capsys):
    runs = [write_run(tmp_path / f"seed{s}", [1.0, 2.0, 3.0]) for s in range(2)]
    baseline = tmp_path / "band.csv"
    assert regress(["build", *map(str, runs), "--metrics", "central_acc,epsilon", "--out", str(baseline)]) == 0
    assert regress([str(runs[0]), "--baseline", str(baseline)]) == 0
    capsys.readouterr()
    drifted = write_run(tmp_path / "drifted", [1.0, 2.0, 4.0])
    assert regress([str(drifted), "--baseline", str(baseline)]) == 1
    assert "epsilon" in capsys.readouterr().out
    assert regress(["build", str(runs[0]), "--metrics", "nope", "--out", str(baseline)]) == 2


def test_report_reads_histories_with_extra_columns(tmp_path):
    (run,) = load_runs(write_run(tmp_path / "run", [1.0, 2.0]), ())
    assert run.history["epsilon"].tolist() == [1.0, 2.0]
