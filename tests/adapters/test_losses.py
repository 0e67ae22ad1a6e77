"""Loss names: Keras names mean Keras's losses, PyTorch names torch.nn.functional's; the
first-batch check warns when outputs look like logits for a probability loss or vice versa."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fitlens
from fitlens.adapters.losses import EPSILON, resolve_loss, weighted_loss
from fitlens.adapters.output_kind import output_kind_warning

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

# float32 arithmetic on a handful of values: both sides round a few times.
REL = 1e-6


def _probabilities(n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g), dim=1)


def _keras(fn, y_true, y_pred, **kw) -> np.ndarray:
    return np.asarray(fn(y_true.numpy(), y_pred.numpy(), **kw).cpu())


def test_keras_binary_crossentropy_reads_probabilities_and_clips_like_keras():
    p = torch.tensor([[0.9], [0.2], [0.0], [1.0], [0.5]])  # 0 and 1 exercise the clip
    t = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0]])
    _, loss = resolve_loss("binary_crossentropy")
    expected = _keras(keras.losses.binary_crossentropy, t, p)
    np.testing.assert_allclose(loss.per_sample(p, t).numpy(), expected, rtol=REL)
    assert loss(p, t).item() == pytest.approx(expected.mean(), rel=REL)
    # by hand: the clip happens in float32, where 1 - 1e-7 rounds to 1 - 1.19e-7
    clipped = np.clip(p.numpy().ravel(), np.float32(EPSILON), np.float32(1 - EPSILON))
    right = np.where(t.numpy().ravel() == 1, clipped, 1 - clipped.astype(np.float64))
    assert loss(p, t).item() == pytest.approx(-np.mean(np.log(right)), rel=REL)


def test_from_logits_true_matches_keras_from_logits():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 1, generator=g) * 3
    t = (torch.rand(6, 1, generator=g) > 0.5).float()
    loss = fitlens.losses.BinaryCrossentropy(from_logits=True)
    expected = _keras(keras.losses.binary_crossentropy, t, z, from_logits=True)
    np.testing.assert_allclose(loss.per_sample(z, t).numpy(), expected, rtol=REL)


def test_categorical_crossentropy_takes_one_hot_probabilities_and_normalises_like_keras():
    p = _probabilities(5, 4) * 1.7  # rows summing to 1.7: Keras divides by the sum first
    t = F.one_hot(torch.tensor([0, 3, 1, 2, 3]), 4).float()
    _, loss = resolve_loss("categorical_crossentropy")
    expected = _keras(keras.losses.categorical_crossentropy, t, p)
    np.testing.assert_allclose(loss.per_sample(p, t).numpy(), expected, rtol=REL)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    logits = fitlens.losses.CategoricalCrossentropy(from_logits=True)
    expected = _keras(keras.losses.categorical_crossentropy, t, z, from_logits=True)
    np.testing.assert_allclose(logits.per_sample(z, t).numpy(), expected, rtol=REL)


def test_sparse_categorical_crossentropy_takes_probabilities_and_class_indices():
    p = _probabilities(6, 3, seed=3)
    t = torch.tensor([0, 2, 1, 1, 0, 2])
    _, loss = resolve_loss("sparse_categorical_crossentropy")
    expected = _keras(keras.losses.sparse_categorical_crossentropy, t, p)
    np.testing.assert_allclose(loss.per_sample(p, t).numpy(), expected, rtol=REL)
    assert loss(p, t[:, None]).item() == pytest.approx(expected.mean(), rel=REL)  # (N, 1) targets
    z = torch.log(p) + 0.3  # logits of the same distribution
    logits = fitlens.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert logits(z, t).item() == pytest.approx(expected.mean(), rel=1e-5)


def test_pytorch_names_mean_what_torch_nn_functional_means():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, generator=g)
    t = (torch.rand(8, generator=g) > 0.5).float()
    p = torch.sigmoid(z)
    _, bce = resolve_loss("binary_cross_entropy")
    _, bce_logits = resolve_loss("binary_cross_entropy_with_logits")
    _, ce = resolve_loss("cross_entropy")
    assert bce(p, t).item() == pytest.approx(F.binary_cross_entropy(p, t).item(), rel=REL)
    assert bce_logits(z, t).item() == F.binary_cross_entropy_with_logits(z, t).item()
    zz, tt = torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    assert ce(zz, tt).item() == F.cross_entropy(zz, tt).item()


def test_weighted_loss_is_the_sum_of_weighted_sample_losses_over_the_batch_size():
    p = _probabilities(4, 3, seed=5)
    t = torch.tensor([0, 1, 2, 0])
    w = torch.tensor([1.0, 0.0, 2.0, 0.5])
    _, loss = resolve_loss("sparse_categorical_crossentropy")
    expected = _keras(keras.losses.SparseCategoricalCrossentropy(), t, p, sample_weight=w.numpy())
    assert weighted_loss(loss, p, t, w).item() == pytest.approx(float(expected), rel=REL)
    with pytest.raises(ValueError, match="per-sample loss values"):
        weighted_loss(lambda o, y: F.cross_entropy(o, y), p, t, w)


@pytest.mark.parametrize(
    ("name", "outputs", "says"),
    [
        ("binary_crossentropy", torch.linspace(-2, 2, 16)[:, None], "look like logits"),
        (
            "binary_cross_entropy_with_logits",  # a final sigmoid, seen through a reshape
            torch.sigmoid(torch.linspace(-2, 2, 16, requires_grad=True)[:, None]).squeeze(1),
            "look like prob",
        ),
        ("cross_entropy", _probabilities(8, 3), "look like probabilities"),
        ("sparse_categorical_crossentropy", torch.randn(8, 3), "look like logits"),
    ],
)
def test_outputs_of_the_wrong_kind_for_the_loss_are_named(name, outputs, says):
    _, loss = resolve_loss(name)
    assert says in (output_kind_warning(loss, outputs) or "")


@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        ("binary_crossentropy", torch.linspace(0.1, 0.9, 16)),
        ("binary_cross_entropy_with_logits", torch.linspace(-2, 2, 16)),
        # a fresh model's logits may all lie in [0, 1]: no sigmoid made them, no warning
        ("binary_cross_entropy_with_logits", torch.linspace(0.2, 0.4, 16, requires_grad=True) * 1),
        ("cross_entropy", torch.log_softmax(torch.randn(8, 3, requires_grad=True), dim=1)),
        ("cross_entropy", torch.randn(8, 3, generator=torch.Generator().manual_seed(0))),
        ("categorical_crossentropy", _probabilities(8, 3)),
        ("mse", torch.randn(8)),
    ],
)
def test_outputs_of_the_right_kind_raise_no_warning(name, outputs):
    _, loss = resolve_loss(name)
    assert output_kind_warning(loss, outputs) is None


def test_fit_warns_once_when_a_linear_model_meets_a_keras_probability_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 4) * 3
    y = (x[:, 0] > 0).float()
    model = torch.nn.Linear(4, 1)
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitlens.fit(
            model,
            (x, y),
            loss="binary_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
            epochs=2,
            batch_size=16,
            verbose=fitlens.Progress(2, file=out),
        )
    said = [str(w.message) for w in caught if "look like logits" in str(w.message)]
    assert len(said) == 1 and "binary_cross_entropy_with_logits" in said[0]
    # accuracy follows the loss's reading and says so, once
    assert out.getvalue().count("output > 0.5") == 1


def test_binary_accuracy_with_a_logits_loss_uses_threshold_zero_and_says_so():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).float()
    out = io.StringIO()
    fitlens.fit(
        torch.nn.Linear(4, 1),
        (x, y),
        loss="binary_cross_entropy_with_logits",
        optimizer="sgd",
        metrics=["accuracy"],
        batch_size=32,
        verbose=fitlens.Progress(2, file=out),
    )
    assert "accuracy: binary outputs read as logits (as the loss reads them)" in out.getvalue()
    assert "output > 0." in out.getvalue()


def test_evaluate_reads_binary_accuracy_as_the_loss_reads_outputs():
    p = torch.tensor([[0.2], [0.4], [0.7], [0.9]])
    t = torch.tensor([0.0, 0.0, 1.0, 1.0])
    model = torch.nn.Sequential()  # the identity: the "outputs" are the inputs
    model.register_parameter("w", torch.nn.Parameter(torch.zeros(1)))
    probs = fitlens.evaluate(model, (p, t), loss="binary_crossentropy", metrics=["accuracy"])
    logits = fitlens.evaluate(
        model, (p - 0.5, t), loss="binary_cross_entropy_with_logits", metrics=["accuracy"]
    )
    assert probs["accuracy"] == logits["accuracy"] == 1.0  # threshold 0.5, then 0
