"""FedDyn (Acar et al., 2021): a dynamic regulariser aligns local and global optima.

Client i keeps h_i, the gradient of its local loss at its last model (its state; zero
before its first round), and minimises

    L_i(θ) - <h_i, θ> + (α/2)·||θ - θ_server||²

with local SGD (the gradient correction is -h_i + α(θ - θ_server)); afterwards
h_i <- h_i - α(θ_i - θ_server). The server keeps h <- h - α·Σ_{i∈S}(n_i/n)(θ_i - θ_server),
n being the examples of all clients, and sets θ_server <- θ̄ - h/α, θ̄ the
example-weighted mean of the clients' models. Its fixed point is the optimum of the
example-weighted objective, whatever the number of local steps.

History column: `dyn_norm`, the L2 norm of the server's h after the round.
"""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord

from sim.algorithms.base import Algorithm, Arrays, norm
from sim.algorithms.rule import ClientResult, ClientRule, LocalTask, Tensors, detached, local_sgd, parameters


class FedDynRule(ClientRule):
    """Local SGD on the dynamically regularised loss; updates the client's h_i."""

    def __init__(self, config: ConfigRecord):
        super().__init__(config)
        self.alpha = float(config["feddyn-alpha"])

    def train(self, model, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        params = parameters(model)
        h_i = state or {}
        h_i = {k: h_i.get(k, torch.zeros_like(p)) for k, p in params.items()}
        start = {k: p.detach().clone() for k, p in params.items()}

        def regularise() -> None:
            with torch.no_grad():
                for k, p in params.items():
                    if p.grad is not None:
                        p.grad.add_(self.alpha * (p - start[k]) - h_i[k])

        loss, _ = local_sgd(model, task, self.optimizer(model), adjust=regularise)
        h_new = {k: h_i[k] - self.alpha * (p.detach() - start[k]) for k, p in params.items()}
        return ClientResult(weights=detached(model), loss=loss, state=h_new)


class FedDyn(Algorithm):
    """FedDyn's server: the averaged model corrected by the running h."""

    client_rule = "sim.algorithms.feddyn.FedDynRule"
    history_columns = ("dyn_norm",)

    def __init__(self, *, alpha: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.h: Arrays | None = None  # the server's h; None = zero

    def rule_config(self):
        return {"feddyn-alpha": self.alpha}

    def server_update(self, server_round, averaged, extras, metrics, trained_examples):
        x = self.current
        share = trained_examples / self.total_examples()
        h = self.h or {k: 0.0 for k in x}
        self.h = {k: h[k] - self.alpha * share * (averaged[k] - x[k]) for k in x}
        model = {k: averaged[k] - self.h[k] / self.alpha for k in x}
        return model, {"dyn_norm": norm(self.h)}
