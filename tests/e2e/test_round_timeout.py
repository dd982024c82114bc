"""`round_timeout` with a straggler: the round ends on time, without the straggler's reply.

How a missing reply is counted (a failure of each client of its message) is checked
without timing in tests/unit/test_strategy_behaviour.py; here a real run shows the timeout
ends the round before the straggler answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import TINY, run_cli, run_dirs
from sim.federation.sampling import TRAIN, sample_clients

pytestmark = pytest.mark.slow
SEED, RATE, DELAY_S, TIMEOUT_S = 4, 0.3, 12.0, 4.0  # the run waits out the straggler before it ends


def stragglers(server_round: int) -> list[int]:
    """The sampled clients that straggle in a training round: sim.federation.client_app.simulate_faults' draw."""
    ids = sample_clients(6, 3, SEED, server_round, TRAIN)
    return [int(c) for c in ids
            if np.random.default_rng([SEED, server_round, int(c), 0, 0xFA]).random(2)[1] < RATE]


def test_a_straggler_past_round_timeout_is_a_failure_and_the_round_ends_on_time(tmp_path, data_dir, ray_cluster_address):
    assert len(stragglers(1)) == 1  # seed 4: one of round 1's three clients straggles (the premise)
    result = run_cli(
        [*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", f"seed={SEED}", "eval_clients_per_round=0", "num_rounds=1",
         "strategy=fedmedian",  # one client per message: a straggler delays only its own reply
         f"client.straggler_rate={RATE}", f"client.straggler_delay_s={DELAY_S}", f"round_timeout={TIMEOUT_S}"],
        cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv").set_index("round")
    assert history.loc[1, "train_clients"] == 3
    # the straggler's reply is missing, so it is a failure (the two others count unless a loaded
    # machine kept them past the timeout too)
    assert history.loc[1, "train_failures"] >= 1
    # the round waited for the timeout, not for the straggler's 20 s
    assert TIMEOUT_S - 0.5 < history.loc[1, "round_s"] < DELAY_S - 5, history.loc[1, "round_s"]
