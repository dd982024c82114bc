"""The benchmark's workloads, as Hydra override lists for `python -m sim`.

Every workload trains the quickstart CNN for one local epoch on CIFAR-10 (read from
`dataset.path`). Federated evaluation is off in all of them (`eval_clients_per_round=0`)
so that a round's time is training, aggregation and (where on) central evaluation.

    cross-silo    10 clients, all 10 every round, IID, batch 32, central eval every round
    cross-device  1,000 clients, 50 a round, Dirichlet(0.3) label skew, batch 10
    scale-5k      5,000 clients of 10 images, 50 a round, no central eval
    scale-50k     50,000 clients of 1 image, 50 a round, no central eval
    pfl-cifar10   pfl-research's CIFAR-10 shape: 1,000 IID clients of 50 images, 50 a round,
                  batch 10, plain SGD (lr 0.1, no momentum), central eval every 10 rounds,
                  1,500 rounds unless `--rounds` says otherwise
    cheap-rounds  rounds with almost no work, where the engine's own latency shows: synthetic
                  data (2,000 images, no files), 100 clients, 10 a round, no evaluation
    resnet-cross-device  ResNet-18 (GroupNorm), 1,000 clients, 10 a round, Dirichlet(0.3),
                  batch 10, no central eval (opt-in: --workloads resnet-cross-device)

`partition.min_partition_size=1` for cross-device: on CIFAR-10's balanced labels
flwr-datasets needs 9 of its 10 redraws to give every one of 1,000 clients 5 images at
alpha=0.3, and fails at 10; 1 only guarantees that no client is empty. The scale
workloads set `partition.val_fraction=0` so a 1-image client keeps its image for training.

`--quick` swaps CIFAR-10 for a tiny synthetic set and shrinks the client counts, keeping
each workload's shape (same schemes, batch sizes and switches); it exists for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKLOADS = ("cross-silo", "cross-device", "scale-5k", "scale-50k")


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: its overrides on CIFAR-10 and on the quick synthetic set."""

    name: str
    overrides: tuple[str, ...]  # on top of the dataset overrides
    quick: tuple[str, ...]  # the same shape at test size (synthetic data)
    rounds: int = 10  # rounds when `--rounds` is not given
    data: tuple[str, ...] | None = None  # its own data set overrides (None: CIFAR-10 from dataset.path)


_NO_FED_EVAL = ("eval_clients_per_round=0",)
_ONE_SMALL_IMAGE_EACH = (
    "clients_per_round=50", *_NO_FED_EVAL, "partition=iid", "partition.val_fraction=0", "central_eval_every=0",
)


def _small_images(count: int) -> tuple[str, ...]:
    """A generated set of `count` grayscale 16x16 training images (the CNN's smallest input)."""
    return ("dataset=synthetic", f"dataset.num_train={count}", "dataset.num_test=1000", "dataset.channels=1",
            "dataset.image_size=16", "dataset.mean=[0.5]", "dataset.std=[0.25]")

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "cross-silo",
            ("num_clients=10", "clients_per_round=10", *_NO_FED_EVAL, "partition=iid", "client.batch_size=32"),
            ("num_clients=4", "clients_per_round=4", *_NO_FED_EVAL, "partition=iid", "client.batch_size=32"),
        ),
        Workload(
            "cross-device",
            (
                "num_clients=1000", "clients_per_round=50", *_NO_FED_EVAL, "partition=dirichlet",
                "partition.alpha=0.3", "partition.min_partition_size=1", "client.batch_size=10",
            ),
            (
                "num_clients=40", "clients_per_round=6", *_NO_FED_EVAL, "partition=dirichlet",
                "partition.alpha=0.3", "partition.min_partition_size=1", "client.batch_size=10",
            ),
        ),
        Workload(
            "scale-5k",
            (
                "num_clients=5000", "clients_per_round=50", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "central_eval_every=0",
            ),
            (
                "num_clients=200", "clients_per_round=6", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "central_eval_every=0",
            ),
        ),
        Workload(
            "scale-50k",
            (
                "num_clients=50000", "clients_per_round=50", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "central_eval_every=0",
            ),
            (
                "num_clients=400", "clients_per_round=6", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "central_eval_every=0",
            ),
        ),
        Workload(
            "pfl-cifar10",
            (
                "num_clients=1000", "clients_per_round=50", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "client.batch_size=10", "client.lr=0.1", "client.momentum=0",
                "central_eval_every=10",
            ),
            (
                "num_clients=40", "clients_per_round=6", *_NO_FED_EVAL, "partition=iid",
                "partition.val_fraction=0", "client.batch_size=10", "client.lr=0.1", "client.momentum=0",
                "central_eval_every=2",
            ),
            rounds=1500,
        ),
        Workload(
            "cheap-rounds",
            ("num_clients=100", "clients_per_round=10", *_NO_FED_EVAL, "central_eval_every=0"),
            ("num_clients=40", "clients_per_round=6", *_NO_FED_EVAL, "central_eval_every=0"),
            rounds=200,
            data=("dataset=synthetic", "dataset.num_train=2000"),
        ),
        Workload(  # a million clients of one small generated image each; not in the defaults (minutes to generate)
            "scale-1m",
            ("num_clients=1000000", *_ONE_SMALL_IMAGE_EACH),
            ("num_clients=400", *_ONE_SMALL_IMAGE_EACH),
            data=_small_images(1_000_000),
        ),
        Workload(  # scale-1m's comparison: the same images and model, 5,000 clients
            "scale-1m-base",
            ("num_clients=5000", *_ONE_SMALL_IMAGE_EACH),
            ("num_clients=400", *_ONE_SMALL_IMAGE_EACH),
            data=_small_images(5_000),
        ),
        Workload(  # issue 11: the ResNet-18 (GroupNorm) on a small cross-device setting; not in the defaults (slow on CPUs)
            "resnet-cross-device",
            (
                "model=resnet18", "num_clients=1000", "clients_per_round=10", *_NO_FED_EVAL, "partition=dirichlet",
                "partition.alpha=0.3", "partition.min_partition_size=1", "client.batch_size=10", "central_eval_every=0",
            ),
            (
                "model=resnet18", "num_clients=40", "clients_per_round=4", *_NO_FED_EVAL, "partition=dirichlet",
                "partition.alpha=0.3", "partition.min_partition_size=1", "client.batch_size=10", "central_eval_every=0",
            ),
        ),
    )
}

# Quick mode's data: 400 train images (1 per client at 400 clients), 100 test images.
QUICK_DATASET = ("dataset=synthetic", "dataset.num_train=400", "dataset.num_test=100")

# Printed beside the measurements; never asserted.
RATIO_TARGETS = {"cross-silo": 1.10, "cross-device": 1.30, "resnet-cross-device": 1.15}  # harness round / ideal bound
WALL_TARGETS = {"pfl-cifar10": 1.15}  # harness wall time (launch to exit) / the reference's
ROUND_TARGETS_S = {"cheap-rounds": 0.015}  # median round, seconds
SCALE_PAIR = ("scale-5k", "scale-50k")
SCALE_ROUND_TOLERANCE = 0.15  # a scale pair's larger workload: median round at most 15% above the smaller's
SCALE_MEMORY_TOLERANCE = 0.10  # and memory (peak PSS; for the million pair, the driver's) at most 10% above
SCALE_PAIRS = {  # (smaller, larger): (bench.csv column, label, relative tolerance) compared between them
    SCALE_PAIR: (("harness_round_s", "median round", SCALE_ROUND_TOLERANCE),
                 ("peak_pss_mb", "peak memory", SCALE_MEMORY_TOLERANCE)),
    ("scale-1m-base", "scale-1m"): (("harness_round_s", "median round", SCALE_ROUND_TOLERANCE),
                                    ("driver_own_mb", "driver memory (less the object store)", SCALE_MEMORY_TOLERANCE)),
}
START_TARGET_S = 10.0  # start to first round
PARTITION_TARGET_S = 10.0  # a fresh partition of the scale pair's larger set (50,000 clients)
MEMORY_TARGET_MB = 2048.0  # peak memory of a default-sized run


def quote(value: str) -> str:
    """`value` as a single-quoted Hydra override value (any path survives the parser)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_names(text: str) -> list[str]:
    """`"cross-silo,scale-5k"` -> the names, checked against `WORKLOADS`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise ValueError(f"unknown workload(s) {unknown or text!r}; choose from {', '.join(WORKLOADS)}")
    return names


def workload_overrides(
    name: str, rounds: int | None, dataset_path: str | None, quick: bool, extra: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """The full override list of workload `name` for `python -m sim` (without hydra.* keys).

    `rounds=None` runs the workload's own number of rounds (`Workload.rounds`).

    `extra` overrides come last and replace the workload's own value of a key (for example
    `seed=1` or `dataset.data_dir=...`).
    """
    workload = WORKLOADS[name]
    if quick:
        dataset = list(QUICK_DATASET)
        body = workload.quick
    elif workload.data is not None:
        dataset, body = list(workload.data), workload.overrides
    else:
        if not dataset_path:
            raise ValueError("a CIFAR-10 workload needs dataset.path (pass --dataset-path)")
        dataset = ["dataset=cifar10", f"dataset.path={quote(dataset_path)}"]
        body = workload.overrides
    common = ["model=cnn", "client.epochs=1", f"num_rounds={workload.rounds if rounds is None else rounds}"]
    return last_per_key([*dataset, *common, *body, *extra])


def last_per_key(overrides: list[str]) -> list[str]:
    """Drop every override whose key a later one sets again (Hydra would apply the last anyway)."""
    keys = [o.split("=", 1)[0] for o in overrides]
    return [o for i, (o, k) in enumerate(zip(overrides, keys)) if k not in keys[i + 1 :]]


def compose(overrides: list[str]):
    """The run config `python -m sim overrides` would see, from the package's `conf/` tree."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf_dir = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
