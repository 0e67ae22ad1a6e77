"""Mixed precision, gradient accumulation and clipping in `fit` (training/update.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens.training.update import TunedStep
from tests.training.test_host_sync import FrozenClock, StepWatch, TickingClock, counting_host_reads

EPS32 = float(np.finfo(np.float32).eps)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # no batch-norm, no dropout: a batch's gradient is a plain mean
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _batches(size: int, n: int = 24) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _data(n)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]


def _fit(data: Any, epochs: int = 2, **kwargs: Any) -> tuple[torch.nn.Module, fitlens.History]:
    net = _model()
    kwargs.setdefault("optimizer", torch.optim.SGD(net.parameters(), lr=0.5))
    kwargs.setdefault("verbose", 0)
    history = fitlens.fit(
        net, data, loss="cross_entropy", epochs=epochs, clock=FrozenClock(), **kwargs
    )
    return net, history


def _close(a: torch.nn.Module, b: torch.nn.Module, rtol: float, atol: float) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=name)


# -- accumulation ----------------------------------------------------------------------------


def test_accumulating_3_batches_of_4_equals_one_batch_of_12() -> None:
    big, big_h = _fit(_batches(12), metrics=["accuracy"])
    small, small_h = _fit(_batches(4), metrics=["accuracy"], accumulate=3)
    # A gradient of 12 samples is one float32 mean; accumulated, three means of 4 divided by 3
    # and summed: the same terms re-associated, each within a few ulp (12 terms: <= 12 eps
    # relative), over 4 SGD steps of lr 0.5 on weights and gradients of order 1.
    _close(small, big, rtol=50 * EPS32, atol=50 * EPS32)
    # The model changes only between groups, so each group's sample-weighted batch values
    # average to the big batch's value: the epoch means agree.
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(small_h.history[key], big_h.history[key], rtol=10 * EPS32)
    assert len(small_h.batches) == 2 * 6 and small_h.params["steps"] == 6  # batches, not updates


def test_the_epoch_end_steps_a_partial_group_divided_by_its_own_size() -> None:
    x, y = _data(20)
    uneven = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)]  # 5 batches, groups 2,2,1
    grouped = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])]
    updates: list[int] = []
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    opt.register_step_post_hook(lambda *_: updates.append(1))
    fitlens.fit(net, uneven, loss="cross_entropy", optimizer=opt, epochs=2, verbose=0, accumulate=2)
    assert len(updates) == 2 * 3
    reference, _ = _fit(grouped)
    _close(net, reference, rtol=50 * EPS32, atol=50 * EPS32)


def test_the_run_says_once_that_steps_count_batches_under_accumulation() -> None:
    out = io.StringIO()
    _fit(_batches(4), accumulate=4, verbose=fitlens.Progress(2, file=out))
    lines = out.getvalue().splitlines()
    note = (
        "accumulate=4: the optimizer steps every 4 batches and at each epoch's end "
        "(2 updates per epoch of 6 batches); steps, the ETA and steps_per_epoch count batches."
    )
    assert lines[0] == note and lines.count(note) == 1
    assert lines[1].startswith("Epoch 1/2 - 6 steps")


def test_a_generator_of_unknown_length_steps_its_last_group_at_the_epoch_end() -> None:
    def forever():
        while True:
            yield from _batches(4, 20)

    updates: list[int] = []
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    opt.register_step_post_hook(lambda *_: updates.append(1))
    fitlens.fit(
        net, forever(), loss="cross_entropy", optimizer=opt, epochs=1,
        steps_per_epoch=5, verbose=0, accumulate=3,
    )  # fmt: skip
    assert len(updates) == 2  # after batch 3 and after batch 5 (the epoch's end)


# -- precision -------------------------------------------------------------------------------


class DtypeProbe(torch.nn.Module):
    """Records the dtype the model computes in; a metric records what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.seen.append(out.dtype)
        return out


def test_bf16_mixed_computes_in_bfloat16_and_records_float32_values() -> None:
    probe = DtypeProbe()
    received: list[torch.dtype] = []

    def top(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        received.append(outputs.dtype)
        return (outputs.argmax(1) == y).float().mean()

    h = fitlens.fit(
        probe, _batches(4), loss="cross_entropy", optimizer="sgd", metrics={"top": top},
        epochs=1, verbose=0, precision="bf16-mixed",
    )  # fmt: skip
    assert set(probe.seen) == {torch.bfloat16}
    assert set(received) == {torch.float32}
    assert np.isfinite(h.history["loss"]).all() and h.params["precision"] == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in probe.parameters())  # the weights stay fp32


def test_bf16_mixed_trains_close_to_float32() -> None:
    full, full_h = _fit(_batches(4), epochs=3)
    mixed, mixed_h = _fit(_batches(4), epochs=3, precision="bf16-mixed")
    # bfloat16 keeps 8 significant bits: relative error 2**-8 per product, so losses of order 1
    # agree to a few hundredths after 18 steps.
    np.testing.assert_allclose(mixed_h.history["loss"], full_h.history["loss"], atol=0.05)
    assert not torch.equal(full[0].weight, mixed[0].weight)  # it did compute in bf16


class Overflowing(torch.nn.Module):
    """Outputs of magnitude 1e3: fp16 gradients of a 65536-scaled loss overflow at first."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e3 * self.net(x)


class WeightsMoved(fitlens.Callback):
    def __init__(self) -> None:
        self.unchanged = 0

    def on_batch_begin(self, step: int, logs: Any) -> None:
        self.before = [p.detach().clone() for p in self.run.model.parameters()]

    def on_batch_end(self, step: int, logs: Any) -> None:
        now = list(self.run.model.parameters())
        self.unchanged += all(torch.equal(a, b) for a, b in zip(self.before, now, strict=True))


@pytest.mark.parametrize("on_nonfinite", ["stop", "skip"])
def test_16_mixed_overflow_skips_are_counted_and_not_taken_for_non_finite_losses(
    on_nonfinite: str, tmp_path: Path
) -> None:
    watch = WeightsMoved()
    out = io.StringIO()
    h = fitlens.fit(
        Overflowing(), _batches(4), loss="cross_entropy", optimizer="sgd", epochs=2,
        verbose=fitlens.Progress(2, file=out), precision="16-mixed", callbacks=[watch],
        on_nonfinite=on_nonfinite,  # type: ignore[arg-type]
        run_dir=tmp_path / "run",
    )  # fmt: skip
    skipped = h.params["overflow_skipped_steps"]
    assert skipped == watch.unchanged > 0  # each update the scaler skipped, and only those
    assert h.params.get("skipped_batches", []) == []  # on_nonfinite never saw them
    assert np.isfinite(h.batches["loss"]).all()
    assert f"16-mixed: {skipped} optimizer step(s) skipped" in out.getvalue()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["overflow_skipped_steps"] == skipped
    assert summary["config"]["precision"] == "16-mixed"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_on_cuda_computes_in_float16_and_counts_overflow_skips() -> None:
    probe = DtypeProbe().cuda()
    data = [(x.cuda(), y.cuda()) for x, y in _batches(4)]
    h = fitlens.fit(
        probe, data, loss="cross_entropy", optimizer="sgd", epochs=2, verbose=0,
        precision="16-mixed", clip_grad_norm=1.0, metrics=["accuracy", "grad_norm"],
    )  # fmt: skip
    assert set(probe.seen) == {torch.float16}
    assert isinstance(h.params["overflow_skipped_steps"], int)
    assert np.isfinite(h.batches["loss"]).all() and np.isfinite(h.history["accuracy"]).all()


# -- clipping --------------------------------------------------------------------------------


def _by_hand(
    batches: list[tuple[torch.Tensor, torch.Tensor]], clip_norm: float | None, clip_value: float
) -> tuple[torch.nn.Module, list[float]]:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    norms = []
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = list(net.parameters())
        if clip_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip_norm)))
        torch.nn.utils.clip_grad_value_(params, clip_value)
        opt.step()
    return net, norms


def test_clipping_equals_torch_clip_by_hand_and_records_the_pre_clip_norm() -> None:
    net, h = _fit(
        _batches(4), epochs=1, clip_grad_norm=0.1, clip_grad_value=0.02, metrics=["grad_norm"]
    )
    reference, norms = _by_hand(_batches(4), 0.1, 0.02)
    _close(net, reference, rtol=0, atol=0)  # the same ops in the same order
    np.testing.assert_array_equal(h.batches["grad_norm"], np.float32(norms))
    assert max(norms) > 0.1  # the clip did act


def test_grad_norm_is_off_by_default_and_nan_inside_an_accumulation_group() -> None:
    _, plain = _fit(_batches(4), epochs=1, clip_grad_norm=1.0)
    assert "grad_norm" not in plain.batches.metric_names
    _, h = _fit(_batches(4), epochs=1, accumulate=2, metrics=["grad_norm"])
    column = h.batches["grad_norm"]
    assert np.isnan(column[::2]).all() and np.isfinite(column[1::2]).all()
    assert h.history["grad_norm"][0] == pytest.approx(column[1::2].mean(), rel=10 * EPS32)


def test_16_mixed_unscales_before_clipping_as_pytorch_documents() -> None:
    batches = _batches(4)
    net, _ = _fit(batches, epochs=1, precision="16-mixed", clip_grad_norm=0.1)
    ref = _model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu")
    for x, y in batches:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(ref(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
        scaler.step(opt)
        scaler.update()
    _close(net, ref, rtol=0, atol=0)


# -- cost and bad input ----------------------------------------------------------------------


def test_the_defaults_keep_the_plain_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("TunedStep ran with every option at its default")

    monkeypatch.setattr(TunedStep, "run", refuse)
    _fit(_batches(4), epochs=1, metrics=["accuracy"])


def test_every_option_on_adds_no_host_read_during_a_step() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with counting_host_reads() as log:
        fitlens.fit(
            net, _batches(4, 96), loss="cross_entropy", optimizer=opt,
            metrics=["accuracy", "grad_norm"], epochs=2, verbose=0, clock=TickingClock(0.01),
            callbacks=[StepWatch(log)], precision="bf16-mixed", accumulate=2,
            clip_grad_norm=1.0, clip_grad_value=1.0, scheduler_interval="step",
            scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.99**s),
        )  # fmt: skip
    # torch's clip_grad_norm_ moves each tensor's norm `.to(the parameters' device)`: on CPU the
    # counter sees a to("cpu") that moves nothing; every real read (item, tolist, numpy, bool...)
    # would show by name. The CUDA test below lets the driver check the transfers themselves.
    assert [r for r in log.during_step if r != "to(cpu)"] == []
    # 4 parameter tensors' norms and the clip coefficient, at each of the 2 x 12 updates only
    assert log.during_step.count("to(cpu)") == (4 + 1) * 2 * 12


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_accumulation_clipping_and_a_step_schedule_never_synchronise_on_cuda() -> None:
    class SyncDebug(fitlens.Callback):
        def on_batch_begin(self, step: int, logs: Any) -> None:
            if self.run.epoch or step > 1:  # the first batch checks shapes once
                torch.cuda.set_sync_debug_mode("error")

        def on_batch_end(self, step: int, logs: Any) -> None:
            torch.cuda.set_sync_debug_mode("default")

    net = _model().cuda()
    data = [(x.cuda(), y.cuda()) for x, y in _batches(4, 96)]
    fitlens.fit(
        net, data, loss="cross_entropy", optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        metrics=["accuracy", "grad_norm"], epochs=2, verbose=0, clock=FrozenClock(),
        callbacks=[SyncDebug()], precision="bf16-mixed", accumulate=2, clip_grad_norm=1.0,
        scheduler_interval="step",
        scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.99**s),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp16"}, "precision.*one of"),
        ({"precision": 16}, "precision.*one of"),
        ({"accumulate": 0}, "accumulate.*>= 1"),
        ({"accumulate": 2.0}, "accumulate.*>= 1"),
        ({"clip_grad_norm": 0}, "clip_grad_norm.*> 0"),
        ({"clip_grad_value": -1.0}, "clip_grad_value.*> 0"),
        ({"accumulate": 2, "on_nonfinite": "skip"}, "cannot be combined"),
        ({"compile": "yes"}, "compile"),
    ],
)
def test_bad_update_options_fail_before_the_first_step(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        _fit(_batches(4), epochs=1, **kwargs)
