"""Resume with the update options: a checkpoint in the middle of an accumulation group, the
fp16 GradScaler and the LR scheduler come back exactly (training/update.py, schedules.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens import Checkpointing
from fitlens.safety.checkpoint import CheckpointStore
from tests.safety.test_resume import Crash, CrashAt, _xy


class Loud(torch.nn.Module):
    """Outputs of magnitude 1e3, so fp16 overflows at first and the scaler's scale moves."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(5, 8), torch.nn.Dropout(0.25), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e3 * self.net(x)


def _fit(
    run_dir: Path, precision: str, accumulate: int = 2, **kwargs: Any
) -> tuple[torch.nn.Module, Any]:
    model = Loud()
    torch.manual_seed(2)
    history = fitlens.fit(
        model, _xy(), loss="cross_entropy", optimizer="adam", metrics=["accuracy", "grad_norm"],
        epochs=3, batch_size=10, validation_data=_xy(), verbose=0, run_dir=run_dir,
        clock=lambda: 0.0, precision=precision, accumulate=accumulate, clip_grad_norm=5.0,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        scheduler_interval=kwargs.pop("scheduler_interval", "step"),
        # every 3 steps: inside a group of 2 (steps 3-4 of each 6-step epoch)
        checkpointing=Checkpointing(every_steps=3, every_minutes=None),
        **kwargs,
    )  # fmt: skip
    return model, history


@pytest.mark.parametrize(
    ("precision", "interval"), [("32", "step"), ("16-mixed", "step"), ("bf16-mixed", "epoch")]
)
def test_resume_inside_an_accumulation_group_matches_the_uninterrupted_run(
    precision: str, interval: str, tmp_path: Path
) -> None:
    ref_model, ref = _fit(tmp_path / "ref", precision, scheduler_interval=interval)
    with pytest.raises(Crash):
        _fit(tmp_path / "run", precision, callbacks=[CrashAt(1, 5)], scheduler_interval=interval)
    latest = CheckpointStore(tmp_path / "run" / "checkpoints").latest()
    assert latest is not None
    state = latest[1]
    assert state["position"] == {"epoch": 1, "step": 3, "global_step": 9}
    assert state["parts"]["update"]["pending"] == 1  # the group's first batch is in its grads
    torch.manual_seed(1234)  # the resumed process's own seeds must not matter
    model, resumed = _fit(tmp_path / "run", precision, resume=True, scheduler_interval=interval)
    for (name, a), b in zip(
        model.state_dict().items(), ref_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    np.testing.assert_equal(resumed.history, ref.history)  # NaN equals NaN here
    for col in ("loss", "accuracy", "grad_norm", "lr"):
        np.testing.assert_array_equal(resumed.batches[col], ref.batches[col])
    if precision == "16-mixed":
        assert resumed.params["overflow_skipped_steps"] == ref.params["overflow_skipped_steps"] > 0


@pytest.mark.parametrize("change", [{"precision": "bf16-mixed"}, {"accumulate": 3}])
def test_a_resume_with_other_precision_or_accumulation_is_refused(
    change: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(Crash):
        _fit(tmp_path / "run", "32", callbacks=[CrashAt(1, 5)])
    kwargs: dict[str, Any] = {"precision": "32", **change}
    with pytest.raises(ValueError, match=f"{next(iter(change))}: "):
        _fit(tmp_path / "run", resume=True, **kwargs)
