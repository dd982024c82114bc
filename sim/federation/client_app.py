"""The Flower ClientApp: each message carries a pack of virtual client ids.

The app is built with the run's `ClientSettings` (`sim.federation.client_settings`) and a
`DataHandle`; a message's config carries only what changes per round: the clients
(`cids`), the round and a strategy's own keys. For each client in the pack the global
model is loaded, trained on that client's partition with a seed derived from
(seed, round, client id), and folded into an example-weighted mean; the reply is that
mean with the pack's total example count, which a weighted-mean strategy aggregates
exactly as it would the clients one by one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from sim.federation.client_data import ClientData, DataHandle
from sim.federation.client_settings import ClientSettings
from sim.models import build_model as instantiate_model
from sim.federation.training import Normalizer, add_weighted, evaluate, gather, task_seed, train_local


TRAIN_TASK, EVALUATE_TASK = 0, 1


class ClientFailure(RuntimeError):
    """A simulated client fault (`client.failure_rate`): the client's task is lost."""


def simulate_faults(settings: ClientSettings, server_round: int, cid: int, task: int) -> bool:
    """Apply this client's seeded faults for this round and task; True when it fails.

    A straggler sleeps `straggler_delay_s` first. Draws depend only on (seed, round,
    client, task), so a run's faults are reproducible and independent of packing.
    """
    if settings.failure_rate <= 0 and settings.straggler_rate <= 0:
        return False
    rng = np.random.default_rng([settings.seed, int(server_round), int(cid), task, 0xFA])
    fails, straggles = rng.random(2) < (settings.failure_rate, settings.straggler_rate)
    if straggles:
        time.sleep(settings.straggler_delay_s)
    return bool(fails)


@lru_cache(maxsize=1)
def _use_threads(n: int) -> None:
    """Give torch this many threads in this worker process (set once)."""
    torch.set_num_threads(n)


def task_device(use_gpu: bool) -> torch.device:
    """The GPU when this task was given a GPU share and one is visible, else the CPU."""
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


_BUILT: dict = {}  # per process: the last settings' model and normaliser (see `prepare`)


def prepare(settings: ClientSettings) -> tuple[torch.device, torch.nn.Module, Normalizer]:
    """This process's device, model and normaliser for `settings`, built by its first task.

    Later tasks with equal settings reuse the same model: each loads its global weights
    into it first, as the clients of one pack always have. A process runs one task at a
    time (a Ray actor, a SuperNode's ClientApp); new settings replace the old objects.
    """
    _use_threads(max(1, int(settings.client_cpus)))
    device = task_device(settings.use_gpu)
    key = (settings, device)
    if _BUILT.get("key") != key:
        model = instantiate_model(settings.model)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _BUILT.clear()
        _BUILT.update(key=key, model=model.to(device), normalize=Normalizer(settings.mean, settings.std, device))
    return device, _BUILT["model"], _BUILT["normalize"]


def train_pack(
    data: ClientData, arrays: ArrayRecord, config: ConfigRecord, settings: ClientSettings
) -> tuple[dict, MetricRecord]:
    """Train every client of the pack (`config["cids"]`) from `arrays`; their weighted-mean weights and metrics."""
    device, model, normalize = prepare(settings)
    train = settings.train
    if "proximal-mu" in config:  # FedProx's, sent each round
        train = replace(train, proximal_mu=float(config["proximal-mu"]))
    server_round = int(config["server-round"])
    start_state = arrays.to_torch_state_dict()
    total = failures = 0
    loss_sum = 0.0
    weight_sum: dict[str, torch.Tensor] = {}
    for cid in config["cids"]:
        if simulate_faults(settings, server_round, cid, TRAIN_TASK):
            failures += 1
            continue
        x, y = gather(data.images, data.labels, data.train_ids(cid), device)
        if len(y) == 0:
            continue
        model.load_state_dict(start_state)
        loss = train_local(model, x, y, train, normalize, task_seed(settings.seed, server_round, cid))
        n = len(y)
        add_weighted(weight_sum, model.state_dict(), n)
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


def evaluate_pack(data: ClientData, arrays: ArrayRecord, config: ConfigRecord, settings: ClientSettings) -> MetricRecord:
    """Evaluate the global model on each client's validation share; example-weighted totals."""
    device, model, normalize = prepare(settings)
    model.load_state_dict(arrays.to_torch_state_dict())
    server_round = int(config["server-round"])
    total, loss_sum, correct, failures = 0, 0.0, 0.0, 0
    for cid in config["cids"]:
        if simulate_faults(settings, server_round, cid, EVALUATE_TASK):
            failures += 1
            continue
        loss, acc, n = evaluate(
            model, data.images, data.labels, data.val_ids(cid), settings.eval_batch_size, normalize, device
        )
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


def client_settings(settings: ClientSettings | None, handle, msg: Message, context: Context) -> ClientSettings:
    """`settings` when the app was built with them, else those a self-loading handle composes (`settings_for_message`)."""
    if settings is not None:
        return settings
    settings_for_message = getattr(handle, "settings_for_message", None)
    if settings_for_message is None:
        raise TypeError("build_client_app needs the run's ClientSettings unless its handle composes them itself")
    return settings_for_message(msg.content["config"], context)


def build_client_app(handle: DataHandle, settings: ClientSettings | None = None, mods=(), app_mods=()) -> ClientApp:
    """A ClientApp whose tasks read the data behind `handle` and train with `settings`.

    `settings` travel with the app (built once by the driver), not in the messages; None:
    the handle composes them itself (`sim.deploy.app.ConfigData`). `mods` wrap training
    (client-side DP clipping); `app_mods` wrap every handler, outside `mods` (a deployment's
    `sim.deploy.packed_arrays.packed_arrays_mod`).
    """
    app = ClientApp(mods=list(app_mods))

    @app.train(mods=list(mods))
    def train(msg: Message, context: Context) -> Message:
        data, run_settings = client_data(handle, msg, context), client_settings(settings, handle, msg, context)
        if "client-rule" in msg.content["config"]:  # an algorithm of sim.algorithms (or your own)
            from sim.algorithms.client import train_message

            return Message(content=train_message(data, msg.content, run_settings), reply_to=msg)
        state, metrics = train_pack(data, msg.content["arrays"], msg.content["config"], run_settings)
        content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        data, run_settings = client_data(handle, msg, context), client_settings(settings, handle, msg, context)
        if "client-rule" in msg.content["config"]:  # a personalised algorithm: personal models too
            from sim.algorithms.client import evaluate_message

            metrics = evaluate_message(data, msg.content, run_settings)
            return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
        metrics = evaluate_pack(data, msg.content["arrays"], msg.content["config"], run_settings)
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app
