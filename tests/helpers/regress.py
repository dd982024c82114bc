"""Fake run directories and a CLI-built band for the `sim.regress` tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.regress import main
from sim.run.history import COLUMNS, HistoryWriter


NAN = float("nan")


def history(acc: list[float], loss: list[float] | None = None) -> pd.DataFrame:
    """A history frame with the real columns; round i has central_acc acc[i] (NaN: not measured)."""
    frame = pd.DataFrame({c: np.nan for c in COLUMNS}, index=range(len(acc)))
    frame["round"] = range(len(acc))
    frame["central_acc"] = acc
    frame["central_loss"] = loss if loss is not None else [2.0 - a if a == a else NAN for a in acc]
    return frame


def write_run(run_dir: Path, acc: list[float], overrides: list[str] = ()) -> Path:
    """A fake run directory: history.csv written by the real writer, plus .hydra/overrides.yaml."""
    run_dir.mkdir(parents=True)
    writer = HistoryWriter(run_dir / "history.csv")
    for row in history(acc).to_dict("records"):
        writer.append({k: v for k, v in row.items() if v == v} | {"round": int(row["round"])})
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return run_dir


# three seeds that agree as real ones do: a 10x lower curve is far outside their band
CLI_SEEDS = [[0.1, 0.5, 0.6, 0.7], [0.1, 0.52, 0.62, 0.71], [0.1, 0.48, 0.61, 0.69]]


@pytest.fixture
def baseline(tmp_path) -> Path:
    """A band baseline built through the CLI from three seeds."""
    dirs = [write_run(tmp_path / "seeds" / str(i), acc, [f"seed={i}"]) for i, acc in enumerate(CLI_SEEDS)]
    out = tmp_path / "baseline.csv"
    assert main(["build", *map(str, dirs), "--out", str(out)]) == 0
    return out
