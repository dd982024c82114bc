"""SCAFFOLD (Karimireddy et al., 2020): control variates correct client drift.

Client i keeps a control variate c_i (its state; zero before its first round) and gets
the server's c. Every local step uses the corrected gradient g_i(y) - c_i + c; after K
steps of learning rate lr (option II of the paper)

    c_i+ = c_i - c + (x - y) / (K·lr)

and the client sends y and Δc_i = c_i+ - c_i. The server sets x <- x + lr_g·(ȳ - x) and
c <- c + Σ_{i∈S} (n_i / n)·Δc_i, n being the examples of all clients, so c stays the
example-weighted mean of every client's c_i (the paper's |S|/N·mean with equal sizes).
With momentum 0 (the paper's setting) the fixed point is the optimum of the
example-weighted objective.

History column: `control_norm`, the L2 norm of the server's c after the round.
"""

from __future__ import annotations

import torch

from sim.algorithms.base import Algorithm, Arrays, norm
from sim.algorithms.rule import ClientResult, ClientRule, LocalTask, Tensors, detached, local_sgd, parameters


class ScaffoldRule(ClientRule):
    """Local SGD on the control-corrected gradient; updates the client's control variate."""

    def train(self, model, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        params = parameters(model)
        names, weights = list(params), list(params.values())
        c = [_or_zero(server.get("control"), k, p) for k, p in params.items()]
        c_i = [_or_zero(state, k, p) for k, p in params.items()]
        correction = torch._foreach_sub(c, c_i)  # c - c_i, added to every step's gradient
        start = [p.detach().clone() for p in weights]

        def correct() -> None:
            with_grad = [(p.grad, d) for p, d in zip(weights, correction) if p.grad is not None]
            if with_grad:
                torch._foreach_add_(*map(list, zip(*with_grad)))

        loss, steps = local_sgd(model, task, self.optimizer(model), adjust=correct)
        with torch.no_grad():
            drift = torch._foreach_sub(start, weights)  # x - y
            torch._foreach_mul_(drift, 1.0 / (max(steps, 1) * self.lr))
            c_new = torch._foreach_sub(drift, correction)  # c_i - c + (x - y) / (K·lr)
            delta = torch._foreach_sub(c_new, c_i)
        return ClientResult(weights=detached(model), loss=loss, state=dict(zip(names, c_new)),
                            extras={"control": dict(zip(names, delta))})


def _or_zero(tensors: Tensors | None, name: str, like: torch.Tensor) -> torch.Tensor:
    """`tensors[name]`, or zeros shaped like `like` (a client's first round, the server's first c)."""
    value = tensors.get(name) if tensors else None
    return value if value is not None else torch.zeros_like(like)


class Scaffold(Algorithm):
    """SCAFFOLD's server: the averaged model (times `server_learning_rate`) and the control update."""

    client_rule = "sim.algorithms.scaffold.ScaffoldRule"
    history_columns = ("control_norm",)

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.server_learning_rate = float(server_learning_rate)
        self.control: Arrays | None = None  # c, over the model's parameters; None = zero

    def server_extras(self) -> dict[str, Arrays]:
        return {"control": self.control} if self.control is not None else {}

    def server_update(self, server_round, averaged, extras, metrics, trained_examples):
        x, lr = self.current, self.server_learning_rate
        model = {k: x[k] + lr * (averaged[k] - x[k]) for k in x}
        delta = extras.get("control", {})
        share = trained_examples / self.total_examples()
        control = self.control or {k: 0.0 for k in delta}
        self.control = {k: control[k] + share * delta[k] for k in delta}
        return model, {"control_norm": norm(self.control)}
