"""Check every config value before any work starts; fail with one line that names the key.

    validate(cfg)   # raises ConfigError("num_rounds=0 is not allowed: must be an integer >= 1")

`REQUIRED` and `OPTIONAL` give each key's rule, read from `sim.config.schema` (the one
table of every key's type, range and meaning; `sim.config.rules` words the error);
optional keys, such as `client.failure_rate` or a strategy's `proximal_mu` from
`STRATEGY_RULES`, are checked only when present. `_cross_checks`
relates keys to each other and to the train set size, which is known without loading for
cifar10 (50,000) and synthetic data (`dataset.num_train`). Nothing is loaded and Ray is
not started: the only side effects are a `stat` of `dataset.path`,
`torch.cuda.is_available()` and Ray's CPU count (when `resources.ray_cpus` is null).
Unknown keys never reach this module: Hydra rejects `foo=1` ("Could not override 'foo'"),
and `+foo=1` adds a key that nothing reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.config.rules import Rule, counted, error
from sim.config.schema import SETTINGS, STRATEGY_ARGS
from sim.errors import ConfigError
from sim.federation.flower_internals import ray_cpu_count
from sim.partition.schemes import SCHEME_PARAMS
from sim.tracking.checks import LOGGER_RULES, check_logger

CIFAR10_TRAIN_SIZE = 50_000
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
_ABSENT = object()


# Rules by key, read from the one table of sim.config.schema: keys every config has, and keys
# of some options (a data source, a partition scheme) or added later, checked when present.
REQUIRED: dict[str, Rule] = {key: s.rule for key, s in SETTINGS.items() if s.required}
OPTIONAL: dict[str, Rule] = {key: s.rule for key, s in SETTINGS.items() if not s.required}
OPTIONAL.update(LOGGER_RULES)  # logger.<tracker>.<key>: the trackers' settings (sim.tracking.checks)
# Keys a data source needs (a partition scheme's are sim.partition.schemes.SCHEME_PARAMS).
SOURCE_KEYS = {"cifar10": ("url", "md5"), "synthetic": ("num_train", "num_test", "noise")}
# Strategy arguments (flwr.serverapp.strategy, sim.algorithms), checked wherever they appear under `strategy`.
STRATEGY_RULES: dict[str, Rule] = {name: s.rule for name, s in STRATEGY_ARGS.items()}


def _get(cfg: DictConfig, key: str, default: Any = _ABSENT) -> Any:
    """The resolved value at dotted `key` (lists and dicts as plain containers)."""
    try:
        value = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key} cannot be read: {str(exc).splitlines()[0]}") from None
    return value


def _require(cfg: DictConfig, node: str, keys: tuple[str, ...], why: str) -> None:
    """Raise ConfigError for the first of `node.key` that is absent."""
    for key in keys:
        if _get(cfg, f"{node}.{key}") is _ABSENT:
            raise ConfigError(f"{node}.{key} is missing: it is required by {why}")


def _gpu_visible() -> bool:
    """Whether this process sees a CUDA GPU (cheap: does not create a CUDA context)."""
    import torch

    return torch.cuda.is_available()


def train_set_size(cfg: DictConfig) -> int | None:
    """Train images, known without loading for cifar10 and synthetic data; None for an image folder."""
    if _get(cfg, "dataset.path") is not None or _get(cfg, "dataset.source", None) is not None:
        return None
    return {"cifar10": CIFAR10_TRAIN_SIZE, "synthetic": _get(cfg, "dataset.num_train", None)}.get(
        _get(cfg, "dataset.name"))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line: key, value, what is allowed) at the first bad config value."""
    for key, rule in {**REQUIRED, **OPTIONAL}.items():
        value = _get(cfg, key)
        if value is _ABSENT and key in REQUIRED:
            raise ConfigError(f"{key} is missing: {rule.allowed()}")
        if value is not _ABSENT:
            rule.check(key, value)
    _check_strategy(cfg, _get(cfg, "strategy"), "strategy")
    _cross_checks(cfg)
    check_logger(cfg)  # trackers: their settings, and their packages installed


def _check_strategy(cfg: DictConfig, node: dict[str, Any], prefix: str) -> None:
    """Strategy arguments, also those of a strategy nested in a wrapper (DP: `strategy.strategy`)."""
    for name, value in node.items():
        key = f"{prefix}.{name}"
        if isinstance(value, dict):
            _check_strategy(cfg, value, key)
        elif name in STRATEGY_RULES:
            STRATEGY_RULES[name].check(key, value)
    n, k = _get(cfg, "num_clients"), _get(cfg, "clients_per_round")
    if node.get("num_sampled_clients", 0) > n:
        raise error(f"{prefix}.num_sampled_clients", node["num_sampled_clients"], f"is larger than num_clients={n}",
                     "must be 1..num_clients (usually clients_per_round)")
    if node.get("num_nodes_to_select", 0) > k:
        raise error(f"{prefix}.num_nodes_to_select", node["num_nodes_to_select"],
                     f"is larger than clients_per_round={k}", "must be 1..clients_per_round")


def _cross_checks(cfg: DictConfig) -> None:
    """Checks that relate several keys: counts, data set size, shapes, resources."""
    n = _get(cfg, "num_clients")
    for key, lowest in (("clients_per_round", 1), ("eval_clients_per_round", 0)):
        if _get(cfg, key) > n:
            raise error(key, _get(cfg, key), f"is larger than num_clients={n}", f"must be {lowest}..num_clients")

    ds = cfg.dataset
    name, path, channels = _get(cfg, "dataset.name"), _get(cfg, "dataset.path"), _get(cfg, "dataset.channels")
    reader = _get(cfg, "dataset.source", None)
    if reader == "hf":
        if path is None and _get(cfg, "dataset.repo", None) is None:
            raise error("dataset.repo", None, "and dataset.path=null leave dataset=hf without a source",
                         "set dataset.repo=OWNER/NAME (hub, online) or dataset.path=DIR (a local copy)")
        if path is not None and not Path(path).expanduser().exists():
            raise error("dataset.path", path, "does not exist", "pass a save_to_disk folder or .parquet file(s)")
    elif reader == "folder" and path is None:
        raise error("dataset.path", path, "is required by dataset=folder",
                     "set dataset.path to an image-folder directory or a .tar/.tar.gz/.zip archive")
    elif path is not None:
        where = Path(path).expanduser()
        allowed = "pass an image-folder directory or a .tar/.tar.gz/.zip archive"
        if not where.exists():
            raise error("dataset.path", path, "does not exist", allowed)
        if not where.is_dir() and not where.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise error("dataset.path", path, "is neither a directory nor an archive", allowed)
    elif name not in SOURCE_KEYS:
        raise error("dataset.name", name, "is not a built-in data set and dataset.path=null",
                     "use cifar10 or synthetic, or set dataset.path to an image folder")
    else:
        _require(cfg, "dataset", SOURCE_KEYS[name], f"dataset.name={name}")
        if name == "synthetic" and ds.num_classes > 255:
            raise error("dataset.num_classes", ds.num_classes, "is not allowed", "must be 2..255 for synthetic data")
    for key in ("mean", "std"):
        if ds[key] is not None and channels is not None and len(ds[key]) != channels:
            raise error(f"dataset.{key}", _get(cfg, f"dataset.{key}"), f"has {len(ds[key])} entries",
                         f"must have one per channel (dataset.channels={channels})")
    for key, source in (("in_channels", "channels"), ("image_size", "image_size"), ("num_classes", "num_classes")):
        if _get(cfg, f"model.{key}", None) not in (None, ds[source]):
            raise error(f"model.{key}", cfg.model[key], f"does not match dataset.{source}={ds[source]}",
                         f"leave it as ${{dataset.{source}}}")

    part = cfg.partition
    _require(cfg, "partition", SCHEME_PARAMS[part.scheme], f"partition.scheme={part.scheme}")
    if part.scheme == "natural" and part.by != "label" and reader != "hf":
        raise error("partition.by", part.by, f"is not a column of {name or 'this data set'}",
                     "id columns come with Hugging Face data sets (dataset=hf); here use partition.by=label")
    if part.scheme == "pathological" and ds.num_classes is not None and part.classes_per_client > ds.num_classes:
        raise error("partition.classes_per_client", part.classes_per_client, "is not allowed",
                     f"must be 1..dataset.num_classes={ds.num_classes}")
    size = train_set_size(cfg)
    if size is not None:
        images = f"the {size} train images of {name}"
        if n > size:
            raise error("num_clients", n, f"is larger than {images}", f"must be 1..{size}")
        if part.scheme == "shard":
            shards, shard_size = n * part.shards_per_client, part.shard_size
            if shards * (shard_size or 1) > size:
                used = f"{shards} shards of {shard_size}" if shard_size else f"{shards} shards"
                raise error("partition.shards_per_client", part.shards_per_client,
                             f"with num_clients={n} needs {used}, more than {images} allow",
                             f"need num_clients * shards_per_client{' * shard_size' if shard_size else ''} <= {size}")
        if part.scheme == "dirichlet" and n * part.min_partition_size > size:
            raise error("partition.min_partition_size", part.min_partition_size,
                         f"with num_clients={n} needs {n * part.min_partition_size} examples, more than {images}",
                         f"need num_clients * min_partition_size <= {size}")
    _check_resources(cfg.resources)


def _check_resources(res: DictConfig) -> None:
    """Ray's share arithmetic, and whether a GPU that is asked for can be had."""
    if not res.address:  # with an address the cluster's CPUs and GPUs count, not this machine's
        if res.ray_cpus is not None and res.client_cpus > res.ray_cpus:
            raise error("resources.client_cpus", res.client_cpus, f"is larger than resources.ray_cpus={res.ray_cpus}",
                         "no client would fit; lower client_cpus or raise ray_cpus")
        if res.ray_cpus is None and res.client_cpus > 1 and res.client_cpus > (cpus := ray_cpu_count()):
            raise error("resources.client_cpus", res.client_cpus,
                         f"is larger than the {counted(cpus, 'CPU')} Ray finds on this machine (resources.ray_cpus=null)",
                         "no client would fit; lower client_cpus, or set resources.address to a bigger cluster")
        if res.client_gpus > 0 and res.ray_gpus is not None and res.client_gpus > res.ray_gpus:
            raise error("resources.client_gpus", res.client_gpus, f"is larger than resources.ray_gpus={res.ray_gpus}",
                         "no client would fit; use resources.client_gpus=0 or raise ray_gpus")
        if res.client_gpus > 0 and res.ray_gpus is None and not _gpu_visible():
            raise error("resources.client_gpus", res.client_gpus,
                         "needs a GPU, but none is visible and no Ray cluster address is set",
                         "use resources=cpu (client_gpus=0), or set resources.address=... to a cluster with GPUs")
    if str(res.server_device).startswith("cuda") and not _gpu_visible():
        raise error("resources.server_device", res.server_device,
                     "needs a GPU, but none is visible to this process (the server evaluates here)",
                     "use resources.server_device=cpu")
