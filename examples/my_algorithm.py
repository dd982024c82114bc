"""An algorithm added from outside `sim`: named by `_target_` and config, no change to the package.

    PYTHONPATH=examples python -m sim --config-dir examples/conf strategy=my_algorithm dataset=synthetic

Client rule (`KeepMomentum`): local SGD with gradient-norm clipping whose momentum buffers
persist across rounds, per client (the client state: each sampled client gets its own
buffers back, wherever it runs). Strategy (`ServerStep`): FedAvg with a server step size,
reporting the norm of each round's averaged update as an extra history column.
"""

from __future__ import annotations

import torch

from sim.algorithms.base import Algorithm, norm
from sim.algorithms.rule import ClientResult, ClientRule, detached, local_sgd, parameters


class KeepMomentum(ClientRule):
    """Clipped local SGD; the momentum buffers are the client's state."""

    def __init__(self, config):
        super().__init__(config)
        self.max_norm = float(config["max-grad-norm"])

    def train(self, model, task, state, server):
        params = parameters(model)
        optimizer = self.optimizer(model)
        for key, p in params.items():
            if state is not None and key in state:
                optimizer.state[p]["momentum_buffer"] = state[key].clone()

        loss, _ = local_sgd(model, task, optimizer,
                            adjust=lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm))
        buffers = {k: optimizer.state[p]["momentum_buffer"].detach().clone()
                   for k, p in params.items() if optimizer.state[p].get("momentum_buffer") is not None}
        return ClientResult(weights=detached(model), loss=loss, state=buffers or None)


class ServerStep(Algorithm):
    """FedAvg with a server step size on the averaged update."""

    client_rule = "my_algorithm.KeepMomentum"
    history_columns = ("update_norm",)

    def __init__(self, *, server_lr: float = 1.0, max_grad_norm: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.server_lr, self.max_grad_norm = float(server_lr), float(max_grad_norm)

    def rule_config(self):
        return {"max-grad-norm": self.max_grad_norm}

    def server_update(self, server_round, averaged, extras, metrics, trained_examples):
        x = self.current
        update = {k: averaged[k] - x[k] for k in x}
        return {k: x[k] + self.server_lr * update[k] for k in x}, {"update_norm": norm(update)}
