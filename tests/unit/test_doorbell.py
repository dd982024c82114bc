"""The doorbells of a local deployment (sim/deploy/doorbell.py), on real Unix datagram sockets."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers.grids import LoopbackGrid
from sim.deploy.doorbell import Doorbell, RingingGrid, node_bell_path, ring, ring_all


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


def test_the_serverapp_rings_every_supernode_once_it_has_pushed(tmp_path, task_identity):
    from flwr.app import Message, MessageType, MetricRecord, RecordDict

    folder = Path(tempfile.mkdtemp(prefix="bells-"))
    bells = [Doorbell(str(node_bell_path(folder, port))) for port in (9094, 9095)]
    other = Doorbell(str(folder / "9094.sock"))  # a SuperExec's doorbell: not the ServerApp's to ring
    rung_at_push = []

    def node(message: Message) -> Message:  # answers at once
        return Message(RecordDict({"metrics": MetricRecord({"n": 1})}), reply_to=message)

    class Recording(LoopbackGrid):  # notes, at each pull, whether both SuperNodes were rung
        def pull_messages(self, message_ids):
            rung_at_push.append([bell.wait(0.0) for bell in bells])
            return super().pull_messages(message_ids)

    try:
        grid = RingingGrid(Recording(node), str(folder))
        assert list(grid.get_node_ids()) == [7]
        messages = [Message(RecordDict({"metrics": MetricRecord({"x": 1.0})}), dst_node_id=7,
                            message_type=MessageType.TRAIN)]
        replies = list(grid.send_and_receive(messages, timeout=5.0))
        assert len(replies) == 1 and replies[0].content["metrics"]["n"] == 1
        assert rung_at_push == [[True, True]]  # both SuperNodes rung before the first pull
        assert other.wait(0.0) is False
        grid.push_messages([Message(RecordDict(), dst_node_id=7, message_type=MessageType.QUERY)])  # a roll call
        assert [bell.wait(0.0) for bell in bells] == [True, True]
        assert ring_all(str(folder)) == 2 and ring_all(str(tmp_path)) == 0
    finally:
        for bell in (*bells, other):
            bell.close()
        shutil.rmtree(folder, ignore_errors=True)
