"""No host synchronisation per step: device-to-host reads happen only at refreshes and epoch ends.

Every tensor method that reads a value back to the host (``item``, ``tolist``, ``cpu``,
``numpy``, ``__float__``, ``__int__``, ``__bool__``, ``__index__``, ``to("cpu")``) is wrapped with
a counter that also notes whether the call happened inside ``Lens.flush`` (the one place
fitlens moves values to the host) and whether it happened during a training step (between the
batch hooks). On CPU nothing actually blocks, but the calls are the same as on a GPU, so counting
them proves the loop's structure; on CUDA a second test lets the driver check it.
"""

from __future__ import annotations

import contextlib
import functools
import io

import pytest
import torch

import fitlens
from fitlens.view.lens import Lens

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class SyncLog:
    def __init__(self) -> None:
        self.training = False  # set from on_train_begin: setup (model.to(device)) is not a read
        self.in_flush = 0
        self.in_step = False
        self.outside_flush: list[str] = []
        self.during_step: list[str] = []
        self.total = 0
        self.flushes = 0  # flushes that had steps to move

    def saw(self, name: str) -> None:
        if not self.training:
            return
        self.total += 1
        if not self.in_flush:
            self.outside_flush.append(name)
        if self.in_step:
            self.during_step.append(name)


@contextlib.contextmanager
def counting_host_reads():
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _install_counters(monkeypatch, SyncLog())


def _install_counters(monkeypatch: pytest.MonkeyPatch, log: SyncLog):

    def wrap(name: str):
        original = getattr(torch.Tensor, name)

        @functools.wraps(original)
        def counted(self, *args, **kwargs):
            log.saw(name)
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if any(str(a) == "cpu" for a in (*args, kwargs.get("device"))):
            log.saw("to(cpu)")
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    original_flush = Lens.flush

    def flush(self):
        log.flushes += bool(self.pending) and log.training
        log.in_flush += 1
        try:
            return original_flush(self)
        finally:
            log.in_flush -= 1

    monkeypatch.setattr(Lens, "flush", flush)
    yield log


class StepWatch(fitlens.Callback):
    """Marks the span of each training step (batch hooks) in the log."""

    def __init__(self, log: SyncLog) -> None:
        self.log = log

    def on_train_begin(self, logs):
        self.log.training = True

    def on_train_end(self, logs):
        self.log.training = False

    def on_batch_begin(self, step, logs):
        self.log.in_step = True

    def on_batch_end(self, step, logs):
        self.log.in_step = False


class FrozenClock:
    """Time stands still: the display refreshes only at each epoch's first step and its end."""

    def __call__(self) -> float:
        return 0.0


class TickingClock:
    """Every reading advances time by ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def batches(n: int):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)
    ]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def fit_counting(steps: int, epochs: int, clock, optimizer="sgd", **kwargs) -> SyncLog:
    net, data = model(), batches(steps)
    opt = (
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd" else optimizer
    )
    with counting_host_reads() as log:
        fitlens.fit(
            net,
            data,
            loss="cross_entropy",
            optimizer=opt,
            metrics=["accuracy"],
            epochs=epochs,
            clock=clock,
            callbacks=[StepWatch(log)],
            verbose=fitlens.Progress(1, file=io.StringIO()),
            **kwargs,
        )
    return log


def test_host_reads_do_not_grow_with_the_number_of_steps():
    # In a log, a line (and so a refresh) is due at every tenth of the epoch: 11 refreshes per
    # epoch (step 1, then every 10% of it) whatever its length, from 10% = 10 steps up.
    short = fit_counting(steps=100, epochs=3, clock=FrozenClock())
    long = fit_counting(steps=400, epochs=3, clock=FrozenClock())
    assert short.total == long.total
    assert long.total > 0  # the counters do see the epoch-end reads


# The first batch reads its outputs' range once (logits or probabilities? see
# adapters/output_kind.py): one `tolist`, in the run's first step only.
FIRST_BATCH_CHECK = ["tolist"]


def test_no_host_read_happens_during_a_training_step_after_the_first():
    log = fit_counting(steps=50, epochs=2, clock=TickingClock(0.01))
    assert log.during_step == FIRST_BATCH_CHECK


def test_every_host_read_happens_inside_a_flush_at_a_refresh_or_epoch_end():
    log = fit_counting(steps=50, epochs=2, clock=TickingClock(0.01))
    assert log.outside_flush == FIRST_BATCH_CHECK
    # .to("cpu") and .numpy(): one transfer per flush, plus the first batch's check
    assert log.total <= 2 * log.flushes + len(FIRST_BATCH_CHECK)


def test_refreshes_are_at_most_ten_per_second_of_training():
    clock = TickingClock(0.01)  # a few clock readings per step: about 30 ms per step
    log = fit_counting(steps=300, epochs=1, clock=clock)
    # at most 10 per second, plus the forced refreshes at step 1 and at the epoch's end
    assert log.flushes <= 10 * clock.t + 2
    assert log.flushes < 300 / 2


@pytest.mark.cuda
def test_skip_reads_the_host_once_per_step_for_the_loss_and_every_gradient():
    log = fit_counting(12, 2, FrozenClock(), on_nonfinite="skip")
    assert log.during_step == FIRST_BATCH_CHECK + ["__bool__"] * 24  # one fused check per step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_between_refreshes_never_synchronise():
    class SyncDebugBetweenRefreshes(fitlens.Callback):
        def on_batch_begin(self, step, logs):
            if step >= 1:  # the first batch checks shapes and the outputs' range once
                torch.cuda.set_sync_debug_mode("error")

        def on_batch_end(self, step, logs):
            torch.cuda.set_sync_debug_mode("default")

    dev = torch.device("cuda")
    net = model().to(dev)
    data = [(x.to(dev), y.to(dev)) for x, y in batches(100)]
    try:
        history = fitlens.fit(
            net,
            data,
            loss="cross_entropy",
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
            metrics=["accuracy"],
            callbacks=[SyncDebugBetweenRefreshes()],
            verbose=fitlens.Progress(1, file=io.StringIO()),
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(history.batches) == 100
