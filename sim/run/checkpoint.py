"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the global model after round `round`, the strategy's server-side
state (FedAdam's moments, FedAvgM's momentum, a DP wrapper's clipping norm: whatever
attributes the strategy keeps, minus the harness's own run-time objects), and the
global `random`/NumPy RNG states (Flower's DP noise draws from NumPy's). Client sampling
and client training need no saved state: their seeds derive from (seed, round, client).
Files are written to a temporary name and renamed, so a checkpoint is whole or absent.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

CHECKPOINT_NAME = "checkpoint.pkl"
NOT_STATE = {"planner", "observer", "round_offset", "_pack_of_node", "accountant"}  # run-time wiring


def strategy_state(strategy: Any) -> dict[str, Any]:
    """The strategy's attributes that change during a run (recursing into a wrapped strategy)."""
    state: dict[str, Any] = {}
    for key, value in vars(strategy).items():
        if key in NOT_STATE or callable(value):
            continue
        if key == "strategy":
            state[key] = strategy_state(value)
        else:
            state[key] = value
    return state


def restore_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Put attributes saved by `strategy_state` back on a freshly built strategy."""
    for key, value in state.items():
        if key == "strategy":
            restore_strategy_state(strategy.strategy, value)
        else:
            setattr(strategy, key, value)


def save_checkpoint(run_dir: Path, server_round: int, arrays: ArrayRecord, strategy: Any) -> Path:
    """Write `run_dir/checkpoint.pkl` atomically for the state after `server_round`."""
    payload = {
        "round": server_round,
        "arrays": {k: v.numpy() for k, v in arrays.items()},
        "strategy": strategy_state(strategy),
        "random_state": random.getstate(),
        "numpy_state": np.random.get_state(),
    }
    path = Path(run_dir) / CHECKPOINT_NAME
    tmp = path.with_suffix(".pkl.tmp")
    with tmp.open("wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _checkpoint_saved(strategy)
    return path


def _checkpoint_saved(strategy: Any) -> None:
    """Tell the strategy's stores (a `ClientStateStore`) that the checkpoint is on disk: older files may go."""
    for value in vars(strategy).values():
        if callable(getattr(value, "checkpoint_saved", None)):
            value.checkpoint_saved()
    if getattr(strategy, "strategy", None) is not None:
        _checkpoint_saved(strategy.strategy)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint of `run_dir`, or None when it has none."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    with path.open("rb") as f:
        payload = pickle.load(f)
    payload["arrays"] = ArrayRecord({k: Array(v) for k, v in payload["arrays"].items()})
    return payload


def restore_rng(payload: dict[str, Any]) -> None:
    """Put the global RNG states of a checkpoint back."""
    random.setstate(payload["random_state"])
    np.random.set_state(payload["numpy_state"])
