"""A deployment's packed arrays (sim/deploy/packed_arrays.py): byte-equal round trips, fewer Flower objects."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from helpers import compose_config
from helpers.grids import LoopbackGrid
from sim.deploy.packed_arrays import (PACKED_KEY, PACKED_STYPE, PackedArraysGrid, is_packed, pack, pack_content,
                                      packed_arrays_mod, unpack)
from sim.run.recipe import initial_model


@pytest.fixture(scope="module")
def cnn_arrays() -> ArrayRecord:
    """The quickstart CNN's ten arrays, as the server sends them."""
    return ArrayRecord(initial_model(compose_config([])).state_dict())


def _mixed_arrays() -> ArrayRecord:
    """Arrays of several dtypes and ranks: float32 weights, BatchNorm's int64 counter, a 0-d array, an empty one."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = dict(model.state_dict())
    state["scalar"], state["empty"], state["half"] = torch.tensor(2.5), torch.zeros(0, 3), torch.ones(2, 2).half()
    return ArrayRecord(state)


@pytest.mark.parametrize("make", [_mixed_arrays, "cnn"])
def test_unpack_gives_back_every_array_byte_for_byte_in_order(make, cnn_arrays):
    arrays = cnn_arrays if make == "cnn" else make()
    packed = pack(arrays)
    assert list(packed.keys()) == [PACKED_KEY] and packed[PACKED_KEY].stype == PACKED_STYPE and is_packed(packed)
    back = unpack(packed)
    assert list(back.keys()) == list(arrays.keys())
    for key, array in arrays.items():
        assert (back[key].dtype, back[key].shape, back[key].stype, back[key].data) == \
               (array.dtype, array.shape, array.stype, array.data), key
    assert back.object_id == arrays.object_id  # what Flower hashes: the same record
    assert not is_packed(arrays) and not is_packed(back)


def test_a_packed_record_whose_length_disagrees_with_its_header_is_refused(cnn_arrays):
    packed = pack(cnn_arrays)
    array = packed[PACKED_KEY]
    truncated = type(array)(dtype=array.dtype, shape=(len(array.data) - 4,), stype=array.stype, data=array.data[:-4])
    with pytest.raises(ValueError, match="header accounts for"):
        unpack(ArrayRecord({PACKED_KEY: truncated}))


def test_a_packed_train_message_is_6_flower_objects_instead_of_24(cnn_arrays, task_identity):
    message = Message(RecordDict({"arrays": cnn_arrays, "config": ConfigRecord({"server-round": 1})}),
                      dst_node_id=1, message_type=MessageType.TRAIN)
    assert len(get_all_nested_objects(message)) == 24  # message, RecordDict, 2 records, 10 arrays, 10 chunks
    message.content = pack_content(message.content)
    assert len(get_all_nested_objects(message)) == 6  # message, RecordDict, 2 records, 1 array, 1 chunk
    assert message.content["config"]["server-round"] == 1


def test_a_record_shared_by_messages_is_packed_once(cnn_arrays):
    cache: dict = {}
    first = pack_content(RecordDict({"arrays": cnn_arrays}), cache)
    second = pack_content(RecordDict({"arrays": cnn_arrays, "metrics": MetricRecord({"x": 1.0})}), cache)
    assert first["arrays"] is second["arrays"] and len(cache) == 1
    assert pack_content(first)["arrays"] is first["arrays"]  # already packed: left as it is


def test_the_grid_sends_packed_and_hands_back_replies_unpacked(cnn_arrays, task_identity):
    def client(message: Message) -> Message:  # a node that echoes the packed arrays it got, with a metric
        return Message(RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"n": 3})}),
                       reply_to=message)

    inner = LoopbackGrid(client)
    grid = PackedArraysGrid(inner)
    assert list(grid.get_node_ids()) == [7]
    messages = [Message(RecordDict({"arrays": cnn_arrays}), dst_node_id=7, message_type=MessageType.TRAIN)
                for _ in range(2)]
    replies = list(grid.send_and_receive(messages, timeout=1.0))
    assert all(is_packed(m.content["arrays"]) for m in inner.sent)
    assert inner.sent[0].content["arrays"] is inner.sent[1].content["arrays"]  # packed once for both
    assert [r.content["arrays"].object_id for r in replies] == [cnn_arrays.object_id] * 2
    assert replies[0].content["metrics"]["n"] == 3
    (pushed,) = grid.push_messages([Message(RecordDict({"arrays": cnn_arrays}), dst_node_id=7,
                                            message_type=MessageType.EVALUATE)])
    assert is_packed(inner.sent[-1].content["arrays"])
    (reply,) = grid.pull_messages([pushed])
    assert reply.content["arrays"].object_id == cnn_arrays.object_id


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_the_client_mod_unpacks_for_the_handler_and_packs_its_reply(cnn_arrays, task_identity):
    seen = []

    def handler(message: Message, context: Context) -> Message:
        seen.append(message.content["arrays"])
        return Message(RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"n": 1})}),
                       reply_to=message)

    request = Message(pack_content(RecordDict({"arrays": cnn_arrays})), dst_node_id=1, message_type=MessageType.TRAIN)
    reply = packed_arrays_mod(request, _context(), handler)
    assert seen[0].object_id == cnn_arrays.object_id and not is_packed(seen[0])
    assert is_packed(reply.content["arrays"]) and unpack(reply.content["arrays"]).object_id == cnn_arrays.object_id
    plain = Message(RecordDict({"arrays": cnn_arrays}), dst_node_id=1, message_type=MessageType.TRAIN)
    reply = packed_arrays_mod(plain, _context(), handler)  # python -m sim and the Simulation Runtime: untouched
    assert not is_packed(reply.content["arrays"]) and reply.content["arrays"].object_id == cnn_arrays.object_id


def test_the_deployed_client_app_trains_on_a_packed_request_as_on_a_plain_one(tmp_path, task_identity):
    from sim.deploy.app import client_app, message_config

    cfg = compose_config(["dataset=synthetic", "dataset.num_train=200", "dataset.num_test=50", "num_clients=2",
                          f"dataset.data_dir={tmp_path / 'data'}"])
    config = message_config(cfg, tmp_path)
    config["cids"], config["server-round"] = [1], 1
    arrays = ArrayRecord(initial_model(cfg).state_dict())
    replies = []
    for content in (RecordDict({"arrays": arrays, "config": config}),
                    pack_content(RecordDict({"arrays": arrays, "config": config}))):
        reply = client_app(Message(content, dst_node_id=1, message_type=MessageType.TRAIN), _context())
        assert not reply.has_error(), reply.error
        replies.append(reply.content)
    plain, packed = replies
    assert not is_packed(plain["arrays"]) and is_packed(packed["arrays"])
    assert unpack(packed["arrays"]).object_id == plain["arrays"].object_id  # the same training, packed for the wire
    assert dict(packed["metrics"]) == dict(plain["metrics"])
