"""Tests of `sim.config.validate`: every bad value fails with one line naming its key; every option passes.

Configs are the real tree under conf/, composed with Hydra's compose API and overrides, as
`python -m sim` would see them (each set of group choices once: `helpers.compose_cache`).
GPU visibility is pinned (monkeypatched) so the results do not depend on the machine the
tests run on.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from helpers import CONF_DIR, compose_config
import sim.config.validate as validate_module
from sim.config.validate import OPTIONAL, REQUIRED, STRATEGY_RULES, ConfigError, train_set_size, validate


GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [f"{g}={f.stem}" for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]
GPU_OPTIONS = {"resources=gpu"}  # pass only with a visible GPU (or declared ray_gpus and a CPU server)
REAL_GPU_VISIBLE = validate_module._gpu_visible  # before the autouse fixture replaces it


def make_cfg(*overrides: str) -> DictConfig:
    """The real config composed with `overrides`, as `python -m sim` would see it."""
    return compose_config(list(overrides))


# Options that need one value from the user (their source, their class) to be complete.
COMPLETE = {
    "dataset=folder": ["dataset.path=."], "dataset=hf": ["dataset.repo=owner/name"],
    "model=custom": ["model._target_=sim.models.cnn.Net"], "partition=natural": ["partition.by=label"],
}


def error_of(*overrides: str) -> str:
    """The ConfigError message that validating the composed config raises."""
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*overrides))
    return str(info.value)


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as on a machine without a visible GPU unless it says otherwise."""
    monkeypatch.setattr(validate_module, "_gpu_visible", lambda: False)


BAD = [
    (["num_rounds=0"], "num_rounds"),
    (["num_rounds=abc"], "num_rounds"),
    (["num_rounds=2.5"], "num_rounds"),
    (["num_rounds=null"], "num_rounds"),
    (["~num_rounds"], "num_rounds"),
    (["num_rounds=${missing}"], "num_rounds"),
    (["num_clients=0"], "num_clients"),
    (["clients_per_round=0"], "clients_per_round"),
    (["clients_per_round=101"], "clients_per_round"),
    (["eval_clients_per_round=-1"], "eval_clients_per_round"),
    (["eval_clients_per_round=101"], "eval_clients_per_round"),
    (["seed=-1"], "seed"),
    (["central_eval_every=-1"], "central_eval_every"),
    (["round_timeout=0"], "round_timeout"),
    (["round_timeout=abc"], "round_timeout"),
    (["verbose=yes"], "verbose"),
    (["verbose=1"], "verbose"),
    (["client.batch_size=0"], "client.batch_size"),
    (["client.epochs=0"], "client.epochs"),
    (["client.epochs=true"], "client.epochs"),
    (["client.lr=0"], "client.lr"),
    (["client.lr=abc"], "client.lr"),
    (["client.lr=inf"], "client.lr"),
    (["client.eval_batch_size=0"], "client.eval_batch_size"),
    (["client.momentum=1.0"], "client.momentum"),
    (["client.weight_decay=-0.1"], "client.weight_decay"),
    (["partition=dirichlet", "partition.alpha=0"], "partition.alpha"),
    (["partition=dirichlet", "partition.min_partition_size=-1"], "partition.min_partition_size"),
    (["partition=dirichlet", "partition.self_balancing=1"], "partition.self_balancing"),
    (["dataset=synthetic", "partition=dirichlet", "partition.min_partition_size=100"], "partition.min_partition_size"),
    (["partition.val_fraction=1.0"], "partition.val_fraction"),
    (["partition.val_fraction=-0.1"], "partition.val_fraction"),
    (["partition.scheme=random"], "partition.scheme"),
    (["partition=shard", "num_clients=30000", "clients_per_round=10"], "partition.shards_per_client"),
    (["partition=shard", "partition.shard_size=1000"], "partition.shards_per_client"),
    (["partition=shard", "partition.shards_per_client=0"], "partition.shards_per_client"),
    (["partition=shard", "partition.shard_size=0"], "partition.shard_size"),
    (["partition=pathological", "partition.classes_per_client=0"], "partition.classes_per_client"),
    (["partition=pathological", "partition.classes_per_client=11"], "partition.classes_per_client"),
    (["partition=pathological", "partition.class_assignment_mode=any"], "partition.class_assignment_mode"),
    (["num_clients=50001"], "num_clients"),
    (["dataset=synthetic", "num_clients=5001"], "num_clients"),
    (["dataset.std=[0.2,0,0.2]"], "dataset.std"),
    (["dataset.std=0.2"], "dataset.std"),
    (["dataset.mean=[0.5,0.5]"], "dataset.mean"),
    (["dataset.image_size=8"], "dataset.image_size"),
    (["dataset.channels=2"], "dataset.channels"),
    (["dataset.num_classes=1"], "dataset.num_classes"),
    (["dataset.name=mnist"], "dataset.name"),
    (["dataset.path=/nonexistent/sim-data"], "dataset.path"),
    (["dataset=synthetic", "dataset.num_train=0"], "dataset.num_train"),
    (["dataset=synthetic", "dataset.num_test=0"], "dataset.num_test"),
    (["dataset=synthetic", "dataset.noise=-0.1"], "dataset.noise"),
    (["dataset=synthetic", "dataset.num_classes=300"], "dataset.num_classes"),
    (["model.num_classes=5"], "model.num_classes"),
    (["resources.client_gpus=1.5"], "resources.client_gpus"),
    (["resources.client_gpus=0.5", "resources.ray_gpus=0"], "resources.client_gpus"),
    (["resources.client_cpus=0"], "resources.client_cpus"),
    (["resources.client_cpus=4", "resources.ray_cpus=2"], "resources.client_cpus"),
    (["resources.ray_cpus=-1"], "resources.ray_cpus"),
    (["resources.ray_gpus=-1"], "resources.ray_gpus"),
    (["resources.server_device=tpu"], "resources.server_device"),
    (["resources.server_device=cuda"], "resources.server_device"),
    (["resources.server_device=cuda", "resources.address=auto"], "resources.server_device"),
    # keys that other options add: checked when present
    (["++client.failure_rate=1.5"], "client.failure_rate"),
    (["++client.straggler_rate=-0.1"], "client.straggler_rate"),
    (["++client.straggler_delay_s=-1"], "client.straggler_delay_s"),
    (["++checkpoint_every=-1"], "checkpoint_every"),
    (["++resume=1"], "resume"),
    (["++strategy.proximal_mu=-0.1"], "strategy.proximal_mu"),
    (["++strategy.server_momentum=1.0"], "strategy.server_momentum"),
    (["++strategy.eta=0"], "strategy.eta"),
    (["++strategy.beta=0.5"], "strategy.beta"),
    (["++strategy.num_malicious_nodes=-1"], "strategy.num_malicious_nodes"),
    (["++strategy.num_nodes_to_select=11"], "strategy.num_nodes_to_select"),
    (["++strategy.num_sampled_clients=101"], "strategy.num_sampled_clients"),
    (["++strategy.clipping_norm=0"], "strategy.clipping_norm"),
    (["++strategy.strategy._target_=x.FedAvg", "++strategy.strategy.proximal_mu=-1"], "strategy.strategy.proximal_mu"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_fails_with_one_line_naming_the_key(overrides: list[str], key: str) -> None:
    message = error_of(*overrides)
    assert "\n" not in message
    first_word = message.split(" ")[0]
    assert first_word == key or first_word.startswith(f"{key}="), message
    assert ": " in message  # ... what is allowed follows the colon


def test_messages_say_what_is_allowed() -> None:
    assert error_of("num_rounds=0") == "num_rounds=0 is not allowed: must be an integer >= 1"
    assert error_of("num_rounds=abc") == "num_rounds=abc is not an integer: must be an integer >= 1"
    assert error_of("num_clients=10", "clients_per_round=20") == (
        "clients_per_round=20 is larger than num_clients=10: must be 1..num_clients"
    )
    assert error_of("client.momentum=1") == "client.momentum=1 is not allowed: must be a number in [0, 1)"
    assert error_of("dataset.path=/x/sim-missing") == (
        "dataset.path=/x/sim-missing does not exist: "
        "pass an image-folder directory or a .tar/.tar.gz/.zip archive"
    )
    assert error_of("resources=gpu") == (
        "resources.client_gpus=0.25 needs a GPU, but none is visible and no Ray cluster address is set: "
        "use resources=cpu (client_gpus=0), or set resources.address=... to a cluster with GPUs"
    )


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf value of a nested dict."""
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        keys += _leaf_keys(value, f"{key}.") if isinstance(value, dict) else [key]
    return keys


@pytest.mark.parametrize("option", [None, *OPTIONS])
def test_default_and_every_option_validate_and_every_key_has_a_rule(
    option: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shipped option passes (GPU options on a GPU machine), and no config key goes unchecked."""
    monkeypatch.setattr(validate_module, "_gpu_visible", lambda: option in GPU_OPTIONS)
    cfg = make_cfg(*([option, *COMPLETE.get(option, [])] if option else []))
    validate(cfg)
    unchecked = [  # a key added to conf/ without a rule in sim/config/validate.py lands here
        key for key in _leaf_keys(OmegaConf.to_container(cfg, resolve=False))
        if key not in REQUIRED and key not in OPTIONAL
        and not (key.startswith("strategy.") and key.rsplit(".", 1)[-1] in {"_target_", *STRATEGY_RULES})
    ]
    assert unchecked == []


@functools.cache
def partition_nodes() -> dict[str, DictConfig]:
    """`partition=<scheme>`: its composed `partition` node, for every scheme (each sets nothing else)."""
    nodes = {}
    for scheme in sorted(p.stem for p in (CONF_DIR / "partition").glob("*.yaml")):
        option = f"partition={scheme}"
        nodes[option] = make_cfg(option, *COMPLETE.get(option, [])).partition
    return nodes


def test_partition_options_set_only_the_partition_node() -> None:
    base = OmegaConf.to_container(make_cfg(), resolve=False)
    for option in partition_nodes():
        cfg = OmegaConf.to_container(make_cfg(option, *COMPLETE.get(option, [])), resolve=False)
        assert {k: v for k, v in cfg.items() if k != "partition"} == {k: v for k, v in base.items() if k != "partition"}


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.startswith(("dataset=", "strategy="))])
def test_every_option_validates_with_every_partition_scheme(option: str) -> None:
    # composed once per option, with each scheme's node put in (what composing both gives:
    # see the test above); composing every pair took 20 s of the fast tier
    cfg = make_cfg(option, *COMPLETE.get(option, []))
    for scheme, node in partition_nodes().items():
        cfg.partition = node
        validate(cfg)


def test_gpu_resources_need_a_gpu_or_declared_ray_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # no GPU: clients need one, and the server (this process) needs one even with ray_gpus declared
    assert error_of("resources=gpu").startswith("resources.client_gpus=0.25 needs a GPU")
    assert error_of("resources=gpu", "resources.ray_gpus=1").startswith("resources.server_device=cuda needs a GPU")
    validate(make_cfg("resources=gpu", "resources.ray_gpus=1", "resources.server_device=cpu"))
    validate(make_cfg("resources=gpu", "resources.address=auto", "resources.server_device=cpu"))
    monkeypatch.setattr(validate_module, "_gpu_visible", lambda: True)
    validate(make_cfg("resources=gpu"))


def test_gpu_visibility_is_a_plain_bool() -> None:
    assert isinstance(REAL_GPU_VISIBLE(), bool)


def test_optional_keys_pass_when_in_range() -> None:
    validate(make_cfg(
        "++client.failure_rate=0.1", "++client.straggler_rate=0", "++client.straggler_delay_s=2.5",
        "++checkpoint_every=5", "++resume=true", "++strategy.proximal_mu=0.01", "++strategy.beta=0.2",
        "++strategy.num_sampled_clients=10", "++strategy.noise_multiplier=0", "++strategy.clipping_norm=1",
        "resources.ray_cpus=4", "resources.ray_gpus=0", "partition=shard", "partition.shard_size=250",
    ))


def test_dataset_path_accepts_a_folder_or_an_archive(tmp_path: Path) -> None:
    validate(make_cfg(f"dataset.path={tmp_path}", "num_clients=100000", "clients_per_round=1"))  # size unknown
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    validate(make_cfg(f"dataset.path={archive}"))
    text = tmp_path / "images.txt"
    text.write_text("not an archive")
    assert error_of(f"dataset.path={text}").startswith(f"dataset.path={text} is neither")


def test_train_set_size_is_known_without_loading(tmp_path: Path) -> None:
    assert train_set_size(make_cfg()) == 50_000
    assert train_set_size(make_cfg("dataset=synthetic", "dataset.num_train=777")) == 777
    assert train_set_size(make_cfg(f"dataset.path={tmp_path}")) is None


def test_validate_leaves_the_config_unchanged() -> None:
    cfg = make_cfg("partition=dirichlet")
    before = OmegaConf.to_yaml(cfg)
    validate(cfg)
    assert OmegaConf.to_yaml(cfg) == before
