"""`fit(train_eval=...)` with real models (dropout and batch-norm): no side effects, values that
match a plain evaluation, decompositions that add up, nominal coverage, and bad input."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest
import torch

import fitlens
from fitlens.adapters.data import BatchSource
from fitlens.adapters.evaluation import evaluate, measure_batches
from fitlens.adapters.losses import cross_entropy
from fitlens.adapters.metrics import resolve_metrics
from fitlens.adapters.train_eval import TrainSubset, train_passes
from fitlens.training.epoch_truth import measured


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, 8)) * 1.5
    x = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return x, y


def bn_dropout_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(32, 3),
    )


def train(train_data, *, seed=0, train_eval=None, epochs=3, verbose=0, **kw):
    model = bn_dropout_net(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(seed + 1)  # the data order and dropout masks
    h = fitlens.fit(
        model,
        train_data,
        loss="cross_entropy",
        optimizer=opt,
        metrics=["accuracy"],
        epochs=epochs,
        train_eval=train_eval,
        verbose=verbose,
        **kw,
    )
    return model, opt, h


def assert_same_training(a, b):
    (model_a, opt_a, _), (model_b, opt_b, _) = a, b
    for (name, ta), tb in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(ta, tb), name  # weights and batch-norm running statistics
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for key in state_a:
        for name in state_a[key]:
            assert torch.equal(
                torch.as_tensor(state_a[key][name]), torch.as_tensor(state_b[key][name])
            )


@pytest.mark.parametrize("train_eval", [True, 0.5, 60])
def test_same_seeded_training_with_and_without_train_eval_ends_with_identical_weights(train_eval):
    x, y = blobs()
    data = (x[:200], y[:200])
    val = (x[200:], y[200:])
    without = train(data, validation_data=val)
    rng_after_without = torch.get_rng_state()
    with_passes = train(data, validation_data=val, train_eval=train_eval)
    assert_same_training(without, with_passes)
    assert torch.equal(torch.get_rng_state(), rng_after_without)  # training's RNG left as is
    assert all(0 <= v <= 1 for v in with_passes[2].history["train_eval_train_mode_accuracy"])


def test_identical_weights_also_for_a_generator_and_a_shuffling_dataloader():
    x, y = blobs()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def gen():
        while True:
            for i in range(0, 240, 24):
                yield tx[i : i + 24], ty[i : i + 24]

    a = train(gen(), steps_per_epoch=10)
    b = train(gen(), steps_per_epoch=10, train_eval=0.3)
    assert_same_training(a, b)
    assert all(math.isfinite(v) for v in b[2].history["train_eval_loss"])
    assert b[2].gaps[0]["metrics"]["loss"]["train_mode"]["n"] == 3 * 24  # ceil(0.3 * 10) batches

    dataset = torch.utils.data.TensorDataset(tx, ty)
    loader = torch.utils.data.DataLoader(dataset, batch_size=24, shuffle=True)
    c = train(loader)
    d = train(loader, train_eval=True)  # iterates the loader afresh: its shuffle draws are undone
    assert_same_training(c, d)


def test_train_eval_on_all_data_in_eval_mode_equals_fitlens_evaluate_at_the_last_epoch():
    x, y = blobs()
    model, _, h = train((x, y), train_eval=True, batch_size=40)
    plain = evaluate(model, (x, y), loss="cross_entropy", metrics=["accuracy"])
    assert h.history["train_eval_loss"][-1] == pytest.approx(plain["loss"], rel=1e-6)
    assert h.history["train_eval_accuracy"][-1] == pytest.approx(plain["accuracy"], abs=1e-9)


def test_train_mode_pass_uses_batch_statistics_and_dropout_and_leaves_the_buffers_alone():
    x, y = blobs()
    model = bn_dropout_net()
    model.train()
    before = copy.deepcopy(model.state_dict())
    source = BatchSource((x, y), name="train", batch_size=40)
    subset = TrainSubset(source, 1.0)
    metrics = resolve_metrics(["accuracy"])
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    train_mode, eval_mode = train_passes(model, subset, cross_entropy, metrics, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and all(m.training for m in model.modules())
    # An untrained net with 50% dropout: train mode and eval mode really differ.
    assert train_mode["loss"].mean != pytest.approx(eval_mode["loss"].mean, rel=1e-3)
    # Eval mode equals a hand-written pass with the running statistics.
    model.eval()
    with torch.no_grad():
        by_hand = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    assert eval_mode["loss"].mean == pytest.approx(float(by_hand), rel=1e-5)


def test_a_module_frozen_in_eval_mode_stays_frozen_after_the_passes():
    x, y = blobs()
    model = bn_dropout_net()
    model.train()
    model[1].eval()  # the user froze batch-norm
    subset = TrainSubset(BatchSource((x, y), name="train"), 0.5)
    train_passes(model, subset, cross_entropy, [], torch.device("cpu"))
    assert not model[1].training and model[3].training


def test_the_subset_is_drawn_once_and_reused_every_epoch_without_touching_the_global_rng():
    x, y = blobs()
    source = BatchSource((x, y), name="train", batch_size=32)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    subset = TrainSubset(source, 0.25)
    assert torch.equal(torch.get_rng_state(), state)
    first = [b[1].copy() for b in subset.batches()]
    second = [b[1] for b in subset.batches()]
    assert sum(len(b) for b in first) == 60
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_every_epochs_decomposition_adds_up_and_is_stored_in_history_and_json():
    x, y = blobs()
    out = io.StringIO()
    _, _, h = train(
        (x[:200], y[:200]),
        validation_data=(x[200:], y[200:]),
        train_eval=0.5,
        verbose=fitlens.Progress(2, file=out),
    )
    assert len(h.gaps) == 3
    for gap in h.gaps:
        assert gap["estimated"] is False
        for name in ("loss", "accuracy"):
            d = gap["metrics"][name]
            parts = d["averaging_lag"] + d["mode_effect"] + d["generalisation"]
            assert parts == pytest.approx(d["validation"]["value"] - d["reported"], abs=1e-12)
            assert d["train_mode"]["n"] == 100 and d["validation"]["n"] == 40
            assert d["train_mode"]["low"] <= d["train_mode"]["value"] <= d["train_mode"]["high"]
    assert (
        h.history["train_eval_train_mode_accuracy"][1]
        == h.gaps[1]["metrics"]["accuracy"]["train_mode"]["value"]
    )
    assert json.loads(h.to_json())["gaps"][0]["metrics"]["loss"]["estimated"] is False
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Epoch 1/3 - 7 steps - ")
    assert lines[1].startswith("gap accuracy: mean ")
    assert lines[2].startswith("forecast epoch 2: its first 3 batches should show accuracy ~")
    assert lines[3].startswith("forecast check epoch 2: accuracy ")
    assert sum(line.startswith("forecast check epoch") for line in lines) == 2


def test_without_train_eval_the_free_decomposition_is_shown_and_labelled_estimated():
    x, y = blobs()
    out = io.StringIO()
    _, _, h = train(
        (x[:200], y[:200]),
        validation_data=(x[200:], y[200:]),
        epochs=2,
        verbose=fitlens.Progress(2, file=out),
    )
    assert "train_eval_loss" not in h.history
    assert all(g["estimated"] for g in h.gaps)
    d = h.gaps[0]["metrics"]["loss"]
    assert d["averaging_lag"] + d["rest"] == pytest.approx(d["total"], abs=1e-12)
    assert "gap accuracy (estimated): mean " in out.getvalue()


def test_intervals_from_real_subset_passes_cover_the_full_pass_values_at_the_nominal_rate():
    x, y = blobs(n=1000, seed=3)
    model = bn_dropout_net(seed=4)
    model.eval()
    full_source = BatchSource((x, y), name="train", batch_size=100)
    metrics = resolve_metrics(["accuracy"])
    full = measure_batches(
        model,
        TrainSubset(full_source, 1.0).batches(),
        "loss",
        cross_entropy,
        metrics,
        torch.device("cpu"),
    )
    hits = {"loss": 0, "accuracy": 0}
    draws = 300
    for seed in range(draws):
        subset = TrainSubset(full_source, 150, seed=seed)
        values = measure_batches(
            model, subset.batches(), "loss", cross_entropy, metrics, torch.device("cpu")
        )
        for name in hits:
            m = measured(values[name], population=1000)
            hits[name] += m.low <= full[name].mean <= m.high
    assert 0.90 <= hits["loss"] / draws <= 0.99
    assert 0.90 <= hits["accuracy"] / draws <= 0.99


def test_a_user_loss_callable_falls_back_to_the_spread_of_batch_means():
    x, y = blobs()
    model = bn_dropout_net().eval()
    batches = TrainSubset(BatchSource((x, y), name="train", batch_size=20), 1.0).batches()

    def my_loss(o, t):
        return torch.nn.functional.cross_entropy(o, t)

    values = measure_batches(model, batches, "loss", my_loss, [], torch.device("cpu"))
    named = measure_batches(model, batches, "loss", cross_entropy, [], torch.device("cpu"))
    assert values["loss"].kind == "batch" and named["loss"].kind == "per_sample"
    assert values["loss"].mean == pytest.approx(named["loss"].mean)
    assert values["loss"].sd > 0 and not math.isnan(values["loss"].sd)


@pytest.mark.parametrize(
    ("train_eval", "error", "match"),
    [
        (0.0, ValueError, r"fraction in \(0, 1\]. Received: 0.0"),
        (1.5, ValueError, r"fraction in \(0, 1\]. Received: 1.5"),
        (-3, ValueError, r"sample count >= 1. Received: -3"),
        (241, ValueError, r"at most the 240 training samples. Received: 241"),
        ("all", TypeError, r"Received: str"),
    ],
)
def test_bad_train_eval_fails_before_training(train_eval, error, match):
    x, y = blobs()
    model = bn_dropout_net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        fitlens.fit(
            model, (x, y), loss="cross_entropy", optimizer="adam", train_eval=train_eval, verbose=0
        )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_train_eval_on_data_without_length_or_steps_fails_before_training():
    x, y = blobs()

    class NoLength:
        def __iter__(self):
            yield torch.from_numpy(x), torch.from_numpy(y)

    with pytest.raises(ValueError, match="no length and no `steps_per_epoch`"):
        fitlens.fit(
            bn_dropout_net(),
            NoLength(),
            loss="cross_entropy",
            optimizer="adam",
            train_eval=0.5,
            verbose=0,
        )


def test_a_count_larger_than_a_generators_epoch_fails_on_the_first_batch_before_any_step():
    x, y = blobs()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    model = bn_dropout_net()
    before = copy.deepcopy(model.state_dict())

    def gen():
        while True:
            yield tx[:24], ty[:24]

    with pytest.raises(ValueError, match=r"at most the 240 training samples\. Received: 500"):
        fitlens.fit(
            model,
            gen(),
            loss="cross_entropy",
            optimizer="adam",
            steps_per_epoch=10,
            train_eval=500,
            verbose=0,
        )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
