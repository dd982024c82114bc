"""Bring your own model and data, end to end: `python -m sim` on a grayscale 28x28 image folder,
and on a Hugging Face `save_to_disk` copy with a natural partition and a model class of the
tests' own (`helpers.own_data.PoolNet`). The hub is never contacted (conftest.py sets it offline).
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from helpers.own_data import POOLNET, gray_folder, hf_copy
from helpers import REPO, run_cli, run_dirs


# ---------------------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
def test_grayscale_folder_end_to_end_learns_above_chance(tmp_path, ray_cluster_address):
    path, _ = gray_folder(tmp_path)
    result = run_cli(
        ["dataset=folder", f"dataset.path={path}", "model=cnn28", "num_clients=4", "clients_per_round=4",
         "eval_clients_per_round=0", "num_rounds=2", "client.epochs=1", "client.batch_size=16",
         f"resources.address={ray_cluster_address}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_central_acc"] > 0.5  # 4 classes: chance is 0.25
    assert summary["dataset"]["name"] == "digits" and summary["dataset"]["channels"] == 1
    assert summary["partition_manifest"].startswith("partitions/digits_iid_n4")
    names = [p.name for p in (tmp_path / "partitions").iterdir()] + [p.name for p in (tmp_path / "data/cache").iterdir()]
    assert names and not any("cifar" in n for n in names)


@pytest.mark.slow
def test_hf_copy_natural_partition_and_own_model_end_to_end(tmp_path):
    path, (_, writer) = hf_copy(tmp_path)
    writers = len(set(writer))
    result = run_cli(
        ["dataset=hf", f"dataset.path={path}", "dataset.image_column=img", "dataset.label_column=fine",
         "partition=natural", f"num_clients={writers}", "clients_per_round=3", "eval_clients_per_round=2",
         "num_rounds=2", "client.epochs=1", "client.batch_size=16", *POOLNET],
        cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    history = pd.read_csv(run / "history.csv")
    assert list(history["round"]) == [0, 1, 2] and history["train_failures"].fillna(0).sum() == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["partition_manifest"] == f"partitions/tiny_hf_natural_bywriter_id_n{writers}_val0.1_seed0.npz"
    assert summary["dataset"]["num_classes"] == 3 and summary["dataset"]["name"] == "tiny_hf"
