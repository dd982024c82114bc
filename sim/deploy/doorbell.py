"""A SuperNode rings its SuperExec when a message has arrived, so the SuperExec need not poll often.

`sim.deploy` gives each SuperNode and its SuperExec (`sim.deploy.warm_exec`) the same path in
`DOORBELL_ENV`. The SuperExec binds a Unix datagram socket there (`Doorbell`) and waits on it
between its task polls (at most `IDLE_POLL_S`, its poll interval then); the SuperNode sends one byte to it
(`ring`) each time it has stored a message (shim 13 of `sim/federation/flower_internals.py`).
A ring that finds no socket (the SuperExec not up yet, or gone) is dropped: the next idle
poll finds the task. Without the variable both run as before (Flower's fixed poll interval).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket

DOORBELL_ENV = "SIM_SUPEREXEC_DOORBELL"  # the socket's path, the same for a SuperNode and its SuperExec
IDLE_POLL_S = 2.0  # with no ring, the SuperExec still asks its SuperNode for a task this often


def ring(path: str) -> None:
    """Wake the SuperExec waiting at `path`; nothing happens when none is there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        with contextlib.suppress(OSError):  # no socket yet, or its queue is full: it is awake anyway
            sock.sendto(b"!", path)


class Doorbell:
    """The SuperExec's end: a datagram socket bound at `path`, waited on between task polls."""

    def __init__(self, path: str):
        self.path = path
        self.rings = 0  # waits a ring ended
        self.timeouts = 0  # waits that ran their full time
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a SuperExec that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.setblocking(False)

    def wait(self, seconds: float) -> bool:
        """Return at the next ring (True; rings already queued count) or after `seconds` (False)."""
        ready, _, _ = select.select([self._sock], [], [], seconds)
        rung = bool(ready)
        self.rings, self.timeouts = self.rings + rung, self.timeouts + (not rung)
        while True:  # drain: several rings while the SuperExec was busy need one poll
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return rung

    def close(self) -> None:
        """Close the socket and remove its path."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
