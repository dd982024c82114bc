"""Differential privacy with accounting: Flower's DP wrappers, Flower's RDP accountant.

The fixed-clipping wrappers (server-side, and client-side with Flower's
`fixedclipping_mod` on the ClientApp) take `target_delta` and an optional `max_epsilon`.
Flower's `RdpAccountant` (`flwr.serverapp.RdpAccountant`, backed by Google's
`dp-accounting`, installed by `flwr[dp]`) composes one Gaussian release per aggregated
round; the epsilon spent so far at `target_delta` goes into `history.csv` (`epsilon`).
When the next round would exceed `max_epsilon` Flower refuses it; the run then stops
with one line and keeps everything done so far.

Flower's accounting assumes what its fixed-clipping FedAvg does: every sampled client's
clipped update counts equally (sensitivity clipping_norm / clients), all sampled clients
reply (a round with a failure is skipped and costs nothing), and no amplification by
sampling is claimed. The wrapped FedAvg therefore weighs replies by `clients` (one per
message) instead of examples. Flower checks the wrapped class to be FedAvg itself; the
harness's FedAvg (`sim.federation.strategy.FedAvg`) sorts replies first and then runs Flower's
`FedAvg.aggregate_train`, so that check is done here (`_require_uniform_fedavg`) instead.
Adaptive clipping has no accountant in Flower 1.42: those wrappers report no epsilon.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.serverapp import NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.exception import PrivacyBudgetExhausted

from sim.errors import RunStopped
from sim.federation.strategy import FedAvg, WrapsVirtualClients

log = logging.getLogger(__name__)


def rdp_accountant(target_delta: float, population_size: int, max_epsilon: float | None):
    """Flower's RDP accountant for client-level DP over `population_size` clients, no amplification."""
    from flwr.serverapp import RdpAccountant

    return RdpAccountant(PrivacyConfig(
        target_delta=float(target_delta), population_size=int(population_size),
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE, sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=None if max_epsilon is None else float(max_epsilon),
    ))


class Accounted(WrapsVirtualClients):
    """Mixin for Flower's fixed-clipping DP wrappers: an RDP accountant, epsilon per round, a budget."""

    history_columns = ("epsilon",)

    def __init__(self, *, target_delta: float = 1e-5, max_epsilon: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)  # Flower's class identity check skipped: see the module docstring
        inner = self.strategy
        _require_uniform_fedavg(inner)
        self.accountant = rdp_accountant(target_delta, inner.planner.num_clients, max_epsilon)
        self.privacy_ledger: dict | None = None  # the accountant's state, kept in checkpoints

    def prepare_run(self, run_dir: Path) -> None:
        """Called once built (and restored from a checkpoint): the ledger back into the accountant."""
        if self.privacy_ledger:
            self.accountant.load_state_dict(self.privacy_ledger)

    def configure_train(self, server_round, arrays, config, grid):
        try:
            return super().configure_train(server_round, arrays, config, grid)
        except PrivacyBudgetExhausted:
            spent = self.accountant.get_privacy_spent()
            done = server_round - 1 + self.strategy.planner.round_offset
            raise RunStopped(
                f"privacy budget reached: another round would exceed max_epsilon={self.accountant.config.max_epsilon} "
                f"(epsilon={spent.epsilon:.4f} at delta={spent.delta:g} after round {done}); stopping, "
                f"history.csv keeps rounds 0..{done}"
            ) from None

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.privacy_ledger = self.accountant.state_dict()
        spent = self.accountant.get_privacy_spent()
        self.strategy.observer.record_extra({"epsilon": spent.epsilon})
        return arrays, metrics


def _require_uniform_fedavg(strategy) -> None:
    """Flower's accounting precondition, for the harness's FedAvg: uniform weights, FedAvg aggregation."""
    if type(strategy) is not FedAvg or strategy.weighted_by_key != "clients":
        raise ValueError(
            "privacy accounting needs strategy.strategy._target_=sim.federation.strategy.FedAvg with "
            "strategy.strategy.weighted_by_key=clients (every client's update counts equally)"
        )


class AccountedDPServerSideFixedClipping(Accounted, flwr_strategy.DifferentialPrivacyServerSideFixedClipping):
    """Central DP, server-side fixed clipping, with epsilon per round (Flower's RDP accountant)."""


class AccountedDPClientSideFixedClipping(Accounted, flwr_strategy.DifferentialPrivacyClientSideFixedClipping):
    """Central DP, clipping on the clients (Flower's `fixedclipping_mod`), with epsilon per round."""

    client_mods = (fixedclipping_mod,)


class DPClientSideAdaptiveClipping(WrapsVirtualClients, flwr_strategy.DifferentialPrivacyClientSideAdaptiveClipping):
    """Central DP, adaptive clipping on the clients (Flower's `adaptiveclipping_mod`); no accountant in Flower."""

    client_mods = (adaptiveclipping_mod,)
