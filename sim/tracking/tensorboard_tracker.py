"""TensorBoard: event files under the run directory, written with PyTorch's SummaryWriter.

    tensorboard --logdir results                                # every run
    tensorboard --logdir results/multirun/2026-11-28/12-00-00   # a sweep: one run per job folder

Scalars: every history.csv column per round (step = round), `summary/<figure>` at the
last round. The resolved config and the overrides go to the HParams dashboard (one row
per run, so a sweep compares across seeds and settings there) and, as text, to the Text
tab; curves.png and the partition plot to the Images tab. Every round is flushed, so the
UI follows the run live. A resume writes a new event file in the same folder, from the
first round not yet logged (later steps left by a killed process are purged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from sim.tracking.base import RunInfo, Tracker, numeric_summary

HPARAM_METRICS = ("central_acc", "central_loss", "fed_eval_acc", "fed_eval_loss", "train_loss")


class TensorBoardTracker(Tracker):
    """Writes `<run dir>/<subdir>/events.out.tfevents.*`."""

    requires = "tensorboard"
    extra = "tensorboard"

    def __init__(self, subdir: str = "tensorboard", images: bool = True):
        self.subdir = subdir
        self.images = images
        self.writer = None
        self.step = 0

    def start(self, info: RunInfo, state: dict[str, Any]) -> int | None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(info.run_dir) / self.subdir
        state["log_dir"] = str(log_dir)
        # on resume, TensorBoard hides steps after the last one recorded as logged (a write the
        # process was killed before noting); every round is flushed, so nothing is lost before it
        purge = state["last_round"] + 1 if "last_round" in state else None
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=3600, purge_step=purge)
        return None

    def log_params(self, params: Mapping[str, Any], overrides: tuple[str, ...]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
        values = {k: "null" if v == "None" else v for k, v in values.items()}
        values["overrides"] = " ".join(overrides)
        experiment, start, end = hparams(values, {m: 0.0 for m in HPARAM_METRICS})
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        text = "\n".join(f"    {k}: {v}" for k, v in params.items())  # indented: a code block in markdown
        self.writer.add_text("config", text, 0)
        self.writer.add_text("overrides", "    " + (" ".join(overrides) or "(none)"), 0)

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.step = step

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        step = int(summary.get("rounds") or self.step)
        for key, value in numeric_summary(summary).items():
            self.writer.add_scalar(f"summary/{key}", value, step)
        self.writer.add_text("summary", "    " + json.dumps(dict(summary), sort_keys=True), step)
        if self.images:
            from matplotlib.image import imread

            for path in files:
                if path.suffix == ".png":
                    image = imread(path)[..., :3]  # RGBA floats in [0, 1] -> RGB
                    self.writer.add_image(path.stem, image, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.add_text("status", status, self.step)
            self.writer.close()
