"""Every config key, written once: its rule (type and range, `sim.config.rules`) and its meaning.

    SETTINGS["client.lr"].doc()   # 'SGD learning rate; a number > 0'

`sim.config.validate` checks values against these rules; the comment of every key in `conf/`
starts with its `doc()` (`python -m sim.config.comments --check`, enforced by
tests/test_schema.py), so the YAML, the errors and this table cannot drift apart.
Three tables, as validation reads them: `SETTINGS` by dotted key; `STRATEGY_ARGS` by name,
wherever it appears under `strategy` (also in a wrapped `strategy.strategy`); `TRACKER_ARGS`
by name under any `logger.<tracker>`. Keys of a data source or partition scheme that only
some options have are optional: checked when present (which scheme needs which is
`sim.partition.schemes.SCHEME_PARAMS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.rules import (
    BELOW_ONE, BOOL, FRACTION, MIN_IMAGE_SIZE, NON_NEGATIVE, POSITIVE, TEXT, TEXT_OR_NULL, Choice, Names, Num, Nums, Rule,
    integer,
)
from sim.partition.schemes import SCHEME_PARAMS


@dataclass(frozen=True)
class Setting:
    """One config key: what it may hold (`rule`), what it means, and whether every config has it."""

    rule: Rule
    meaning: str
    required: bool = False

    def doc(self) -> str:
        """The text every YAML comment of this key starts with: meaning; what the rule allows."""
        return f"{self.meaning}; {self.rule.allowed().removeprefix('must be ')}"


def _req(rule: Rule, meaning: str) -> Setting:
    return Setting(rule, meaning, required=True)


_SHAPE_NULL = "null: read from the data (image folders, Hugging Face sets)"

SETTINGS: dict[str, Setting] = {
    # conf/config.yaml: what every run has
    "seed": _req(integer(0), "one seed for partitioning, client sampling and training"),
    "num_clients": _req(integer(1), "virtual clients the train set is split across"),
    "clients_per_round": _req(integer(1), "clients sampled to train each round (at most num_clients)"),
    "eval_clients_per_round": _req(integer(0), "clients sampled for federated evaluation each round; 0 turns it off"),
    "num_rounds": _req(integer(1), "federated rounds"),
    "central_eval_every": _req(integer(0), "evaluate the global model on the full test set every k rounds "
                                           "(and before round 1); 0 turns it off"),
    "verbose": _req(BOOL, "true shows Flower's and Ray's INFO logs; false keeps them at WARNING"),
    "round_timeout": _req(POSITIVE, "seconds the server waits for a round's replies before aggregating what arrived"),
    "max_failed_rounds": Setting(integer(0), "stop the run when every client failed in this many consecutive rounds; "
                                             "0 never stops"),
    "checkpoint_every": Setting(integer(0), "write checkpoint.pkl (model, strategy state, RNG) every k rounds; 0 never"),
    "resume": Setting(Choice((True, False, None), TEXT.pattern, "true, false, null or a path"),
                      "a run directory to continue in place from its checkpoint (its own config is used)"),
    "fail_fast": Setting(BOOL, "multirun: true stops the sweep at the first failed job; false records it and goes on"),
    # conf/client/
    "client.epochs": _req(integer(1), "local epochs per round"),
    "client.batch_size": _req(integer(1), "local mini-batch size"),
    "client.lr": _req(POSITIVE, "SGD learning rate"),
    "client.momentum": _req(BELOW_ONE, "SGD momentum"),
    "client.weight_decay": _req(NON_NEGATIVE, "L2 penalty"),
    "client.eval_batch_size": _req(integer(1), "batch size for evaluation passes (client and server)"),
    "client.failure_rate": Setting(FRACTION, "share of client tasks that fail (seeded, per client and round)"),
    "client.straggler_rate": Setting(FRACTION, "share of client tasks that are slow (seeded)"),
    "client.straggler_delay_s": Setting(NON_NEGATIVE, "extra seconds a slow client takes; with round_timeout, "
                                                      "late replies count as failures"),
    "client.amp": Setting(BOOL, "bfloat16 mixed precision on the GPU (ignored on the CPU)"),
    "client.channels_last": Setting(BOOL, "keep the model's weights channels-last (NHWC); inputs always are"),
    # conf/dataset/
    "dataset.name": _req(TEXT_OR_NULL, "data set name: names caches, manifests, plots, summaries; "
                                       "null: the last part of the folder, archive, repo or path"),
    "dataset.path": _req(TEXT_OR_NULL, "local data instead of the built-in source: an image-folder tree "
                                       "train/<class>/*, test/<class>/* (DIR or .tar/.tar.gz/.tgz/.zip), or for hf "
                                       "a save_to_disk folder or .parquet files; null: the download or hub"),
    "dataset.data_dir": _req(TEXT, "folder for downloads and the decoded .npy cache, relative to where you launch"),
    "dataset.num_classes": _req(integer(2, null=True), f"label count; the model's output size follows it; {_SHAPE_NULL}"),
    "dataset.channels": _req(Choice((1, 3, None)), "image channels; the model's input channels follow it; "
                                                   "null: 1 when every image is grayscale, else 3"),
    "dataset.image_size": _req(integer(MIN_IMAGE_SIZE, null=True),
                               "image height = width in pixels (the CNN's two conv+pool stages need "
                               f"{MIN_IMAGE_SIZE}); null: the images' own common square size"),
    "dataset.mean": _req(Nums(FRACTION, null=True), "per-channel mean used to normalise each batch, one entry per "
                                                    "channel; null: the train set's (computed on first decode, cached)"),
    "dataset.std": _req(Nums(POSITIVE, null=True), "per-channel std used to normalise each batch, one entry per "
                                                   "channel; null: the train set's"),
    "dataset.url": Setting(TEXT, "official archive, fetched on first use when path is null"),
    "dataset.md5": Setting(Choice(pattern=r"[0-9a-fA-F]{32}", text="32 hex digits"), "checksum the download must match"),
    "dataset.num_train": Setting(integer(1), "training images (at least num_clients)"),
    "dataset.num_test": Setting(integer(1), "central test images"),
    "dataset.noise": Setting(FRACTION, "std of the per-pixel noise around each class template, in pixel units "
                                       "of [0, 1]; larger is harder"),
    "dataset.source": Setting(Choice(("folder", "hf")), "reader: folder (sim/data/image_folder.py) or "
                                                        "hf (sim/data/hf.py)"),
    "dataset.resize": Setting(BOOL, "true: an image_size other than the images' resizes them; false: it is an error"),
    "dataset.repo": Setting(TEXT_OR_NULL, "Hugging Face hub id, downloaded into data_dir/hf when online; "
                                          "offline, set path to a save_to_disk copy instead"),
    "dataset.image_column": Setting(TEXT, "column holding the images (an Image feature, or uint8 HxW / HxWxC arrays)"),
    "dataset.label_column": Setting(TEXT, "column holding the class (ClassLabel, integers or strings)"),
    "dataset.train_split": Setting(TEXT, "split the clients train and validate on"),
    "dataset.test_split": Setting(TEXT_OR_NULL, "split of the central evaluation; null holds out test_fraction of train"),
    "dataset.test_fraction": Setting(Num(0, 1, lo_open=True, hi_open=True),
                                     "share of train held out as test when test_split is null"),
    # conf/partition/
    "partition.scheme": _req(Choice(tuple(SCHEME_PARAMS)), "partitioner name"),
    "partition.val_fraction": _req(BELOW_ONE, "share of each client's examples held out for federated evaluation"),
    "partition.dir": Setting(TEXT, "where manifests, label-count CSVs and plots are written and reused"),
    "partition.by": Setting(TEXT, "the id column of a Hugging Face data set (or label: one client per class)"),
    "partition.sizes": Setting(Nums(integer(0), null=True), "one size per client, summing to the train set size; "
                                                            "null: equal shares"),
    "partition.alpha": Setting(POSITIVE, "Dirichlet concentration: small (0.1) is very skewed, large (100) near IID"),
    "partition.min_partition_size": Setting(integer(0), "redraw until every client has at least this many examples"),
    "partition.self_balancing": Setting(BOOL, "true stops giving a class to clients already above the average size"),
    "partition.shards_per_client": Setting(integer(1), "shards each client gets (the FedAvg paper uses 2)"),
    "partition.shard_size": Setting(integer(1, null=True), "examples per shard; null derives it from the train set size"),
    "partition.classes_per_client": Setting(integer(1), "classes each client sees (at most dataset.num_classes)"),
    "partition.class_assignment_mode": Setting(Choice(("first-deterministic", "deterministic", "random")),
                                               "how classes are dealt to clients"),
    # conf/model/
    "model._target_": _req(TEXT, "the model class: a dotted path importable in the driver and in every Ray worker"),
    "model.in_channels": Setting(integer(1, null=True), "input channels, taken from the data set"),
    "model.image_size": Setting(integer(1, null=True), "input height = width, taken from the data set"),
    "model.num_classes": Setting(integer(2, null=True), "output classes, taken from the data set"),
    "model.norm_groups": Setting(integer(1), "GroupNorm groups per layer (BatchNorm breaks under non-IID averaging); "
                                             "divides 64"),
    "model.stem": Setting(Choice(("cifar", "imagenet")), "cifar: 3x3 stride-1 conv for 28-64 px images; "
                                                         "imagenet: 7x7 stride-2 conv + max-pool"),
    "model.hidden": Setting(integer(1), "width of the hidden linear layer"),
    # conf/strategy/ (the strategies' own arguments: STRATEGY_ARGS)
    "strategy._target_": _req(TEXT, "the strategy class"),
    "strategy.packable": Setting(BOOL, "true: replies are weighted means, so several virtual clients may share "
                                       "one message; false: one client per message"),
    "strategy.strategy._target_": Setting(TEXT, "the wrapped strategy class, which aggregates the clipped updates"),
    "strategy.strategy._partial_": Setting(Choice((True,), text="true"), "built later, when the run's client "
                                                                         "sampler exists"),
    # conf/resources/
    "resources.client_cpus": _req(POSITIVE, "CPUs each client task reserves; clients at once = ray_cpus / client_cpus"),
    "resources.client_gpus": _req(FRACTION, "GPU share of each client task: 0.25 packs four clients on one GPU"),
    "resources.ray_cpus": _req(integer(1, null=True), "CPUs Ray may use; null: all of this machine's"),
    "resources.ray_gpus": _req(integer(0, null=True), "GPUs Ray may use; null: those it detects"),
    "resources.address": _req(TEXT_OR_NULL, "null starts a private Ray instance; an address (auto, IP:6379) "
                                            "attaches to that cluster"),
    "resources.server_device": _req(Choice(pattern=r"cpu|cuda(:\d+)?", text="cpu, cuda or cuda:N"),
                                    "device of the server's central evaluation"),
}

# Strategy arguments (flwr.serverapp.strategy, sim.algorithms, privacy accounting), wherever they appear under `strategy`.
STRATEGY_ARGS: dict[str, Setting] = {
    "proximal_mu": Setting(NON_NEGATIVE, "FedProx: weight of the proximal term (mu/2)·||w - w_global||²; 0 is FedAvg"),
    "server_learning_rate": Setting(POSITIVE, "server step size on the aggregated update"),
    "server_momentum": Setting(BELOW_ONE, "server momentum; 0 is FedAvg"),
    "eta": Setting(POSITIVE, "server learning rate"),
    "eta_l": Setting(POSITIVE, "client learning rate (informational in Flower)"),
    "beta_1": Setting(BELOW_ONE, "first-moment decay"),
    "beta_2": Setting(BELOW_ONE, "second-moment decay"),
    "tau": Setting(POSITIVE, "adaptivity (epsilon)"),
    "beta": Setting(Num(0, 0.5, hi_open=True), "fraction trimmed at each end"),
    "num_malicious_nodes": Setting(integer(0), "Byzantine clients f tolerated"),
    "num_nodes_to_select": Setting(integer(1), "models averaged (at most clients_per_round)"),
    "q": Setting(NON_NEGATIVE, "fairness exponent; 0 is close to FedAvg"),
    "client_learning_rate": Setting(POSITIVE, "the clients' learning rate (sets q-FFL's Lipschitz estimate 1/lr)"),
    "noise_multiplier": Setting(NON_NEGATIVE, "Gaussian noise std as a multiple of the clipping norm "
                                              "(> 0 when accounting)"),
    "clipping_norm": Setting(POSITIVE, "each client update is clipped to this L2 norm"),
    "num_sampled_clients": Setting(integer(1), "clients per round (at most num_clients), used to scale the noise"),
    "initial_clipping_norm": Setting(POSITIVE, "starting clipping norm"),
    "target_clipped_quantile": Setting(FRACTION, "share of updates the norm should clip"),
    "clip_norm_lr": Setting(POSITIVE, "learning rate of the clipping-norm update"),
    "clipped_count_stddev": Setting(Num(0, null=True), "noise std of the clipped-update count; null: Flower's default"),
    "fraction_train": Setting(FRACTION, "share of clients that train (the harness samples clients_per_round)"),
    "fraction_evaluate": Setting(FRACTION, "share of clients that evaluate (the harness samples "
                                           "eval_clients_per_round)"),
    "alpha": Setting(POSITIVE, "FedDyn: weight α of the regulariser (α/2)·||θ - θ_server||²; larger keeps clients closer"),
    "ditto_lambda": Setting(NON_NEGATIVE, "Ditto: λ of (λ/2)·||v - w_global||² on the personal model; 0 = purely local"),
    "personal_layers": Setting(Names(), "FedPer: state-dict name prefixes of the personal head"),
    "state_memory_mb": Setting(POSITIVE, "client state kept in memory (every state is also written behind to <run dir>/client_state)"),
    "target_delta": Setting(Num(0, 1, lo_open=True, hi_open=True), "delta at which epsilon is reported each round "
                                                                   "(history column `epsilon`)"),
    "max_epsilon": Setting(Num(0, lo_open=True, null=True), "stop the run before a round would push epsilon past "
                                                            "this; null never stops"),
    "weighted_by_key": Setting(Choice(("num-examples", "clients")), "a FedAvg's reply weight: num-examples, or "
                                                                    "clients (every client counts equally)"),
}

# Tracker settings, wherever they appear under `logger.<tracker>` (sim.tracking.checks).
TRACKER_ARGS: dict[str, Setting] = {
    "_target_": Setting(TEXT, "the tracker class"),
    "subdir": Setting(TEXT, "event files go to <run dir>/<subdir>"),
    "images": Setting(BOOL, "true logs curves.png and the partition plot to the Images tab at the end"),
    "tracking_uri": Setting(TEXT, "a folder (local file store, relative to where you launch) or an MLflow URI: "
                                  "sqlite:///mlflow.db, http://host:5000"),
    "experiment": Setting(TEXT, "MLflow experiment the runs go to; created when missing"),
    "run_name": Setting(TEXT_OR_NULL, "null: the run directory's name (a sweep job: its number and overrides)"),
    "mode": Setting(Choice(("offline", "online", "disabled")), "online needs `wandb login`; "
                                                               "default: $WANDB_MODE if set, else offline"),
    "project": Setting(TEXT, "W&B project name"),
    "entity": Setting(TEXT_OR_NULL, "W&B user or team; null: your default entity (online only)"),
    "system_metrics": Setting(BOOL, "true also records CPU/GPU/memory every 15 s and the machine's metadata"),
}
# The options of conf/logger/ and their keys.
SHIPPED_TRACKERS = {
    "tensorboard": ("subdir", "images"), "mlflow": ("tracking_uri", "experiment", "run_name"),
    "wandb": ("mode", "project", "entity", "system_metrics"),
}


def setting_of(key: str) -> Setting | None:
    """The schema entry of dotted `key` as it appears in a config; None for a key the schema does not know."""
    if key in SETTINGS:
        return SETTINGS[key]
    parts = key.split(".")
    if parts[0] == "strategy" and len(parts) >= 2 and parts[-1] in STRATEGY_ARGS:
        return STRATEGY_ARGS[parts[-1]]
    if parts[0] == "logger" and len(parts) == 3 and parts[-1] in TRACKER_ARGS:
        return TRACKER_ARGS[parts[-1]]
    return None
