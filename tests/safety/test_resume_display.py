"""What a resumed run shows: its first line names the checkpoint and the cost of getting back to
position, and the resumed epoch's time and data share leave that skipping out."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens import Checkpointing


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CostlyLinear(torch.nn.Module):
    """Each forward pass advances the fake clock by 0.25 s."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.clock, self.linear = clock, torch.nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.t += 0.25
        return self.linear(x)


class CrashAt(fitlens.Callback):
    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_batch_end(self, step: int, logs: Any) -> None:
        if (self.run.epoch, step) == self.at:
            raise RuntimeError("crash")


def _fit(run_dir: Path, **kwargs: Any) -> tuple[Any, str]:
    clock, out = FakeClock(), io.StringIO()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(4)
        while True:
            clock.t += 0.5  # every batch made, used or skipped, takes 0.5 s
            x = rng.standard_normal((10, 5)).astype(np.float32)
            yield torch.from_numpy(x), torch.from_numpy((x[:, 1] > 0).astype(np.int64))

    history = fitlens.fit(
        CostlyLinear(clock),
        batches,
        loss="cross_entropy",
        optimizer="sgd",
        epochs=3,
        steps_per_epoch=6,
        verbose=fitlens.Progress(2, file=out),
        run_dir=run_dir,
        checkpointing=Checkpointing(every_steps=2, every_minutes=None),
        clock=clock,
        **kwargs,
    )
    return history, out.getvalue()


def test_a_resumed_run_names_its_checkpoint_and_leaves_the_skipping_out_of_the_epoch(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path, callbacks=[CrashAt(1, 3)])  # epoch 2, after its checkpoint at step 2
    history, text = _fit(tmp_path, resume=True)
    lines = text.splitlines()
    # 6 batches of epoch 1 and 2 of epoch 2 are skipped: 8 x 0.5 s.
    assert re.fullmatch(
        r"Resumed from \S+ \(epoch 2, step 2, written \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\): "
        r"skipped 8 batches in 4\.0s to get back to position, left out of epoch 2's time and "
        r"data share\.",
        lines[0],
    ), lines[0]
    # Steps 3-6: 4 x (0.5 s data + 0.25 s step) = 3.0 s, of which 2.0 s data (67%).
    assert lines[1].startswith("Epoch 2/3 - 6 steps - 3.0s for steps 3-6 (750ms/step, data 67%)")
    epoch_2 = history.epoch.index(1)
    assert history.timing["time"][epoch_2] == pytest.approx(3.0)
    assert history.timing["data_wait"][epoch_2] == pytest.approx(2.0)
    assert history.timing["compute"][epoch_2] == pytest.approx(1.0)
    (epoch_3,) = [line for line in lines if line.startswith("Epoch 3/3")]
    assert epoch_3.startswith("Epoch 3/3 - 6 steps - 4.5s (750ms/step, data 67%)")
