"""Ditto (Li et al., 2021): a personal model per client, pulled towards the global one.

Each round a sampled client (1) trains the global model with plain local SGD, which the
server averages as in FedAvg, and (2) trains its personal model v_i (its state; the
global model before its first round) for the same local epochs on

    L_i(v) + (λ/2)·||v - w_global||²

Federated evaluation scores both on each client's validation data: the global model
(`fed_eval_*`) and the personal ones (`personal_eval_loss`, `personal_eval_acc`). Small
λ lets personal models fit their own data; λ -> ∞ gives back the global model.
"""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord

from sim.algorithms.base import Algorithm
from sim.algorithms.rule import ClientResult, ClientRule, LocalTask, Tensors, detached, local_sgd, parameters

PERSONAL_COLUMNS = ("personal_eval_loss", "personal_eval_acc")


class DittoRule(ClientRule):
    """Global local SGD, then the personal model's proximal local SGD."""

    personalised = True

    def __init__(self, config: ConfigRecord):
        super().__init__(config)
        self.lam = float(config["ditto-lambda"])

    def train(self, model, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        global_weights = detached(model)
        loss, _ = local_sgd(model, task, self.optimizer(model))
        trained = detached(model)
        model.load_state_dict(state if state is not None else global_weights)
        params = parameters(model)

        def pull() -> None:
            with torch.no_grad():
                for k, p in params.items():
                    if p.grad is not None:
                        p.grad.add_(self.lam * (p - global_weights[k]))

        local_sgd(model, task, self.optimizer(model), adjust=pull)
        return ClientResult(weights=trained, loss=loss, state=detached(model))

    def personal_model(self, model, state: Tensors | None):
        if state is not None:
            model.load_state_dict(state)
        return model


class Ditto(Algorithm):
    """Ditto's server is FedAvg's; the personal models live in the client state."""

    client_rule = "sim.algorithms.ditto.DittoRule"
    history_columns = PERSONAL_COLUMNS
    personalised = True

    def __init__(self, *, ditto_lambda: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.ditto_lambda = float(ditto_lambda)

    def rule_config(self):
        return {"ditto-lambda": self.ditto_lambda}
