"""Client settings: read from the config in one place, sent with the ClientApp, not with each message.

A round runs in-process through the recipe's own apps (`sim.run.recipe.build_apps`): the
ServerApp's strategy addresses its messages to a grid that hands them straight to the
ClientApp, so the test sees every message the clients would get. No Ray.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch
from flwr.app import Context, RecordDict

from helpers import compose_config
from sim.federation.client_app import train_pack
from sim.federation.client_data import ClientData, DataHandle
from sim.federation.client_settings import ClientSettings
from sim.models import model_spec
from sim.run.history import HistoryWriter
from sim.run.recipe import _start_point, build_apps, load_data, make_strategy
from sim.federation.server_app import RoundRecorder

STATIC = {"seed", "epochs", "batch-size", "lr", "momentum", "weight-decay", "eval-batch-size", "mean", "std", "model",
          "client-cpus", "use-gpu", "failure-rate", "straggler-rate", "straggler-delay-s", "amp", "channels-last"}


def test_from_config_holds_what_the_config_says():
    cfg = compose_config([
        "dataset=synthetic", "model=cnn28", "seed=7", "client.epochs=2", "client.batch_size=8", "client.lr=0.03",
        "client.momentum=0.8", "client.weight_decay=0.001", "client.eval_batch_size=64", "client.amp=true",
        "client.channels_last=true", "client.failure_rate=0.1", "client.straggler_rate=0.2",
        "client.straggler_delay_s=1.5", "resources.client_cpus=3", "resources.client_gpus=0.5",
        "dataset.mean=[0.1,0.2,0.3]", "dataset.std=[0.4,0.5,0.6]",
    ])
    settings = ClientSettings.from_config(cfg)
    assert settings.seed == 7
    train = settings.train
    assert (train.epochs, train.batch_size, train.lr, train.momentum, train.weight_decay, train.amp) == (
        2, 8, 0.03, 0.8, 0.001, True)
    assert train.proximal_mu == 0.0  # FedProx sends its mu per round
    assert settings.eval_batch_size == 64
    assert settings.mean == (0.1, 0.2, 0.3) and settings.std == (0.4, 0.5, 0.6)
    assert isinstance(settings.model, dict) and settings.model == model_spec(cfg)
    assert settings.model["_target_"] == "sim.models.cnn28.CNN28"
    assert (settings.client_cpus, settings.use_gpu, settings.channels_last) == (3.0, True, True)
    assert (settings.failure_rate, settings.straggler_rate, settings.straggler_delay_s) == (0.1, 0.2, 1.5)
    assert not ClientSettings.from_config(compose_config(["resources.client_gpus=0"])).use_gpu
    assert pickle.loads(pickle.dumps(settings)) == settings  # what Ray does to the ClientApp holding them


class InProcessGrid:
    """A grid that hands each message to the ClientApp at once and keeps what was sent."""

    def __init__(self, client_app, num_nodes: int):
        self.client_app, self.nodes = client_app, list(range(1, num_nodes + 1))
        self.sent, self.replies = [], []

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent.extend(messages)
        replies = []
        for msg in messages:
            context = Context(run_id=1, node_id=msg.metadata.dst_node_id, node_config={}, state=RecordDict(),
                              run_config={})
            replies.append(self.client_app(msg, context))
        self.replies.extend(replies)
        return replies


@pytest.mark.parametrize("strategy, own_keys", [
    ("fedavg", set()),
    ("fedprox", {"proximal-mu"}),
    ("scaffold", {"client-rule"}),
    ("dp_client_fixed", {"clipping_norm"}),
])
def test_messages_carry_only_per_round_keys_and_clients_train_with_the_apps_settings(
        tmp_path, monkeypatch, task_identity, strategy, own_keys):
    monkeypatch.chdir(tmp_path)  # partitions/ goes here
    cfg = compose_config([
        "dataset=synthetic", "dataset.num_train=120", "dataset.num_test=20", f"dataset.data_dir={tmp_path}",
        "num_clients=4", "clients_per_round=4", "eval_clients_per_round=2", "num_rounds=1", "central_eval_every=0",
        "client.batch_size=16", "client.lr=0.07", "client.momentum=0.5", f"strategy={strategy}",
    ])
    cfg, data, partition = load_data(cfg)
    client_data = ClientData.from_parts(data.train_images, data.train_labels, partition)
    writer = HistoryWriter(tmp_path / "history.csv")
    _, arrays, _ = _start_point(cfg, tmp_path, writer, False)
    recorder = RoundRecorder(writer, None, 0, 1)
    packs = 2
    strategy_ = make_strategy(cfg, partition, recorder, packs, 0, None, tmp_path)
    server_app, client_app = build_apps(cfg, strategy_, arrays, recorder, 1, DataHandle(client_data))
    grid = InProcessGrid(client_app, 4)  # a strategy that is not packable sends one message per client
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))

    assert grid.sent and all(not reply.has_error() for reply in grid.replies), [r.error for r in grid.replies
                                                                                 if r.has_error()]
    for msg in grid.sent:
        keys = set(msg.content["config"].keys())
        assert not keys & STATIC, f"static settings in a message: {sorted(keys & STATIC)}"
        assert {"cids", "server-round"} <= keys <= {"cids", "server-round", *own_keys}, sorted(keys)
    if strategy != "fedavg":
        return
    settings = ClientSettings.from_config(cfg)
    trains = [(m, r) for m, r in zip(grid.sent, grid.replies) if "arrays" in r.content]
    assert len(trains) == packs
    for msg, reply in trains:  # what the app replied is what the run's settings train
        config = msg.content["config"]
        expected, _ = train_pack(client_data, msg.content["arrays"], config, settings)
        other, _ = train_pack(client_data, msg.content["arrays"], config,
                              replace(settings, train=replace(settings.train, lr=0.01)))
        got = reply.content["arrays"].to_torch_state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert not all(torch.equal(got[k], other[k]) for k in other)


def test_a_process_builds_model_and_normaliser_once_per_settings():
    """Equal settings (as Ray unpickles them with each message) reuse the process's objects; new ones replace them."""
    from sim.federation.client_app import prepare

    cfg = compose_config(["dataset=synthetic", "model=cnn"])
    settings = ClientSettings.from_config(cfg)
    _, model, normalize = prepare(settings)
    _, again, normalize_again = prepare(pickle.loads(pickle.dumps(settings)))
    assert again is model and normalize_again is normalize
    _, other, other_normalize = prepare(replace(settings, mean=(0.0, 0.0, 0.0)))
    assert other is not model and other_normalize is not normalize
    assert torch.equal(other_normalize.shift, torch.zeros_like(other_normalize.shift))
    _, cnn28, _ = prepare(ClientSettings.from_config(compose_config(["dataset=synthetic", "model=cnn28"])))
    assert type(cnn28).__name__ == "CNN28"
