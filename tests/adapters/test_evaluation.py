"""Evaluation passes with sample and class weights, Keras's way: `fitlens.evaluate`,
`validation_data=(x, y, w)` and `train_eval` weigh the loss as ``sum(w * loss) / N`` and
per-sample metrics as ``sum(w * m) / sum(w)``, as training does; weights of 1 change no bit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fitlens
from fitlens.adapters.evaluation import PassValue, measure_batches
from fitlens.adapters.losses import cross_entropy
from fitlens.adapters.metrics import resolve_metrics
from fitlens.training.epoch_truth import measured

RNG = np.random.RandomState(1)
X = RNG.randn(60, 4).astype(np.float32)
Y = RNG.randint(0, 3, 60)
W = RNG.uniform(0, 2, 60).astype(np.float32)
CLASS_WEIGHT = {0: 1.0, 1: 3.0, 2: 0.5}


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def _fit(model, lr=0.01, **kw):
    """`fit` on (X, Y) with plain SGD (lr=0: every batch sees the same model), one epoch."""
    args = dict(loss="cross_entropy", metrics=["accuracy"], epochs=1, batch_size=16, verbose=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return fitlens.fit(model, (X, Y), optimizer=optimizer, **{**args, **kw})


def _by_hand(model, w):
    with torch.no_grad():
        out = model(torch.from_numpy(X)).double()
    losses = F.cross_entropy(out, torch.from_numpy(Y), reduction="none").numpy()
    right = (out.argmax(1).numpy() == Y).astype(np.float64)
    return np.sum(w * losses) / len(Y), np.sum(w * right) / np.sum(w)


def per_sample_error(outputs, targets):
    """A callable metric with one value per sample: 1 where the arg-max is wrong."""
    return (outputs.argmax(-1) != targets).float()


def mean_error(outputs, targets):
    """The same metric, mean-reduced by the callable itself."""
    return (outputs.argmax(-1) != targets).float().mean()


def test_evaluate_weighs_loss_and_accuracy_as_keras_and_reads_weights_from_every_form():
    model = _model()
    loss, accuracy = _by_hand(model, W.astype(np.float64))
    kw = dict(loss="cross_entropy", metrics=["accuracy"], batch_size=16)
    by_arg = fitlens.evaluate(model, (X, Y), sample_weight=W, **kw)
    assert by_arg["loss"] == pytest.approx(loss, rel=1e-6)
    assert by_arg["accuracy"] == pytest.approx(accuracy, rel=1e-12)
    # (x, y, w) arrays and a loader of (x, y, w) batches: the same sums, bit for bit
    assert fitlens.evaluate(model, (X, Y, W), **kw) == by_arg
    data = TensorDataset(torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(W))
    del kw["batch_size"]
    assert fitlens.evaluate(model, DataLoader(data, batch_size=16), **kw) == by_arg


def test_weights_of_one_give_the_unweighted_values_bit_for_bit():
    model = _model()
    ones = np.ones(60, np.float32)
    kw = dict(loss="cross_entropy", metrics=["accuracy", per_sample_error, mean_error])
    plain = fitlens.evaluate(model, (X, Y), batch_size=16, **kw)
    assert fitlens.evaluate(model, (X, Y), batch_size=16, sample_weight=ones, **kw) == plain

    def run(validation, train_eval_weights):
        torch.manual_seed(0)
        m = _model()
        return _fit(  # lr=0: the same model in both runs
            m,
            0.0,
            sample_weight=train_eval_weights,
            validation_data=validation,
            train_eval=True,
            **kw,
        ).history

    unweighted, weighted = run((X, Y), None), run((X, Y, ones), ones)
    for key in unweighted:
        if key.startswith(("val_", "train_eval_")):
            assert weighted[key] == unweighted[key], key


def test_validation_triples_are_weighted_like_evaluate_and_class_weight_stays_out_of_them():
    model = _model()
    # Keras: class weights weigh training only
    h = _fit(model, class_weight=CLASS_WEIGHT, validation_data=(X, Y, W))
    after = fitlens.evaluate(
        model, (X, Y), sample_weight=W, loss="cross_entropy", metrics=["accuracy"]
    )
    assert h.history["val_loss"] == [after["loss"]]
    assert h.history["val_accuracy"] == [after["accuracy"]]
    loss, accuracy = _by_hand(model, W.astype(np.float64))
    assert after["loss"] == pytest.approx(loss, rel=1e-6)
    assert after["accuracy"] == pytest.approx(accuracy, rel=1e-12)


@pytest.mark.parametrize(
    "weights",
    [dict(class_weight=CLASS_WEIGHT), dict(sample_weight=W)],
    ids=["class_weight", "sample_weight"],
)
def test_train_eval_weighs_as_training_so_the_gap_adds_up_on_one_weighting(weights):
    # lr=0: the model measured at the epoch end is the one every batch saw, so the weighted
    # train_eval values equal the weighted training means up to float32 summation order
    model = _model()
    h = _fit(model, 0.0, train_eval=True, validation_data=(X, Y), **weights).history
    w = W if "sample_weight" in weights else np.array([CLASS_WEIGHT[c] for c in Y], np.float32)
    loss, accuracy = _by_hand(model, w.astype(np.float64))
    assert h["train_eval_loss"][0] == pytest.approx(loss, rel=1e-6)
    assert h["train_eval_accuracy"][0] == pytest.approx(accuracy, rel=1e-12)
    assert h["loss"][0] == pytest.approx(h["train_eval_loss"][0], rel=1e-6)
    assert h["accuracy"][0] == pytest.approx(h["train_eval_accuracy"][0], rel=1e-6)
    # and not the unweighted values: the weights reach the passes
    plain_loss, _ = _by_hand(model, np.ones(60))
    assert abs(h["train_eval_loss"][0] - plain_loss) > 1e-3


def test_a_weighted_gap_decomposition_adds_up_exactly():
    model = _model()
    h = _fit(model, epochs=2, sample_weight=W, train_eval=True, validation_data=(X, Y, W))
    for gap in h.gaps:
        for name, parts in gap["metrics"].items():
            total = parts["validation"]["value"] - parts["reported"]
            steps = parts["averaging_lag"] + parts["mode_effect"] + parts["generalisation"]
            assert steps == pytest.approx(total, abs=1e-12), name


def test_a_weighted_accuracy_interval_is_that_of_kishs_effective_sample_size():
    # weights 1 and 3 in equal numbers: n_eff = (sum w)^2 / sum w^2 = 16 n^2/4 / (10 n/2) = 0.8 n
    plain = PassValue(0.8, 100, math.nan, "proportion")
    weighted = PassValue(0.8, 100, math.nan, "proportion", design=1.25)
    assert measured(weighted).low == pytest.approx(
        fitlens.core.gap.wilson_interval(0.8, 80)[0], rel=1e-12
    )
    assert measured(weighted).low < measured(plain).low
    # the whole population measured: no interval, weighted or not
    assert measured(weighted, population=100).low == 0.8


def test_a_weighted_pass_gives_the_design_effect_of_its_weights():
    model = _model()
    w = np.where(np.arange(60) % 2 == 0, 1.0, 3.0).astype(np.float32)
    batches = [
        (
            torch.from_numpy(X[i : i + 20]),
            torch.from_numpy(Y[i : i + 20]),
            torch.from_numpy(w[i : i + 20]),
        )
        for i in range(0, 60, 20)
    ]
    values = measure_batches(
        model, batches, "loss", cross_entropy, resolve_metrics(["accuracy"]), torch.device("cpu")
    )
    assert values["accuracy"].design == pytest.approx(1.25, rel=1e-12)
    assert values["loss"].design == 1.0  # the loss is a plain mean of w * loss


def test_weighted_validation_arrays_with_a_callable_loss_fail_before_training():
    model = _model()
    with pytest.raises(ValueError, match="per-sample loss values"):
        _fit(model, loss=lambda o, t: F.cross_entropy(o, t), validation_data=(X, Y, W))
    with pytest.raises(ValueError, match="per-sample loss values"):
        fitlens.evaluate(model, (X, Y), sample_weight=W, loss=lambda o, t: F.cross_entropy(o, t))


def test_callable_metrics_are_weighted_per_sample_or_as_keras_broadcasts_a_batch_mean():
    model = _model()
    with torch.no_grad():
        wrong = (model(torch.from_numpy(X)).argmax(1).numpy() != Y).astype(np.float64)
    w = W.astype(np.float64)
    values = fitlens.evaluate(
        model,
        (X, Y),
        sample_weight=W,
        loss="cross_entropy",
        metrics=[per_sample_error, mean_error],
        batch_size=20,
    )
    # per-sample values: the weighted mean
    assert values["per_sample_error"] == pytest.approx(np.sum(w * wrong) / np.sum(w), rel=1e-12)
    # a batch mean stands for each of its samples: counted with weight sum(w) of its batch
    means = wrong.reshape(3, 20).mean(axis=1)
    sums = w.reshape(3, 20).sum(axis=1)
    assert values["mean_error"] == pytest.approx(np.sum(sums * means) / np.sum(sums), rel=1e-6)


def test_a_per_sample_callable_trains_with_its_weighted_mean():
    torch.manual_seed(0)
    model = _model()
    h = _fit(model, 0.0, metrics=[per_sample_error], sample_weight=W)
    with torch.no_grad():
        wrong = (model(torch.from_numpy(X)).argmax(1).numpy() != Y).astype(np.float64)
    expected = np.sum(W * wrong) / np.sum(W.astype(np.float64))
    assert h.history["per_sample_error"][0] == pytest.approx(expected, rel=1e-6)
    # unweighted: the plain mean of its per-sample values
    plain = fitlens.evaluate(model, (X, Y), loss="cross_entropy", metrics=[per_sample_error])
    assert plain["per_sample_error"] == pytest.approx(wrong.mean(), rel=1e-12)


def test_a_metric_of_the_wrong_shape_names_both_forms():
    model = _model()
    with pytest.raises(ValueError, match=r"one value per batch \(a scalar\) or one per sample"):
        fitlens.evaluate(model, (X, Y), loss="cross_entropy", metrics=[lambda o, t: o])


torchmetrics = pytest.importorskip("torchmetrics")


class WeightedMeanError(torchmetrics.Metric):
    """A torchmetrics metric that takes per-sample weights."""

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds, target, sample_weight=None):
        wrong = (preds.argmax(-1) != target).double()
        w = torch.ones_like(wrong) if sample_weight is None else sample_weight.double()
        self.total += (w * wrong).sum()
        self.weight += w.sum()

    def compute(self):
        return self.total / self.weight


def test_a_torchmetric_that_takes_sample_weight_gets_them():
    model = _model()
    with torch.no_grad():
        wrong = (model(torch.from_numpy(X)).argmax(1).numpy() != Y).astype(np.float64)
    values = fitlens.evaluate(
        model, (X, Y), sample_weight=W, loss="cross_entropy", metrics={"err": WeightedMeanError()}
    )
    w = W.astype(np.float64)
    assert values["err"] == pytest.approx(np.sum(w * wrong) / np.sum(w), rel=1e-12)


def test_a_torchmetric_without_sample_weight_stays_unweighted_with_one_warning():
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = _fit(
            model, 0.0, metrics={"acc": acc}, epochs=2, sample_weight=W, validation_data=(X, Y, W)
        )
    said = [str(w.message) for w in caught if "takes no sample weights" in str(w.message)]
    assert len(said) == 1 and "'acc'" in said[0]
    _, unweighted = _by_hand(model, np.ones(60))
    assert h.history["acc"][0] == pytest.approx(unweighted, rel=1e-6)
    assert h.history["val_acc"][0] == pytest.approx(unweighted, rel=1e-6)
