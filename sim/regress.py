"""`python -m sim.regress`: does a run's learning curve stay inside a stored baseline? (for CI)

    python -m sim.regress build results/multirun/D/T --out baselines/tiny.csv   # band from seeds
    python -m sim.regress check RUN_DIR --baseline baselines/tiny.csv           # 0 in, 1 out, 2 unusable
    python -m sim.regress RUN_DIR --baseline baselines/tiny.csv                 # the same check
    python -m sim.regress check RUN_A RUN_B --baseline baselines/tiny.csv       # the mean of two runs

A baseline is a CSV with a `round` column and, per metric (a history.csv column), either
- a band: `<m>_mean, <m>_std, <m>_min, <m>_max, <m>_n` (written by `build`); a value v
  passes when |v - mean| <= max(k * std, floor), or
- one curve: `<m>` and optionally `<m>_tol`; v passes when |v - expected| <= tol, the
  stored `<m>_tol` where the row has one, else `--tol`.
Rounds where the baseline has no value are not checked; rounds after its last are ignored.
Several run directories are checked as the mean of their curves, round by round; against a
band the allowance k * std then shrinks by sqrt((1/m + 1/n) / (1 + 1/n)) for m runs and a
band of n (the spread of a mean of m new runs around the band's mean, relative to one run's),
so seeds outside the band can be checked with a tolerance a weaker curve fails.
`build` takes the sample standard deviation (ddof=1) over runs, and 0 for a single run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from sim.run.history import KNOWN_COLUMNS
from sim.partition.report import atomic_write
from sim.report import UnusableInput, load_runs, read_history

log = logging.getLogger("sim.regress")

BAND_STATS = ("mean", "std", "min", "max", "n")
VIOLATION_COLUMNS = ["round", "metric", "value", "expected", "low", "high"]
SUBCOMMANDS = ("check", "build")


def build_band(histories: Sequence[pd.DataFrame], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-round `round, <m>_mean, <m>_std, <m>_min, <m>_max, <m>_n` over `histories`.

    Rounds are the union over histories; `n` counts the runs that measured the metric in
    that round (stats are empty where it is 0). `std` is the sample std, 0 when n is 1.
    """
    for index, history in enumerate(histories):
        missing = [m for m in ("round", *metrics) if m not in history.columns]
        if missing:
            raise UnusableInput(f"history {index}: no column {', '.join(missing)}")
    columns: dict[str, pd.Series] = {}
    for metric in metrics:
        table = pd.concat([h.set_index("round")[metric] for h in histories], axis=1).sort_index()
        n = table.notna().sum(axis=1)
        columns[f"{metric}_mean"] = table.mean(axis=1)
        columns[f"{metric}_std"] = table.std(axis=1).where(n != 1, 0.0)
        columns[f"{metric}_min"] = table.min(axis=1)
        columns[f"{metric}_max"] = table.max(axis=1)
        columns[f"{metric}_n"] = n
    band = pd.DataFrame(columns)
    band.index.name = "round"
    return band.reset_index()


def baseline_metrics(baseline: pd.DataFrame) -> dict[str, str]:
    """The metrics a baseline holds, each mapped to its kind: 'band' or 'curve'."""
    metrics = {}
    for column in baseline.columns:
        if column.endswith("_mean") and f"{column[:-5]}_std" in baseline.columns:
            metrics[column[:-5]] = "band"
        elif column in KNOWN_COLUMNS and column != "round":
            metrics[column] = "curve"
    both = [m for m in metrics if metrics[m] == "band" and m in baseline.columns]
    if both:
        raise UnusableInput(f"baseline has both a band and a curve for {', '.join(both)}")
    if "round" not in baseline.columns or not metrics:
        raise UnusableInput("baseline needs a 'round' column and at least one metric "
                            "(<metric> or <metric>_mean with <metric>_std)")
    return metrics


def mean_of_runs_scale(runs: int, band_runs: pd.Series | np.ndarray | float) -> np.ndarray:
    """Factor on a band's k * std when the mean of `runs` new runs is checked (1 for one run)."""
    n = np.maximum(np.asarray(band_runs, dtype=float), 1.0)
    return np.sqrt((1.0 / runs + 1.0 / n) / (1.0 + 1.0 / n))


def expected_range(baseline: pd.DataFrame, metric: str, kind: str, k: float, floor: float,
                   tol: float, runs: int = 1) -> pd.DataFrame:
    """Per baseline round with a value: `round, expected, low, high` for one metric.

    `runs` > 1: the range for the mean of that many runs (a band's k * std scaled down by
    `mean_of_runs_scale`; the floor and a single curve's tolerances stay as they are).
    """
    if kind == "band":
        expected = baseline[f"{metric}_mean"]
        scale = mean_of_runs_scale(runs, baseline.get(f"{metric}_n", pd.Series(1.0, index=baseline.index)).fillna(1.0))
        allowed = np.maximum(k * baseline[f"{metric}_std"].fillna(0.0) * scale, floor)
    else:
        expected = baseline[metric]
        stored = baseline.get(f"{metric}_tol", pd.Series(np.nan, index=baseline.index))
        allowed = stored.fillna(tol)
    frame = pd.DataFrame({"round": baseline["round"], "expected": expected,
                          "low": expected - allowed, "high": expected + allowed})
    return frame.dropna(subset=["expected"])


def check(history: pd.DataFrame, baseline: pd.DataFrame, k: float = 3.0, floor: float = 0.02,
          tol: float = 0.02, metrics: Sequence[str] | None = None, runs: int = 1) -> pd.DataFrame:
    """The points of `history` outside `baseline`: `round, metric, value, expected, low, high`.

    `history` may be the mean of `runs` runs (`mean_history`); see `expected_range`.

    Empty when every checked point is inside. Raises `UnusableInput` when the history lacks
    a metric column, stops before the baseline's last round, or has an empty cell where the
    baseline expects a value. `metrics` limits the check to some of the baseline's metrics.
    """
    kinds = baseline_metrics(baseline)
    unknown = [m for m in (metrics or []) if m not in kinds]
    if unknown:
        raise UnusableInput(f"baseline has no {', '.join(unknown)} (it has {', '.join(kinds)})")
    if history.empty:
        raise UnusableInput("run's history has no rows")
    violations = []
    for metric in metrics or list(kinds):
        if metric not in history.columns:
            raise UnusableInput(f"run's history has no column {metric}")
        ranges = expected_range(baseline, metric, kinds[metric], k, floor, tol, runs)
        values = history.drop_duplicates("round", keep="last").set_index("round")[metric]
        missing = sorted(set(ranges["round"]) - set(values.index))
        if missing:
            raise UnusableInput(f"run has no rounds {_short(missing)} (it ends at round {values.index.max()}), "
                                f"baseline expects {metric} up to round {ranges['round'].max()}")
        ranges["value"] = values.reindex(ranges["round"]).to_numpy()
        empty = ranges.loc[ranges["value"].isna(), "round"].tolist()
        if empty:
            raise UnusableInput(f"run has no {metric} at rounds {_short(empty)}, where the baseline expects one")
        slack = 1e-9 * (ranges["high"] - ranges["low"]).abs() + 1e-12  # float noise at the edge
        outside = (ranges["value"] < ranges["low"] - slack) | (ranges["value"] > ranges["high"] + slack)
        violations.append(ranges[outside].assign(metric=metric))
    result = pd.concat(violations, ignore_index=True)[VIOLATION_COLUMNS]
    return result.astype({"round": int}).reset_index(drop=True)


def mean_history(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per round, the mean of each column over `histories` (only rounds every history has)."""
    if len(histories) == 1:
        return histories[0]
    tables = [h.drop_duplicates("round", keep="last").set_index("round").select_dtypes("number") for h in histories]
    common = sorted(set.intersection(*(set(t.index) for t in tables)))
    stacked = pd.concat([t.loc[common] for t in tables])
    mean = stacked.groupby(level=0).mean()  # NaN only where every run left the cell empty
    empty = stacked.isna().groupby(level=0).any()
    return mean.mask(empty).reset_index()  # a cell empty in any run is empty in the mean


def _short(rounds: list) -> str:
    """At most ten rounds, as text."""
    text = ", ".join(str(int(r)) for r in rounds[:10])
    return text + (f", ... ({len(rounds)} in all)" if len(rounds) > 10 else "")


def read_baseline(path: Path) -> pd.DataFrame:
    """A baseline CSV, checked to hold a round column and at least one metric."""
    try:
        baseline = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UnusableInput(f"{path}: unreadable baseline ({error})") from error
    try:
        baseline_metrics(baseline)
    except UnusableInput as error:
        raise UnusableInput(f"{path}: {error}") from None
    return baseline


def _histories_for_build(paths: Sequence[Path], ignore: Sequence[str]) -> list[pd.DataFrame]:
    """Histories of the runs in `paths` (run or sweep directories), which must share one configuration."""
    runs = [run for path in paths for run in load_runs(path, ignore)]
    configs = sorted({run.config for run in runs})
    if len(configs) > 1:
        listed = "; ".join(" ".join(c) or "defaults" for c in configs)
        raise UnusableInput(f"runs of {len(configs)} configurations ({listed}): a band is built from one "
                            "configuration's seeds (name its run directories, or --ignore KEY)")
    return [run.history for run in runs]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `check` (the default) or `build`; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "check")  # `python -m sim.regress RUN_DIR --baseline FILE`
    parser = argparse.ArgumentParser(prog="python -m sim.regress", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    checker = commands.add_parser("check", help="exit 0 when RUN_DIR's curve is inside the baseline, 1 if not")
    checker.add_argument("run_dir", type=Path, nargs="+",
                         help="a run directory (or its history.csv); several: their mean curve is checked")
    checker.add_argument("--baseline", type=Path, required=True, help="baseline CSV (band or curve)")
    checker.add_argument("--k", type=float, default=3.0, help="band: allowed |v - mean| is k * std ... (3)")
    checker.add_argument("--floor", type=float, default=0.02, help="... but at least this (0.02)")
    checker.add_argument("--tol", type=float, default=0.02, help="curve: tolerance where no <m>_tol (0.02)")
    checker.add_argument("--metrics", help="comma-separated subset of the baseline's metrics (default all)")
    builder = commands.add_parser("build", help="write a band baseline from the runs of one configuration")
    builder.add_argument("run_dirs", type=Path, nargs="+", help="run directories, or a sweep of one configuration")
    builder.add_argument("--out", type=Path, required=True, help="baseline CSV to write")
    builder.add_argument("--metrics", default="central_acc", help="comma-separated (default central_acc)")
    builder.add_argument("--ignore", action="append", default=[], metavar="KEY",
                         help="override key that may differ between the runs besides seed (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        if args.command == "build":
            return _build(args.run_dirs, args.out, metrics, args.ignore)
        return _check(args.run_dir, args.baseline, args.k, args.floor, args.tol, metrics)
    except UnusableInput as error:
        print(f"sim.regress: error: {error}", file=sys.stderr)
        return 2


def _build(paths: Sequence[Path], out: Path, metrics: list[str], ignore: Sequence[str]) -> int:
    """Write the band of `paths` to `out`."""
    histories = _histories_for_build(paths, ignore)
    columns = [c for c in histories[0].columns if c != "round"] if histories else list(KNOWN_COLUMNS[1:])
    unknown = [m for m in metrics if m == "round" or (m not in KNOWN_COLUMNS and m not in columns)]
    if unknown:
        raise UnusableInput(f"unknown metric {', '.join(unknown)} (history columns: {', '.join(columns)})")
    band = build_band(histories, metrics)
    if len({int(h["round"].max()) for h in histories}) > 1:
        log.warning("runs end at different rounds: the band's last rounds rest on fewer runs (see *_n)")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, band.to_csv(index=False).encode())
    log.info("wrote %s: %d rounds, %s, from %d runs", out, len(band), ", ".join(metrics), len(histories))
    return 0


def _check(run_dirs: Sequence[Path], baseline_path: Path, k: float, floor: float, tol: float,
           metrics: list[str] | None) -> int:
    """Check one run (or the mean of several) against a baseline file; print the violations table."""
    baseline = read_baseline(baseline_path)
    history = mean_history([read_history(d) for d in run_dirs])
    violations = check(history, baseline, k=k, floor=floor, tol=tol, metrics=metrics, runs=len(run_dirs))
    checked = metrics or list(baseline_metrics(baseline))
    run_dir = run_dirs[0] if len(run_dirs) == 1 else f"the mean of {len(run_dirs)} runs ({', '.join(map(str, run_dirs))})"
    if violations.empty:
        print(f"OK: {run_dir} inside {baseline_path} ({', '.join(checked)}, {len(baseline)} baseline rounds)")
        return 0
    print(f"FAIL: {len(violations)} points of {run_dir} outside {baseline_path}")
    print(violations.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
