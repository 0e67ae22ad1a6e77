from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens import Checkpointing, NonFiniteError
from fitlens.safety.checkpoint import CheckpointStore
from fitlens.training.setup import Training

BAD_STEP = 6  # 1-based step of epoch 1 whose inputs hold a NaN


def _batches(with_bad: bool = True, bad_step: int = BAD_STEP) -> Iterator[Any]:
    rng = np.random.default_rng(0)
    step = 0
    while True:
        step += 1
        x = rng.standard_normal((8, 4)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        if step == bad_step:
            if not with_bad:
                continue
            x[0, 0] = np.nan
        yield torch.from_numpy(x), torch.from_numpy(y)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _fit(model: torch.nn.Module, data: Any, steps: int = 10, **kwargs: Any) -> fitlens.History:
    return fitlens.fit(
        model,
        data,
        loss="cross_entropy",
        optimizer="adam",
        metrics=["accuracy"],
        steps_per_epoch=steps,
        epochs=2,
        verbose=0,
        clock=lambda: 0.0,
        **kwargs,
    )


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in state.values())


def test_stop_names_the_epoch_step_and_metric() -> None:
    model = _model()
    with pytest.raises(NonFiniteError, match=r"`loss` became nan at epoch 1, step 6") as info:
        _fit(model, _batches(), checkpointing=Checkpointing(every_steps=2, every_minutes=None))
    assert (info.value.epoch, info.value.step, info.value.metric) == (1, BAD_STEP, "loss")
    assert info.value.checkpoint is None
    assert "pass `run_dir=`" in str(info.value)


def test_stop_keeps_the_last_good_checkpoint_as_the_latest(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match="latest good checkpoint") as info:
        _fit(
            _model(),
            _batches(),
            run_dir=tmp_path,
            checkpointing=Checkpointing(every_steps=1, every_minutes=None),
        )
    store = CheckpointStore(tmp_path / "checkpoints")
    found = store.latest()
    assert found is not None and info.value.checkpoint == found[0]
    assert found[1]["position"]["global_step"] == BAD_STEP - 1
    for path in store.paths():
        assert _finite(fitlens.safety.checkpoint.load_checkpoint(path)["model"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "nonfinite"
    history = fitlens.read_history(tmp_path)
    assert np.isnan(history.batches["loss"][-1])  # the bad step is in the files, for diagnosis


def test_nan_weights_found_at_a_checkpoint_are_never_saved(tmp_path: Path) -> None:
    class PoisonWeights(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            if step == 3:
                with torch.no_grad():
                    next(self.run.model.parameters())[0, 0] = float("inf")

    with pytest.raises(
        NonFiniteError, match="parameters or buffers became NaN or infinite"
    ) as info:
        _fit(
            _model(),
            _batches(bad_step=-1),
            run_dir=tmp_path,
            callbacks=[PoisonWeights()],
            checkpointing=Checkpointing(every_steps=3, every_minutes=None),
        )
    assert info.value.metric == "parameters"
    assert CheckpointStore(tmp_path / "checkpoints").paths() == []


def test_skip_drops_the_bad_batch_as_if_it_never_came() -> None:
    skipping = _model()
    history = _fit(skipping, _batches(), steps=10, on_nonfinite="skip")
    assert history.params["skipped_batches"] == [[1, BAD_STEP]]
    assert len(history.batches) == 19
    assert np.isfinite(history.history["loss"]).all()
    # Same updates, in the same order, except that the skipping run saw one batch fewer.
    reference2 = _model()
    fitlens.fit(
        reference2,
        _batches(with_bad=False),
        loss="cross_entropy",
        optimizer="adam",
        steps_per_epoch=19,
        epochs=1,
        verbose=0,
    )
    for a, b in zip(skipping.parameters(), reference2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_invalid_policy_is_rejected_before_training() -> None:
    with pytest.raises(ValueError, match="`on_nonfinite` to be one of"):
        _fit(_model(), _batches(), on_nonfinite="ignore")


def test_stop_catches_a_nan_in_the_last_step_of_the_last_epoch() -> None:
    with pytest.raises(NonFiniteError, match="epoch 2, step 10"):
        _fit(_model(), _batches(bad_step=20), steps=10)


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )


def test_skip_leaves_batch_norm_statistics_as_if_the_batch_never_came() -> None:
    skipping = _bn_model()
    history = _fit(skipping, _batches(), steps=10, on_nonfinite="skip")
    assert history.params["skipped_batches"] == [[1, BAD_STEP]]
    reference = _bn_model()
    fitlens.fit(
        reference, _batches(with_bad=False), loss="cross_entropy", optimizer="adam",
        steps_per_epoch=19, epochs=1, verbose=0,
    )  # fmt: skip
    for (name, a), b in zip(
        skipping.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # buffers (running_mean, running_var, count) included


def _nan_gradient_at(bad_step: int) -> Any:
    """Cross-entropy plus a term whose value is 0 but whose gradient is NaN on ``bad_step``."""
    calls = {"n": 0}

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = torch.nn.functional.cross_entropy(outputs, targets)
        if calls["n"] == bad_step:
            value = value + torch.sqrt(outputs * 0).sum() * 0  # d sqrt(0) = inf; inf * 0 = nan
        return value

    return loss


def test_skip_catches_a_nan_gradient_behind_a_finite_loss() -> None:
    skipping = _model()
    history = fitlens.fit(
        skipping, _batches(with_bad=False), loss=_nan_gradient_at(BAD_STEP), optimizer="adam",
        steps_per_epoch=10, epochs=1, verbose=0, on_nonfinite="skip",
    )  # fmt: skip
    assert history.params["skipped_batches"] == [[1, BAD_STEP]]
    assert _finite(skipping.state_dict())
    assert np.isfinite(history.batches["loss"]).all()


def test_skipping_more_than_max_skipped_of_an_epoch_stops() -> None:
    def two_bad() -> Iterator[Any]:
        for i, (x, y) in enumerate(_batches(with_bad=False)):
            yield (x * np.nan if i in (2, 4) else x), y

    with pytest.raises(NonFiniteError, match=r"2 of the 10 steps of epoch 1 were skipped"):
        _fit(_model(), two_bad(), steps=10, on_nonfinite="skip")
    history = _fit(_model(), two_bad(), steps=10, on_nonfinite="skip", max_skipped=0.2)
    assert history.params["skipped_batches"] == [[1, 3], [1, 5]]


def test_an_epoch_with_every_batch_skipped_stops_even_when_allowed_and_len_unknown(
    tmp_path: Path,
) -> None:
    def all_bad() -> Iterator[Any]:
        for x, y in _batches(with_bad=False):
            yield x * np.nan, y

    class Batches:  # re-iterable, no len(): the steps are only known at epoch end
        def __iter__(self) -> Iterator[Any]:
            return itertools.islice(all_bad(), 5)

    with pytest.raises(NonFiniteError, match="5 of the 5 steps of epoch 1"):
        fitlens.fit(
            _model(), Batches(), loss="cross_entropy", optimizer="adam", verbose=0,
            on_nonfinite="skip", max_skipped=1.0, run_dir=tmp_path,
        )  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and len(summary["skipped_batches"]) == 5


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "10%"])
def test_max_skipped_must_be_a_fraction(value: Any) -> None:
    with pytest.raises(ValueError, match="`max_skipped` to be a fraction"):
        _fit(_model(), _batches(), on_nonfinite="skip", max_skipped=value)


def test_stop_puts_the_model_in_memory_back_to_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(NonFiniteError, match="restored to it") as info:
        _fit(
            model, _batches(), run_dir=tmp_path,
            checkpointing=Checkpointing(every_steps=1, every_minutes=None),
        )  # fmt: skip
    saved = fitlens.safety.checkpoint.load_checkpoint(info.value.checkpoint)["model"]
    for (name, a), b in zip(model.state_dict().items(), saved.values(), strict=True):
        assert torch.equal(a, b), name


def test_stop_without_a_checkpoint_says_the_model_was_not_restored() -> None:
    with pytest.raises(NonFiniteError, match="NOT restored"):
        _fit(_model(), _batches())


def test_nan_batch_norm_statistics_are_never_checkpointed(tmp_path: Path) -> None:
    class PoisonStatistics(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            if step == 3:
                self.run.model[1].running_mean[0] = float("nan")

    with pytest.raises(NonFiniteError, match="parameters or buffers"):
        _fit(
            _bn_model(), _batches(bad_step=-1), run_dir=tmp_path, callbacks=[PoisonStatistics()],
            checkpointing=Checkpointing(every_steps=3, every_minutes=None),
        )  # fmt: skip
    assert CheckpointStore(tmp_path / "checkpoints").paths() == []


def _training_of(error: pytest.ExceptionInfo[NonFiniteError]) -> Training:
    """The `Training` of the fit call that raised (a local of `fit`'s frame, kept alive by
    the traceback): the scaler and the schedule are fit's own, not the caller's."""
    tb = error.tb
    while tb is not None:
        found = tb.tb_frame.f_locals.get("t")
        if isinstance(found, Training):
            return found
        tb = tb.tb_next
    raise AssertionError("fit's Training is not on the traceback")


def test_stop_puts_the_lr_schedule_and_loss_scaler_back_with_the_model(tmp_path: Path) -> None:
    # the NaN batch overflows the fp16 scaler (its scale halves) and steps the per-step
    # schedule; the stop must bring both back to the checkpoint the model is restored to
    said = "The model, optimizer, LR scheduler and loss scaler in memory were restored to it"
    with pytest.raises(NonFiniteError, match=said) as info:
        _fit(
            _model(), _batches(), run_dir=tmp_path, precision="16-mixed",
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
            scheduler_interval="step",
            checkpointing=Checkpointing(every_steps=1, every_minutes=None),
        )  # fmt: skip
    saved = fitlens.safety.checkpoint.load_checkpoint(info.value.checkpoint)
    t = _training_of(info)
    assert t.schedule is not None and t.update.scaler is not None
    schedule = saved["parts"]["schedule"]["scheduler"]
    assert t.schedule.scheduler.last_epoch == schedule["last_epoch"] == BAD_STEP - 1
    assert t.schedule.scheduler.get_last_lr() == schedule["_last_lr"]
    assert t.optimizer.param_groups[0]["lr"] == schedule["_last_lr"][0]
    scaler = saved["parts"]["update"]["scaler"]
    assert t.update.scaler.get_scale() == scaler["scale"] == 65536.0  # never lowered before
    assert t.update.scaler.state_dict() == scaler


class StepsItsScheduler(fitlens.Callback):
    """Steps the scheduler the user gave `Checkpointing` after every batch."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def on_batch_end(self, step: int, logs: Any) -> None:
        self.scheduler.step()


def test_stop_puts_back_the_scheduler_the_user_gave_checkpointing(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
    with pytest.raises(NonFiniteError, match="model, optimizer and LR scheduler in") as info:
        fitlens.fit(
            model, _batches(), loss="cross_entropy", optimizer=optimizer, steps_per_epoch=10,
            epochs=2, verbose=0, clock=lambda: 0.0, run_dir=tmp_path,
            callbacks=[StepsItsScheduler(scheduler)],
            checkpointing=Checkpointing(every_steps=1, every_minutes=None, scheduler=scheduler),
        )  # fmt: skip
    saved = fitlens.safety.checkpoint.load_checkpoint(info.value.checkpoint)["scheduler"]
    # the caller's own objects: what they continue with agrees with the restored model
    assert scheduler.last_epoch == saved["last_epoch"] == BAD_STEP - 1
    assert optimizer.param_groups[0]["lr"] == scheduler.get_last_lr()[0] == 0.1 * 0.5**5


def test_resume_after_a_stop_equals_a_run_that_never_had_the_bad_batch(tmp_path: Path) -> None:
    # fp16 scaler and a per-step schedule included: the checkpoint before the bad batch holds
    # them as they were, so skipping that batch on resume gives the clean run, bit for bit
    kw: dict[str, Any] = dict(
        precision="16-mixed", scheduler_interval="step",
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.9),
        checkpointing=Checkpointing(every_steps=1, every_minutes=None),
    )  # fmt: skip
    with pytest.raises(NonFiniteError):
        _fit(_model(), lambda: _batches(), run_dir=tmp_path / "run", **kw)
    resumed = _model()
    h = _fit(resumed, lambda: _batches(with_bad=False), run_dir=tmp_path / "run", resume=True, **kw)
    clean = _model()
    ref = _fit(clean, lambda: _batches(with_bad=False), run_dir=tmp_path / "clean", **kw)
    assert h.history == ref.history
    for (name, a), b in zip(resumed.state_dict().items(), clean.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
