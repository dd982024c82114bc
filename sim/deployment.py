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


def roll_call(grid: Grid, num_clients: int, wait_s: float) -> dict[int, int]:
    """{client id: node id} of the connected SuperNodes, after waiting up to `wait_s` for all to join."""
    deadline = time.monotonic() + wait_s
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < num_clients:
        log.warning("%d of %d SuperNodes connected after %.0f s; the missing clients count as failures until "
                    "their SuperNodes join", len(nodes), num_clients, wait_s)
    node_of_client = ask(grid, nodes, num_clients, wait_s)
    log.info("SuperNodes ready: %d of %d clients (%s)", len(node_of_client), num_clients,
             ", ".join(f"{c}->{n}" for c, n in sorted(node_of_client.items())))
    return node_of_client


def ask(grid: Grid, nodes: list[int], num_clients: int, timeout: float) -> dict[int, int]:
    """Ask `nodes` for their partition ids: {client id: node id} of those that answered well."""
    content = RecordDict({"config": ConfigRecord({"num-clients": num_clients})})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    node_of_client: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout) if messages else []:
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
    return node_of_client


class LateJoiners:
    """After each round, ask SuperNodes that joined since the last roll call for their partition ids.

    A client whose node left (or never came) is taken over by a newly joined node that
    holds its partition; nodes that answered once are not asked again.
    """

    def __init__(self, grid: Grid, node_of_client: dict[int, int], num_clients: int, timeout: float):
        self.grid, self.node_of_client = grid, node_of_client
        self.num_clients, self.timeout = num_clients, timeout
        self.asked = set(grid.get_node_ids())

    def __call__(self) -> None:
        connected = set(self.grid.get_node_ids())
        new = sorted(connected - self.asked)
        if not new:
            return
        self.asked |= set(new)
        for cid, node in ask(self.grid, new, self.num_clients, self.timeout).items():
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
