"""conf/ against sim/config/schema.py: every key known, every schema key used, every comment its doc, every default valid.

Fast and pure: reads the YAML files as text and with OmegaConf, no Hydra compose, no Ray.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sim.config import comments
from sim.config.comments import CONF_DIR, Entry, all_entries, entries
from sim.config.schema import SETTINGS, STRATEGY_ARGS, TRACKER_ARGS, setting_of
from sim.errors import ConfigError

ENTRIES = all_entries()
SETTING_LINES = [e for e in ENTRIES if e.value]  # mapping nodes (`strategy:`, `logger.wandb:`) hold no value
# Schema keys no shipped YAML file sets: Flower arguments a user may add (`+strategy.fraction_train=...`).
ONLY_ON_THE_COMMAND_LINE = {"clipped_count_stddev", "fraction_train", "fraction_evaluate"}


def _where(e: Entry) -> str:
    return f"{e.path.relative_to(CONF_DIR.parent)}:{e.line} {e.key}"


def test_the_walker_reads_nested_and_global_keys():
    keys = {e.key for e in entries(CONF_DIR / "strategy" / "dp_fixed_accounted.yaml")}
    assert {"strategy._target_", "strategy.strategy._partial_", "strategy.strategy.weighted_by_key"} <= keys
    assert {e.key for e in entries(CONF_DIR / "experiment" / "smoke.yaml")} >= {"num_clients", "dataset.num_train"}
    assert not any(e.key.startswith("hydra") or e.key.endswith("defaults") for e in ENTRIES)


def test_every_yaml_key_is_in_the_schema():
    unknown = [_where(e) for e in SETTING_LINES if setting_of(e.key) is None]
    assert unknown == [], "add these keys to sim/config/schema.py"


def test_every_schema_key_appears_in_some_yaml_file():
    used = {e.key for e in SETTING_LINES}
    names = {e.key.rsplit(".", 1)[-1] for e in SETTING_LINES}
    unused = [k for k in SETTINGS if k not in used]
    unused += [f"strategy.*.{k}" for k in STRATEGY_ARGS if k not in names and k not in ONLY_ON_THE_COMMAND_LINE]
    unused += [f"logger.*.{k}" for k in TRACKER_ARGS if k not in names]
    assert unused == [], "a schema key no conf/ file sets: remove it, or ship it in a YAML file"


def test_every_yaml_key_has_a_comment_that_starts_with_its_schema_doc():
    wrong = [f"{_where(e)}: {e.comment!r} should start with {setting_of(e.key).doc()!r}" for e in SETTING_LINES
             if setting_of(e.key) and not (e.comment or "").startswith(setting_of(e.key).doc())]
    assert wrong == [], "run: python -m sim.config.comments --write"
    assert comments.problems() == []


def _value(e: Entry):
    """The value of `e` as OmegaConf reads it from its file (interpolations left unresolved)."""
    value = OmegaConf.to_container(OmegaConf.load(e.path), resolve=False)
    for part in e.key_in_file.split("."):
        value = value[part]
    return value


# Interpolations (`${client.lr}`) and `???` are checked after composing (tests/test_validate.py).
LITERALS = [e for e in SETTING_LINES if not e.value.startswith(("${", "???"))]


@pytest.mark.parametrize("entry", LITERALS, ids=_where)
def test_every_yaml_default_passes_its_rule(entry: Entry):
    setting_of(entry.key).rule.check(entry.key, _value(entry))


def test_an_out_of_range_default_is_caught():
    with pytest.raises(ConfigError, match=r"dataset.image_size=8 is not allowed: must be an integer >= 16 or null"):
        SETTINGS["dataset.image_size"].rule.check("dataset.image_size", 8)
