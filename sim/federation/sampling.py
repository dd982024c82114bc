"""Which virtual clients work in each round, and how they are packed into messages.

Flower's simulated node ids are random per run and its samplers draw from the global
`random` module, so the harness owns the mapping instead: a round's clients are drawn
from a generator seeded by (seed, round, purpose) alone. A draw never depends on earlier
draws, so a resumed run samples exactly what an uninterrupted one would.

Clients are then packed into at most `num_packs` groups (one Flower message each),
balanced by example count. Packing only regroups work: every client still trains from
the same global model with its own seed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

TRAIN, EVALUATE = 0, 1  # the "purpose" word of a round's seed


def sample_clients(num_clients: int, k: int, seed: int, server_round: int, purpose: int) -> np.ndarray:
    """k distinct client ids in [0, num_clients), sorted, from a (seed, round, purpose) generator."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([seed, server_round, purpose])
    return np.sort(rng.choice(num_clients, size=min(k, num_clients), replace=False)).astype(np.int64)


def pack_clients(client_ids: np.ndarray, sizes: np.ndarray, num_packs: int) -> list[list[int]]:
    """Split `client_ids` into <= num_packs lists with near-equal total `sizes`.

    Longest-processing-time-first greedy: the largest client goes to the lightest pack;
    ties break on client id and pack index, so the result is deterministic. Each pack
    lists its clients in ascending id order; empty packs are dropped.
    """
    num_packs = max(1, min(num_packs, len(client_ids)))
    order = sorted(range(len(client_ids)), key=lambda i: (-int(sizes[i]), int(client_ids[i])))
    heap = [(0, p) for p in range(num_packs)]
    packs: list[list[int]] = [[] for _ in range(num_packs)]
    for i in order:
        load, p = heapq.heappop(heap)
        packs[p].append(int(client_ids[i]))
        heapq.heappush(heap, (load + int(sizes[i]), p))
    return [sorted(p) for p in packs if p]


@dataclass(frozen=True)
class RoundPlanner:
    """Seeded plan of each round: which clients train / evaluate, in which packs."""

    num_clients: int
    clients_per_round: int
    eval_clients_per_round: int
    seed: int
    train_sizes: np.ndarray  # examples each client trains on (balances the packs)
    val_sizes: np.ndarray  # examples each client evaluates on
    max_packs: int  # messages per round at most (the number of supernodes)
    packable: bool  # False: one client per message (aggregation is not a weighted mean)
    round_offset: int = 0  # rounds already done before this process (a resumed run)

    def _packs(self, ids: np.ndarray, sizes: np.ndarray) -> list[list[int]]:
        if not self.packable:
            return [[int(c)] for c in ids]
        return pack_clients(ids, sizes[ids], self.max_packs)

    def train_packs(self, server_round: int) -> list[list[int]]:
        """The packs of clients that train in `server_round`."""
        ids = sample_clients(self.num_clients, self.clients_per_round, self.seed, server_round, TRAIN)
        return self._packs(ids, self.train_sizes)

    def evaluate_packs(self, server_round: int) -> list[list[int]]:
        """The packs of clients that run federated evaluation in `server_round`."""
        ids = sample_clients(
            self.num_clients, self.eval_clients_per_round, self.seed, server_round, EVALUATE
        )
        return self._packs(ids, self.val_sizes)


def num_supernodes(clients_per_round: int, eval_clients_per_round: int, concurrency: int, packable: bool) -> int:
    """How many Flower supernodes a run needs: one per message of its busiest round.

    Independent of `num_clients`, so a round costs the same with 5,000 or 50,000 clients.
    """
    if packable:
        return max(1, min(max(clients_per_round, eval_clients_per_round), concurrency))
    return max(1, clients_per_round, eval_clients_per_round)
