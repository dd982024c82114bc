"""Seeded client sampling and packing: exact outputs and invariants."""

import numpy as np
import pytest

from sim.federation.sampling import EVALUATE, TRAIN, RoundPlanner, num_supernodes, pack_clients, sample_clients


def test_sample_is_sorted_distinct_and_seeded():
    a = sample_clients(100, 10, seed=0, server_round=1, purpose=TRAIN)
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 10
    assert a.min() >= 0 and a.max() < 100
    np.testing.assert_array_equal(a, sample_clients(100, 10, 0, 1, TRAIN))
    assert not np.array_equal(a, sample_clients(100, 10, 1, 1, TRAIN))
    assert not np.array_equal(a, sample_clients(100, 10, 0, 2, TRAIN))
    assert not np.array_equal(a, sample_clients(100, 10, 0, 1, EVALUATE))


def test_sample_all_and_none():
    assert sample_clients(5, 5, 0, 3, TRAIN).tolist() == [0, 1, 2, 3, 4]
    assert sample_clients(5, 0, 0, 3, TRAIN).tolist() == []


def test_sample_from_fifty_thousand_is_cheap_and_in_range():
    ids = sample_clients(50_000, 50, 7, 1, TRAIN)
    assert len(set(ids.tolist())) == 50 and ids.max() < 50_000


def test_pack_balances_by_size_exactly():
    ids = np.array([3, 5, 8, 9])
    sizes = np.array([10, 1, 7, 4])
    # LPT: 10 -> pack0, 7 -> pack1, 4 -> pack1 (7 < 10), 1 -> pack0 (10 < 11)
    assert pack_clients(ids, sizes, 2) == [[3, 5], [8, 9]]


def test_pack_never_more_packs_than_clients_and_keeps_every_client():
    ids = np.arange(7)
    packs = pack_clients(ids, np.ones(7, dtype=int), 3)
    assert len(packs) == 3 and sorted(c for p in packs for c in p) == list(range(7))
    assert [len(p) for p in packs] == [3, 2, 2]
    assert pack_clients(np.array([4]), np.array([1]), 8) == [[4]]


@pytest.mark.parametrize("packable", [True, False])
def test_planner_packs(packable):
    planner = RoundPlanner(
        num_clients=20, clients_per_round=6, eval_clients_per_round=0, seed=3,
        train_sizes=np.full(20, 10), val_sizes=np.full(20, 1), max_packs=2, packable=packable,
    )
    packs = planner.train_packs(1)
    assert len(packs) == (2 if packable else 6)
    assert sorted(c for p in packs for c in p) == sample_clients(20, 6, 3, 1, TRAIN).tolist()
    assert planner.evaluate_packs(1) == []


def test_supernodes_do_not_grow_with_clients():
    assert num_supernodes(50, 10, concurrency=2, packable=True) == 2
    assert num_supernodes(50, 10, concurrency=2, packable=False) == 50
    assert num_supernodes(1, 0, concurrency=4, packable=True) == 1
