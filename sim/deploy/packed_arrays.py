"""A deployment's model travels as one Flower object per ArrayRecord instead of two per array.

Flower 1.42 sends a message as a tree of objects (the message, its RecordDict, each record,
each Array and each Array's chunks), and every object is one HTTP request on every hop: the
ServerApp pushes it to the SuperLink, the SuperNode pulls it from there, and the ClientApp
task pulls it from the SuperNode, and the reply goes back the same way. The quickstart CNN's
ten arrays make a train message 24 objects; packed, it is 6.

`pack` puts an ArrayRecord's Arrays, each exactly as Flower serialised it (dtype, shape,
stype and bytes), one after another into a single Array whose stype is `PACKED_STYPE`,
behind a JSON header that names them in order; `unpack` gives back Arrays equal byte for
byte, so strategies, aggregation and metrics see exactly what they would have seen. The
ServerApp sends through `PackedArraysGrid`, and the ClientApp unpacks with
`packed_arrays_mod`, which packs its reply only when the request came packed: on the
Simulation Runtime and in `python -m sim` nothing is packed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from flwr.app import Array, ArrayRecord, Context, Message, RecordDict

from sim.deploy.wrapped_grid import WrappedGrid

PACKED_STYPE = "sim.packed-arrays.v1"  # the packed Array's stype: a header, then each Array's bytes
PACKED_KEY = "packed"  # the packed ArrayRecord's one key
_HEADER_LENGTH_BYTES = 8  # the header's length, little-endian, ahead of the header


def is_packed(record: ArrayRecord) -> bool:
    """Whether `record` is one of `pack`'s."""
    return len(record) == 1 and PACKED_KEY in record and record[PACKED_KEY].stype == PACKED_STYPE


def pack(record: ArrayRecord) -> ArrayRecord:
    """`record`'s Arrays as one Array (`unpack` reverses it)."""
    layout = [[key, array.dtype, list(array.shape), array.stype, len(array.data)] for key, array in record.items()]
    header = json.dumps(layout).encode()
    blob = b"".join([len(header).to_bytes(_HEADER_LENGTH_BYTES, "little"), header,
                     *(array.data for array in record.values())])
    packed = Array(dtype="uint8", shape=(len(blob),), stype=PACKED_STYPE, data=blob)
    return ArrayRecord({PACKED_KEY: packed})


def unpack(record: ArrayRecord) -> ArrayRecord:
    """The ArrayRecord that `pack` was given: the same keys in the same order, each Array equal byte for byte."""
    blob = memoryview(record[PACKED_KEY].data)
    header_end = _HEADER_LENGTH_BYTES + int.from_bytes(blob[:_HEADER_LENGTH_BYTES], "little")
    arrays, start = {}, header_end
    for key, dtype, shape, stype, length in json.loads(bytes(blob[_HEADER_LENGTH_BYTES:header_end])):
        arrays[key] = Array(dtype=dtype, shape=tuple(shape), stype=stype, data=bytes(blob[start:start + length]))
        start += length
    if start != len(blob):
        raise ValueError(f"a packed ArrayRecord of {len(blob)} bytes whose header accounts for {start}")
    return ArrayRecord(arrays)


def pack_content(content: RecordDict, packed: dict[int, ArrayRecord] | None = None) -> RecordDict:
    """`content` with every ArrayRecord packed; `packed` reuses the packing of records already seen (by identity)."""
    packed = {} if packed is None else packed
    records = {}
    for key, record in content.items():
        if isinstance(record, ArrayRecord) and not is_packed(record):
            if id(record) not in packed:
                packed[id(record)] = pack(record)
            record = packed[id(record)]
        records[key] = record
    return RecordDict(records)


def unpack_content(content: RecordDict) -> RecordDict:
    """`content` with every packed ArrayRecord unpacked."""
    return RecordDict({key: unpack(record) if isinstance(record, ArrayRecord) and is_packed(record) else record
                       for key, record in content.items()})


def has_packed_arrays(message: Message) -> bool:
    """Whether `message` carries at least one packed ArrayRecord."""
    return message.has_content() and any(isinstance(r, ArrayRecord) and is_packed(r) for r in message.content.values())


def _unpacked(message: Message) -> Message:
    if has_packed_arrays(message):
        message.content = unpack_content(message.content)
    return message


class PackedArraysGrid(WrappedGrid):
    """A Grid that packs the ArrayRecords of the messages it sends and unpacks those of the replies.

    Everything else is the wrapped grid's (a SuperLink's `HttpGrid` in a deployment).
    """

    def _packed(self, messages: Iterable[Message]) -> list[Message]:
        packed: dict[int, ArrayRecord] = {}  # a record shared by many messages is packed once
        messages = list(messages)
        for message in messages:
            if message.has_content():
                message.content = pack_content(message.content, packed)
        return messages

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Pack, then push with the wrapped grid."""
        return self.grid.push_messages(self._packed(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull with the wrapped grid, then unpack."""
        return [_unpacked(m) for m in self.grid.pull_messages(message_ids)]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Pack, send and wait with the wrapped grid, then unpack the replies."""
        return [_unpacked(m) for m in self.grid.send_and_receive(self._packed(messages), timeout=timeout)]


def packed_arrays_mod(msg: Message, context: Context, call_next) -> Message:
    """ClientApp mod: unpack a packed request for the handler, and pack its reply the same way."""
    if not has_packed_arrays(msg):
        return call_next(msg, context)
    msg.content = unpack_content(msg.content)
    reply = call_next(msg, context)
    if reply.has_content():
        reply.content = pack_content(reply.content)
    return reply
