"""The Hydra config of a run started outside `python -m sim` (`flwr run .`, `sim.deploy`).

`flwr run` hands the ServerApp one string, the run-config key `overrides`; it is split
like a shell would and composed from `conf/` with Hydra's compose API, so the result is
the config `python -m sim <the same overrides>` would see. The run directory comes from
the same `hydra.run.dir`, and Hydra's record of the run (`.hydra/config.yaml`,
`hydra.yaml`, `overrides.yaml`) is written there as `@hydra.main` would.

Relative paths (data, partitions, results) are taken relative to a base directory: the
working directory of whoever composes (the SuperLink's, for `flwr run`), which the
server passes on to every client so both read the same cache and manifest.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

import sim  # noqa: F401  (registers the resolvers conf/config.yaml uses)
from sim.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PATH_KEYS = ("dataset.data_dir", "dataset.path", "partition.dir")  # resolved against the base directory


def split_overrides(text: str) -> list[str]:
    """Hydra overrides from one run-config string, split as a shell would."""
    try:
        return shlex.split(text)
    except ValueError as err:
        raise ConfigError(f"overrides={text!r} cannot be split into Hydra overrides ({err}): fix its quoting") from None


def compose_config(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """`conf/config.yaml` composed with `overrides`; one clear line when Hydra refuses them."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"overrides: {first}") from None


def absolute_paths(cfg: DictConfig, base: Path) -> DictConfig:
    """A copy of `cfg` whose relative data, cache and partition paths start at `base`."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(out):
        for key in PATH_KEYS:
            value = OmegaConf.select(out, key, default=None)
            if value is not None and not Path(str(value)).expanduser().is_absolute():
                OmegaConf.update(out, key, str(base / str(value)), merge=False)
    return out


def new_run(overrides: list[str], base: Path) -> tuple[DictConfig, Path]:
    """(config, run directory) of a fresh run, with Hydra's `.hydra/` record written there."""
    full = compose_config(overrides, with_hydra=True)
    hydra_node = full.hydra
    run_dir = base / str(hydra_node.run.dir)
    with open_dict(full):
        del full["hydra"]
    if full.get("resume"):
        raise ConfigError("resume= is not supported under flwr run: continue the run with python -m sim resume=...")
    record = run_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(full, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_node}), record / "hydra.yaml", resolve=False)
    OmegaConf.save(OmegaConf.create(list(overrides)), record / "overrides.yaml")
    return full, run_dir


def client_config_text(cfg: DictConfig) -> str:
    """The config a client needs, as YAML (interpolations kept): the run's config as `new_run` composed it."""
    return OmegaConf.to_yaml(cfg)


@lru_cache(maxsize=4)
def client_config_from(text: str, base: str) -> DictConfig:
    """`client_config_text`'s config read back, its paths made absolute under `base` (cached per process)."""
    return absolute_paths(OmegaConf.create(text), Path(base))
