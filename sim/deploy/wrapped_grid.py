"""`WrappedGrid`: a Flower Grid that hands every call to another grid; subclasses change what they must."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid


class WrappedGrid(Grid):
    """Every call goes to `grid` (a deployment's `HttpGrid`, or another wrapper)."""

    def __init__(self, grid: Grid):
        self.grid = grid

    def set_run(self, run) -> None:
        """The wrapped grid's `set_run`."""
        self.grid.set_run(run)

    @property
    def run(self):
        """The wrapped grid's run."""
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """The wrapped grid's `create_message`."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The wrapped grid's connected nodes."""
        return self.grid.get_node_ids()

    def get_nodes(self):
        """The wrapped grid's connected nodes with their details."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """The wrapped grid's push."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The wrapped grid's pull."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """The wrapped grid's send and wait."""
        return self.grid.send_and_receive(messages, timeout=timeout)
