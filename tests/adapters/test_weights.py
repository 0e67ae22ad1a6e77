"""Class and sample weights, Keras semantics: the loss is sum(w * loss) / N per batch, accuracy
the weighted mean; class weights are exactly the per-sample weights of each sample's class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fitlens
from fitlens.adapters.weights import BatchWeights, check_class_weight, classes_of

RNG = np.random.RandomState(0)
X = RNG.randn(48, 4).astype(np.float32)
Y = RNG.randint(0, 3, 48)
CLASS_WEIGHT = {0: 1.0, 1: 3.0, 2: 0.5}


def _fit(train, lr=0.1, epochs=2, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    h = fitlens.fit(
        model,
        train,
        loss="cross_entropy",
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        metrics=["accuracy"],
        epochs=epochs,
        verbose=0,
        **kw,
    )
    return h, model


def test_class_weights_equal_the_per_sample_weights_of_each_class_exactly():
    per_sample = np.array([CLASS_WEIGHT[c] for c in Y], dtype=np.float32)
    by_class, m1 = _fit((X, Y), batch_size=8, class_weight=CLASS_WEIGHT)
    by_sample, m2 = _fit((X, Y), batch_size=8, sample_weight=per_sample)
    for key in ("loss", "loss_now", "accuracy", "accuracy_now"):
        assert by_class.history[key] == by_sample.history[key], key
    assert torch.equal(m1.weight, m2.weight) and torch.equal(m1.bias, m2.bias)


def test_epoch_loss_and_accuracy_are_keras_weighted_means():
    w = RNG.uniform(0, 2, 48).astype(np.float32)
    h, model = _fit((X, Y), lr=0.0, epochs=1, batch_size=16, sample_weight=w, shuffle=False)
    with torch.no_grad():
        out = model(torch.from_numpy(X)).double()
    losses = F.cross_entropy(out, torch.from_numpy(Y), reduction="none").numpy()
    right = (out.argmax(1).numpy() == Y).astype(np.float64)
    # Keras: each batch's loss is sum(w * l) / N, averaged over batches by N; accuracy is the
    # weighted mean sum(w * right) / sum(w) over the whole epoch
    assert h.history["loss"][0] == pytest.approx(np.sum(w * losses) / 48, rel=1e-6)
    assert h.history["accuracy"][0] == pytest.approx(np.sum(w * right) / np.sum(w), rel=1e-6)


def test_the_now_estimate_weighs_each_batch_by_its_sum_of_sample_weights():
    w = RNG.uniform(0, 2, 48).astype(np.float32)
    h, _ = _fit(
        (X, Y), lr=0.5, epochs=1, batch_size=8, sample_weight=w, shuffle=False, now=fitlens.EMA(0.5)
    )
    by_hand = fitlens.EMA(0.5)
    by_hand.update(h.batches["accuracy"], w.reshape(6, 8).sum(axis=1).astype(np.float64))
    assert h.history["accuracy_now"][0] == pytest.approx(by_hand.value, rel=1e-6)


def test_one_weighted_step_is_the_hand_written_weighted_step():
    w = RNG.uniform(0, 2, 48).astype(np.float32)
    _, model = _fit((X, Y), epochs=1, batch_size=48, sample_weight=w)
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    torch.randperm(48)  # fit draws the epoch's order from the same generator first
    losses = F.cross_entropy(ref(torch.from_numpy(X)), torch.from_numpy(Y), reduction="none")
    (torch.from_numpy(w) * losses).sum().div(48).backward()
    opt.step()
    # one batch of all 48 samples in a shuffled order: sums in another order, so float32 ulps
    torch.testing.assert_close(model.weight, ref.weight, rtol=1e-5, atol=1e-6)


def test_a_loader_of_x_y_w_batches_trains_as_arrays_with_sample_weight():
    w = RNG.uniform(0, 2, 48).astype(np.float32)
    arrays, _ = _fit((X, Y), batch_size=8, sample_weight=w, shuffle=False)
    data = TensorDataset(torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(w))
    loader, _ = _fit(DataLoader(data, batch_size=8))
    prefetched, _ = _fit(DataLoader(data, batch_size=8), prefetch=2)
    assert loader.history == arrays.history == prefetched.history


def test_classes_are_read_from_indices_one_hot_and_binary_targets():
    assert classes_of(torch.tensor([2, 0])).tolist() == [2, 0]
    assert classes_of(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [1, 0]
    assert classes_of(torch.tensor([[1.0], [0.0]])).tolist() == [1, 0]
    weigh = BatchWeights({1: 4.0}, torch.device("cpu"), torch.float32)
    # class 0 is missing from the dict and class 7 lies beyond it: both weigh 1
    assert weigh(torch.tensor([0, 1, 7]), None).tolist() == [1.0, 4.0, 1.0]
    assert weigh(torch.tensor([1, 1]), torch.tensor([0.5, 2.0])).tolist() == [2.0, 8.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        (dict(class_weight=[1.0, 2.0]), TypeError, "`class_weight` to be a non-empty dict"),
        (dict(class_weight={"a": 1.0}), ValueError, r"class indices \(integers >= 0\)"),
        (dict(class_weight={0: -1.0}), ValueError, "finite numbers >= 0. Received 0: -1.0"),
        (dict(sample_weight=np.ones(47)), ValueError, r"same number of samples"),
        (
            dict(sample_weight=np.ones(48), loss=lambda o, t: F.cross_entropy(o, t)),
            ValueError,
            "per-sample loss values",
        ),
    ],
)
def test_bad_weights_fail_before_the_first_step(kwargs, error, says):
    model = torch.nn.Linear(4, 3)
    kwargs.setdefault("loss", "cross_entropy")
    with pytest.raises(error, match=says):
        fitlens.fit(model, (X, Y), optimizer="sgd", verbose=0, **kwargs)
    assert check_class_weight(None) is None


def test_batch_weights_of_the_wrong_length_are_an_error_naming_both_shapes():
    bad = [(torch.from_numpy(X[:8]), torch.from_numpy(Y[:8]), torch.ones(5))]
    with pytest.raises(ValueError, match=r"shape \(8,\). Received weights of shape \(5,\)"):
        _fit(bad)


def test_the_tuned_step_weighs_loss_and_metrics_like_the_plain_step():
    # a clip that never bites and per-step `lr` and `grad_norm` columns switch fit to the
    # tuned step (training/update.py); the weighted values must not change, bit for bit
    w = RNG.uniform(0, 2, 48).astype(np.float32)
    plain, m1 = _fit((X, Y), batch_size=8, sample_weight=w, shuffle=False)
    tuned, m2 = _fit(
        (X, Y),
        batch_size=8,
        sample_weight=w,
        shuffle=False,
        clip_grad_norm=1e30,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
    )
    for key in ("loss", "loss_now", "accuracy", "accuracy_now"):
        assert plain.history[key] == tuned.history[key], key
    assert torch.equal(m1.weight, m2.weight) and torch.equal(m1.bias, m2.bias)
    assert tuned.history["lr"] == [0.1, 0.1]
