"""LR schedules in `fit` (training/schedules.py): stepping, the lr column, ReduceLROnPlateau."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens import Checkpointing
from tests.training.test_host_sync import FrozenClock
from tests.training.test_update import _batches, _data, _model


def _fit(scheduler: Any, epochs: int = 3, **kwargs: Any) -> tuple[torch.nn.Module, Any, Any]:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    sched = scheduler(opt) if kwargs.pop("build", False) else scheduler
    kwargs.setdefault("verbose", 0)
    h = fitlens.fit(
        net, _batches(4), loss="cross_entropy", optimizer=opt, epochs=epochs,
        clock=FrozenClock(), scheduler=sched, **kwargs,
    )  # fmt: skip
    return net, opt, h


def _by_hand(make: Any, updates: int, per_epoch: int | None = None) -> list[float]:
    """The rate each update uses, torch's scheduler stepped by hand (per update or per epoch)."""
    opt = torch.optim.SGD(_model().parameters(), lr=0.4)
    sched = make(opt)
    rates = []
    for i in range(updates):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: changes nothing, but torch expects it before sched.step()
        if per_epoch is None or (i + 1) % per_epoch == 0:
            sched.step()
    return rates


def step_lr(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def cosine(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)


def test_an_epoch_schedule_gives_torchs_own_rates_per_batch_and_per_epoch() -> None:
    _, opt, h = _fit(step_lr)  # a factory of the optimizer
    rates = _by_hand(step_lr, 18, per_epoch=6)
    np.testing.assert_array_equal(h.batches["lr"], np.float32(rates))  # batch values are fp32
    assert h.history["lr"] == [0.4, 0.2, 0.1]  # the rate each epoch used
    assert "lr_now" not in h.history
    assert opt.param_groups[0]["lr"] == 0.05  # stepped after the last epoch too, as Keras


def test_a_step_schedule_steps_after_every_optimizer_step() -> None:
    _, _, h = _fit(cosine, scheduler_interval="step", accumulate=2)
    by_update = _by_hand(cosine, 9)  # 6 batches, 3 updates per epoch
    np.testing.assert_array_equal(h.batches["lr"], np.float32(np.repeat(by_update, 2)))


def test_a_built_scheduler_is_stepped_like_a_factory() -> None:
    _, _, built = _fit(step_lr, build=True)
    _, _, factory = _fit(step_lr)
    np.testing.assert_array_equal(built.batches["lr"], factory.batches["lr"])


def test_the_rate_is_shown_in_the_epoch_line_and_the_batch_logs() -> None:
    out = io.StringIO()
    seen: list[float] = []

    class Rates(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            seen.append(logs["lr"])

    _fit(step_lr, epochs=2, verbose=fitlens.Progress(2, file=out), callbacks=[Rates()])
    lines = out.getvalue().splitlines()
    assert "lr: 0.4000" in lines[0] and "lr: 0.2000" in lines[-1]
    assert "lr: 0.4000 (now" not in out.getvalue()  # a rate has no now estimate
    assert seen == [0.4] * 6 + [0.2] * 6


def plateau(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)


def test_reduce_on_plateau_follows_val_loss_as_torch_does_by_hand() -> None:
    x, y = _data(12)
    _, _, h = _fit(plateau, epochs=6, validation_data=(x, -y + 2))  # labels it cannot learn
    sched = plateau(torch.optim.SGD(_model().parameters(), lr=0.4))
    rates = []
    for value in h.history["val_loss"]:
        rates.append(sched.optimizer.param_groups[0]["lr"])
        sched.step(value)
    assert h.history["lr"] == rates
    assert rates[-1] < 0.4  # it did reduce


def test_reduce_on_plateau_monitors_another_value_when_asked() -> None:
    _, _, h = _fit(
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", patience=0),
        metrics=["accuracy"],
        monitor="accuracy",
    )
    assert len(h.history["lr"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs validation_data"),
        ({"monitor": "loss", "scheduler_mode": "max"}, "mode='min'"),
        ({"monitor": "val_accuracy", "validation_data": True}, "mode='max'"),
        ({"monitor": "nothing"}, "did not log"),
        ({"monitor": "loss", "scheduler_interval": "step"}, "once per epoch"),
    ],
)
def test_reduce_on_plateau_is_refused_when_it_cannot_follow_its_monitor(
    kwargs: dict[str, Any], match: str
) -> None:
    mode = kwargs.pop("scheduler_mode", "min")
    if kwargs.pop("validation_data", False):
        kwargs["validation_data"] = _data(8)
    with pytest.raises(ValueError, match=match):
        _fit(
            lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode=mode),
            metrics=["accuracy"],
            **kwargs,
        )


def test_a_scheduler_is_refused_when_it_is_not_one_or_drives_another_optimizer() -> None:
    with pytest.raises(TypeError, match="LR scheduler"):
        _fit(object())
    other = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="another optimizer"):
        _fit(step_lr(other))
    with pytest.raises(ValueError, match="scheduler_interval"):
        _fit(step_lr, scheduler_interval="batch")


def test_checkpointing_may_name_the_same_scheduler_but_not_another(tmp_path: Any) -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    sched = step_lr(opt)
    common = {"loss": "cross_entropy", "optimizer": opt, "verbose": 0, "scheduler": sched}
    ckpt = Checkpointing(every_minutes=None, scheduler=sched)
    h = fitlens.fit(net, _batches(4), checkpointing=ckpt, run_dir=tmp_path / "a", **common)
    assert h.history["lr"] == [0.4]
    other = Checkpointing(every_minutes=None, scheduler=step_lr(opt))
    with pytest.raises(ValueError, match="different schedulers"):
        fitlens.fit(net, _batches(4), checkpointing=other, **common)


def test_an_fp16_overflow_on_the_first_step_raises_no_torch_scheduler_order_warning() -> None:
    # GradScaler skips the optimizer's step on an overflow (fitlens counts it); torch's check of
    # the first scheduler step takes that skip for a misordered call and warns, wrongly
    from tests.safety.test_resume import _xy
    from tests.safety.test_resume_update import Loud

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fitlens.fit(
            Loud(), _xy(), loss="cross_entropy", optimizer="adam", epochs=1, batch_size=10,
            verbose=0, precision="16-mixed", scheduler_interval="step",
            scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        )  # fmt: skip
    assert history.params["overflow_skipped_steps"] >= 1
