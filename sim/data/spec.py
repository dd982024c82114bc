"""What a run learns from its loaded data: shape, classes, statistics, name, natural ids.

Image folders and Hugging Face sets leave `dataset.channels`, `image_size`, `num_classes`,
`mean`, `std` and `name` null in YAML; their values exist only once the data is loaded.
`with_data(cfg, data)` returns a *new* config (cfg itself is not touched) whose `dataset`
node holds the data's values, so every interpolation that reads them (the model's
`${dataset.num_classes}`, ...) and every consumer (normalisation, manifests, plots,
summaries) sees the data's values and never a YAML default. `make_partition` splits the
train set, handing natural schemes their id column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sim.data import DataError, Dataset
from sim.partition.manifest import Partition, load_or_create_partition


def data_values(cfg: DictConfig, data: Dataset) -> dict[str, Any]:
    """The `dataset` keys as the loaded data has them (explicit mean/std are kept)."""
    channels = int(data.train_images.shape[-1])
    values: dict[str, Any] = {
        "name": data.name, "channels": channels, "image_size": int(data.train_images.shape[1]),
        "num_classes": len(data.classes),
    }
    for key in ("mean", "std"):
        given = cfg.dataset.get(key)
        chosen = list(getattr(data, key) or ()) if given is None else [float(v) for v in given]
        if len(chosen) != channels:
            raise DataError(
                f"dataset.{key} has {len(chosen)} entries but {data.name} has {channels} channel(s); "
                f"set dataset.{key}=null to use the data's own statistics"
            )
        values[key] = chosen
    return values


def with_data(cfg: DictConfig, data: Dataset) -> DictConfig:
    """A copy of `cfg` whose `dataset` node holds the loaded data's shape, classes, stats and name."""
    values = data_values(cfg, data)
    derived = OmegaConf.merge(cfg, {"dataset": values})
    for key, source in (("in_channels", "channels"), ("image_size", "image_size"), ("num_classes", "num_classes")):
        given = derived.model.get(key)  # an explicit number in the model config must agree with the data
        if given is not None and given != values[source]:
            raise DataError(
                f"model.{key}={given} does not match {data.name}'s {source}={values[source]}: "
                f"leave it as ${{dataset.{source}}}"
            )
    return derived


def natural_ids(cfg: DictConfig, data: Dataset) -> np.ndarray | None:
    """The column `partition.by` names (int64 codes), or None for schemes without one."""
    by = cfg.partition.get("by")
    if by is None:
        return None
    if by == "label":
        return np.asarray(data.train_labels)
    if by not in data.columns:
        have = ", ".join(["label", *sorted(data.columns)])
        raise DataError(f"partition.by={by} is not a column of {data.name}; it has: {have}")
    return np.asarray(data.columns[by])


def make_partition(cfg: DictConfig, data: Dataset) -> Partition:
    """The run's partition manifest (step 2 of `sim.run.recipe`); a partitioner's refusal is one DataError."""
    try:
        return load_or_create_partition(
            data.train_labels, cfg.partition, str(cfg.dataset.name), int(cfg.dataset.num_classes),
            int(cfg.num_clients), int(cfg.seed), ids=natural_ids(cfg, data),
        )
    except ValueError as err:
        raise DataError(str(err)) from None
