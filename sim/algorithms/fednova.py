"""FedNova (Wang et al., 2020): normalised averaging of unequal local work.

Clients run different numbers of local steps τ_i (here: epochs × batches of their own
partition, so sizes differ). Plain FedAvg then weights each client by how far it went
and converges to the optimum of a different, step-weighted objective. A FedNova client
sends its update divided by a_i (τ_i for plain SGD; with momentum ρ,
a_i = [τ_i - ρ(1-ρ^τ_i)/(1-ρ)] / (1-ρ)); the server averages these normalised updates d̄
(example-weighted) and applies x <- x - lr_g·τ_eff·d̄, with τ_eff = Σ p_i a_i. What the
clients optimise together is the example-weighted objective again.

History column: `tau_eff`, the effective number of local steps of the round.
"""

from __future__ import annotations

from sim.algorithms.base import Algorithm
from sim.algorithms.rule import ClientResult, ClientRule, LocalTask, Tensors, detached, local_sgd


def normaliser(steps: int, momentum: float) -> float:
    """a_i: the norm of the accumulated-gradient weights after `steps` SGD steps with momentum."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


class FedNovaRule(ClientRule):
    """Plain local SGD; the reply is the normalised update (start - end) / a_i."""

    def train(self, model, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        start = detached(model)
        loss, steps = local_sgd(model, task, self.optimizer(model))
        a = normaliser(steps, self.momentum)
        end = detached(model)
        update = {k: (start[k] - end[k]) / a if end[k].is_floating_point() else end[k] for k in end}
        return ClientResult(weights=update, loss=loss, metrics={"nova_a": a})


class FedNova(Algorithm):
    """FedNova's server: x <- x - lr_g·τ_eff·(mean normalised update)."""

    client_rule = "sim.algorithms.fednova.FedNovaRule"
    history_columns = ("tau_eff",)

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.server_learning_rate = float(server_learning_rate)

    def server_update(self, server_round, averaged, extras, metrics, trained_examples):
        x, tau_eff = self.current, float(metrics["nova_a"])
        model = {k: x[k] - self.server_learning_rate * tau_eff * averaged[k] for k in x}
        return model, {"tau_eff": tau_eff}
