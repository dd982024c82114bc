"""The ClientApp's side of rule-driven messages: tasks made from image partitions.

A message whose config names a `client-rule` comes here instead of the plain pack
trainer: each client's task gathers its partition once (as `sim.federation.client_app` does), walks
it in the same seeded batch order, and scores a batch with cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import MetricRecord, RecordDict

from sim.algorithms.rule import LocalTask, evaluate_reply, train_reply
from sim.federation.client_app import EVALUATE_TASK, TRAIN_TASK, prepare, simulate_faults
from sim.federation.client_data import ClientData
from sim.federation.client_settings import ClientSettings
from sim.federation.training import Normalizer, evaluate, gather, task_seed


def image_task(data: ClientData, cid: int, server_round: int, settings: ClientSettings, device: torch.device,
               normalize: Normalizer, train: bool) -> LocalTask:
    """Client `cid`'s task: its train partition in seeded batches, or its validation share."""
    eval_batch_size = settings.eval_batch_size

    def score(model: torch.nn.Module) -> tuple[float, float, int]:
        return evaluate(model, data.images, data.labels, data.val_ids(cid), eval_batch_size, normalize, device)

    if not train:
        return LocalTask(len(data.val_ids(cid)), batches=lambda: iter(()), loss=None, evaluate=score)
    x, y = gather(data.images, data.labels, data.train_ids(cid), device)
    n, size, epochs = len(y), settings.train.batch_size, settings.train.epochs
    seed = task_seed(settings.seed, server_round, cid)

    def batches():
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, size):
                yield order[start:start + size]

    def loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(normalize(x[batch])), y[batch])

    return LocalTask(n, batches=batches, loss=loss, evaluate=score)


def train_message(data: ClientData, content: RecordDict, settings: ClientSettings) -> RecordDict:
    """The reply records of a train message whose config names a client rule."""
    server_round = int(content["config"]["server-round"])
    device, model, normalize = prepare(settings)
    return train_reply(
        content, model, lambda cid: image_task(data, cid, server_round, settings, device, normalize, train=True),
        failed=lambda cid: simulate_faults(settings, server_round, cid, TRAIN_TASK), defaults=settings.rule_config(),
    )


def evaluate_message(data: ClientData, content: RecordDict, settings: ClientSettings) -> MetricRecord:
    """The metrics of an evaluate message whose config names a client rule (personalised eval)."""
    server_round = int(content["config"]["server-round"])
    device, model, normalize = prepare(settings)
    return evaluate_reply(
        content, model, lambda cid: image_task(data, cid, server_round, settings, device, normalize, train=False),
        failed=lambda cid: simulate_faults(settings, server_round, cid, EVALUATE_TASK), defaults=settings.rule_config(),
    )
