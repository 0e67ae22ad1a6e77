from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import fitlens
from fitlens.safety.run_dir import RunDir, read_history


def _xy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    return x, (x.sum(1) > 0).long()


def _fit(run_dir: Path | None, callbacks: Any = (), epochs: int = 2) -> fitlens.History:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return fitlens.fit(
        model,
        _xy(),
        loss="cross_entropy",
        optimizer="sgd",
        metrics=["accuracy"],
        epochs=epochs,
        batch_size=8,
        validation_data=_xy(),
        verbose=0,
        run_dir=run_dir,
        callbacks=list(callbacks),
    )


def test_history_files_are_readable_while_training_runs(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    class Peek(fitlens.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any) -> None:
            if epoch == 1:  # another reader, mid-run: epoch 1 is complete on disk
                batches = pd.read_csv(tmp_path / "batches.csv")
                epochs = pd.read_csv(tmp_path / "epochs.csv")
                seen.append((len(batches), len(epochs)))

    history = _fit(tmp_path, [Peek()])
    assert seen == [(8, 1)]
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    np.testing.assert_allclose(epochs["loss"], history.history["loss"], rtol=0, atol=0)
    np.testing.assert_allclose(epochs["val_accuracy"], history.history["val_accuracy"])
    batches = pd.read_csv(tmp_path / "batches.csv")
    np.testing.assert_array_equal(batches["loss"], history.batches["loss"])


def test_read_history_rebuilds_the_returned_history(tmp_path: Path) -> None:
    history = _fit(tmp_path)
    back = read_history(tmp_path)
    assert back.history == history.history
    assert back.epoch == history.epoch
    for col in history.batches.columns:
        np.testing.assert_array_equal(back.batches[col], history.batches[col])


def test_read_history_ignores_a_torn_last_line(tmp_path: Path) -> None:
    history = _fit(tmp_path)
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"type": "batch", "epo')
    assert len(read_history(tmp_path).batches) == len(history.batches)


def test_summary_holds_config_versions_timings_and_final_metrics(tmp_path: Path) -> None:
    history = _fit(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["epochs"] == 2 and summary["config"]["optimizer"] == "SGD"
    assert summary["config"]["parameters"] == 8
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["final_metrics"]["val_loss"] == history.history["val_loss"][-1]
    assert summary["timing_seconds"]["time"] > 0
    assert summary["checkpoints"]["written_this_session"] == 2  # one per epoch end


def test_failed_run_is_recorded_in_the_summary(tmp_path: Path) -> None:
    class Boom(fitlens.Callback):
        def on_batch_end(self, step: int, logs: Any) -> None:
            if step == 3:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _fit(tmp_path, [Boom()])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom" in summary["error"]


def test_nothing_is_written_without_a_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _fit(None)
    assert os.listdir(tmp_path) == []


def test_history_write_errors_warn_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    start = RunDir.start

    def start_then_fill_disk(self: RunDir, history: fitlens.History) -> None:
        start(self, history)
        for name in list(self._files):
            self._files[name].close()
            self._files[name] = FullDisk()  # type: ignore[assignment]

    monkeypatch.setattr(RunDir, "start", start_then_fill_disk)
    with pytest.warns(RuntimeWarning, match="Cannot write the history") as record:
        history = _fit(tmp_path)
    assert len(history.epoch) == 2
    assert sum("Cannot write the history" in str(w.message) for w in record) == 1
