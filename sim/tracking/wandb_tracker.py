"""Weights & Biases: offline by default, files under `<run dir>/wandb/`.

    wandb sync results/2026-11-28/12-00-00/wandb/offline-run-*    # upload later, when online
    python -m sim logger=wandb logger.wandb.mode=online             # or log online (needs `wandb login`)

`mode` defaults to `$WANDB_MODE` or else `offline`: nothing contacts a host unless the
user says `online`. W&B's error reporting is off (`WANDB_ERROR_REPORTING=false`, set on
import of `sim`), and so are its system monitor (unless `system_metrics=true`), git and
code capture and console capture (the progress bar stays as it is). Config: the
flattened resolved config and `overrides`; history: every history.csv column per round
(step = round); summary: summary.json's figures; an artifact of type `results` with
curves.png, summary.json and the partition plot. A multirun's jobs share one W&B group,
the sweep. A resume reopens the same run id (offline: a new `offline-run-*` folder of
that id, holding only the rounds the first one lacks).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Mapping

from sim.tracking.base import RunInfo, Tracker

MODES = ("offline", "online", "disabled")


class WandbTracker(Tracker):
    """Logs through `wandb.init(...)`'s run object."""

    requires = "wandb"
    extra = "wandb"

    def __init__(self, mode: str = "offline", project: str = "sim", entity: str | None = None,
                 system_metrics: bool = False):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.system_metrics = system_metrics
        self.run = None

    def start(self, info: RunInfo, state: dict[str, Any]) -> None:
        import wandb

        settings = wandb.Settings(
            mode=self.mode, silent=True, console="off", disable_git=True, disable_code=True,
            x_disable_stats=not self.system_metrics, x_disable_meta=not self.system_metrics,
            x_disable_machine_info=not self.system_metrics, x_save_requirements=False,
        )
        state.setdefault("run_id", secrets.token_hex(4))  # W&B ids: lowercase letters and digits
        state.setdefault("group", info.group)
        state.setdefault("name", info.label)
        self.run = wandb.init(
            project=self.project, entity=self.entity, dir=str(info.run_dir), id=state["run_id"], resume="allow",
            group=state["group"], name=state["name"], job_type="sweep-job" if state["group"] else "run",
            settings=settings, reinit="finish_previous",
        )

    def log_params(self, params: Mapping[str, Any], overrides: tuple[str, ...]) -> None:
        self.run.config.update({**params, "overrides": " ".join(overrides)}, allow_val_change=True)

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        import wandb

        self.run.summary.update(dict(summary))
        if files:
            artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
            for path in files:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
