"""Doorbells of a local deployment: who has work rings whoever would otherwise poll for it.

- **SuperNode → its SuperExec.** `sim.deploy` gives each SuperNode and its SuperExec
  (`sim.deploy.warm_exec`) the same path in `DOORBELL_ENV`. The SuperExec binds a Unix
  datagram socket there (`Doorbell`) and waits on it between its task polls (at most
  `IDLE_POLL_S`, its poll interval then); the SuperNode sends one byte to it (`ring`) each
  time it has a message's task (shim 13 of `sim/federation/flower_internals.py`).
- **ServerApp → every SuperNode.** Each SuperNode binds its own doorbell (`NODE_DOORBELL_ENV`,
  in the folder `NODE_DOORBELLS_ENV` names) and, with no message to pull, waits on it for at
  most `NODE_IDLE_POLL_S` instead of polling its SuperLink every 0.2 s (shim 9); the
  deployment's ServerApp sends through `RingingGrid`, which rings them all once it has
  pushed messages.
- **`sim.deploy` → the SuperLink's SuperExec.** It waits on its own doorbell the same way,
  and the launcher rings it once `flwr run` says the run has started, so the ServerApp's
  task is picked up at once.

A ring that finds no socket (not up yet, or gone) is dropped: the next idle poll finds the
work. Without the variables everything runs as before (fixed poll intervals).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Message
from flwr.serverapp import Grid

from sim.deploy.wrapped_grid import WrappedGrid

DOORBELL_ENV = "SIM_SUPEREXEC_DOORBELL"  # the socket's path, the same for a SuperNode and its SuperExec
IDLE_POLL_S = 2.0  # with no ring, the SuperExec still asks its SuperNode for a task this often
NODE_DOORBELL_ENV = "SIM_SUPERNODE_DOORBELL"  # a SuperNode's own doorbell, rung by the ServerApp
NODE_DOORBELLS_ENV = "SIM_SUPERNODE_DOORBELLS"  # the folder of every SuperNode's doorbell (the ServerApp's side)
NODE_BELL_GLOB = "node-*.sock"  # the SuperNodes' doorbells in that folder
NODE_IDLE_POLL_S = 1.0  # with no ring, an idle SuperNode still asks its SuperLink for a message this often


def ring(path: str) -> None:
    """Wake the process waiting at `path` (a SuperExec or a SuperNode); nothing happens when none is there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        with contextlib.suppress(OSError):  # no socket yet, or its queue is full: it is awake anyway
            sock.sendto(b"!", path)


class Doorbell:
    """The waiting end (a SuperExec's, or a SuperNode's): a datagram socket bound at `path`, waited on between polls."""

    def __init__(self, path: str):
        self.path = path
        self.rings = 0  # waits a ring ended
        self.timeouts = 0  # waits that ran their full time
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.setblocking(False)

    def wait(self, seconds: float) -> bool:
        """Return at the next ring (True; rings already queued count) or after `seconds` (False)."""
        ready, _, _ = select.select([self._sock], [], [], seconds)
        rung = bool(ready)
        self.rings, self.timeouts = self.rings + rung, self.timeouts + (not rung)
        while True:  # drain: several rings while the process was busy need one poll
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return rung

    def close(self) -> None:
        """Close the socket and remove its path."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def node_bell_path(folder: Path, port: int) -> Path:
    """The doorbell of the SuperNode whose Runtime API listens on `port`."""
    return folder / NODE_BELL_GLOB.replace("*", str(port))


def ring_all(folder: str) -> int:
    """Ring every SuperNode doorbell in `folder`; returns how many there were."""
    bells = sorted(Path(folder).glob(NODE_BELL_GLOB))
    for bell in bells:
        ring(str(bell))
    return len(bells)


class RingingGrid(WrappedGrid):
    """A Grid that rings every SuperNode's doorbell in `folder` once it has pushed messages.

    Everything else is the wrapped grid's (a SuperLink's `HttpGrid`); `send_and_receive` is
    shim 6's loop (`http_send_and_receive`) over this grid's push and the wrapped grid's pull.
    """

    def __init__(self, grid: Grid, folder: str):
        super().__init__(grid)
        self.folder = folder

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push with the wrapped grid, then ring the SuperNodes."""
        ids = list(self.grid.push_messages(messages))
        ring_all(self.folder)
        return ids

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push (and ring), then pull until every reply is in or `timeout` passes (shim 6's pauses)."""
        from sim.federation.flower_internals import http_send_and_receive

        return http_send_and_receive(self, messages, timeout=timeout)
