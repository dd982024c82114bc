"""Hydra's compose for in-process tests, with each set of config-group choices composed once.

Hydra composes in two steps (`hydra/_internal/config_loader_impl.py`, `_load_configuration_impl`):
first the defaults list, that is which option of each config group, read from `conf/` and
merged; then the plain value overrides (`key=value`, `+key=value`, `++key=value`, `~key`),
applied one by one to the merged tree by `ConfigLoaderImpl._apply_overrides_to_config`.
The first step is nearly all of a compose's 0.16-0.2 s here, and the unit tests ask for
about 340 configs that share about 80 sets of group choices.

`compose_cached` runs the first step through Hydra's own `compose` once per set of group
choices (and per test process), and the second step with Hydra's own function on a deep
copy, in the command line's order: the config, flags and error messages that one `compose`
call gives (`tests/unit/test_compose_cache.py` compares the two). Anything else (a sweep, a
`hydra.` override, a dict value, a package `@`, or a call that wants the `hydra` node) goes
to one plain `compose` call.
"""

from __future__ import annotations

import copy
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from omegaconf import DictConfig

_GROUP_CHOICES: dict[tuple[Path, tuple[str, ...]], DictConfig] = {}  # (conf dir, group overrides) -> composed
_PARSER: OverridesParser | None = None


def plain_compose(conf_dir: Path, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """One call of Hydra's compose API on `conf_dir/config.yaml`, as `python -m sim` composes."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def group_choices_and_values(conf_dir: Path, overrides: list[str]) -> tuple[list[str], list[Override]] | None:
    """(group choices as typed, parsed value overrides), or None when the overrides need a plain compose.

    An override is a group choice where Hydra's defaults list takes it as one: its key names
    a config group (a folder of `conf_dir`) and its value is not a dict.
    """
    global _PARSER
    _PARSER = _PARSER or OverridesParser.create()
    try:
        parsed = _PARSER.parse_overrides(overrides=list(overrides))
    except OverrideParseException:  # the plain compose raises Hydra's own error for it
        return None
    groups, values = [], []
    for text, override in zip(overrides, parsed):
        key = override.key_or_group
        if override.is_sweep_override() or override.is_hydra_override() or override.package is not None:
            return None
        if "/" in key or isinstance(override.value(), dict):
            return None
        if (conf_dir / key).is_dir():
            if override.is_force_add():
                return None
            groups.append(text)
        else:
            values.append(override)
    return groups, values


def compose_cached(conf_dir: Path, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """What `plain_compose(conf_dir, overrides)` returns, composing each set of group choices once."""
    split = None if return_hydra_config else group_choices_and_values(conf_dir, overrides)
    if split is None:
        return plain_compose(conf_dir, overrides, return_hydra_config)
    groups, values = split
    key = (conf_dir, tuple(groups))
    if key not in _GROUP_CHOICES:
        _GROUP_CHOICES[key] = plain_compose(conf_dir, groups)
    cfg = copy.deepcopy(_GROUP_CHOICES[key])
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # raises Hydra's ConfigCompositionException itself
    return cfg
