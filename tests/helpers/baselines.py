"""The committed accuracy baselines (tests/baselines/) and how they were made.

The baselines were made with these exact commands (refresh them on purpose only: see the
README, "Guarding accuracy curves in CI"):

    # synthetic, deterministic: one curve, checked with an absolute tolerance
    python -m sim <SYNTHETIC settings below> hydra.run.dir=/tmp/base/synthetic
    python -m sim.regress build /tmp/base/synthetic --out tests/baselines/synthetic_fedavg.csv

    # real CIFAR-10 (shared copy): a band over seeds 0..9 (central accuracy and loss), made on a
    # 2-CPU machine (2 clients at once); CI's runs attach to the tests' 1-CPU Ray cluster (one
    # client at a time, one pack): the float sums differ slightly, well inside the band's spread
    python -m sim -m experiment=cifar10_dirichlet dataset.path=... seed=0,1,2,3,4,5,6,7,8,9 hydra.sweep.dir=/tmp/base/cifar10
    python -m sim.regress build /tmp/base/cifar10 --metrics central_acc,central_loss \
        --out tests/baselines/cifar10_dirichlet_band.csv

CI checks seeds that are NOT in the band (HELD_OUT): a band member always lies inside
its own band, so rerunning one proves nothing. Their mean curve is checked against the
band with the allowance for a mean of two runs (k * std * sqrt((1/2 + 1/n) / (1 + 1/n)),
see sim/regress.py).

The held-out check covers central_acc only. Measured when the band was made: the mean of
seeds 100 and 101 has central_loss 2.2555 at round 4, above the band's 2.2283 for a mean of
two; and leaving two of the ten band seeds out at a time, the per-round k=3 check of both
metrics flags 16 of 45 unchanged pairs. Each seed draws its own Dirichlet split, so the
spread between seeds is large (accuracy std 0.022-0.045 per round) and a per-round check of
two seeds cannot both pass new seeds reliably and fail 30 % less gain; more held-out seeds
or a split shared by the seeds would.
"""

from __future__ import annotations

import math

import pandas as pd

from helpers import REPO


BASELINES = REPO / "tests" / "baselines"


SYNTHETIC = [
    "dataset=synthetic", "dataset.num_train=2000", "dataset.num_test=500", "num_clients=10",
    "clients_per_round=5", "eval_clients_per_round=0", "num_rounds=8", "client.epochs=2",
    "client.lr=0.05", "client.batch_size=16",
    # two clients at once on any machine: the server sums one partial aggregate per message pack, so
    # the pack count moves the floats, and this fast-learning curve amplifies that (about 0.1 in
    # accuracy by round 8 with one pack); a private Ray of 2 CPUs gives the baseline's 2 packs
    "resources.ray_cpus=2",
]
CIFAR10 = ["experiment=cifar10_dirichlet"]  # 20 clients, Dirichlet(0.5), 10 rounds (conf/experiment/)


CIFAR10_BAND = BASELINES / "cifar10_dirichlet_band.csv"
HELD_OUT = (100, 101)  # seeds not in the band


HELD_OUT_METRICS = ["central_acc"]  # see the module docstring for why not central_loss
CHANCE_ACC, CHANCE_LOSS = 0.1, math.log(10)  # ten classes: a model that guesses


def less_gain(history: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """`history` with `fraction` less gain above chance: accuracy and loss moved towards a guess."""
    return history.assign(
        central_acc=CHANCE_ACC + (1 - fraction) * (history["central_acc"] - CHANCE_ACC),
        central_loss=CHANCE_LOSS - (1 - fraction) * (CHANCE_LOSS - history["central_loss"]),
    )
