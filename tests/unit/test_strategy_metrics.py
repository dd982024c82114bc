"""Reply-metric aggregation: weighted means, summed counts."""

import pytest
from flwr.app import MetricRecord, RecordDict

from sim.federation.strategy import aggregate_reply_metrics


def _reply(**metrics):
    return RecordDict({"metrics": MetricRecord(metrics)})


def test_weighted_means_and_summed_counts():
    replies = [
        _reply(**{"num-examples": 30, "train_loss": 1.0, "clients": 3, "failures": 1}),
        _reply(**{"num-examples": 10, "train_loss": 2.0, "clients": 2, "failures": 0}),
    ]
    result = aggregate_reply_metrics(replies, "num-examples")
    assert result["train_loss"] == pytest.approx(1.25)
    assert result["clients"] == 5 and result["failures"] == 1 and result["num-examples"] == 40


def test_no_examples_gives_counts_only():
    result = aggregate_reply_metrics([_reply(**{"num-examples": 0, "eval_acc": 0.0, "clients": 2})], "num-examples")
    assert "eval_acc" not in result and result["clients"] == 2
