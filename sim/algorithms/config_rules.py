"""Value rules of the algorithms' (and privacy accounting's) strategy keys, merged into `sim.config.validate.STRATEGY_RULES`.

Kept apart from the algorithms themselves so that validation imports neither torch nor flwr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.config.rules import NON_NEGATIVE, POSITIVE, Choice, Num, error


@dataclass(frozen=True)
class Names:
    """A non-empty list of non-empty strings (layer-name prefixes)."""

    def allowed(self) -> str:
        return "must be a non-empty list of layer names, e.g. [fc3]"

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise error(key, value, "is not allowed", self.allowed())


ALGORITHM_RULES = {
    "alpha": POSITIVE,  # FedDyn
    "ditto_lambda": NON_NEGATIVE,  # Ditto
    "personal_layers": Names(),  # FedPer
    "state_memory_mb": POSITIVE,  # every algorithm with client state
    "target_delta": Num(0, 1, lo_open=True, hi_open=True),  # privacy accounting (sim.federation.privacy)
    "max_epsilon": Num(0, lo_open=True, null=True),
    "weighted_by_key": Choice(("num-examples", "clients")),  # a FedAvg's reply weight
}
