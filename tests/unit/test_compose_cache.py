"""`helpers.compose_cache`: the cached compose gives what one Hydra compose call gives."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf

from helpers import CONF_DIR, TINY
from helpers.compose_cache import compose_cached, plain_compose

# Group choices with value overrides before, between and after them; additions, forced
# additions, deletions, interpolations, a value of a group's own node, typed values.
SAME = [
    [],
    TINY,
    ["num_rounds=7", "strategy=fedprox", "strategy.proximal_mu=0.5", "dataset=synthetic", "dataset.num_train=300"],
    ["dataset.num_train=300", "dataset=synthetic"],  # the group first composed, then the value: either order
    ["dataset=synthetic", "partition=dirichlet"],  # shares its first choice with TINY, not its second
    ["strategy=fedadam", "partition=dirichlet", "partition.alpha=0.1", "~num_rounds"],
    ["+extra.key=1", "++seed=3", "num_rounds=${seed}", "client.lr=2.5e-3", "verbose=true"],
    ["num_rounds=1", "num_rounds=2"],  # applied in order: the last wins
    ["resources=gpu", "resources.ray_gpus=1"],
    ["experiment=cifar10_iid", "num_rounds=2"],
]

# What Hydra refuses: the same exception type and message either way.
REFUSED = [
    ["not_a_key=1"],
    ["+seed=1"],  # already there: use ++
    ["~not_a_key"],
    ["dataset=not_an_option"],
    ["num_rounds=[1"],  # does not parse
    ["seed=1,2"],  # a sweep in a single compose
    ["dataset.num_train=300", "dataset=synthetic", "dataset.no_such_key=1"],
]


@pytest.mark.parametrize("overrides", SAME, ids=lambda o: " ".join(o) or "defaults")
def test_cached_compose_equals_one_hydra_compose(overrides: list[str]) -> None:
    plain = plain_compose(CONF_DIR, overrides)
    for _ in range(2):  # the second call is served from the cache
        cached = compose_cached(CONF_DIR, overrides)
        assert OmegaConf.to_yaml(cached) == OmegaConf.to_yaml(plain)
        assert OmegaConf.is_struct(cached) == OmegaConf.is_struct(plain) is True


@pytest.mark.parametrize("overrides", REFUSED, ids=" ".join)
def test_cached_compose_refuses_as_hydra_does(overrides: list[str]) -> None:
    with pytest.raises(HydraException) as plain:
        plain_compose(CONF_DIR, overrides)
    for _ in range(2):
        with pytest.raises(HydraException) as cached:
            compose_cached(CONF_DIR, overrides)
        assert type(cached.value) is type(plain.value)
        assert str(cached.value) == str(plain.value)
        assert repr(cached.value.__cause__) == repr(plain.value.__cause__)


def test_a_changed_copy_leaves_the_cache_alone() -> None:
    first = compose_cached(CONF_DIR, ["dataset=synthetic"])
    first.dataset.num_train = 1
    first.num_rounds = 99
    again = compose_cached(CONF_DIR, ["dataset=synthetic"])
    assert OmegaConf.to_yaml(again) == OmegaConf.to_yaml(plain_compose(CONF_DIR, ["dataset=synthetic"]))


def test_the_hydra_node_comes_from_a_plain_compose() -> None:
    cfg = compose_cached(CONF_DIR, ["num_rounds=3"], return_hydra_config=True)
    assert cfg.hydra.overrides.task == ["num_rounds=3"]
