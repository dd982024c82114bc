"""Experiment trackers (TensorBoard, MLflow, Weights & Biases), fed live as rounds end.

The `logger` config group picks them (`conf/logger/`: none, tensorboard, mlflow, wandb,
many, or a list `logger=[tensorboard,wandb]`); each option is `{name: {_target_: ...}}`.

    base.py                  Tracker (what a tracker implements), RunInfo (what it is told)
    fanout.py                Trackers: one background thread, faults cost a warning, resume state
    checks.py                check_logger: settings and installed packages, before any work
    tensorboard_tracker.py   event files under the run directory
    mlflow_tracker.py        a local MLflow store (or any tracking URI), nested runs per sweep
    wandb_tracker.py         W&B, offline unless told otherwise, one group per sweep
"""

from sim.tracking.checks import check_logger
from sim.tracking.fanout import STATE_FILE, Trackers, open_trackers

__all__ = ["STATE_FILE", "Trackers", "check_logger", "open_trackers"]
