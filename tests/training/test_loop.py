"""`fit` against real PyTorch: data forms, Keras semantics of the mean, validation, callbacks,
bad input, and host synchronisation."""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fitlens
from fitlens import Callback, History


def quiet(**kw):
    return fitlens.Progress(0, **kw)


def test_fit_returns_keras_style_history_with_mean_now_and_validation(blobs, mlp):
    x, y = blobs
    h = fitlens.fit(
        mlp,
        (x[:150], y[:150]),
        loss="cross_entropy",
        optimizer="adam",
        metrics=["accuracy"],
        epochs=3,
        batch_size=32,
        validation_data=(x[150:], y[150:]),
        verbose=0,
    )
    assert isinstance(h, History)
    assert list(h.history) == [
        "loss",
        "loss_now",
        "loss_now_low",
        "loss_now_high",
        "accuracy",
        "accuracy_now",
        "accuracy_now_low",
        "accuracy_now_high",
        "val_loss",
        "val_accuracy",
    ]
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [0, 1, 2]
    assert len(h.batches) == 3 * 5  # ceil(150 / 32) = 5 steps per epoch
    assert h.batches["size"].tolist()[:5] == [32, 32, 32, 32, 22]


def test_epoch_mean_is_the_sample_weighted_mean_of_batch_values_as_keras_reports_it(blobs, mlp):
    x, y = blobs
    h = fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer="sgd",
        metrics=["accuracy"],
        epochs=2,
        batch_size=48,
        verbose=0,
    )
    b = h.batches
    for e in (1, 2):
        rows = b["epoch"] == e
        for name in ("loss", "accuracy"):
            expected = np.average(b[name][rows], weights=b["size"][rows])
            assert h.history[name][e - 1] == pytest.approx(expected, rel=1e-12)


def test_batch_values_are_the_loss_of_each_batch_before_its_update(blobs, mlp):
    """With lr=0 the model never changes, so each batch value is the model's loss on it."""
    x, y = blobs
    h = fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer=torch.optim.SGD(mlp.parameters(), lr=0.0),
        epochs=1,
        batch_size=50,
        verbose=0,
    )
    with torch.no_grad():
        full = F.cross_entropy(mlp(torch.from_numpy(x)), torch.from_numpy(y)).item()
    assert h.history["loss"][0] == pytest.approx(full, rel=1e-6)


def test_generator_needs_steps_per_epoch_and_continues_across_epochs(blobs, mlp):
    x, y = blobs
    served = []

    def gen():
        i = 0
        while True:
            served.append(i)
            s = slice((i * 20) % 200, (i * 20) % 200 + 20)
            yield torch.from_numpy(x[s]), torch.from_numpy(y[s])
            i += 1

    with pytest.raises(ValueError, match="steps_per_epoch"):
        fitlens.fit(mlp, gen(), loss="cross_entropy", optimizer="sgd", verbose=0)
    h = fitlens.fit(
        mlp, gen(), loss="cross_entropy", optimizer="sgd", epochs=3, steps_per_epoch=4, verbose=0
    )
    assert served == list(range(12))  # one generator, continued: no restart per epoch
    assert len(h.history["loss"]) == 3


def test_generator_that_runs_out_warns_with_the_step_count_and_keeps_history(blobs, mlp):
    x, y = blobs
    batches = iter([(x[i : i + 20], y[i : i + 20]) for i in range(0, 200, 20)])  # 10 batches
    with pytest.warns(UserWarning, match=r"ran out of data after 2 of 4 steps in epoch 3"):
        h = fitlens.fit(
            mlp,
            batches,
            loss="cross_entropy",
            optimizer="sgd",
            epochs=5,
            steps_per_epoch=4,
            verbose=0,
        )
    assert len(h.epoch) == 3 and len(h.batches) == 10


def test_dataloader_and_list_of_batches_are_reiterated_each_epoch(blobs, mlp):
    x, y = blobs
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True)
    h = fitlens.fit(mlp, loader, loss="cross_entropy", optimizer="adam", epochs=2, verbose=0)
    assert len(h.batches) == 8 and h.batches["size"].tolist()[3] == 8
    as_list = [(x[i : i + 100], y[i : i + 100]) for i in (0, 100)]
    h = fitlens.fit(
        mlp, as_list, loss="cross_entropy", optimizer="adam", epochs=3, steps_per_epoch=1, verbose=0
    )
    assert len(h.batches) == 3


def test_inputs_may_be_tuples_or_dicts_of_arrays(blobs):
    x, y = blobs

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, left, right):
            return self.a(left) + self.b(right)

    model = TwoInputs()
    h = fitlens.fit(
        model,
        ((x[:, :4], x[:, 4:]), y),
        loss="cross_entropy",
        optimizer="adam",
        batch_size=50,
        verbose=0,
    )
    assert len(h.batches) == 4
    h = fitlens.fit(
        model,
        ({"left": x[:, :4], "right": x[:, 4:]}, y),
        loss="cross_entropy",
        optimizer="adam",
        batch_size=50,
        verbose=0,
    )
    assert len(h.batches) == 4


def test_metric_names_are_the_users_and_callables_and_torchmetrics_work(blobs, mlp):
    torchmetrics = pytest.importorskip("torchmetrics")
    x, y = blobs

    def top1_error(out, t):
        return (out.argmax(1) != t).float().mean()

    f1 = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    h = fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer="adam",
        metrics={"Acc (%)": "accuracy", "err": top1_error, "macro F1": f1},
        epochs=2,
        batch_size=40,
        validation_data=(x, y),
        verbose=0,
    )
    assert {"Acc (%)", "err", "macro F1", "val_macro F1", "err_now"} <= set(h.history)
    np.testing.assert_allclose(
        np.array(h.history["Acc (%)"]) + np.array(h.history["err"]), 1.0, rtol=1e-6
    )
    # the stateful metric's epoch value is torchmetrics' own compute() over the epoch
    with torch.no_grad():
        f1.reset()
        expected_val = f1(mlp(torch.from_numpy(x)), torch.from_numpy(y)).item()
    assert h.history["val_macro F1"][-1] == pytest.approx(expected_val, rel=1e-6)


def test_binary_accuracy_reads_logits_and_sigmoid_probabilities(blobs):
    x, y = blobs
    yb = (y == 0).astype(np.float32)
    logits = torch.nn.Linear(8, 1)
    probs = torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.Sigmoid())
    probs[0].load_state_dict(logits.state_dict())
    lr0 = dict(metrics=["accuracy"], epochs=1, batch_size=200, verbose=0)
    h1 = fitlens.fit(
        logits,
        (x, yb),
        loss="binary_cross_entropy_with_logits",
        optimizer=torch.optim.SGD(logits.parameters(), lr=0.0),
        **lr0,
    )
    h2 = fitlens.fit(
        probs,
        (x, yb),
        loss=lambda p, t: F.binary_cross_entropy(p.squeeze(1), t),
        optimizer=torch.optim.SGD(probs.parameters(), lr=0.0),
        **lr0,
    )
    with torch.no_grad():
        expected = (
            ((logits(torch.from_numpy(x)).squeeze(1) > 0).float() == torch.from_numpy(yb))
            .float()
            .mean()
            .item()
        )
    assert h1.history["accuracy"][0] == pytest.approx(expected)
    assert h2.history["accuracy"][0] == pytest.approx(expected)


def test_validation_runs_in_eval_mode_without_gradients_and_training_in_train_mode(blobs):
    x, y = blobs
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 3)

        def forward(self, inp):
            seen.append((self.training, torch.is_grad_enabled()))
            return self.lin(inp)

    fitlens.fit(
        Spy(),
        (x, y),
        loss="cross_entropy",
        optimizer="sgd",
        batch_size=100,
        validation_data=(x[:50], y[:50]),
        verbose=0,
    )
    assert seen == [(True, True), (True, True), (False, False)]


def test_callbacks_see_hooks_in_order_with_mean_and_now_and_can_stop_training(blobs, mlp):
    x, y = blobs
    events = []

    class Recorder(Callback):
        def on_train_begin(self, logs):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs):
            events.append(f"epoch_begin {epoch}")

        def on_batch_end(self, step, logs):
            events.append(f"batch_end {step} {sorted(logs)}")

        def on_epoch_end(self, epoch, logs):
            events.append(f"epoch_end {epoch} {sorted(logs)}")
            if epoch == 1:
                self.run.stop_training = True

        def on_train_end(self, logs):
            events.append("train_end")

    h = fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer="sgd",
        metrics=["accuracy"],
        epochs=5,
        batch_size=100,
        validation_data=(x, y),
        callbacks=[Recorder()],
        verbose=0,
    )
    now = "'{0}', '{0}_now', '{0}_now_high', '{0}_now_low'"
    keys = f"[{now.format('accuracy')}, {now.format('loss')}]"
    val_keys = f"[{now.format('accuracy')}, {now.format('loss')}, 'val_accuracy', 'val_loss']"
    assert events == [
        "train_begin",
        "epoch_begin 0",
        f"batch_end 1 {keys}",
        f"batch_end 2 {keys}",
        f"epoch_end 0 {val_keys}",
        "epoch_begin 1",
        f"batch_end 1 {keys}",
        f"batch_end 2 {keys}",
        f"epoch_end 1 {val_keys}",
        "train_end",
    ]
    assert len(h.epoch) == 2


def test_training_that_raises_calls_on_exception_not_on_train_end_on_every_callback(blobs, mlp):
    x, y = blobs
    events = []

    class Breaks(Callback):
        def on_batch_end(self, step, logs):
            if self.run.epoch == 1 and step == 1:
                raise ValueError("a callback's bug")

    class Releases(Callback):
        def __init__(self, name, fails=False):
            self.name, self.fails = name, fails

        def on_train_end(self, logs):
            events.append(f"{self.name} train_end")

        def on_exception(self, error):
            events.append(f"{self.name} exception {type(error).__name__}: {error}")
            if self.fails:
                raise OSError("cannot release")

    kw = dict(loss="cross_entropy", optimizer="sgd", batch_size=100, verbose=0)
    with pytest.raises(OSError, match="cannot release") as info:
        fitlens.fit(
            mlp, (x, y), epochs=3,
            callbacks=[Breaks(), Releases("a", fails=True), Releases("b")], **kw,
        )  # fmt: skip
    # every callback released, even after one failed to; that failure names the first error
    assert events == [
        "a exception ValueError: a callback's bug",
        "b exception ValueError: a callback's bug",
    ]
    assert isinstance(info.value.__cause__, ValueError)
    events.clear()
    fitlens.fit(mlp, (x, y), epochs=1, callbacks=[Releases("c")], **kw)
    assert events == ["c train_end"]


def test_early_stopping_stops_when_the_monitored_value_stalls(blobs, mlp):
    x, y = blobs
    stop = fitlens.EarlyStopping(monitor="val_loss", patience=1)
    h = fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer=torch.optim.SGD(mlp.parameters(), lr=0.0),
        epochs=10,
        validation_data=(x, y),
        callbacks=[stop],
        verbose=0,
    )
    assert len(h.epoch) == 2 and stop.stopped_epoch == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(loss="hinge"), r"Unknown loss 'hinge'. Expected one of \[.*'cross_entropy'"),
        (dict(metrics=["f2"]), r"Unknown metric 'f2'. Expected one of \['acc', 'accuracy'\]"),
        (dict(optimizer="adamax"), r"Unknown optimizer 'adamax'. Expected one of \['adagrad'"),
        (dict(steps_per_epoch=0), r"`steps_per_epoch` to be a positive integer. Received: 0"),
        (dict(epochs=0), r"`epochs` to be an integer >= 1. Received: 0"),
        (dict(metrics="accuracy"), r"Wrap a single metric in a list"),
        (dict(train=[]), r"at least one batch. Received an empty list"),
        (dict(train=(np.zeros((0, 8), np.float32), np.zeros(0))), r"at least one sample"),
        (dict(train=(np.zeros((5, 8), np.float32), np.zeros(4))), r"same number of samples"),
        (dict(train=42), r"Expected `train` to be a generator"),
    ],
)
def test_bad_arguments_fail_before_any_training_step_with_a_clear_message(
    blobs, mlp, kwargs, match
):
    x, y = blobs
    before = [p.detach().clone() for p in mlp.parameters()]
    args = dict(train=(x, y), loss="cross_entropy", optimizer="sgd", verbose=0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        fitlens.fit(mlp, **args)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters(), strict=True))


@pytest.mark.parametrize(
    ("loss", "target", "match"),
    [
        ("cross_entropy", np.zeros((200, 3), np.int64), r"integer class indices of shape \(200,\)"),
        (
            "cross_entropy",
            np.zeros(200, np.float32),
            r"targets have shape \(200,\) and dtype torch.float32",
        ),
        (
            "mse",
            np.zeros((200, 2), np.float32),
            r"outputs have shape \(200, 3\).*targets have shape \(200, 2\)",
        ),
        ("cross_entropy", np.zeros(100, np.int64), r"disagree on the batch size"),
    ],
)
def test_mismatched_outputs_and_targets_are_caught_on_the_first_batch_naming_both_shapes(
    blobs, mlp, loss, target, match
):
    x, _ = blobs
    data = [(x, target)]
    with pytest.raises(ValueError, match=match):
        fitlens.fit(mlp, data, loss=loss, optimizer="sgd", verbose=0)


def test_a_model_that_cannot_take_the_inputs_fails_with_the_input_shapes(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match=r"first batch, with inputs of shape \(32, 8\)"):
        fitlens.fit(torch.nn.Linear(5, 3), (x, y), loss="cross_entropy", optimizer="sgd", verbose=0)


def test_line_mode_output_has_one_summary_line_per_epoch_and_no_carriage_returns(blobs, mlp):
    x, y = blobs
    out = io.StringIO()
    fitlens.fit(
        mlp,
        (x, y),
        loss="cross_entropy",
        optimizer="sgd",
        metrics=["accuracy"],
        epochs=3,
        validation_data=(x, y),
        verbose=fitlens.Progress(1, file=out),
    )
    lines = out.getvalue().splitlines()
    lines = [line for line in lines if re.match(r"Epoch \d/3 - \d+ steps - ", line)]
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("Epoch 1/3 - 7 steps - ")
    assert "accuracy: " in lines[0] and "(now " in lines[0] and "val_accuracy: " in lines[0]


class _SyncCounter:
    """Counts calls of the tensor methods that move data to the host (a sync on CUDA)."""

    names = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.names:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=original, **kw):
                self.count += 1
                return _orig(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


def _count_syncs(monkeypatch, x, y, steps, refresh_per_second):
    # SGD, not Adam: torch's CPU Adam calls .item() on its step counter itself, every step.
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    batches = [(torch.from_numpy(x[:20]), torch.from_numpy(y[:20]))] * steps
    with monkeypatch.context() as m:
        counter = _SyncCounter(m)
        fitlens.fit(
            model,
            batches,
            loss="cross_entropy",
            optimizer="sgd",
            metrics=["accuracy"],
            epochs=2,
            verbose=fitlens.Progress(  # log_fraction=1: no refreshes for a log's 10% lines
                1, file=io.StringIO(), refresh_per_second=refresh_per_second, log_fraction=1.0
            ),
        )
    return counter.count


def test_no_host_sync_happens_per_step_only_at_refreshes_and_epoch_ends(blobs, monkeypatch):
    x, y = blobs
    few = _count_syncs(monkeypatch, x, y, steps=10, refresh_per_second=1e-6)
    many = _count_syncs(monkeypatch, x, y, steps=80, refresh_per_second=1e-6)
    assert few == many  # 8x the steps, not one sync more
    # per epoch: the step-1 refresh and the epoch end, one transfer each; the first batch's check
    assert few <= 2 * 2 * 2 + 1


def test_every_display_refresh_costs_one_host_transfer(blobs, monkeypatch):
    x, y = blobs
    rare = _count_syncs(monkeypatch, x, y, steps=40, refresh_per_second=1e-6)
    every = _count_syncs(monkeypatch, x, y, steps=40, refresh_per_second=1e9)
    # per epoch: the step-1 refresh and the epoch-end flush; plus, once per run, the first
    # batch's look at its outputs (logits or probabilities?)
    assert rare == 2 * 2 + 1
    assert every == 2 * 40 + 1  # one transfer per refresh; nothing is left for the epoch end


def test_device_argument_moves_model_and_data(blobs, mlp):
    x, y = blobs
    h = fitlens.fit(mlp, (x, y), loss="cross_entropy", optimizer="sgd", device="cpu", verbose=0)
    assert h.params["device"] == "cpu"


def test_no_warnings_in_an_ordinary_run(blobs, mlp):
    x, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitlens.fit(
            mlp,
            (x, y),
            loss="cross_entropy",
            optimizer="adam",
            metrics=["accuracy"],
            epochs=2,
            validation_data=(x, y),
            verbose=0,
        )


def test_public_evaluate_is_callable_after_fit_has_been_imported(blobs, mlp):
    """`fitlens.evaluate` is the function, not a module shadowing it."""
    x, y = blobs
    import fitlens.training.loop

    out = fitlens.evaluate(mlp, (x, y), loss="cross_entropy", metrics=["accuracy"])
    assert set(out) == {"loss", "accuracy"}


def test_history_is_bitwise_identical_whatever_the_display_refresh_rate(blobs):
    """Estimators are fed in fixed blocks of steps, so refresh timing never changes rounding."""
    x, y = blobs
    histories = []
    for rate in (1e-6, 1e9, 7.0):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        histories.append(
            fitlens.fit(
                model,
                (x, y),
                loss="cross_entropy",
                optimizer="adam",
                metrics=["accuracy"],
                epochs=3,
                batch_size=2,  # 100 steps an epoch: whole blocks and a partial one
                verbose=fitlens.Progress(1, file=io.StringIO(), refresh_per_second=rate),
            ).history
        )
    assert histories[0] == histories[1] == histories[2]


def test_the_returned_history_does_not_keep_the_model_or_optimizer_alive():
    import gc
    import weakref

    model = torch.nn.Linear(4, 2)
    history = fitlens.fit(
        model,
        (torch.randn(16, 4), torch.randint(0, 2, (16,))),
        loss="cross_entropy",
        optimizer="adam",
        batch_size=8,
        verbose=0,
    )
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
    assert history.lens is not None  # what a later fit(..., history=history) continues from


def test_a_torchmetric_that_is_not_a_batch_mean_shows_no_now_and_one_that_is_keeps_it(blobs, mlp):
    # A macro F1 over the epoch is not the mean of per-batch F1s: a trend through batch F1s
    # would estimate another quantity, so it shows its value alone and records NaN; a micro accuracy
    # is a batch mean, so it keeps its now and interval.
    torchmetrics = pytest.importorskip("torchmetrics")
    x, y = blobs
    f1 = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
    out = io.StringIO()
    h = fitlens.fit(mlp, (x, y), loss="cross_entropy", optimizer="adam",
                    metrics={"f1": f1, "acc": acc}, epochs=2, batch_size=40,
                    validation_data=(x, y), verbose=fitlens.Progress(2, file=out))  # fmt: skip
    assert all(math.isnan(v) for v in h.history["f1_now"] + h.history["f1_now_high"])
    assert all(0.0 <= lo <= v <= hi <= 1.0 for lo, v, hi in zip(
        h.history["acc_now_low"], h.history["acc_now"], h.history["acc_now_high"], strict=True
    ))  # fmt: skip
    epoch_lines = [line for line in out.getvalue().splitlines() if line.startswith("Epoch ")]
    f1_mean = h.history["f1"][0]
    assert f"f1: {f1_mean:.4f} - acc: " in epoch_lines[0]  # the value alone, no "(now ...)"
    assert "acc: " in epoch_lines[0] and "acc: 0" in epoch_lines[0]
    gap_lines = [line for line in out.getvalue().splitlines() if line.startswith("gap ")]
    assert gap_lines and all(line.startswith("gap acc (estimated)") for line in gap_lines)
