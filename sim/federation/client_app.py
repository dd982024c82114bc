"""The Flower ClientApp: each message carries a pack of virtual client ids.

A message's config names the clients (`cids`), the round and every training setting, so
the app itself holds nothing but a `DataHandle`. For each client in the pack the global
model is loaded, trained on that client's partition with a seed derived from
(seed, round, client id), and folded into an example-weighted mean; the reply is that
mean with the pack's total example count, which a weighted-mean strategy aggregates
exactly as it would the clients one by one.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from sim.federation.client_data import ClientData, DataHandle
from sim.models import build_model as instantiate_model, spec_from_json
from sim.federation.training import Normalizer, TrainSettings, evaluate, gather, task_seed, train_local


TRAIN_TASK, EVALUATE_TASK = 0, 1


class ClientFailure(RuntimeError):
    """A simulated client fault (`client.failure_rate`): the client's task is lost."""


def simulate_faults(config: ConfigRecord, cid: int, task: int) -> bool:
    """Apply this client's seeded faults for this round and task; True when it fails.

    A straggler sleeps `straggler-delay-s` first. Draws depend only on (seed, round,
    client, task), so a run's faults are reproducible and independent of packing.
    """
    failure_rate = float(config.get("failure-rate", 0.0))
    straggler_rate = float(config.get("straggler-rate", 0.0))
    if failure_rate <= 0 and straggler_rate <= 0:
        return False
    rng = np.random.default_rng([int(config["seed"]), int(config["server-round"]), int(cid), task, 0xFA])
    fails, straggles = rng.random(2) < (failure_rate, straggler_rate)
    if straggles:
        time.sleep(float(config.get("straggler-delay-s", 0.0)))
    return bool(fails)


@lru_cache(maxsize=1)
def _use_threads(n: int) -> None:
    """Give torch this many threads in this worker process (set once)."""
    torch.set_num_threads(n)


def task_device(config: ConfigRecord) -> torch.device:
    """The GPU when this task was given a GPU share and one is visible, else the CPU."""
    if bool(config.get("use-gpu", False)) and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def build_model(config: ConfigRecord, device: torch.device) -> torch.nn.Module:
    """Instantiate the resolved model config the message carries (`model`, JSON; see `sim.models`)."""
    model = instantiate_model(spec_from_json(str(config["model"])))
    if bool(config.get("channels-last", False)):
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


def _prepare(config: ConfigRecord) -> tuple[torch.device, Normalizer]:
    _use_threads(max(1, int(config.get("client-cpus", 1))))
    device = task_device(config)
    return device, Normalizer(list(config["mean"]), list(config["std"]), device)


def train_pack(data: ClientData, arrays: ArrayRecord, config: ConfigRecord) -> tuple[dict, MetricRecord]:
    """Train every client of the pack from `arrays`; return their weighted-mean weights and metrics."""
    device, normalize = _prepare(config)
    settings = TrainSettings(
        epochs=int(config["epochs"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        momentum=float(config["momentum"]),
        weight_decay=float(config["weight-decay"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        amp=bool(config.get("amp", False)),
    )
    seed, server_round = int(config["seed"]), int(config["server-round"])
    model = build_model(config, device)
    start_state = arrays.to_torch_state_dict()
    total = failures = 0
    loss_sum = 0.0
    weight_sum: dict[str, torch.Tensor] = {}
    for cid in config["cids"]:
        if simulate_faults(config, cid, TRAIN_TASK):
            failures += 1
            continue
        x, y = gather(data.images, data.labels, data.train_ids(cid), device)
        if len(y) == 0:
            continue
        model.load_state_dict(start_state)
        loss = train_local(model, x, y, settings, normalize, task_seed(seed, server_round, cid))
        n = len(y)
        for key, value in model.state_dict().items():
            contribution = value.detach().double() * n
            weight_sum[key] = weight_sum[key] + contribution if key in weight_sum else contribution
        total += n
        loss_sum += loss * n
    if failures == len(config["cids"]):
        raise ClientFailure(f"simulated failure of every client in {list(config['cids'])}")
    if total == 0:
        raise ValueError(f"clients {list(config['cids'])} have no training examples")
    mean_state = {k: (v / total).float().cpu() for k, v in weight_sum.items()}
    metrics = MetricRecord(
        {"num-examples": total, "train_loss": loss_sum / total, "clients": len(config["cids"]), "failures": failures}
    )
    return mean_state, metrics


def evaluate_pack(data: ClientData, arrays: ArrayRecord, config: ConfigRecord) -> MetricRecord:
    """Evaluate the global model on each client's validation share; example-weighted totals."""
    device, normalize = _prepare(config)
    model = build_model(config, device)
    model.load_state_dict(arrays.to_torch_state_dict())
    batch_size = int(config["eval-batch-size"])
    total, loss_sum, correct, failures = 0, 0.0, 0.0, 0
    for cid in config["cids"]:
        if simulate_faults(config, cid, EVALUATE_TASK):
            failures += 1
            continue
        loss, acc, n = evaluate(model, data.images, data.labels, data.val_ids(cid), batch_size, normalize, device)
        total += n
        loss_sum += loss * n
        correct += acc * n
    if failures == len(config["cids"]):
        raise ClientFailure(f"simulated failure of every client in {list(config['cids'])}")
    denominator = max(total, 1)
    return MetricRecord(
        {
            "num-examples": total,
            "eval_loss": loss_sum / denominator,
            "eval_acc": correct / denominator,
            "clients": len(config["cids"]),
            "failures": failures,
        }
    )


def client_data(handle, msg: Message, context: Context) -> ClientData:
    """The arrays behind `handle`; a handle that loads them itself (`for_message`) gets the message and node."""
    for_message = getattr(handle, "for_message", None)
    return for_message(msg.content["config"], context) if for_message else handle.get()


def build_client_app(handle: DataHandle, mods=()) -> ClientApp:
    """A ClientApp whose tasks read the data behind `handle`; `mods` wrap training (client-side DP clipping)."""
    app = ClientApp()

    @app.train(mods=list(mods))
    def train(msg: Message, context: Context) -> Message:
        if "client-rule" in msg.content["config"]:  # an algorithm of sim.algorithms (or your own)
            from sim.algorithms.client import train_message

            return Message(content=train_message(client_data(handle, msg, context), msg.content), reply_to=msg)
        state, metrics = train_pack(client_data(handle, msg, context), msg.content["arrays"], msg.content["config"])
        content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        if "client-rule" in msg.content["config"]:  # a personalised algorithm: personal models too
            from sim.algorithms.client import evaluate_message

            metrics = evaluate_message(client_data(handle, msg, context), msg.content)
            return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
        metrics = evaluate_pack(client_data(handle, msg, context), msg.content["arrays"], msg.content["config"])
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app
