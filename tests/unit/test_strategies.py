"""FedProx in-process: a large proximal_mu keeps a client's model closer to the global one."""

from __future__ import annotations

import numpy as np


def test_fedprox_term_limits_client_drift(tmp_path):
    """A large proximal_mu keeps a client's model closer to the global one on skewed data."""
    from dataclasses import replace

    from flwr.app import ArrayRecord, ConfigRecord

    from helpers import compose_config
    from sim.federation.client_app import train_pack
    from sim.federation.client_data import ClientData
    from sim.federation.client_settings import ClientSettings
    from sim.data import load_dataset
    from sim.partition.schemes import partition_labels, split_validation
    from sim.run.recipe import initial_model

    cfg = compose_config(["dataset=synthetic", "dataset.num_train=600", "dataset.num_test=10", f"dataset.data_dir={tmp_path}"])
    data = load_dataset(cfg.dataset, 0)
    parts = partition_labels(data.train_labels, "pathological", 5, seed=0, classes_per_client=1,
                             class_assignment_mode="first-deterministic")
    train, val = split_validation(parts, 0.0, seed=0)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in train])]).astype(np.int64)
    client_data = ClientData(data.train_images, data.train_labels, np.concatenate(train), offsets,
                             np.zeros(0, np.int64), np.zeros(6, np.int64))
    start = ArrayRecord(initial_model(cfg).state_dict())
    settings = ClientSettings.from_config(cfg)
    settings = replace(settings, train=replace(settings.train, epochs=3, lr=0.05))

    def drift(mu: float) -> float:
        config = ConfigRecord({"cids": [0], "server-round": 1, "proximal-mu": mu})  # FedProx's mu comes per round
        state, _ = train_pack(client_data, start, config, settings)
        before = start.to_torch_state_dict()
        return float(sum((state[k] - before[k]).pow(2).sum() for k in state).sqrt())

    assert drift(10.0) < 0.7 * drift(0.0)
