"""Attaching to an existing two-node Ray cluster (both nodes on this machine, loopback)."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import TINY, run_cli, run_dirs

pytestmark = pytest.mark.slow


def test_run_attaches_to_cluster_uses_both_nodes_and_leaves_it_up(tmp_path, data_dir):
    """SCAFFOLD, so per-client state (held by the server, shipped in messages) crosses nodes too."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        result = run_cli(
            [*TINY, f"resources.address={cluster.address}", f"dataset.data_dir={data_dir}", "strategy=scaffold"],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # one CPU per node and one CPU per client: two clients at once means one on each node
        assert "clients running at once: 2" in result.stdout + result.stderr
        (run_dir,) = run_dirs(tmp_path)
        history = pd.read_csv(run_dir / "history.csv")
        assert history["round"].tolist() == [0, 1, 2]
        assert (history.loc[1:, "train_failures"] == 0).all()
        assert history["control_norm"].iloc[1:].gt(0).all()  # control variates came back from both nodes
        assert 3 <= len(list((run_dir / "client_state").glob("*.npz"))) <= 6  # one file per client that trained
        # the cluster is still up afterwards
        ray.init(address=cluster.address)
        alive = [node for node in ray.nodes() if node["Alive"]]
        assert len(alive) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
