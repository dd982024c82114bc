"""Stand-ins for a run's wiring when strategies are driven in-process (no ServerApp, no Ray)."""

from __future__ import annotations


class Observer:
    """Collects what a strategy reports per round (the history writer's role in a run): here its extra columns."""

    def __init__(self):
        self.extra: list[dict] = []

    def record_train(self, *args):
        pass

    def record_evaluate(self, *args):
        pass

    def record_extra(self, values):
        self.extra.append(dict(values))
