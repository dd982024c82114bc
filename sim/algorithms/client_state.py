"""Per-virtual-client state that survives rounds, packing, workers, checkpoints and resume.

The server owns it: a strategy reads the state of each client it samples, ships it in
that client's message (`state.<cid>`), and stores what the reply brings back. So the
state never depends on which Ray worker (or node) a client lands on, and a client whose
task fails simply keeps its previous state. The server never computes with a client's
state, so the store keeps it as it travels: Flower `Array`s, already serialised (`.npy`
bytes). A round then costs the server no decoding or encoding of the states it relays,
and a state file is those bytes in an `.npz` archive (which `numpy.load` reads).

`ClientStateStore` writes every state it is given to
`<run dir>/client_state/<cid>.<round>.npz` on one background thread, in the order given
(the writes overlap the rest of the round: central evaluation, the next messages), and
keeps the most recently used states in memory up to `memory_mb`. A client that never
trained has no entry and costs nothing; every operation touches only the clients named,
so a round's cost follows the clients sampled, never `num_clients`.

Resume: pickling the store (which a checkpoint does) commits it: it waits until every
queued write is on disk, and records the round. A file carries the round its state was
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
import zipfile
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flwr.app import Array

log = logging.getLogger(__name__)
State = dict[str, Array]  # one client's arrays, serialised as Flower sends them


def as_state(arrays: Mapping[str, Array | np.ndarray]) -> State:
    """A client's arrays as Flower `Array`s (NumPy arrays are serialised; `Array`s are kept)."""
    return {k: v if isinstance(v, Array) else Array(np.ascontiguousarray(v)) for k, v in arrays.items()}


def state_bytes(state: State) -> int:
    """Bytes held by one client's arrays."""
    return sum(len(v.data) for v in state.values())


class ClientStateStore:
    """Each virtual client's arrays, keyed by client id; written behind, bounded in memory."""

    def __init__(self, directory: Path, memory_mb: float = 256.0, fresh: bool = True):
        self.directory = Path(directory)
        if fresh and self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_bytes = int(memory_mb * 2**20)
        self.committed = -1  # last round whose states are all on disk
        self.round = -1  # newest round a state was stored for
        self._disk: dict[int, list[int]] = {}  # cid -> rounds of its files (written or queued), ascending
        self._cache: OrderedDict[int, tuple[int, State]] = OrderedDict()  # cid -> (round, state)
        self._cached_bytes = 0
        self._written: set[int] = set()  # clients given a file since the last commit
        self._superseded: list[Path] = []  # files of older commits, deleted once a newer checkpoint is saved
        self._writer: ThreadPoolExecutor | None = None  # one thread: file operations run in the order queued
        self._queued: list[Future] = []

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
        self.flush()
        state = self._read(cid, rounds[-1])
        self._remember(cid, rounds[-1], state)
        return state

    def put(self, cid: int, server_round: int, state: Mapping[str, Array | np.ndarray]) -> None:
        """Store the state a client produced in `server_round` (it replaces the previous one)."""
        cid, made = int(cid), int(server_round)
        state = as_state(state)
        self.round = max(self.round, made)
        self._write(cid, made, state)
        self._remember(cid, made, state)

    def flush(self) -> None:
        """Wait until every queued file operation is done (re-raising the first that failed)."""
        queued, self._queued = self._queued, []
        for job in queued:
            job.result()

    def __len__(self) -> int:
        return len(set(self._cache) | set(self._disk))

    @property
    def cached_bytes(self) -> int:
        """Bytes of state held in memory now."""
        return self._cached_bytes

    # ---- checkpoints -----------------------------------------------------------------

    def commit(self) -> None:
        """Wait for every queued write; the versions they supersede go at `checkpoint_saved`."""
        self.flush()
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
        self._cache, self._cached_bytes, self._written, self._superseded = OrderedDict(), 0, set(), []
        self._writer, self._queued = None, []
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

    def _remember(self, cid: int, made: int, state: State) -> None:
        """Keep a state in memory; drop the least recently used beyond `memory_bytes` (all are on disk)."""
        old = self._cache.pop(cid, None)
        if old is not None:
            self._cached_bytes -= state_bytes(old[1])
        self._cache[cid] = (made, state)
        self._cached_bytes += state_bytes(state)
        while self._cached_bytes > self.memory_bytes and len(self._cache) > 1:
            _, (_, out_state) = self._cache.popitem(last=False)
            self._cached_bytes -= state_bytes(out_state)

    def _path(self, cid: int, made: int) -> Path:
        return self.directory / f"{cid}.{made}.npz"

    def _queue(self, operation, *args) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="client-state-writer")
        self._queued.append(self._writer.submit(operation, *args))

    def _write(self, cid: int, made: int, state: State) -> None:
        """Queue a state file; drop this client's files that are neither committed nor newest."""
        self._queue(_write_file, self._path(cid, made), state)
        rounds = [r for r in self._disk.get(cid, []) if r != made]
        keep = [r for r in rounds if r <= self.committed][-1:]  # the committed version resume needs
        for r in rounds:
            if r not in keep:
                self._queue(_delete_file, self._path(cid, r))  # after its own write: one thread, in order
        self._disk[cid] = keep + [made]
        self._written.add(cid)

    def _read(self, cid: int, made: int) -> State:
        with np.load(self._path(cid, made)) as files:
            return as_state({k: files[k] for k in files.files})


def _write_file(path: Path, state: State) -> None:
    """Write one state file atomically: an `.npz` (NumPy's zip layout) of the arrays' `.npy` bytes."""
    tmp = path.with_suffix(".tmp.npz")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for key, array in state.items():
            archive.writestr(f"{key}.npy", array.data)
    os.replace(tmp, path)


def _delete_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def _parse(name: str) -> tuple[int | None, int]:
    """(client id, round) of a state file name `<cid>.<round>.npz`; (None, 0) for anything else."""
    parts = name.split(".")
    if len(parts) != 3 or parts[2] != "npz" or not parts[0].isdigit() or not parts[1].lstrip("-").isdigit():
        return None, 0
    return int(parts[0]), int(parts[1])
