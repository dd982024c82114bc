"""Local training and evaluation straight from uint8 image arrays.

No DataLoader, no PIL, no per-sample transforms: a client gathers its examples once per
task as one uint8 tensor (on the GPU when it has one), and each mini-batch is converted
to float and normalised on the fly. The same functions serve the Flower clients, the
server's central evaluation and the plain-PyTorch reference loop.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.sgd import sgd


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one client's local training."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0  # FedProx: weight of (mu/2)·||w - w_global||²; 0 is plain SGD
    amp: bool = False  # bfloat16 autocast for forward and loss (CUDA only; ignored on the CPU)


class Normalizer:
    """Turns uint8 NHWC batches into normalised float NCHW batches on one device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) uint8 -> (B, C, H, W) float32, (x/255 - mean) / std.

        The result keeps the NHWC layout in memory (PyTorch's channels-last format),
        which the CPU and GPU convolutions run faster on than a contiguous NCHW copy.
        """
        return torch.addcmul(self.shift, images.permute(0, 3, 1, 2).float(), self.scale)


class SGD:
    """`torch.optim.SGD`'s update without the `Optimizer` class.

    `step` calls `torch.optim.sgd.sgd`, the function `torch.optim.SGD.step` itself calls,
    with the same arguments, so the weights are the same bit for bit. The interface a
    client rule uses is torch's: `zero_grad()`, `step()`, `state[p]["momentum_buffer"]` and
    one entry in `param_groups` (its `lr`, `momentum` and `weight_decay` may be changed).
    The class is avoided because every `torch.optim.Optimizer` imports `torch._dynamo` on
    first use: 1.8 s of CPU measured here, paid by every Ray actor of a run and, on a
    SuperNode, by the process Flower starts for every message.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.param_groups = [{"params": list(params), "lr": float(lr), "momentum": float(momentum),
                              "weight_decay": float(weight_decay)}]
        self.state: defaultdict[torch.Tensor, dict] = defaultdict(dict)  # parameter -> {"momentum_buffer": ...}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (by setting them to None, torch.optim's default)."""
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One SGD step over the parameters that have a gradient (torch.optim.SGD skips the others)."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        momentum = group["momentum"]
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        sgd(params, grads, buffers, has_sparse_grad=any(g.is_sparse for g in grads),
            weight_decay=group["weight_decay"], momentum=momentum, lr=group["lr"],
            dampening=0.0, nesterov=False, maximize=False)
        for p, buffer in zip(params, buffers):
            self.state[p]["momentum_buffer"] = buffer


def gather(images: np.ndarray, labels: np.ndarray, selection, device: torch.device):
    """Copy the selected examples (an index array or a slice) to `device` as tensors.

    Images stay uint8 (a quarter of float32's bytes); labels become int64.
    """
    if not isinstance(selection, slice):
        selection = np.asarray(selection, dtype=np.int64)
    x = np.array(images[selection], dtype=np.uint8, copy=True, order="C")
    y = np.array(labels[selection], dtype=np.int64, copy=True)
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    normalize: Normalizer,
    seed: int,
) -> float:
    """Train `model` in place with SGD on (x, y); return the example-weighted mean loss.

    The batch order comes from a generator seeded with `seed`, so the same seed, data
    and starting weights give the same result on the CPU.
    """
    n = int(y.shape[0])
    if n == 0:
        raise ValueError("cannot train on an empty partition")
    model.train()
    optimizer = SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    anchor = None
    if settings.proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(seed)
    use_amp = settings.amp and y.device.type == "cuda"
    loss_sum = torch.zeros((), dtype=torch.float64, device=y.device)
    seen = 0
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator).to(y.device)
        for start in range(0, n, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            with torch.autocast(device_type=y.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(normalize(x[batch]))
                loss = F.cross_entropy(logits, y[batch])
            objective = loss
            if anchor is not None:
                drift = sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor))
                objective = loss + 0.5 * settings.proximal_mu * drift
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(batch)
            seen += len(batch)
    return float(loss_sum) / seen


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray | None,
    batch_size: int,
    normalize: Normalizer,
    device: torch.device,
) -> tuple[float, float, int]:
    """Mean cross-entropy loss, accuracy and example count of `model` on a subset.

    `indices=None` means every example. Batches are gathered one at a time, so the
    full test set is never copied as floats.
    """
    model.eval()
    total = len(labels) if indices is None else len(indices)
    if total == 0:
        return 0.0, 0.0, 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        chunk = slice(start, stop) if indices is None else indices[start:stop]
        xb, yb = gather(images, labels, chunk, device)
        logits = model(normalize(xb))
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(dim=1) == yb).sum()
    return float(loss_sum) / total, int(correct) / total, total


def add_weighted(into: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], n: int) -> None:
    """Add `n * tensors[key]` to `into[key]` in float64, in place (a key's first call allocates).

    A float32 value times an example count is exact in float64, so each sum is bit for bit
    `into[key] + tensors[key].double() * n`, without that expression's two temporaries per
    tensor (for a ResNet-18, ~45 ms less per client here).
    """
    for key, value in tensors.items():
        if key in into:
            into[key].add_(value.detach(), alpha=n)
        else:
            into[key] = value.detach().to(torch.float64, copy=True).mul_(n)


def task_seed(seed: int, server_round: int, client_id: int) -> int:
    """A 63-bit seed for one client's task in one round, derived from the run's seed."""
    state = np.random.SeedSequence([seed, server_round, client_id]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))
