"""The committed CIFAR-10 band fails a curve with 30 % less gain above chance, on its numbers alone.

How the baselines were made, and why the band is IID with twenty seeds:
tests/helpers/baselines.py. The runs themselves are checked in tests/e2e/test_baselines_e2e.py.
"""

from __future__ import annotations

import pandas as pd

from helpers.baselines import CIFAR10_BAND, HELD_OUT, less_gain
from sim.regress import check


def test_cifar10_band_fails_a_curve_with_30_percent_less_gain():
    """On the committed band alone: its mean curve passes as a mean of two runs; 30 % less gain fails."""
    band = pd.read_csv(CIFAR10_BAND)
    assert (band["central_acc_n"] >= 20).all() and (band["central_loss_n"] >= 20).all()
    typical = band[["round"]].assign(central_acc=band["central_acc_mean"], central_loss=band["central_loss_mean"])
    assert check(typical, band, runs=len(HELD_OUT)).empty
    for metric in ("central_acc", "central_loss"):  # each metric on its own catches it
        violations = check(less_gain(typical, 0.3), band, metrics=[metric], runs=len(HELD_OUT))
        assert not violations.empty, metric
