"""FedPer (Arivazhagan et al., 2019): shared base layers, a personal head per client.

The layers named in `personal_layers` (state-dict name prefixes; `fc3` is the CNN's
classifier) form each client's head, kept in its state. A sampled client loads the
global base with its own head (the global head before its first round), trains the
whole model with local SGD, keeps the head and sends the model; the server averages
it as FedAvg does, so the global head is the mean of the heads trained that round and
starts clients that have none yet. Federated evaluation scores the global model
(`fed_eval_*`) and each client's base + own head (`personal_eval_loss`, `personal_eval_acc`).
"""

from __future__ import annotations

from flwr.app import ConfigRecord

from sim.algorithms.base import Algorithm
from sim.algorithms.ditto import PERSONAL_COLUMNS
from sim.algorithms.rule import ClientResult, ClientRule, LocalTask, Tensors, detached, local_sgd


class FedPerRule(ClientRule):
    """Local SGD of base + own head; the head is the client's state."""

    personalised = True

    def __init__(self, config: ConfigRecord):
        super().__init__(config)
        self.prefixes = tuple(str(p) for p in config["personal-layers"])

    def _is_head(self, key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in self.prefixes)

    def personal_model(self, model, state: Tensors | None):
        if state:
            model.load_state_dict({**model.state_dict(), **state})
        return model

    def train(self, model, task: LocalTask, state: Tensors | None, server: dict[str, Tensors]) -> ClientResult:
        self.personal_model(model, state)
        loss, _ = local_sgd(model, task, self.optimizer(model))
        weights = detached(model)
        head = {k: v for k, v in weights.items() if self._is_head(k)}
        if not head:
            raise ValueError(f"strategy.personal_layers={list(self.prefixes)} names no layer of the model "
                             f"(layers: {sorted({k.rsplit('.', 1)[0] for k in weights})})")
        return ClientResult(weights=weights, loss=loss, state=head)


class FedPer(Algorithm):
    """FedPer's server is FedAvg's; the heads live in the client state."""

    client_rule = "sim.algorithms.fedper.FedPerRule"
    history_columns = PERSONAL_COLUMNS
    personalised = True

    def __init__(self, *, personal_layers: list[str] | tuple[str, ...] = ("fc3",), **kwargs):
        super().__init__(**kwargs)
        self.personal_layers = [str(p) for p in personal_layers]

    def rule_config(self):
        return {"personal-layers": self.personal_layers}
