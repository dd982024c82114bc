"""A SuperNode's doorbell for its SuperExec (sim/deploy/doorbell.py), on real Unix datagram sockets."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sim.deploy.doorbell import Doorbell, ring


@pytest.fixture
def bell_path():
    """A short socket path (a socket's path may not exceed ~100 bytes), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bell-"))
    yield str(folder / "0.sock")
    shutil.rmtree(folder, ignore_errors=True)


def test_a_ring_ends_the_wait_at_once_and_no_ring_waits_it_out(bell_path):
    bell = Doorbell(bell_path)
    try:
        threading.Timer(0.05, ring, args=(bell_path,)).start()
        started = time.monotonic()
        assert bell.wait(30.0) is True
        assert time.monotonic() - started < 10.0  # the ring, not the 30 s
        started = time.monotonic()
        assert bell.wait(0.2) is False
        assert time.monotonic() - started >= 0.15
        assert (bell.rings, bell.timeouts) == (1, 1)
    finally:
        bell.close()
    assert not Path(bell_path).exists()


def test_rings_while_busy_are_kept_and_answered_by_one_wait(bell_path):
    bell = Doorbell(bell_path)
    try:
        for _ in range(3):
            ring(bell_path)  # the SuperExec is busy launching a task meanwhile
        assert bell.wait(5.0) is True
        assert bell.wait(0.05) is False  # all three were drained by one wait
    finally:
        bell.close()


def test_a_ring_with_no_superexec_listening_is_dropped(bell_path):
    ring(bell_path)  # no socket at all: nothing raised
    Doorbell(bell_path).close()
    ring(bell_path)


def test_a_socket_left_by_a_killed_superexec_is_replaced(bell_path):
    Path(bell_path).write_bytes(b"")  # what a SIGKILLed SuperExec leaves
    bell = Doorbell(bell_path)
    try:
        ring(bell_path)
        assert bell.wait(5.0) is True
    finally:
        bell.close()
