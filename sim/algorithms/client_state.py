"""Per-virtual-client state that survives rounds, packing, workers, checkpoints and resume.

The server owns it: a strategy reads the state of each client it samples, ships it in
that client's message (`state.<cid>`), and stores what the reply brings back. So the
state never depends on which Ray worker (or node) a client lands on, and a client whose
task fails simply keeps its previous state.

`ClientStateStore` keeps states in memory up to `memory_mb` (least recently used first
out) and spills the rest to `<run dir>/client_state/<cid>.<round>.npy`. A client that
never trained has no entry and costs nothing; every operation touches only the clients
named, so a round's cost follows the clients sampled, never `num_clients`.

Resume: pickling the store (which a checkpoint does) commits it: every state still only
in memory is written, and the round is recorded. A file carries the round its state was
made in, and the newest committed file of a client is kept until a newer checkpoint is
on disk (`checkpoint_saved`, called by `sim.run.checkpoint` after the rename): a run
stopped (Ctrl-C, SIGKILL) between a commit and that rename still finds every file its
previous checkpoint names. A run resumed from round R prunes the files made after R and
finds each client exactly as it was after round R.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
State = dict[str, np.ndarray]


def state_bytes(state: State) -> int:
    """Bytes held by one client's arrays."""
    return sum(int(v.nbytes) for v in state.values())


class ClientStateStore:
    """Each virtual client's arrays, keyed by client id; bounded memory, spilled to disk."""

    def __init__(self, directory: Path, memory_mb: float = 256.0, fresh: bool = True):
        self.directory = Path(directory)
        if fresh and self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_bytes = int(memory_mb * 2**20)
        self.committed = -1  # last round whose states are all on disk
        self.round = -1  # newest round a state was stored for
        self._disk: dict[int, list[int]] = {}  # cid -> rounds of its files, ascending
        self._cache: OrderedDict[int, tuple[int, State, bool]] = OrderedDict()  # cid -> (round, state, dirty)
        self._cached_bytes = 0
        self._written: set[int] = set()  # clients given a file since the last commit
        self._dirty: set[int] = set()  # clients whose newest state is only in memory
        self._superseded: list[Path] = []  # files of older commits, deleted once a newer checkpoint is saved

    # ---- reading and writing states -------------------------------------------------

    def __contains__(self, cid: int) -> bool:
        return int(cid) in self._cache or int(cid) in self._disk

    def get(self, cid: int) -> State | None:
        """The client's newest state, or None when it has none (it never trained)."""
        cid = int(cid)
        if cid in self._cache:
            self._cache.move_to_end(cid)
            return self._cache[cid][1]
        rounds = self._disk.get(cid)
        if not rounds:
            return None
        state = self._read(cid, rounds[-1])
        self._remember(cid, rounds[-1], state, dirty=False)
        return state

    def put(self, cid: int, server_round: int, state: State) -> None:
        """Store the state a client produced in `server_round` (it replaces the previous one)."""
        cid = int(cid)
        state = {k: np.ascontiguousarray(v) for k, v in state.items()}
        self.round = max(self.round, int(server_round))
        self._remember(cid, int(server_round), state, dirty=True)

    def __len__(self) -> int:
        return len(set(self._cache) | set(self._disk))

    @property
    def cached_bytes(self) -> int:
        """Bytes of state held in memory now."""
        return self._cached_bytes

    # ---- checkpoints -----------------------------------------------------------------

    def commit(self) -> None:
        """Write every state held only in memory; the versions it supersedes go at `checkpoint_saved`."""
        for cid in self._dirty:  # the clients stored since the last commit, not every cached one
            made, state, _ = self._cache[cid]
            self._write(cid, made, state)
            self._cache[cid] = (made, state, False)
        self._dirty = set()
        for cid in self._written:
            rounds = self._disk[cid]
            self._superseded += [self._path(cid, old) for old in rounds[:-1]]
            del rounds[:-1]
        self._written = set()
        self.committed = self.round

    def checkpoint_saved(self) -> None:
        """The checkpoint holding the last commit is on disk: delete the files that commit superseded."""
        for path in self._superseded:
            path.unlink(missing_ok=True)
        self._superseded = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (a checkpoint) commits: the pickle holds the index, the files the arrays."""
        self.commit()
        return {
            "directory": str(self.directory), "memory_bytes": self.memory_bytes,
            "committed": self.committed, "disk": {c: list(r) for c, r in self._disk.items()},
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        self.directory = Path(saved["directory"])
        self.memory_bytes = saved["memory_bytes"]
        self.committed = self.round = saved["committed"]
        self._disk = {int(c): list(r) for c, r in saved["disk"].items()}
        self._cache, self._cached_bytes, self._written, self._dirty = OrderedDict(), 0, set(), set()
        self._superseded = []
        self._prune_after(self.committed)

    def _prune_after(self, last_round: int) -> None:
        """Delete files made after `last_round` (an interrupted run's), keep one per client."""
        if not self.directory.is_dir():
            return
        for entry in os.scandir(self.directory):
            cid, made = _parse(entry.name)
            if cid is None or made > last_round or made not in self._disk.get(cid, ()):
                os.unlink(entry.path)

    # ---- internals -------------------------------------------------------------------

    def _remember(self, cid: int, made: int, state: State, dirty: bool) -> None:
        old = self._cache.pop(cid, None)
        if old is not None:
            self._cached_bytes -= state_bytes(old[1])
        self._cache[cid] = (made, state, dirty)
        self._cached_bytes += state_bytes(state)
        if dirty:
            self._dirty.add(cid)
        while self._cached_bytes > self.memory_bytes and len(self._cache) > 1:
            out, (out_round, out_state, out_dirty) = self._cache.popitem(last=False)
            self._cached_bytes -= state_bytes(out_state)
            if out_dirty:
                self._write(out, out_round, out_state)
                self._dirty.discard(out)

    def _path(self, cid: int, made: int) -> Path:
        return self.directory / f"{cid}.{made}.npz"

    def _write(self, cid: int, made: int, state: State) -> None:
        """Write a state file; drop this client's files that are neither committed nor newest."""
        path = self._path(cid, made)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **state)
        os.replace(tmp, path)
        rounds = [r for r in self._disk.get(cid, []) if r != made]
        keep = [r for r in rounds if r <= self.committed][-1:]  # the committed version resume needs
        for r in rounds:
            if r not in keep:
                self._path(cid, r).unlink(missing_ok=True)
        self._disk[cid] = keep + [made]
        self._written.add(cid)

    def _read(self, cid: int, made: int) -> State:
        with np.load(self._path(cid, made)) as files:
            return {k: files[k] for k in files.files}


def _parse(name: str) -> tuple[int | None, int]:
    """(client id, round) of a state file name `<cid>.<round>.npz`; (None, 0) for anything else."""
    parts = name.split(".")
    if len(parts) != 3 or parts[2] != "npz" or not parts[0].isdigit() or not parts[1].lstrip("-").isdigit():
        return None, 0
    return int(parts[0]), int(parts[1])
