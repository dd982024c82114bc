"""The client side of an algorithm: a training rule applied to each client of a pack.

A `ClientRule` says how one client trains, given the global model, the client's own
state (None before its first round) and the server's extras (SCAFFOLD's control
variate, say). It returns the model the server averages, the client's new state, and
extras the server averages over the round's clients (example-weighted, like the model).

`train_reply` runs a rule over every client of a message and builds the reply; the
ClientApp calls it with tasks made from the client's image partition, the property tests
call it with exactly solvable linear-regression tasks. A rule is named in the message
config (`client-rule`, a dotted class path), so new rules need no change to `sim`.

Reply records: `arrays` (the pack's example-weighted mean model), `metrics` (as for any
strategy, plus the rule's own metrics), `extra.<name>` (example-weighted means) and
`state.<cid>` (each trained client's new state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hydra.utils import get_class
from torch import nn

from sim.federation.client_app import ClientFailure
from sim.federation.training import SGD, add_weighted

Tensors = dict[str, torch.Tensor]
STATE_PREFIX, EXTRA_PREFIX, SERVER_PREFIX = "state.", "extra.", "server."


@dataclass
class LocalTask:
    """One client's local problem: its batches (all epochs, seeded order) and a batch's loss."""

    num_examples: int
    batches: Callable[[], Iterator[object]]
    loss: Callable[[nn.Module, object], torch.Tensor]
    evaluate: Callable[[nn.Module], tuple[float, float, int]] | None = None  # (loss, acc, n) on its validation data


@dataclass
class ClientResult:
    """What one client's training produced."""

    weights: Tensors  # the model the server averages
    loss: float  # mean training loss
    state: Tensors | None = None  # the client's new state (None: keep none)
    extras: Tensors = field(default_factory=dict)  # averaged over the round's clients by the server
    metrics: dict[str, float] = field(default_factory=dict)  # averaged like train_loss


class ClientRule:
    """Plain local SGD (FedAvg's client); subclasses override `train` (and `personal_model`)."""

    personalised = False  # True: federated evaluation also scores each client's personal model

    def __init__(self, config: ConfigRecord):
        self.lr = float(config["lr"])
        self.momentum = float(config.get("momentum", 0.0))
        self.weight_decay = float(config.get("weight-decay", 0.0))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer | SGD:
        """The local optimiser: SGD with the configured momentum and weight decay.

        Any object with `zero_grad()` and `step()` will do (a `torch.optim.Optimizer` too);
        the default is torch's SGD update without the Optimizer class (see `sim.federation.training.SGD`).
        """
        return SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def train(self, model: nn.Module, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        """Train `model` (holding the global weights) on `task`; the default is plain SGD."""
        loss, _ = local_sgd(model, task, self.optimizer(model))
        return ClientResult(weights=detached(model), loss=loss)

    def personal_model(self, model: nn.Module, state: Tensors | None) -> nn.Module | None:
        """Load the client's personal model into `model` (global weights); None: not personalised."""
        return None


def local_sgd(
    model: nn.Module, task: LocalTask, optimizer: torch.optim.Optimizer | SGD,
    adjust: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """Run the task's batches with `optimizer`; `adjust()` may edit the gradients before each step.

    Returns (example-weighted mean loss, number of steps).
    """
    model.train()
    loss_sum, seen, steps = None, 0, 0
    for batch in task.batches():
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if adjust is not None:
            adjust()
        optimizer.step()
        size = batch_size(batch, task.num_examples)
        weighted = loss.detach().double() * size  # summed on the device: no sync per step
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        seen += size
        steps += 1
    return (float(loss_sum) / seen if seen else 0.0), steps


def batch_size(batch: object, default: int) -> int:
    """Examples in a batch (an index tensor), or `default` for a full-batch step."""
    return int(len(batch)) if isinstance(batch, torch.Tensor) else default


def detached(model: nn.Module) -> Tensors:
    """A copy of the model's state dict, detached."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's trainable parameters by state-dict name."""
    return dict(model.named_parameters())


def to_record(tensors: Tensors | dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of CPU float arrays."""
    return ArrayRecord({k: Array(np.ascontiguousarray(to_numpy(v))) for k, v in tensors.items()})


def to_numpy(value) -> np.ndarray:
    """A tensor or array as a NumPy array on the CPU."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def from_record(record: ArrayRecord, device: torch.device) -> Tensors:
    """An ArrayRecord as tensors on `device`."""
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)).to(device) for k, v in record.items()}


def load_rule(config: ConfigRecord, defaults: dict | None = None) -> ClientRule:
    """The rule named by the config's `client-rule`, built from the same config over `defaults`.

    `defaults` are the run's training settings (`ClientSettings.rule_config()`: `lr`,
    `momentum`, `weight-decay`, ...), which the client holds and the messages do not carry.
    """
    if defaults:
        config = ConfigRecord({**defaults, **config})
    return get_class(str(config["client-rule"]))(config)


def records_with_prefix(content: RecordDict, prefix: str, device: torch.device) -> dict[str, Tensors]:
    """Array records whose key starts with `prefix`, by the rest of the key."""
    return {k[len(prefix):]: from_record(v, device) for k, v in content.array_records.items() if k.startswith(prefix)}


def train_reply(
    content: RecordDict,
    model: nn.Module,
    task_for: Callable[[int], LocalTask | None],
    failed: Callable[[int], bool] = lambda cid: False,
    defaults: dict | None = None,
) -> RecordDict:
    """Train every client of the message (`config["cids"]`) with its rule; the reply's records.

    `task_for(cid)` is the client's task (None: it has no examples); `failed(cid)` applies
    the simulated faults. A failed client sends nothing back, so its state stays as it was.
    The rule is built from the message config over `defaults` (`load_rule`).
    Raises when no client of the pack produced anything (the message then fails as a whole).
    """
    config = content["config"]
    rule = load_rule(config, defaults)
    device = next(model.parameters()).device
    start = from_record(content["arrays"], device)
    server = records_with_prefix(content, SERVER_PREFIX, device)
    states = records_with_prefix(content, STATE_PREFIX, device)
    cids = [int(c) for c in config["cids"]]
    reply: dict[str, object] = {}
    sums: dict[str, Tensors] = {"arrays": {}}
    metric_sums: dict[str, float] = {}
    total = failures = 0
    loss_sum = 0.0
    for cid in cids:
        if failed(cid):
            failures += 1
            continue
        task = task_for(cid)
        if task is None or task.num_examples == 0:
            continue
        model.load_state_dict(start)
        result = rule.train(model, task, states.get(str(cid)), server)
        n = task.num_examples
        add_weighted(sums["arrays"], result.weights, n)
        for name, tensors in result.extras.items():
            add_weighted(sums.setdefault(name, {}), tensors, n)
        for key, value in result.metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * n
        if result.state is not None:
            reply[f"{STATE_PREFIX}{cid}"] = to_record(result.state)
        total += n
        loss_sum += result.loss * n
    if failures == len(cids):
        raise ClientFailure(f"simulated failure of every client in {cids}")
    if total == 0:
        raise ValueError(f"clients {cids} have no training examples")
    reply["arrays"] = to_record({k: (v / total).float() for k, v in sums.pop("arrays").items()})
    for name, summed in sums.items():
        reply[f"{EXTRA_PREFIX}{name}"] = to_record({k: (v / total).float() for k, v in summed.items()})
    metrics = {"num-examples": total, "train_loss": loss_sum / total, "clients": len(cids), "failures": failures}
    metrics.update({k: v / total for k, v in metric_sums.items()})
    reply["metrics"] = MetricRecord(metrics)
    return RecordDict(reply)


def evaluate_reply(
    content: RecordDict,
    model: nn.Module,
    task_for: Callable[[int], LocalTask | None],
    failed: Callable[[int], bool] = lambda cid: False,
    defaults: dict | None = None,
) -> MetricRecord:
    """Evaluate the global model, and each client's personal model where the rule has one."""
    config = content["config"]
    rule = load_rule(config, defaults)
    device = next(model.parameters()).device
    start = from_record(content["arrays"], device)
    states = records_with_prefix(content, STATE_PREFIX, device)
    cids = [int(c) for c in config["cids"]]
    totals = {"eval_loss": 0.0, "eval_acc": 0.0, "personal_eval_loss": 0.0, "personal_eval_acc": 0.0}
    total = failures = 0
    for cid in cids:
        if failed(cid):
            failures += 1
            continue
        task = task_for(cid)
        if task is None or task.evaluate is None:
            continue
        model.load_state_dict(start)
        loss, acc, n = task.evaluate(model)
        personal = rule.personal_model(model, states.get(str(cid)))
        p_loss, p_acc, _ = task.evaluate(personal) if personal is not None else (loss, acc, n)
        for key, value in zip(totals, (loss, acc, p_loss, p_acc)):
            totals[key] += value * n
        total += n
    if failures == len(cids):
        raise ClientFailure(f"simulated failure of every client in {cids}")
    denominator = max(total, 1)
    metrics = {"num-examples": total, "clients": len(cids), "failures": failures}
    keys = list(totals) if rule.personalised else list(totals)[:2]
    metrics.update({k: totals[k] / denominator for k in keys})
    return MetricRecord(metrics)
