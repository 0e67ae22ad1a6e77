"""Resume in-process: a crash is simulated by an exception; real signals are in test_crash.py."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens import Checkpointing, TrainingInterrupted
from fitlens.safety.checkpoint import (
    CheckpointStore,
    NoLoadableCheckpointError,
    load_checkpoint,
    save_checkpoint,
)


class Crash(RuntimeError):
    pass


class CrashAt(fitlens.Callback):
    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_batch_end(self, step: int, logs: Any) -> None:
        if (self.run.epoch, step) == self.at:
            raise Crash(f"crash at {self.at}")


def _xy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    return x, (x[:, 0] > 0).long()


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Dropout(0.25), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )


def _gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(4)
    while True:
        x = rng.standard_normal((10, 5)).astype(np.float32)
        yield torch.from_numpy(x), torch.from_numpy((x[:, 1] > 0).astype(np.int64))


def _train_data(kind: str) -> Any:
    x, y = _xy()
    if kind == "arrays":
        return (x, y)
    ds = torch.utils.data.TensorDataset(x, y)
    if kind == "loader":
        g = torch.Generator().manual_seed(9)
        return torch.utils.data.DataLoader(ds, batch_size=10, shuffle=True, generator=g)
    if kind == "list":
        return [(x[i : i + 10], y[i : i + 10]) for i in range(0, 60, 10)]
    if kind == "generator_factory":
        return _gen
    return _gen()  # a fresh generator object


def _fit(kind: str, run_dir: Path | None = None, **kwargs: Any) -> tuple[torch.nn.Module, Any]:
    model = _model()
    torch.manual_seed(2)
    kwargs.setdefault("checkpointing", Checkpointing(every_steps=4, every_minutes=None))
    kwargs.setdefault("clock", lambda: 0.0)  # deterministic refresh points
    optimizer = kwargs.pop("optimizer", "adam")  # a name, or a function of the model
    history = fitlens.fit(
        model,
        _train_data(kind),
        loss="cross_entropy",
        optimizer=optimizer(model) if callable(optimizer) else optimizer,
        metrics=["accuracy"],
        epochs=3,
        batch_size=10 if kind == "arrays" else None,  # loaders make their own batches
        steps_per_epoch=6 if kind.startswith("generator") else None,
        validation_data=_xy(),
        verbose=0,
        run_dir=run_dir,
        **kwargs,
    )
    return model, history


@functools.cache
def _reference_cached(kind: str, base: str) -> tuple[torch.nn.Module, Any]:
    return _fit(kind, Path(base) / f"ref-{kind}")


def _reference(kind: str, tmp_path_factory: Path) -> tuple[torch.nn.Module, Any]:
    return _reference_cached(kind, str(tmp_path_factory))


def _assert_same(a: tuple[torch.nn.Module, Any], b: tuple[torch.nn.Module, Any]) -> None:
    for (name, pa), pb in zip(a[0].state_dict().items(), b[0].state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert a[1].history == b[1].history
    for col in ("loss", "accuracy", "epoch", "step", "size"):
        np.testing.assert_array_equal(a[1].batches[col], b[1].batches[col])


@pytest.mark.parametrize("kind", ["arrays", "loader", "list", "generator_factory", "generator"])
@pytest.mark.parametrize("crash", [(1, 6), (2, 1)])  # an epoch's last step; a first step
def test_resume_after_a_crash_matches_the_uninterrupted_run(
    kind: str, crash: tuple[int, int], tmp_path: Path
) -> None:
    reference = _reference(kind, tmp_path_factory=tmp_path.parent)
    with pytest.raises(Crash):
        _fit(kind, tmp_path / "run", callbacks=[CrashAt(*crash)])
    torch.manual_seed(1234)  # the resumed process's own seeds must not matter
    _assert_same(_fit(kind, tmp_path / "run", resume=True), reference)


@pytest.mark.parametrize("kind", ["loader", "generator_factory"])
@pytest.mark.parametrize("crash", [(0, 3), (1, 2)])  # inside the epoch that draws the sample; later
def test_resume_keeps_the_train_eval_sample_of_data_that_cannot_be_indexed(
    kind: str, crash: tuple[int, int], tmp_path: Path
) -> None:
    """The batches `train_eval` keeps from the first epoch are checkpointed with the run."""
    reference = _fit(kind, tmp_path / "ref", train_eval=0.5)
    with pytest.raises(Crash):
        _fit(kind, tmp_path / "run", train_eval=0.5, callbacks=[CrashAt(*crash)])
    resumed = _fit(kind, tmp_path / "run", train_eval=0.5, resume=True)
    _assert_same(resumed, reference)
    assert "train_eval_accuracy" in resumed[1].history


def test_resume_without_checkpoints_starts_afresh(tmp_path: Path) -> None:
    _assert_same(_fit("arrays", tmp_path / "new", resume=True), _fit("arrays"))


def _damage_every_checkpoint(run_dir: Path) -> dict[str, bytes]:
    """Truncate the newest checkpoint and flip a byte in the others; their bytes by name."""
    *older, newest = CheckpointStore(run_dir / "checkpoints").paths()
    newest.write_bytes(newest.read_bytes()[:100])
    for path in older:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}


def test_resume_with_every_checkpoint_damaged_stops_and_keeps_them(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        _fit("arrays", tmp_path, callbacks=[CrashAt(2, 3)])
    damaged = _damage_every_checkpoint(tmp_path)
    summary = (tmp_path / "summary.json").read_text()
    with pytest.raises(NoLoadableCheckpointError, match="none of its 2 checkpoint") as caught:
        _fit("arrays", tmp_path, resume=True)
    assert all(name in str(caught.value) for name in damaged)
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == damaged
    assert (tmp_path / "summary.json").read_text() == summary  # refused before anything ran


def test_resume_allow_fresh_starts_over_keeping_the_damaged_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        _fit("arrays", tmp_path, callbacks=[CrashAt(2, 3)])
    damaged = _damage_every_checkpoint(tmp_path)
    with pytest.warns(RuntimeWarning, match="starting afresh"):
        resumed = _fit("arrays", tmp_path, resume="allow_fresh")
    _assert_same(resumed, _fit("arrays"))
    for name, data in damaged.items():
        assert (tmp_path / "checkpoints" / f"{name}.unreadable").read_bytes() == data


def test_resume_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match='False, True or "allow_fresh"'):
        _fit("arrays", None, resume="yes")


def test_resume_needs_a_run_dir() -> None:
    with pytest.raises(ValueError, match="needs the `run_dir`"):
        _fit("arrays", None, resume=True)


def test_existing_checkpoints_are_not_overwritten_without_resume(tmp_path: Path) -> None:
    _fit("arrays", tmp_path)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _fit("arrays", tmp_path)


def test_resume_with_other_metrics_is_refused(tmp_path: Path) -> None:
    _fit("arrays", tmp_path)
    with pytest.raises(ValueError, match=r"metrics: \['loss'\], the checkpoint tracks"):
        fitlens.fit(
            _model(), _xy(), loss="cross_entropy", optimizer="adam", verbose=0,
            run_dir=tmp_path, resume=True,
        )  # fmt: skip


def test_a_checkpoint_from_before_the_lens_is_refused_with_what_to_do(tmp_path: Path) -> None:
    _fit("arrays", tmp_path)
    store = CheckpointStore(tmp_path / "checkpoints")
    found = store.latest()
    assert found is not None
    state = found[1]
    state["recorder"] = state.pop("lens")  # the key earlier versions wrote
    store.save(state)
    with pytest.raises(ValueError, match="written by an earlier fitlens version"):
        _fit("arrays", tmp_path, resume=True)


def test_sigint_finishes_the_step_checkpoints_and_prints_the_resume_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class CtrlC(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            if (self.run.epoch, step) == (1, 2):
                os.kill(os.getpid(), signal.SIGINT)

    reference = _fit("arrays", tmp_path / "ref")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        _fit("arrays", tmp_path / "run", callbacks=[CtrlC()])
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored
    err = capsys.readouterr().err
    assert f"fit(..., run_dir={str(tmp_path / 'run')!r}, resume=True)" in err
    assert "SIGINT received; stopped at epoch 2, step 2" in err
    found = CheckpointStore(tmp_path / "run" / "checkpoints").latest()
    assert found is not None and found[1]["position"] == {"epoch": 1, "step": 2, "global_step": 8}
    _assert_same(_fit("arrays", tmp_path / "run", resume=True), reference)


def test_sigterm_without_run_dir_stops_and_says_nothing_was_saved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Term(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM received"):
        _fit("arrays", callbacks=[Term()])
    err = capsys.readouterr().err
    assert "SIGTERM received; stopped at epoch 1, step 1" in err and "Nothing was saved" in err


def test_a_second_ctrl_c_is_recorded_as_interrupted(tmp_path: Path) -> None:
    class CtrlCTwice(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)  # the second stops at once

    with pytest.raises(KeyboardInterrupt):
        _fit("arrays", tmp_path, callbacks=[CtrlCTwice()])
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"


_SIGTERM_SCRIPT = """
import os, signal, torch, fitlens
class Term(fitlens.Callback):
    def on_batch_end(self, step, logs):
        os.kill(os.getpid(), signal.SIGTERM)
x = torch.randn(20, 3)
fitlens.fit(torch.nn.Linear(3, 2), (x, (x[:, 0] > 0).long()), loss="cross_entropy",
            optimizer="sgd", batch_size=10, verbose=0, callbacks=[Term()], run_dir={run_dir!r})
"""


def test_the_sigterm_message_is_printed_once(tmp_path: Path) -> None:
    script = _SIGTERM_SCRIPT.format(run_dir=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.count("stopped at epoch 1, step 1") == 1, done.stderr
    assert done.stderr.count("resume=True") == 2  # the call to make, and the example command


def test_lr_scheduler_state_is_checkpointed_and_restored(tmp_path: Path) -> None:
    def run(run_dir: Path, crash: bool = False, resume: bool = False) -> list[float]:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        lrs: list[float] = []

        class StepLR(fitlens.Callback):
            def on_epoch_end(self, epoch: int, logs: Any) -> None:
                sched.step()
                lrs.append(opt.param_groups[0]["lr"])

        torch.manual_seed(2)
        cbs: list[fitlens.Callback] = [StepLR()] + ([CrashAt(2, 2)] if crash else [])
        fitlens.fit(
            model, _xy(), loss="cross_entropy", optimizer=opt, epochs=3, batch_size=10,
            verbose=0, callbacks=cbs, run_dir=run_dir, resume=resume,
            checkpointing=Checkpointing(every_steps=4, every_minutes=None, scheduler=sched),
        )  # fmt: skip
        return lrs

    assert run(tmp_path / "ref") == [0.05, 0.025, 0.0125]
    with pytest.raises(Crash):
        run(tmp_path / "run", crash=True)
    assert run(tmp_path / "run", resume=True) == [0.0125]


def test_time_based_checkpoints_follow_the_clock(tmp_path: Path) -> None:
    ticks = iter(range(10**6))
    _fit(
        "arrays",
        tmp_path,
        clock=lambda: 20.0 * next(ticks),  # 20 s per clock read
        checkpointing=Checkpointing(every_minutes=1.0),
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["checkpoints"]["written_this_session"] > 3  # epoch ends alone would be 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_steps": 0}, "every_steps"),
        ({"every_minutes": -1}, "every_minutes"),
        ({"keep": 1}, "keep"),
    ],
)
def test_checkpointing_rejects_invalid_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Checkpointing(**kwargs)


def test_generator_factory_must_return_an_iterator() -> None:
    with pytest.raises(TypeError, match="factory to return a generator or iterator"):
        fitlens.fit(
            _model(), lambda: [1, 2], loss="mse", optimizer="sgd", steps_per_epoch=2, verbose=0
        )


def _crashed_run(run_dir: Path) -> None:
    """A run of `_fit` (Adam, 60 samples as arrays, 3 epochs) that crashed in epoch 2."""
    with pytest.raises(Crash):
        _fit("arrays", run_dir, callbacks=[CrashAt(1, 3)])


def _resume_differently(run_dir: Path, model: Any = None, **changes: Any) -> Any:
    x, y = _xy()
    kwargs: dict[str, Any] = {
        "loss": "cross_entropy", "optimizer": "adam", "metrics": ["accuracy"], "epochs": 3,
        "batch_size": 10, "validation_data": _xy(), "verbose": 0, "run_dir": run_dir,
        "resume": True, "train": (x, y), **changes,
    }  # fmt: skip
    model = model if model is not None else _model()
    if callable(kwargs["optimizer"]):
        kwargs["optimizer"] = kwargs["optimizer"](model)
    train = kwargs.pop("train")
    return fitlens.fit(model, train, **kwargs)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"optimizer": "sgd"}, "optimizer: SGD, the checkpoint's is Adam"),
        ({"optimizer": "rmsprop"}, "optimizer: RMSprop, the checkpoint's is Adam"),
        ({"optimizer": "adamw"}, "optimizer: AdamW, the checkpoint's is Adam"),
        (
            {"optimizer": lambda m: torch.optim.Adam(m.parameters(), lr=0.01)},
            "hyper-parameter 'lr' (group 0): 0.01, the checkpoint's run started with 0.001",
        ),
        ({"train": (_xy()[0][:59], _xy()[1][:59])}, "training samples: 59, the checkpoint's: 60"),
        (
            {
                "train": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_xy()), 10),
                "batch_size": None,  # a loader makes its own batches
            },
            "training data: DataLoader, the checkpoint's: ArrayData",
        ),
        ({"epochs": 1}, "this call ends after epoch 1, but the checkpoint is already at epoch 2"),
    ],
)
def test_a_resume_that_differs_from_the_checkpoint_is_refused_before_training(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    _crashed_run(tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    with pytest.raises(ValueError, match=re.escape(expected)):
        _resume_differently(tmp_path, **changes)
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == before


def test_every_difference_is_listed_in_one_error(tmp_path: Path) -> None:
    _crashed_run(tmp_path)
    torch.manual_seed(1)
    wider = torch.nn.Sequential(
        torch.nn.Linear(5, 9), torch.nn.Dropout(0.25), torch.nn.ReLU(), torch.nn.Linear(9, 2)
    )
    with pytest.raises(ValueError) as caught:
        _resume_differently(tmp_path, model=wider, optimizer="sgd", epochs=1)
    message = str(caught.value)
    for part in (
        "model: 0.weight has shape [9, 5], the checkpoint's has [8, 5]",
        "model: 3.weight has shape [2, 9], the checkpoint's has [2, 8]",
        "optimizer: SGD",
        "this call ends after epoch 1",
    ):
        assert part in message


def test_more_epochs_than_the_run_began_with_continue_with_a_warning(tmp_path: Path) -> None:
    _crashed_run(tmp_path)
    with pytest.warns(RuntimeWarning, match="the run was started for 3, this call runs to 4"):
        history = _resume_differently(tmp_path, epochs=4)
    assert history.epoch == [0, 1, 2, 3]


def test_a_checkpoint_without_the_keys_fit_writes_is_refused_by_name(tmp_path: Path) -> None:
    _crashed_run(tmp_path)
    store = CheckpointStore(tmp_path / "checkpoints")
    for path in store.paths():
        state = load_checkpoint(path)
        del state["params"]
        save_checkpoint(path, state)
    with pytest.raises(ValueError, match=r"it lacks \['params'\]"):
        _resume_differently(tmp_path)


class SetLR(fitlens.Callback):
    """Sets the learning rate at the start of 0-based ``epoch`` and records the rate of every
    step it sees."""

    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch, self.lr, self.seen = epoch, lr, []

    def on_epoch_begin(self, epoch: int, logs: Any) -> None:
        if epoch == self.epoch:
            for group in self.run.optimizer.param_groups:
                group["lr"] = self.lr

    def on_batch_begin(self, step: int, logs: Any) -> None:
        self.seen.append((self.run.epoch, self.run.optimizer.param_groups[0]["lr"]))


def _adam(lr: float) -> Any:
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def test_override_on_resume_trains_on_with_the_new_lr_and_restores_everything_else(
    tmp_path: Path,
) -> None:
    # The reference changes the rate at the start of epoch 2 in one uninterrupted run.
    reference = _fit("arrays", tmp_path / "ref", optimizer=_adam(1e-3), callbacks=[SetLR(1, 1e-2)])
    with pytest.raises(Crash):  # crashes at epoch 2, step 1: the latest checkpoint is epoch 1's end
        _fit("arrays", tmp_path / "run", optimizer=_adam(1e-3), callbacks=[CrashAt(1, 1)])
    seen = SetLR(-1, math.nan)  # records only
    overriding = Checkpointing(every_steps=4, every_minutes=None, override_on_resume=("lr",))
    with pytest.warns(RuntimeWarning, match=re.escape("'lr' (group 0): 0.01 as this call sets it, "
                                                      "instead of the checkpoint's 0.001")):  # fmt: skip
        resumed = _fit(
            "arrays",
            tmp_path / "run",
            optimizer=_adam(1e-2),
            resume=True,
            checkpointing=overriding,
            callbacks=[seen],
        )
    assert seen.seen == [(e, 1e-2) for e in (1, 2) for _ in range(6)]
    # Weights, Adam's moments and step counts, data order and history: bit for bit.
    _assert_same(resumed, reference)


def test_after_an_override_the_new_lr_is_the_runs_and_a_later_resume_needs_no_option(
    tmp_path: Path,
) -> None:
    reference = _fit("arrays", tmp_path / "ref", optimizer=_adam(1e-3), callbacks=[SetLR(1, 1e-2)])
    with pytest.raises(Crash):
        _fit("arrays", tmp_path / "run", optimizer=_adam(1e-3), callbacks=[CrashAt(1, 1)])
    overriding = Checkpointing(every_steps=4, every_minutes=None, override_on_resume=("lr",))
    with pytest.warns(RuntimeWarning, match="override_on_resume"), pytest.raises(Crash):
        _fit("arrays", tmp_path / "run", optimizer=_adam(1e-2), resume=True,
             checkpointing=overriding, callbacks=[CrashAt(2, 3)])  # fmt: skip
    resumed = _fit("arrays", tmp_path / "run", optimizer=_adam(1e-2), resume=True)
    _assert_same(resumed, reference)


def test_without_override_on_resume_a_new_lr_is_refused_naming_the_option(tmp_path: Path) -> None:
    _crashed_run(tmp_path)
    with pytest.raises(ValueError, match=re.escape("Checkpointing(override_on_resume=('lr',))")):
        _resume_differently(tmp_path, optimizer=_adam(1e-2))


def test_override_on_resume_with_an_unknown_hyper_parameter_is_refused_before_training(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"names \['lrate'\], which Adam's .* are \[.*'lr'"):
        _fit("arrays", tmp_path / "run", checkpointing=Checkpointing(override_on_resume=("lrate",)))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"override_on_resume": "lr"}, "a tuple of optimizer hyper-parameter names"),
        ({"override_on_resume": ("params",)}, "not 'params'"),
        (
            {"override_on_resume": ("lr",), "scheduler": torch.optim.lr_scheduler.StepLR(
                torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), 1)},
            "cannot be combined with `scheduler`",
        ),
    ],
)  # fmt: skip
def test_override_on_resume_rejects_invalid_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Checkpointing(**kwargs)


def test_override_on_resume_of_lr_with_fits_scheduler_is_refused_before_training(
    tmp_path: Path,
) -> None:
    overriding = Checkpointing(override_on_resume=("lr",))
    with pytest.raises(ValueError, match=r"cannot be combined with fit\(scheduler=\.\.\.\)"):
        _fit("arrays", tmp_path / "run", checkpointing=overriding,
             scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1))  # fmt: skip
    assert not (tmp_path / "run").exists()
