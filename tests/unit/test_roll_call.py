"""A deployment's roll call (`sim.deploy.roll_call`): which SuperNode serves which client.

The SuperNodes' answers are the real `answer_roll_call` on Flower messages; only the
SuperLink is stood in for by `_Link` (which nodes are connected, which answer).
"""

from __future__ import annotations

import logging
import time

import pytest
from flwr.app import Error, Message

from sim.deploy.roll_call import answer_roll_call, roll_call

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower messages need a task's identity


class _Link:
    """Connected SuperNodes {node id: node config}; `silent` ones do not answer (until taken out of
    `silent`), `broken` ones answer an error. Flower's `Grid.push_messages` / `pull_messages`."""

    def __init__(self, nodes: dict[int, dict], silent=(), broken=()):
        self.nodes, self.silent, self.broken = dict(nodes), set(silent), set(broken)
        self.asked: list[int] = []
        self.questions: dict[str, Message] = {}  # pushed, not pulled yet
        self.pulls = 0

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            self.asked.append(msg.metadata.dst_node_id)
            ids.append(f"q{len(self.asked)}")
            self.questions[ids[-1]] = msg
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        replies = []
        for mid in message_ids:
            msg = self.questions.get(mid)
            node = msg.metadata.dst_node_id if msg else None
            if msg is None or node in self.silent:
                continue
            del self.questions[mid]
            if node in self.broken:
                reply = Message(Error(code=0, reason="ClientApp crashed"), reply_to=msg)
            else:
                reply = answer_roll_call(msg, self.nodes[node])  # a reply comes from the node asked
            reply.metadata.__dict__["_reply_to_message_id"] = mid  # as the SuperLink's ids are
            replies.append(reply)
        return replies


def _node(pid: int, parts: int = 3) -> dict:
    return {"partition-id": pid, "num-partitions": parts}


def test_each_client_is_served_by_the_node_holding_its_partition_and_bad_nodes_are_named(caplog):
    link = _Link({40: _node(2), 10: _node(0), 30: {"num-partitions": 3}, 20: _node(5), 50: _node(1)})
    with caplog.at_level(logging.WARNING, logger="sim"):
        roster = roll_call(link, num_clients=3, wait_s=0, reply_s=1)
    assert roster.node_of_client == {0: 10, 1: 50, 2: 40}
    assert "SuperNode 30 refused: no partition-id" in caplog.text
    assert "SuperNode 20 refused: partition-id=5 is out of range: must be 0..2" in caplog.text


def test_missing_nodes_are_not_waited_for_past_the_wait(caplog):
    link = _Link({10: _node(0)})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sim"):
        roster = roll_call(link, num_clients=3, wait_s=0.3, reply_s=1)
    assert time.monotonic() - started < 10  # 0.3 s and a reply; never the whole run
    assert roster.node_of_client == {0: 10}
    assert "1 of 3 SuperNodes connected after 0 s" in caplog.text


def test_a_node_that_joins_late_serves_its_client_from_the_next_round(caplog):
    link = _Link({10: _node(0), 11: _node(1)})
    roster = roll_call(link, num_clients=3, wait_s=0, reply_s=1)
    assert roster.node_of_client == {0: 10, 1: 11}
    roster()  # after a round with nobody new: nobody is asked again
    assert link.asked == [10, 11]
    link.nodes[12] = _node(2)
    with caplog.at_level(logging.INFO, logger="sim"):
        roster()
    assert roster.node_of_client == {0: 10, 1: 11, 2: 12}
    assert link.asked == [10, 11, 12]
    assert "SuperNode 12 serves client 2 from the next round" in caplog.text


def test_a_node_that_left_is_replaced_by_a_standby_or_a_late_one(caplog):
    link = _Link({10: _node(0, 2), 11: _node(1, 2), 12: _node(1, 2)})  # 12 holds client 1 too: it stands by
    with caplog.at_level(logging.WARNING, logger="sim"):
        roster = roll_call(link, num_clients=2, wait_s=0, reply_s=1)
    assert roster.node_of_client == {0: 10, 1: 11}
    assert "SuperNodes 12 also hold partition-id=1, served by SuperNode 11: they stand by" in caplog.text
    del link.nodes[11]  # client 1's node leaves mid-run
    roster()
    assert roster.node_of_client[1] == 12  # the standby, without asking it again
    assert link.asked == [10, 11, 12]
    del link.nodes[10]
    roster()  # client 0's node left and no node holds its partition: it stays lost (a failure per round)
    assert roster.node_of_client[0] == 10
    link.nodes[13] = _node(0, parts=2)
    roster()
    assert roster.node_of_client == {0: 13, 1: 12}


def test_a_silent_node_holds_up_no_round_and_its_late_answer_counts(caplog):
    link = _Link({10: _node(0), 11: _node(1), 12: _node(2)}, silent={11}, broken={12})
    with caplog.at_level(logging.WARNING, logger="sim"):
        roster = roll_call(link, num_clients=3, wait_s=0, reply_s=1)
    assert roster.node_of_client == {0: 10}
    assert "SuperNode 11 did not answer the roll call within 1 s" in caplog.text
    assert "SuperNode 12 did not answer the roll call: ClientApp crashed" in caplog.text
    for _ in range(3):  # rounds go by while 11 stays silent: it is not asked again nor waited for
        started, pulls = time.monotonic(), link.pulls
        roster()
        assert time.monotonic() - started < 0.2 and link.pulls == pulls + 1
    assert link.asked == [10, 11, 12]
    link.silent.clear()  # its answer to the first question arrives
    roster()
    assert roster.node_of_client == {0: 10, 1: 11}
    assert link.asked == [10, 11, 12]
