"""Local training's SGD: torch.optim.SGD's numbers bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from sim.federation.training import SGD, add_weighted


def _train(make_optimizer, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    unused = nn.Parameter(torch.ones(2))  # never gets a gradient: SGD must leave it (and its buffer) alone
    optimizer = make_optimizer([*model.parameters(), unused])
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        batch = slice(4 * (step % 4), 4 * (step % 4) + 4)
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return [p.detach().clone() for p in [*model.parameters(), unused]]


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-3)])
def test_sgd_equals_torch_optim_sgd_bit_for_bit(momentum, weight_decay):
    ours = _train(lambda params: SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay))
    theirs = _train(lambda params: torch.optim.SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(ours[-1], torch.ones(2))


TRAIN_ONCE = """
import sys, numpy as np, torch
from torch import nn
from sim.federation.training import Normalizer, TrainSettings, train_local
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
x = torch.randint(0, 255, (8, 4, 4, 3), dtype=torch.uint8)
y = torch.randint(0, 10, (8,))
train_local(model, x, y, TrainSettings(epochs=1, batch_size=4, lr=0.1, momentum=0.9),
            Normalizer([0.5] * 3, [0.25] * 3, torch.device("cpu")), seed=0)
print("torch._dynamo" in sys.modules)
"""


def test_local_training_does_not_import_torch_dynamo():
    # every torch.optim.Optimizer imports it on first use: 1.8 s of CPU in each Ray actor and ClientApp process
    done = subprocess.run([sys.executable, "-c", TRAIN_ONCE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_sgd_exposes_torch_optims_state_and_param_groups():
    # client rules written against torch.optim read momentum buffers and change the learning rate
    ours = nn.Linear(3, 2)
    theirs = nn.Linear(3, 2)
    theirs.load_state_dict(ours.state_dict())
    optimizers = [SGD(ours.parameters(), lr=0.1, momentum=0.9),
                  torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)]
    x = torch.randn(4, 3)
    for step in range(3):
        for model, optimizer in zip((ours, theirs), optimizers):
            optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(optimizers[0].state[p]["momentum_buffer"], optimizers[1].state[q]["momentum_buffer"],
                                   rtol=0, atol=0)
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_add_weighted_sums_bit_for_bit_as_float64_products_and_leaves_its_inputs_alone():
    """The in-place sum equals `sum + t.double() * n` exactly, for float32, float64 and integer tensors."""
    generator = torch.Generator().manual_seed(0)
    states = [
        {"w": torch.randn(257, generator=generator), "w64": torch.randn(5, dtype=torch.float64, generator=generator),
         "count": torch.tensor(3 + i)}
        for i in range(4)
    ]
    originals = [{k: v.clone() for k, v in state.items()} for state in states]
    counts = [7, 1, 130, 2048]
    expected: dict[str, torch.Tensor] = {}
    summed: dict[str, torch.Tensor] = {}
    for state, n in zip(states, counts):
        for key, value in state.items():
            contribution = value.double() * n
            expected[key] = expected[key] + contribution if key in expected else contribution
        add_weighted(summed, state, n)
    assert all(summed[k].dtype == torch.float64 and torch.equal(summed[k], expected[k]) for k in expected)
    assert all(torch.equal(s[k], o[k]) for s, o in zip(states, originals) for k in s)  # inputs untouched
