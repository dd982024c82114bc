"""A deployment's roll call: which SuperNode holds which client's partition.

On real SuperNodes each node is one client, named by its `--node-config`:
`partition-id` (0..num-partitions-1), `num-partitions` (= `num_clients`) and `data-dir`
(where its data cache and partition manifests live). Before round 1 the server sends
every connected node a `query` message; each answers with its partition id, or with the
one line that says what is wrong with its node config (`node_problem`, checked on the
node, which logs it too). The strategy then addresses each sampled client's message to
its node; a client without a node (not joined, refused, or gone) counts as a failure in
that round and is never waited for. After each round, nodes that joined since are asked
too (`Roster`): a late one serves its client from the next round, and a second node
holding a served partition stands by until that client's node leaves. A node is asked
once: one that stays silent past the reply time is not asked again (which would hold up
every round by that time); its answer is taken whenever it comes.
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


def roll_call(grid: Grid, num_clients: int, wait_s: float, reply_s: float) -> Roster:
    """Who holds which client, after waiting up to `wait_s` for all SuperNodes to join.

    Returns the run's `Roster`: its `node_of_client` ({client id: node id}) addresses
    the rounds, and calling it after a round takes in the nodes that joined since. Each node
    answers from a fresh ClientApp process (Flower starts one per message), so replies get
    `reply_s` (the round timeout), like any round's.
    """
    deadline = time.monotonic() + wait_s
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < num_clients:
        log.warning("%d of %d SuperNodes connected after %.0f s; the missing clients count as failures until "
                    "their SuperNodes join", len(nodes), num_clients, wait_s)
    roster = Roster(grid, num_clients, reply_s)
    roster.take(nodes, connected=set(nodes))
    log.info("SuperNodes ready: %d of %d clients (%s)", len(roster.node_of_client), num_clients,
             ", ".join(f"{c}->{n}" for c, n in sorted(roster.node_of_client.items())))
    return roster


QUERY_POLL_S = 0.1  # how often the server looks for answers while it waits for them


def ask(grid: Grid, nodes: list[int], num_clients: int, timeout: float, pending: dict[str, int]) -> dict[int, list[int]]:
    """Ask `nodes` for their partition ids, waiting up to `timeout` for them; take any answer that
    arrived for the earlier queries in `pending` ({message id: node}, updated in place) too.

    Returns {client id: nodes holding it, in node order}.
    """
    if nodes:
        content = RecordDict({"config": ConfigRecord({"num-clients": num_clients})})
        messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
        pending.update((mid, node) for mid, node in zip(grid.push_messages(messages), nodes) if mid)
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while True:
        if pending:
            arrived = list(grid.pull_messages(list(pending)))
            for reply in arrived:
                pending.pop(reply.metadata.reply_to_message_id, None)
            replies += arrived
        waiting = set(nodes) & set(pending.values())
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(QUERY_POLL_S)
    for node in sorted(waiting):
        log.warning("SuperNode %d did not answer the roll call within %.0f s; its answer is taken when it comes "
                    "(it is not asked again)", node, timeout)
    holders: dict[int, list[int]] = {}
    for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("SuperNode %d did not answer the roll call: %s", node, reply.error.reason)
            continue
        answer = reply.content["node"]
        if answer.get("problem"):
            log.warning("SuperNode %d refused: %s", node, answer["problem"])
            continue
        holders.setdefault(int(answer["partition-id"]), []).append(node)
    return holders


class Roster:
    """Which SuperNode serves which client, kept up to date between rounds.

    After each round (`__call__`), SuperNodes that joined since are asked for their
    partitions, and answers that came late to earlier questions are taken. A client whose
    node left (or never came) is taken over by a connected node that holds its partition: a
    new one, or a spare that answered earlier while another node served that client. Every
    node is asked once.
    """

    def __init__(self, grid: Grid, num_clients: int, timeout: float):
        self.grid, self.num_clients, self.timeout = grid, num_clients, timeout
        self.node_of_client: dict[int, int] = {}
        self.spares: dict[int, list[int]] = {}  # client id -> nodes that hold its partition, not serving it
        self.asked: set[int] = set()
        self.pending: dict[str, int] = {}  # message id of a question not answered yet -> the node asked
        self.called = False  # True after the first roll call

    def take(self, nodes: list[int], connected: set[int]) -> None:
        """Ask `nodes` (and take late answers), then give each client without a connected node one that holds
        its partition."""
        holders = ask(self.grid, nodes, self.num_clients, self.timeout, self.pending)
        self.asked |= set(nodes)
        for cid, found in holders.items():
            self.spares.setdefault(cid, []).extend(found)
        for cid in sorted(self.spares):
            serving, spares = self.node_of_client.get(cid), [n for n in self.spares[cid] if n in connected]
            if spares and serving not in connected:
                self.spares[cid].remove(spares[0])
                self.node_of_client[cid] = spares.pop(0)
                if self.called:
                    log.info("SuperNode %d serves client %d from the next round (it joined late or stood by)",
                             self.node_of_client[cid], cid)
            new_spares = [n for n in spares if n in holders.get(cid, [])]
            if new_spares:
                log.warning("SuperNodes %s also hold partition-id=%d, served by SuperNode %d: they stand by",
                            ", ".join(map(str, new_spares)), cid, self.node_of_client[cid])
        self.called = True

    def __call__(self) -> None:
        connected = set(self.grid.get_node_ids())
        self.take(sorted(connected - self.asked), connected)


def answer_roll_call(msg: Message, node_config) -> Message:
    """A SuperNode's reply to the roll call: its partition id, or what is wrong with its node config."""
    num_clients = int(msg.content["config"]["num-clients"])
    problem = node_problem(node_config, num_clients)
    if problem is not None:
        logging.getLogger(__name__).error("this SuperNode cannot serve the run: %s", problem)
        return Message(RecordDict({"node": ConfigRecord({"problem": problem})}), reply_to=msg)
    return Message(RecordDict({"node": ConfigRecord({"partition-id": int(node_config["partition-id"])})}), reply_to=msg)
