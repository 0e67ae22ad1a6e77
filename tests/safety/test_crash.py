"""Crash tests: real signals in child processes, then a resume that must lose nothing.

Children come from a forkserver that imports torch and fitlens once, so each of the ~45 runs
costs a fork, not an interpreter start. Every killed run must leave a loadable history and a
checkpoint no older than one checkpoint interval, and its resumed run must end with weights and
history identical (bitwise) to an uninterrupted run of the same job.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import sys
from pathlib import Path
from typing import Any

import crash_worker
import numpy as np
import pandas as pd
import pytest
import torch

from fitlens import read_history
from fitlens.safety.checkpoint import CheckpointStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and forkserver")

TOTAL = crash_worker.EPOCHS * crash_worker.STEPS


@pytest.fixture(scope="module")
def ctx() -> Any:
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo: torch.optim imports it lazily on the first optimizer (seconds per child).
    context.set_forkserver_preload(
        ["torch", "torch._dynamo", "fitlens.training.loop", "crash_worker"]
    )
    return context


def _run(ctx: Any, run_dir: Path, kind: str, kill: Any = None, resume: bool | str = False) -> int:
    p = ctx.Process(target=crash_worker.train, args=(str(run_dir), kind, kill, resume))
    p.start()
    p.join(timeout=120)
    assert p.exitcode is not None, "the child hung"
    return p.exitcode


def _result(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "result.pt", weights_only=True)


@pytest.fixture(scope="module")
def references(ctx: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in crash_worker.KINDS:
        run_dir = tmp_path_factory.mktemp(f"ref-{kind}")
        assert _run(ctx, run_dir, kind) == 0
        out[kind] = _result(run_dir)
    return out


def _assert_identical(result: dict[str, Any], reference: dict[str, Any]) -> None:
    for name, tensor in reference["model"].items():
        assert torch.equal(result["model"][name], tensor), name
    assert result["history"] == reference["history"]
    for name, column in reference["batches"].items():
        assert torch.equal(result["batches"][name], column), name


def _kill_points() -> list[tuple[Any, ...]]:
    """20 points: 15 random steps, 3 inside checkpoint writes, a torn history line, validation."""
    rng = random.Random(2026)
    steps = sorted(rng.sample(range(1, TOTAL + 1), 15))
    points: list[tuple[Any, ...]] = [("step", s) for s in steps]
    points += [("write", 2, "partial"), ("write", 3, "before_rename"), ("write", 5, "after_rename")]
    points += [("history", 3), ("validation", 2)]
    return points


KILLS = _kill_points()


@pytest.mark.parametrize("i", range(len(KILLS)))
def test_resume_after_sigkill_matches_uninterrupted_run(
    i: int, ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    kill = KILLS[i]
    kind = crash_worker.KINDS[i % len(crash_worker.KINDS)]
    assert _run(ctx, tmp_path, kind, kill) == -signal.SIGKILL

    history = read_history(tmp_path)  # loadable despite the kill (torn lines ignored)
    pd.read_csv(tmp_path / "batches.csv", on_bad_lines="skip")
    found = CheckpointStore(tmp_path / "checkpoints").latest()
    if kill[0] == "step":
        killed_at = kill[1]
        saved = 0 if found is None else found[1]["position"]["global_step"]
        assert killed_at - saved <= crash_worker.EVERY  # nothing lost beyond one interval
        assert len(history.batches) <= killed_at
    else:
        assert found is not None

    assert _run(ctx, tmp_path, kind, resume=True) == 0
    _assert_identical(_result(tmp_path), references[kind])
    resumed = read_history(tmp_path)
    assert len(resumed.batches) == TOTAL
    assert resumed.history == _result(tmp_path)["history"]
    assert len(pd.read_csv(tmp_path / "batches.csv")) == TOTAL
    assert not list((tmp_path / "checkpoints").glob(".ckpt-*"))  # temporaries cleaned


def test_sigterm_checkpoints_the_current_step_and_exits_nonzero(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "arrays", ("sigterm", 6)) not in (0, None)
    found = CheckpointStore(tmp_path / "checkpoints").latest()
    assert found is not None and found[1]["position"]["global_step"] == 6  # nothing lost
    assert _run(ctx, tmp_path, "arrays", resume=True) == 0
    _assert_identical(_result(tmp_path), references["arrays"])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "loader", ("step", 15)) == -signal.SIGKILL
    _flip_a_byte(CheckpointStore(tmp_path / "checkpoints").paths()[-1])
    assert _run(ctx, tmp_path, "loader", resume=True) == 0
    result = _result(tmp_path)
    assert any("checksum does not match" in w for w in result["warnings"])
    _assert_identical(result, references["loader"])


def test_failed_checkpoint_writes_keep_training_and_the_previous_checkpoint(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    # The 2nd and 3rd checkpoint writes (end of epoch 1, step 12) fail as on a full disk; the
    # run goes on, writes the 4th (end of epoch 2, step 16) and dies at step 19.
    assert _run(ctx, tmp_path, "arrays", ("disk_full_then_kill", 2, 19)) == -signal.SIGKILL
    found = CheckpointStore(tmp_path / "checkpoints").latest()
    assert found is not None and found[1]["position"]["global_step"] == 16
    assert not list((tmp_path / "checkpoints").glob(".ckpt-*"))
    read_history(tmp_path)
    assert _run(ctx, tmp_path, "arrays", resume=True) == 0
    _assert_identical(_result(tmp_path), references["arrays"])


def test_resuming_a_completed_run_returns_its_history_unchanged(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "generator") == 0
    assert _run(ctx, tmp_path, "generator", resume=True) == 0
    _assert_identical(_result(tmp_path), references["generator"])
    assert np.isfinite(read_history(tmp_path).history["loss"]).all()


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_every_checkpoint_damaged_after_sigkill_stops_the_resume_and_loses_nothing(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "arrays", ("step", 15)) == -signal.SIGKILL
    *older, newest = CheckpointStore(tmp_path / "checkpoints").paths()
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    for path in older:
        _flip_a_byte(path)
    damaged = _files(tmp_path / "checkpoints")
    assert _run(ctx, tmp_path, "arrays", resume=True) == 1  # NoLoadableCheckpointError
    assert _files(tmp_path / "checkpoints") == damaged
    assert _run(ctx, tmp_path, "arrays", resume="allow_fresh") == 0
    _assert_identical(_result(tmp_path), references["arrays"])
    kept = _files(tmp_path / "checkpoints")
    for name, data in damaged.items():
        assert kept[f"{name}.unreadable"] == data


def test_a_checkpoint_replaced_by_a_link_to_a_device_is_set_aside_without_hanging(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "loader", ("step", 15)) == -signal.SIGKILL
    newest = CheckpointStore(tmp_path / "checkpoints").paths()[-1]
    newest.unlink()
    newest.symlink_to("/dev/zero")
    assert _run(ctx, tmp_path, "loader", resume=True) == 0  # _run fails if the child hangs
    result = _result(tmp_path)
    assert any("symbolic link" in w for w in result["warnings"])
    _assert_identical(result, references["loader"])


def test_the_lock_of_a_killed_run_is_taken_over_by_its_resume(
    ctx: Any, references: dict[str, Any], tmp_path: Path
) -> None:
    assert _run(ctx, tmp_path, "arrays", ("step", 10)) == -signal.SIGKILL
    assert (tmp_path / ".lock").exists()
    assert _run(ctx, tmp_path, "arrays", resume=True) == 0
    result = _result(tmp_path)
    assert any("Taking over the lock" in w for w in result["warnings"])
    _assert_identical(result, references["arrays"])
    assert not (tmp_path / ".lock").exists()
