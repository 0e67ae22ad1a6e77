"""Each metric and loss tells its range, so its now estimate and interval never leave it."""

from __future__ import annotations

import math

import pytest
import torch
import torchmetrics

import fitlens
from fitlens.adapters.losses import loss_range, resolve_loss
from fitlens.adapters.metrics import resolve_metrics
from fitlens.core.estimators import EMATrend
from fitlens.core.metric_range import NONNEGATIVE, RATE, UNBOUNDED, MetricRange


def _ranges(metrics):
    return {m.name: m.range for m in resolve_metrics(metrics)}


def test_accuracy_is_a_rate_and_torchmetrics_metrics_keep_their_declared_bounds():
    f1 = torchmetrics.F1Score(task="multiclass", num_classes=3)
    mse = torchmetrics.MeanSquaredError()
    mean = torchmetrics.MeanMetric()
    assert _ranges({"acc": "accuracy", "f1": f1, "mse": mse, "mean": mean}) == {
        "acc": RATE,
        "f1": MetricRange(0.0, 1.0),
        "mse": NONNEGATIVE,
        "mean": UNBOUNDED,
    }


def test_a_callable_is_unbounded_unless_it_declares_a_range():
    def margin(outputs, targets):
        return outputs.mean()

    def hit_rate(outputs, targets):
        return (outputs.argmax(1) == targets).float().mean()

    hit_rate.fitlens_range = (0.0, 1.0)  # type: ignore[attr-defined]

    def floor(outputs, targets):
        return outputs.abs().mean()

    floor.fitlens_range = (0.0, None)  # type: ignore[attr-defined]
    assert _ranges([margin, hit_rate, floor]) == {
        "margin": UNBOUNDED,
        "hit_rate": MetricRange(0.0, 1.0),
        "floor": NONNEGATIVE,
    }


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ("cross_entropy", NONNEGATIVE),
        ("mse", NONNEGATIVE),
        ("binary_crossentropy", NONNEGATIVE),
        (torch.nn.CrossEntropyLoss(label_smoothing=0.1), NONNEGATIVE),
        (torch.nn.HuberLoss(), NONNEGATIVE),
        (torch.nn.GaussianNLLLoss(), UNBOUNDED),  # can go below 0
        (lambda o, t: (o - t).mean(), UNBOUNDED),
    ],
)
def test_known_losses_are_non_negative_and_others_unbounded(loss, expected):
    assert loss_range(resolve_loss(loss)[1]) == expected


def test_a_malformed_declared_range_is_refused_before_training_with_the_fix():
    def metric(outputs, targets):
        return outputs.mean()

    metric.fitlens_range = "0 to 1"  # type: ignore[attr-defined]
    x = torch.randn(8, 3)
    with pytest.raises(TypeError, match=r"fitlens_range to be a \(low, high\) pair"):
        fitlens.fit(torch.nn.Linear(3, 2), (x, torch.zeros(8, dtype=torch.long)),
                    loss="cross_entropy", optimizer="sgd", metrics=[metric], verbose=0)  # fmt: skip


def test_fit_keeps_a_fast_rising_accuracys_now_and_its_interval_inside_0_1():
    # The "accuracy_now == 1.0019": a quick line through a rising accuracy overshoots 1.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    h = fitlens.fit(model, (x, y), loss="cross_entropy",
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.5), metrics=["accuracy"],
                    epochs=2, batch_size=16, verbose=0, now=EMATrend(beta=0.7))  # fmt: skip
    now, low, high = (h.history[f"accuracy_now{s}"] for s in ("", "_low", "_high"))
    assert now[0] == 1.0  # the line ran past 1 here: held at the bound
    assert all(0.0 <= lo <= v <= hi <= 1.0 for lo, v, hi in zip(low, now, high, strict=True))
    assert low[0] < 0.99  # and its interval says the bound was hit: the straight line is off
    assert h.params["ranges"] == {"loss": [0.0, None, False], "accuracy": [0.0, 1.0, True]}
    assert all(math.isfinite(v) for v in h.history["loss_now_high"])
