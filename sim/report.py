"""`python -m sim.report DIR`: curves and a table of a run or of a whole sweep.

    python -m sim.report results/multirun/2025-01-01/12-00-00   # every job of a sweep
    python -m sim.report results/2025-01-01/12-00-00            # one run
    python -m sim.report DIR --out /tmp/cmp.png --band std      # elsewhere; mean +- std band

A configuration is a job's command-line overrides (`.hydra/overrides.yaml`) minus `seed`
(and minus any `--ignore KEY`). Jobs that differ only by seed are drawn as one mean curve
of central accuracy and central loss with a band across seeds (min-max by default), and
summarised by the mean and the sample standard deviation (ddof=1; empty for one seed) of
their final and best central accuracy. Everything is derived from the job folders'
`history.csv`, so a sweep that is still running or was interrupted can be reported on.

Writes `report.png`, `report.md` and `report.csv` beside each other (in DIR, or beside
`--out`) and prints the markdown table. Exits 2 when DIR holds no usable history.csv.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

from sim.run.console import quiet_libraries
from sim.partition.report import atomic_write

log = logging.getLogger("sim.report")


class UnusableInput(Exception):
    """Input that cannot be read as runs; the command-line tools exit 2 with its message."""


@dataclass(frozen=True)
class Run:
    """One run directory: its overrides, its configuration (overrides minus ignored keys), its seed."""

    path: Path
    config: tuple[str, ...]
    seed: str | None
    history: pd.DataFrame


def read_history(path: Path) -> pd.DataFrame:
    """`history.csv` of a run directory (or the file itself) sorted by round; empty cells are NaN."""
    path = Path(path)
    file = path if path.is_file() else path / "history.csv"
    if not file.is_file():
        raise UnusableInput(f"{path}: no history.csv found")
    try:
        history = pd.read_csv(file)
    except (OSError, ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise UnusableInput(f"{file}: unreadable CSV ({error})") from error
    if "round" not in history.columns:
        raise UnusableInput(f"{file}: no 'round' column (columns: {', '.join(map(str, history.columns))})")
    return history.sort_values("round", kind="stable").reset_index(drop=True)


def override_key(override: str) -> str:
    """The config key of a Hydra override: `+client.lr=0.1` -> `client.lr`."""
    return override.split("=", 1)[0].lstrip("+~")


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run (`.hydra/overrides.yaml`); none when it is missing."""
    file = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not file.is_file():
        log.warning("%s: no .hydra/overrides.yaml, taken as no overrides", run_dir)
        return []
    return [str(item) for item in (yaml.safe_load(file.read_text()) or [])]


def _natural(path: Path) -> list:
    """Sort key that puts job 10 after job 9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(directory: Path) -> list[Path]:
    """Run directories in `directory`: itself when it holds history.csv, else every folder below that does."""
    directory = Path(directory)
    if (directory / "history.csv").is_file():
        return [directory]
    runs = sorted({p.parent for p in directory.rglob("history.csv")}, key=_natural)
    for hydra_dir in directory.rglob(".hydra"):
        if hydra_dir.parent not in runs:
            log.warning("%s: has .hydra/ but no history.csv (failed or not started?), skipped", hydra_dir.parent)
    return runs


def load_runs(directory: Path, ignore: Sequence[str] = ()) -> list[Run]:
    """Every run below `directory` with its configuration: overrides minus `seed` and `ignore` keys."""
    dropped = {"seed", *ignore}
    runs = []
    for path in find_runs(directory):
        overrides = read_overrides(path)
        seeds = [o.split("=", 1)[-1] for o in overrides if override_key(o) == "seed"]
        config = tuple(sorted(o for o in overrides if override_key(o) not in dropped))
        runs.append(Run(path, config, seeds[-1] if seeds else None, read_history(path)))
    if not runs:
        raise UnusableInput(f"{directory}: no history.csv found")
    return runs


def config_labels(configs: Sequence[tuple[str, ...]]) -> tuple[dict[tuple[str, ...], str], list[str]]:
    """Short labels (the overrides that not every configuration shares) and the shared overrides."""
    common = sorted(set.intersection(*(set(c) for c in configs))) if len(configs) > 1 else []
    labels = {c: ", ".join(o for o in c if o not in common) or "defaults" for c in configs}
    return labels, common


def group_runs(runs: Sequence[Run]) -> dict[tuple[str, ...], list[Run]]:
    """Runs with a measured central accuracy, grouped by configuration in order of appearance."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        missing = [c for c in ("central_acc", "central_loss") if c not in run.history.columns]
        if missing:
            raise UnusableInput(f"{run.path}/history.csv: no column {', '.join(missing)}")
        if run.history["central_acc"].notna().any():
            groups.setdefault(run.config, []).append(run)
        else:
            log.warning("%s: no central accuracy measured yet, skipped", run.path)
    if not groups:
        raise UnusableInput("no run has a measured central_acc")
    return groups


def summarize_configs(groups: dict[tuple[str, ...], list[Run]]) -> pd.DataFrame:
    """One row per configuration: its override values, n seeds, final/best central accuracy (mean, std)."""
    rows = []
    for config, group in groups.items():
        finals, bests, rounds = [], [], []
        for run in group:
            measured = run.history["central_acc"].dropna()
            finals.append(float(measured.iloc[-1]))
            bests.append(float(measured.max()))
            rounds.append(int(run.history["round"].max()))
        if len(set(rounds)) > 1:
            log.warning("%s: runs stopped at different rounds %s", ", ".join(config) or "defaults", rounds)
        final, best = pd.Series(finals), pd.Series(bests)
        rows.append({
            "config": config,
            **{override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in config},
            "n_seeds": len(group),
            "seeds": ";".join(str(r.seed) for r in group),
            "final_central_acc_mean": final.mean(), "final_central_acc_std": final.std(),
            "best_central_acc_mean": best.mean(), "best_central_acc_std": best.std(),
            "rounds_min": min(rounds), "rounds_max": max(rounds),
        })
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame, labels: dict[tuple[str, ...], str]) -> str:
    """The summary as a markdown table: `mean ± std` with 4 decimals (mean alone for one seed)."""
    def cell(mean: float, std: float) -> str:
        return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"

    lines = ["| configuration | seeds | final central acc | best central acc | rounds |",
             "|---|---:|---:|---:|---:|"]
    for row in summary.itertuples():
        rounds = f"{row.rounds_min}" + ("" if row.rounds_min == row.rounds_max else f"–{row.rounds_max}")
        lines.append(f"| {labels[row.config]} | {row.n_seeds} "
                     f"| {cell(row.final_central_acc_mean, row.final_central_acc_std)} "
                     f"| {cell(row.best_central_acc_mean, row.best_central_acc_std)} | {rounds} |")
    return "\n".join(lines) + "\n"


def plot_report(
    groups: dict[tuple[str, ...], list[Run]], labels: dict, path: Path, band: str, title: str = ""
) -> None:
    """Mean central accuracy and loss per configuration against round, with a band across seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = dict(zip(("central_acc", "central_loss"), fig.subplots(1, 2)))
    for index, (config, group) in enumerate(groups.items()):
        color = f"C{index % 10}"
        for metric, ax in axes.items():
            table = pd.concat([r.history.set_index("round")[metric] for r in group], axis=1)
            table = table.dropna(how="all")
            mean = table.mean(axis=1)
            label = f"{labels[config]} (n={len(group)})" if metric == "central_acc" else None
            ax.plot(mean.index, mean.values, color=color, marker="o", ms=3, label=label)
            if len(group) > 1:
                if band == "std":
                    low, high = mean - table.std(axis=1).fillna(0), mean + table.std(axis=1).fillna(0)
                else:
                    low, high = table.min(axis=1), table.max(axis=1)
                ax.fill_between(mean.index, low.values, high.values, color=color, alpha=0.2, linewidth=0)
    band_text = "mean ± std (ddof=1)" if band == "std" else "min–max"
    for metric, ax in axes.items():
        name = {"central_acc": "accuracy", "central_loss": "loss"}[metric]
        ax.set(xlabel="round", ylabel=name, title=f"central {name}: mean over seeds, band {band_text}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes["central_acc"].legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write report.png/.md/.csv for DIR and print the markdown table."""
    parser = argparse.ArgumentParser(prog="python -m sim.report", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="a run directory or a (multirun) sweep directory")
    parser.add_argument("--out", type=Path, help="PNG path (default DIR/report.png); .md and .csv go beside it")
    parser.add_argument("--band", choices=("minmax", "std"), default="minmax", help="band across seeds")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="also leave this override key out of the configuration (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # matplotlib's font notices
    try:
        runs = load_runs(args.dir, args.ignore)
        groups = group_runs(runs)
    except UnusableInput as error:
        print(f"sim.report: error: {error}", file=sys.stderr)
        return 2
    summary = summarize_configs(groups)
    labels, common = config_labels(list(groups))
    table = markdown_table(summary, labels)
    png = args.out or args.dir / "report.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.dir}" + (f"  [{', '.join(common)}]" if common else "")
    plot_report(groups, labels, png, args.band, title=title)
    text = [f"# Report: {args.dir}\n", f"{sum(map(len, groups.values()))} runs, {len(groups)} configurations. "
            "± is the sample standard deviation over seeds (ddof=1); "
            f"the plot's band is {'± std' if args.band == 'std' else 'min–max'} over seeds.\n"]
    if common:
        text.append(f"Every run: `{' '.join(common)}`\n")
    text += [table, f"![curves]({png.name})\n"]
    atomic_write(png.with_suffix(".md"), "\n".join(text).encode())
    csv = summary.assign(config=[labels[c] for c in summary["config"]])
    atomic_write(png.with_suffix(".csv"), csv.to_csv(index=False).encode())
    print(table, end="")
    log.info("wrote %s, %s, %s", png, png.with_suffix(".md"), png.with_suffix(".csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
