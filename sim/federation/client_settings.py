"""What every client task of a run needs to know, built once per run from the resolved config.

`ClientSettings.from_config(cfg)` is the one place a client's settings are read from the
config: local training (`TrainSettings`), evaluation batch size, the normaliser's mean and
std, the resolved model node, CPU threads, GPU use, simulated faults and the seed. The
config must hold the loaded data's values (`sim.data.spec.with_data`), as the driver's does.

How the settings reach the clients:

- `python -m sim`: the driver builds them once and hands them to `build_client_app`
  beside the data handle; messages carry only what changes per round (`cids`,
  `server-round`, a strategy's own keys such as FedProx's `proximal-mu`, an algorithm's
  `client-rule` and hyper-parameters, Flower's DP `clipping_norm`).
- `flwr run .` and SuperNodes (`sim.deploy.app`): each client process composes the run's
  config from the message's `overrides` once and builds the settings from it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from sim.federation.training import TrainSettings
from sim.models import model_spec


@dataclass(frozen=True)
class ClientSettings:
    """A run's client settings (see the module docstring); build it with `from_config`.

    `train.proximal_mu` is always 0 here: FedProx sends its `proximal-mu` with each round.
    `model` is the resolved model node as a plain dict (`sim.models.build_model` takes it);
    treat it as read-only.
    """

    seed: int
    train: TrainSettings  # epochs, batch size, SGD hyper-parameters, amp
    eval_batch_size: int
    mean: tuple[float, ...]  # per-channel normalisation of images in [0, 1]
    std: tuple[float, ...]
    model: dict[str, Any]
    client_cpus: float  # torch threads of a client task
    use_gpu: bool  # the task was given a GPU share (it runs on the GPU when one is visible)
    failure_rate: float  # simulated faults, drawn per (seed, round, client, task)
    straggler_rate: float
    straggler_delay_s: float
    channels_last: bool  # the model in PyTorch's channels-last memory format

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ClientSettings":
        """The settings `cfg` gives every client (`cfg` as `sim.run.recipe.load_data` returns it)."""
        client = cfg.client
        return cls(
            seed=int(cfg.seed),
            train=TrainSettings(
                epochs=int(client.epochs),
                batch_size=int(client.batch_size),
                lr=float(client.lr),
                momentum=float(client.momentum),
                weight_decay=float(client.weight_decay),
                amp=bool(client.amp),
            ),
            eval_batch_size=int(client.eval_batch_size),
            mean=tuple(float(v) for v in cfg.dataset.mean),
            std=tuple(float(v) for v in cfg.dataset.std),
            model=model_spec(cfg),
            client_cpus=float(cfg.resources.client_cpus),
            use_gpu=float(cfg.resources.client_gpus) > 0,
            failure_rate=float(client.failure_rate),
            straggler_rate=float(client.straggler_rate),
            straggler_delay_s=float(client.straggler_delay_s),
            channels_last=bool(client.channels_last),
        )

    def rule_config(self) -> dict[str, Any]:
        """The training settings under the names a `sim.algorithms.rule.ClientRule` reads them by.

        A rule is built from one flat config (`load_rule`): these entries, overlaid by the
        message's own (the rule's hyper-parameters, `cids`, `server-round`).
        """
        return {
            "seed": self.seed,
            "epochs": self.train.epochs,
            "batch-size": self.train.batch_size,
            "lr": self.train.lr,
            "momentum": self.train.momentum,
            "weight-decay": self.train.weight_decay,
            "eval-batch-size": self.eval_batch_size,
        }
