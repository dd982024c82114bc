"""A deployment's roll call: which SuperNode holds which client's partition.

On real SuperNodes each node is one client, named by its `--node-config`:
`partition-id` (0..num-partitions-1), `num-partitions` (= `num_clients`) and `data-dir`
(where its data cache and partition manifests live). Before round 1 the server sends
every connected node a `query` message; each answers with its partition id, or with the
one line that says what is wrong with its node config (`node_problem`, checked on the
node, which logs it too). The strategy then addresses each sampled client's message to
its node; a client without a node (not joined, refused, or gone) counts as a failure in
that round and is never waited for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

log = logging.getLogger("sim")


def node_problem(node_config, num_clients: int | None = None) -> str | None:
    """What is wrong with a SuperNode's `--node-config` for this run (None when fine)."""
    if "partition-id" not in node_config:
        return 'no partition-id: start the SuperNode with --node-config "partition-id=K num-partitions=N data-dir=DIR"'
    pid, parts = int(node_config["partition-id"]), int(node_config.get("num-partitions", num_clients or 0))
    if num_clients is not None and parts != num_clients:
        return f"num-partitions={parts} but the run has num_clients={num_clients}: set num-partitions={num_clients}"
    if not 0 <= pid < parts:
        return f"partition-id={pid} is out of range: must be 0..{parts - 1} (num-partitions={parts})"
    data_dir = node_config.get("data-dir")
    if data_dir is not None and not Path(str(data_dir)).is_dir():
        return f"data-dir={data_dir} does not exist: point data-dir at the folder holding data/ and partitions/"
    return None


def roll_call(grid: Grid, num_clients: int, wait_s: float, reply_s: float) -> tuple[dict[int, int], set[int]]:
    """({client id: node id}, nodes that answered) after waiting up to `wait_s` for all SuperNodes to join.

    Each node answers from a fresh ClientApp process (Flower starts one per message), so
    replies get `reply_s` (the round timeout), like any round's.
    """
    deadline = time.monotonic() + wait_s
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < num_clients:
        log.warning("%d of %d SuperNodes connected after %.0f s; the missing clients count as failures until "
                    "their SuperNodes join", len(nodes), num_clients, wait_s)
    node_of_client, answered = ask(grid, nodes, num_clients, reply_s)
    log.info("SuperNodes ready: %d of %d clients (%s)", len(node_of_client), num_clients,
             ", ".join(f"{c}->{n}" for c, n in sorted(node_of_client.items())))
    return node_of_client, answered


def ask(grid: Grid, nodes: list[int], num_clients: int, timeout: float) -> tuple[dict[int, int], set[int]]:
    """Ask `nodes` for their partition ids: ({client id: node id} of good answers, nodes that answered)."""
    content = RecordDict({"config": ConfigRecord({"num-clients": num_clients})})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    node_of_client: dict[int, int] = {}
    replies = list(grid.send_and_receive(messages, timeout=timeout)) if messages else []
    answered = {reply.metadata.src_node_id for reply in replies}
    for node in sorted(set(nodes) - answered):
        log.warning("SuperNode %d did not answer the roll call within %.0f s; asked again after the next round",
                    node, timeout)
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("SuperNode %d did not answer the roll call: %s", node, reply.error.reason)
            continue
        answer = reply.content["node"]
        if answer.get("problem"):
            log.warning("SuperNode %d refused: %s", node, answer["problem"])
            continue
        cid = int(answer["partition-id"])
        if cid in node_of_client:
            log.warning("SuperNodes %d and %d both hold partition-id=%d; using %d", node_of_client[cid], node, cid,
                        node_of_client[cid])
            continue
        node_of_client[cid] = node
    return node_of_client, answered


class LateJoiners:
    """After each round, ask SuperNodes that have not answered yet (joined late, or slow) for their partitions.

    A client whose node left (or never came) is taken over by a newly answering node that
    holds its partition; nodes that answered once are not asked again.
    """

    def __init__(self, grid: Grid, node_of_client: dict[int, int], answered: set[int], num_clients: int,
                 timeout: float):
        self.grid, self.node_of_client, self.answered = grid, node_of_client, set(answered)
        self.num_clients, self.timeout = num_clients, timeout

    def __call__(self) -> None:
        connected = set(self.grid.get_node_ids())
        new = sorted(connected - self.answered)
        if not new:
            return
        found, answered = ask(self.grid, new, self.num_clients, self.timeout)
        self.answered |= answered
        for cid, node in found.items():
            if self.node_of_client.get(cid) not in connected:
                log.info("SuperNode %d joined late: it is client %d from the next round", node, cid)
                self.node_of_client[cid] = node


def answer_roll_call(msg: Message, node_config) -> Message:
    """A SuperNode's reply to the roll call: its partition id, or what is wrong with its node config."""
    num_clients = int(msg.content["config"]["num-clients"])
    problem = node_problem(node_config, num_clients)
    if problem is not None:
        logging.getLogger(__name__).error("this SuperNode cannot serve the run: %s", problem)
        return Message(RecordDict({"node": ConfigRecord({"problem": problem})}), reply_to=msg)
    return Message(RecordDict({"node": ConfigRecord({"partition-id": int(node_config["partition-id"])})}), reply_to=msg)
