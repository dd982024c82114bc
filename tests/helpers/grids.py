"""A stand-in for a SuperLink's grid in in-process tests of the grids that wrap one."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid


class LoopbackGrid(Grid):
    """A grid whose one node answers at once with `answer(message)`; it keeps what it was sent."""

    def __init__(self, answer):
        self.answer, self.sent = answer, []

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [7]

    def push_messages(self, messages):
        """Each message gets its id (its object id, as a SuperLink gives it) and is kept."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
            self.sent.append(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        """The node's answers to the messages with these ids."""
        wanted = set(message_ids)
        return [self.answer(m) for m in self.sent if m.metadata.message_id in wanted]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))
