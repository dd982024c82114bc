"""Check `cfg.logger` before any work starts: known keys, sane values, packages installed.

    check_logger(cfg)  # ConfigError: logger=wandb needs the wandb package: pip install -e '.[wandb]'

Called from `sim.config.validate.validate`, so a bad or missing tracker is one line and exit 2.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sim.config.rules import error
from sim.config.schema import SHIPPED_TRACKERS, TRACKER_ARGS
from sim.errors import ConfigError

RULES = {key: s.rule for key, s in TRACKER_ARGS.items() if key != "_target_"}  # checked under any logger.<name>
# The shipped trackers' dotted keys, for sim.config.validate's OPTIONAL (checked there when present, like every key)
LOGGER_RULES = {
    **{f"logger.{name}._target_": TRACKER_ARGS["_target_"].rule for name in SHIPPED_TRACKERS},
    **{f"logger.{name}.{key}": RULES[key] for name, keys in SHIPPED_TRACKERS.items() for key in keys},
}


def _tracker_class(name: str, target: Any):
    """The class named by `logger.<name>._target_`, or ConfigError."""
    from hydra.utils import get_class

    if not isinstance(target, str) or not target.strip():
        raise error(f"logger.{name}._target_", target, "is not allowed", "must name a tracker class")
    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise error(f"logger.{name}._target_", target, "cannot be imported",
                    "use one of sim.tracking's trackers (see conf/logger/)") from None


def installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_logger(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for a bad tracker setting or a tracker whose package is missing."""
    node = cfg.get("logger")
    if node is None:
        return
    if not isinstance(node, DictConfig):
        raise error("logger", OmegaConf.to_container(node) if OmegaConf.is_config(node) else node,
                    "is not allowed", "choose none, tensorboard, mlflow, wandb, many or a list: logger=[tensorboard,wandb]")
    for name in node:
        tracker = node[name]
        if not isinstance(tracker, DictConfig) or "_target_" not in tracker:
            raise ConfigError(f"logger.{name} is not a tracker: it needs a _target_ (see conf/logger/)")
        for key in tracker:
            if key in RULES:
                RULES[key].check(f"logger.{name}.{key}", OmegaConf.select(tracker, str(key)))
        cls = _tracker_class(str(name), tracker._target_)
        module = getattr(cls, "requires", "")
        if module and not installed(module):
            extra = getattr(cls, "extra", "") or module
            raise ConfigError(f"logger={name} needs the {module} package, which is not installed: "
                              f"run pip install -e '.[{extra}]' (or pip install {module})")
