"""ClientStateStore: lazy, bounded in memory, spilled to disk, committed by checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sim.algorithms.client_state import ClientStateStore, as_state, state_bytes


def state(value: float, size: int = 1000) -> dict[str, np.ndarray]:
    return {"w": np.full(size, value, dtype=np.float32)}  # 4 kB


ONE = state_bytes(as_state(state(0)))  # one state as the store holds it: 4 kB of values and a .npy header


def test_a_client_that_never_trained_costs_nothing(tmp_path):
    store = ClientStateStore(tmp_path / "s", memory_mb=1)
    assert store.get(7) is None and 7 not in store and len(store) == 0
    assert list((tmp_path / "s").iterdir()) == []


def test_memory_stays_bounded_and_dropped_states_come_back_from_disk(tmp_path):
    store = ClientStateStore(tmp_path / "s", memory_mb=5 * ONE / 2**20)  # room for 5 states
    for cid in range(50):
        store.put(cid, 1, state(cid))
        assert store.cached_bytes <= 5 * ONE
    assert len(store) == 50
    store.flush()
    assert len(list((tmp_path / "s").glob("*.npz"))) == 50  # every state is written behind
    for cid in (0, 23, 49):
        np.testing.assert_array_equal(store.get(cid)["w"].numpy(), state(cid)["w"])


def test_a_checkpoint_commits_and_resume_drops_later_rounds(tmp_path):
    store = ClientStateStore(tmp_path / "s", memory_mb=2 * ONE / 2**20)  # 2 states in memory
    for cid in range(4):
        store.put(cid, 1, state(10 + cid))
    saved = pickle.dumps(store)  # a checkpoint after round 1
    for cid in range(4):
        store.put(cid, 2, state(20 + cid))  # round 2, partly spilled, then the run is killed
    store.put(9, 2, state(99))
    store.flush()
    assert any(".2.npz" in p.name for p in (tmp_path / "s").iterdir())
    resumed = pickle.loads(saved)
    assert [float(resumed.get(cid)["w"].numpy()[0]) for cid in range(4)] == [10, 11, 12, 13]
    assert resumed.get(9) is None  # made after the checkpoint
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"{c}.1.npz" for c in range(4)]


def test_commit_keeps_one_file_per_client(tmp_path):
    store = ClientStateStore(tmp_path / "s", memory_mb=0)  # everything spills at once
    for r in range(1, 6):
        store.put(3, r, state(r))
        if r % 2 == 0:
            store.commit()
            store.checkpoint_saved()
    store.commit()
    store.checkpoint_saved()
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["3.5.npz"]
    assert float(store.get(3)["w"].numpy()[0]) == 5


def test_a_run_stopped_between_commit_and_checkpoint_resumes_from_the_previous_one(tmp_path):
    """Ctrl-C or SIGKILL after the store committed round 2 but before that checkpoint replaced round 1's."""
    store = ClientStateStore(tmp_path / "s", memory_mb=1)
    for cid in range(3):
        store.put(cid, 1, state(10 + cid))
    saved = pickle.dumps(store)  # the checkpoint after round 1 ...
    store.checkpoint_saved()  # ... is on disk
    for cid in range(3):
        store.put(cid, 2, state(20 + cid))
    pickle.dumps(store)  # round 2's checkpoint commits the store, then the run stops before its rename
    resumed = pickle.loads(saved)
    assert [float(resumed.get(cid)["w"].numpy()[0]) for cid in range(3)] == [10, 11, 12]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"{c}.1.npz" for c in range(3)]


def test_a_write_that_failed_is_raised_by_the_next_commit(tmp_path):
    """States are written behind; a checkpoint must not record a state whose file never reached the disk."""
    store = ClientStateStore(tmp_path / "s", memory_mb=1)
    store.flush()
    (tmp_path / "s").rmdir()  # the next write has nowhere to go
    store.put(1, 1, state(1))
    with pytest.raises(FileNotFoundError):
        pickle.dumps(store)  # a checkpoint commits
