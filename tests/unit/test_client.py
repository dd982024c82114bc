"""Client train/evaluate steps in-process, without Ray: packing, seeds, the ClientApp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from helpers import compose_config
from sim.federation.client_app import build_client_app, evaluate_pack, train_pack
from sim.federation.client_data import ClientData, DataHandle
from sim.data import load_dataset
from sim.partition.schemes import partition_labels, split_validation
from sim.federation.client_settings import ClientSettings
from sim.run.recipe import initial_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = compose_config(["dataset=synthetic", "dataset.num_train=400", "dataset.num_test=100", "client.batch_size=16"])
    cfg.dataset.data_dir = str(tmp_path_factory.mktemp("data"))
    data = load_dataset(cfg.dataset, 0)
    parts = partition_labels(data.train_labels, "iid", 4, seed=0)
    train, val = split_validation(parts, 0.25, seed=0)
    offsets = lambda p: np.concatenate([[0], np.cumsum([len(x) for x in p])]).astype(np.int64)
    client_data = ClientData(
        data.train_images, data.train_labels,
        np.concatenate(train).astype(np.int64), offsets(train),
        np.concatenate(val).astype(np.int64), offsets(val),
    )
    arrays = ArrayRecord(initial_model(cfg).state_dict())
    return ClientSettings.from_config(cfg), client_data, arrays


def _config(cids, server_round=1):
    """A message's config: only what changes per round."""
    return ConfigRecord({"cids": cids, "server-round": server_round})


def test_pack_equals_weighted_mean_of_single_clients(setup):
    settings, data, arrays = setup
    packed, metrics = train_pack(data, arrays, _config([0, 2]), settings)
    single = [train_pack(data, arrays, _config([c]), settings) for c in (0, 2)]
    n = [m["num-examples"] for _, m in single]
    assert metrics["num-examples"] == sum(n) == len(data.train_ids(0)) + len(data.train_ids(2))
    assert metrics["clients"] == 2 and metrics["failures"] == 0
    for key, value in packed.items():
        expected = (single[0][0][key].double() * n[0] + single[1][0][key].double() * n[1]) / sum(n)
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-7)
    loss = (single[0][1]["train_loss"] * n[0] + single[1][1]["train_loss"] * n[1]) / sum(n)
    assert metrics["train_loss"] == pytest.approx(loss, rel=1e-9)


def test_training_is_deterministic_and_seeded_per_round(setup):
    settings, data, arrays = setup
    first, _ = train_pack(data, arrays, _config([1]), settings)
    again, _ = train_pack(data, arrays, _config([1]), settings)
    other_round, _ = train_pack(data, arrays, _config([1], server_round=2), settings)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert any(not torch.equal(first[k], other_round[k]) for k in first)
    moved = any(not torch.equal(first[k], arrays.to_torch_state_dict()[k]) for k in first)
    assert moved


def test_evaluate_pack_counts_validation_examples(setup):
    settings, data, arrays = setup
    metrics = evaluate_pack(data, arrays, _config([0, 3]), settings)
    assert metrics["num-examples"] == len(data.val_ids(0)) + len(data.val_ids(3))
    assert 0.0 <= metrics["eval_acc"] <= 1.0 and metrics["eval_loss"] > 0


def test_client_app_answers_train_and_evaluate_messages(setup, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_task_id", "_run_id", "_node_id"):  # what run_simulation sets up
        monkeypatch.setattr(TaskIdentity, attribute, 1)
    settings, data, arrays = setup
    app = build_client_app(DataHandle(data), settings)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    for kind in (MessageType.TRAIN, MessageType.EVALUATE):
        msg = Message(RecordDict({"arrays": arrays, "config": _config([2])}), dst_node_id=1, message_type=kind)
        reply = app(msg, context)
        assert not reply.has_error(), reply.error
        metrics = reply.content["metrics"]
        assert metrics["clients"] == 1
        if kind == MessageType.TRAIN:
            assert set(reply.content["arrays"].keys()) == set(arrays.keys())
