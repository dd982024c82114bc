"""Flower strategies with the harness's own client sampling and a fixed aggregation order.

Each class here is a `flwr.serverapp.strategy` strategy plus `VirtualClients`, which
replaces Flower's node sampling: the strategy still builds its message content (so a
strategy's own config entries, such as FedProx's `proximal-mu`, reach the clients), and
the mixin addresses one copy per pack of virtual clients to a fixed supernode, adds the
pack's client ids, and sorts replies by pack before the strategy aggregates them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from sim.federation.sampling import RoundPlanner

NODE_WAIT_S = 30.0  # longest wait for Flower to register the supernodes a round needs

log = logging.getLogger(__name__)
COUNT_KEYS = ("clients", "failures")  # reply metrics that are summed, not averaged


class RoundObserver(Protocol):
    """Receives what each round's replies say (the history writer implements it)."""

    def record_train(self, server_round: int, clients: int, failures: int, metrics: MetricRecord | None) -> None: ...

    def record_evaluate(self, server_round: int, clients: int, failures: int, metrics: MetricRecord | None) -> None: ...


def aggregate_reply_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of every reply metric, except counts, which are summed.

    Replies that carry no examples (a client without validation data) add to the counts
    but not to the means.
    """
    metrics = [next(iter(r.metric_records.values())) for r in records]
    total = sum(float(m[weight_key]) for m in metrics)
    result = MetricRecord()
    for key in COUNT_KEYS:
        result[key] = int(sum(int(m.get(key, 0)) for m in metrics))
    result[weight_key] = int(total)
    if total <= 0:
        return result
    for m in metrics:
        share = float(m[weight_key]) / total
        for key, value in m.items():
            if key in COUNT_KEYS or key == weight_key or isinstance(value, list):
                continue
            result[key] = float(result.get(key, 0.0)) + float(value) * share
    return result


class VirtualClients:
    """Mixin for a `flwr.serverapp.strategy` class: the harness's sampling and ordering.

    Keyword arguments: `planner` (a `RoundPlanner`), `observer` (a `RoundObserver`),
    `packable` (read from the strategy config; the planner already applies it). The
    rest go to the Flower strategy.
    """

    def __init__(self, *, planner: RoundPlanner, observer: RoundObserver, packable: bool = True, **kwargs: Any):
        kwargs.setdefault("train_metrics_aggr_fn", aggregate_reply_metrics)
        kwargs.setdefault("evaluate_metrics_aggr_fn", aggregate_reply_metrics)
        kwargs.setdefault("min_available_nodes", 1)
        kwargs.setdefault("min_train_nodes", 1)
        kwargs.setdefault("min_evaluate_nodes", 1 if planner.eval_clients_per_round else 0)
        kwargs.setdefault("fraction_evaluate", 1.0 if planner.eval_clients_per_round else 0.0)
        super().__init__(**kwargs)
        self.planner = planner
        self.observer = observer
        self.packable = packable
        self._pack_of_node: dict[int, list[int]] = {}
        self._rank_of_node: dict[int, int] = {}  # node -> its pack's place in the planner's order

    def reply_order(self, msg: Message) -> tuple[int, int]:
        """Sort key of a reply: its pack's place in the round's plan, then its node.

        Aggregates are float sums, so their order is part of the result. Simulated supernodes
        are numbered in pack order; a deployment's SuperNodes get random ids from the SuperLink,
        so their ids alone would give another order, and other numbers, on every run.
        """
        node = msg.metadata.src_node_id
        return self._rank_of_node.get(node, len(self._rank_of_node)), node

    def _address(self, template: list[Message], packs: list[list[int]], grid: Grid) -> list[Message]:
        """One copy of the strategy's message content per pack, to supernodes in id order."""
        self._pack_of_node = {}
        self._rank_of_node = {}
        if not template or not packs:
            return []
        nodes = sorted(grid.get_node_ids())
        node_of_client = getattr(self, "node_of_client", None)  # a deployment: each client is one SuperNode
        if node_of_client is not None:  # a client whose node is gone is lost at once (a failure), never awaited
            connected = set(nodes)
            nodes = [node_of_client.get(p[0], -1 - i) for i, p in enumerate(packs)]
            nodes = [n if n in connected else -1 - i for i, n in enumerate(nodes)]
        else:
            deadline = time.monotonic() + NODE_WAIT_S  # Flower registers the supernodes after the ServerApp
            while len(nodes) < len(packs) and time.monotonic() < deadline:  # starts: a resumed run (no round 0)
                time.sleep(0.01)  # can reach round 1 first
                nodes = sorted(grid.get_node_ids())
        if len(packs) > len(nodes):
            raise RuntimeError(f"{len(packs)} packs of clients but only {len(nodes)} supernodes")
        content, kind = template[0].content, template[0].metadata.message_type
        messages = []
        for rank, (node, pack) in enumerate(zip(nodes, packs)):
            self._rank_of_node[node] = rank
            if node < 0:
                self._pack_of_node[node] = pack
                continue
            config = ConfigRecord(dict(content[self.configrecord_key]))
            config["cids"] = pack
            records = {key: value for key, value in content.items() if key != self.configrecord_key}
            records[self.configrecord_key] = config
            messages.append(Message(RecordDict(records), dst_node_id=node, message_type=kind))
            self._pack_of_node[node] = pack
        return messages

    def _sorted_replies(self, replies: Iterable[Message]) -> tuple[list[Message], int, int]:
        """Replies in pack order (`reply_order`), plus client and failure counts."""
        ordered = sorted(replies, key=self.reply_order)
        deployment = getattr(self, "node_of_client", None) is not None  # say which SuperNode failed and why
        clients = failures = 0
        unsigned = ""  # the reason of an error reply that names no node of ours (the SuperLink's own, for a gone node)
        for msg in ordered:
            pack = self._pack_of_node.get(msg.metadata.src_node_id)
            if msg.has_error():
                reason = msg.error.reason.strip().splitlines()[-1] if msg.error.reason else str(msg.error.code)
                if pack is None:
                    unsigned = reason
                    continue
                clients += len(pack)
                failures += len(pack)
                if deployment:
                    log.warning("clients %s on SuperNode %d failed: %s", pack, msg.metadata.src_node_id, reason)
            else:
                metrics = next(iter(msg.content.metric_records.values()))
                clients += int(metrics.get("clients", len(pack or [])))
                failures += int(metrics.get("failures", 0))
        answered = {m.metadata.src_node_id for m in ordered}
        lost = 0
        for node, pack in self._pack_of_node.items():
            if node not in answered:
                lost += len(pack)
                if deployment and node < 0:
                    log.warning("clients %s failed: no SuperNode serves them (not joined, refused or gone)", pack)
                elif deployment:
                    log.warning("clients %s on SuperNode %d failed: %s", pack, node, unsigned or "no reply")
        return ordered, clients + lost, failures + lost

    # Flower counts rounds from 1 in every process; a resumed run adds the rounds already done.

    def configure_train(self, server_round: int, arrays, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        server_round += self.planner.round_offset
        template = list(super().configure_train(server_round, arrays, config, grid))
        return self._address(template, self.planner.train_packs(server_round), grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        server_round += self.planner.round_offset
        ordered, clients, failures = self._sorted_replies(replies)
        arrays = metrics = None
        if clients - failures >= max(1, self.min_train_nodes):
            arrays, metrics = super().aggregate_train(server_round, ordered)
        else:  # too few replies: the global model stays as it was
            log.warning(
                "round %d: %d of %d clients replied, fewer than min_train_nodes=%d; model unchanged",
                server_round, clients - failures, clients, self.min_train_nodes,
            )
        self.observer.record_train(server_round, clients, failures, metrics)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        server_round += self.planner.round_offset
        packs = self.planner.evaluate_packs(server_round)
        if not packs:
            self._pack_of_node, self._rank_of_node = {}, {}
            return []
        template = list(super().configure_evaluate(server_round, arrays, config, grid))
        return self._address(template, packs, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        server_round += self.planner.round_offset
        ordered, clients, failures = self._sorted_replies(replies)
        metrics = super().aggregate_evaluate(server_round, ordered) if ordered else None
        self.observer.record_evaluate(server_round, clients, failures, metrics)
        return metrics


class FedAvg(VirtualClients, flwr_strategy.FedAvg):
    """FedAvg with the harness's client sampling."""


class FedProx(VirtualClients, flwr_strategy.FedProx):
    """FedProx: FedAvg whose clients add (mu/2)·||w - w_global||² to their loss."""


class FedAvgM(VirtualClients, flwr_strategy.FedAvgM):
    """FedAvg with server-side momentum."""


class FedAdam(VirtualClients, flwr_strategy.FedAdam):
    """Adaptive server optimiser: Adam on the aggregated update."""


class FedYogi(VirtualClients, flwr_strategy.FedYogi):
    """Adaptive server optimiser: Yogi on the aggregated update."""


class FedAdagrad(VirtualClients, flwr_strategy.FedAdagrad):
    """Adaptive server optimiser: Adagrad on the aggregated update."""


class FedMedian(VirtualClients, flwr_strategy.FedMedian):
    """Coordinate-wise median of the client models."""


class FedTrimmedAvg(VirtualClients, flwr_strategy.FedTrimmedAvg):
    """Coordinate-wise mean after trimming the `beta` fraction at both ends."""


class Krum(VirtualClients, flwr_strategy.Krum):
    """The single client model closest to its neighbours (Byzantine-robust)."""


class MultiKrum(VirtualClients, flwr_strategy.MultiKrum):
    """The mean of the `num_nodes_to_select` models Krum scores best."""


class Bulyan(VirtualClients, flwr_strategy.Bulyan):
    """Multi-Krum selection followed by a trimmed mean (Byzantine-robust)."""


class QFedAvg(VirtualClients, flwr_strategy.QFedAvg):
    """q-FFL: updates weighted towards clients with higher loss (fairness)."""


class WrapsVirtualClients:
    """Mixin for a Flower strategy wrapper (the DP ones): builds the wrapped strategy.

    `strategy` is a Hydra partial of the wrapped strategy (any class of this module); it
    is completed here with the run-time `planner` and `observer`.
    """

    def __init__(self, *, strategy, planner: RoundPlanner, observer: RoundObserver, packable: bool = False, **kwargs: Any):
        super().__init__(strategy(planner=planner, observer=observer), **kwargs)


class DPServerSideFixedClipping(WrapsVirtualClients, flwr_strategy.DifferentialPrivacyServerSideFixedClipping):
    """Central DP: the server clips each client's update to a fixed norm and adds noise."""


class DPServerSideAdaptiveClipping(WrapsVirtualClients, flwr_strategy.DifferentialPrivacyServerSideAdaptiveClipping):
    """Central DP with a clipping norm adapted each round towards a target quantile."""
