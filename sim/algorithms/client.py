"""The ClientApp's side of rule-driven messages: tasks made from image partitions.

A message whose config names a `client-rule` comes here instead of the plain pack
trainer: each client's task gathers its partition once (as `sim.federation.client_app` does), walks
it in the same seeded batch order, and scores a batch with cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from sim.algorithms.rule import LocalTask, evaluate_reply, train_reply
from sim.federation.client_app import EVALUATE_TASK, TRAIN_TASK, _prepare, build_model, simulate_faults
from sim.federation.client_data import ClientData
from sim.federation.training import Normalizer, evaluate, gather, task_seed


def image_task(data: ClientData, cid: int, config: ConfigRecord, device: torch.device, normalize: Normalizer,
               train: bool) -> LocalTask:
    """Client `cid`'s task: its train partition in seeded batches, or its validation share."""
    eval_batch_size = int(config["eval-batch-size"])

    def score(model: torch.nn.Module) -> tuple[float, float, int]:
        return evaluate(model, data.images, data.labels, data.val_ids(cid), eval_batch_size, normalize, device)

    if not train:
        return LocalTask(len(data.val_ids(cid)), batches=lambda: iter(()), loss=None, evaluate=score)
    x, y = gather(data.images, data.labels, data.train_ids(cid), device)
    n, size, epochs = len(y), int(config["batch-size"]), int(config["epochs"])
    seed = task_seed(int(config["seed"]), int(config["server-round"]), cid)

    def batches():
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, size):
                yield order[start:start + size]

    def loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(normalize(x[batch])), y[batch])

    return LocalTask(n, batches=batches, loss=loss, evaluate=score)


def train_message(data: ClientData, content: RecordDict) -> RecordDict:
    """The reply records of a train message whose config names a client rule."""
    config = content["config"]
    device, normalize = _prepare(config)
    model = build_model(config, device)
    return train_reply(
        content, model, lambda cid: image_task(data, cid, config, device, normalize, train=True),
        failed=lambda cid: simulate_faults(config, cid, TRAIN_TASK),
    )


def evaluate_message(data: ClientData, content: RecordDict) -> MetricRecord:
    """The metrics of an evaluate message whose config names a client rule (personalised eval)."""
    config = content["config"]
    device, normalize = _prepare(config)
    model = build_model(config, device)
    return evaluate_reply(
        content, model, lambda cid: image_task(data, cid, config, device, normalize, train=False),
        failed=lambda cid: simulate_faults(config, cid, EVALUATE_TASK),
    )
