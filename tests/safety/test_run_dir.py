from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def test_run_dir_with_a_tilde_goes_to_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    _fit("~/exp")  # type: ignore[arg-type]
    assert (home / "exp" / "summary.json").exists()
    assert os.listdir(cwd) == []


def test_an_empty_run_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Received an empty string"):
        _fit("")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_a_run_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        _fit(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"


def test_a_directory_where_a_history_file_goes_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "batches.csv").mkdir()
    with pytest.raises(ValueError, match=r"batches\.csv is a directory; fitlens writes a file"):
        _fit(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["batches.csv"]


def test_a_disk_without_room_for_two_checkpoints_is_refused_before_training(
    tmp_path: Path,
) -> None:
    class Huge(torch.nn.Module):  # a 4 TB parameter in 4 bytes of memory (an expanded view)
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.big = torch.nn.Parameter(torch.zeros(1).expand(10**12), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    with pytest.raises(OSError, match="MB for two checkpoints") as caught:
        fitlens.fit(Huge(), _xy(), loss="cross_entropy", optimizer="sgd", verbose=0,
                    run_dir=tmp_path)  # fmt: skip
    assert caught.value.errno == 28  # ENOSPC
    assert not (tmp_path / "summary.json").exists()


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    owner = {"pid": os.getppid(), "host": socket.gethostname()}  # a live process, not us
    (tmp_path / ".lock").write_text(json.dumps(owner))
    with pytest.raises(RuntimeError, match=f"in use by process {os.getppid()}"):
        _fit(tmp_path)
    assert json.loads((tmp_path / ".lock").read_text()) == owner


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.warns(RuntimeWarning, match=f"process {dead.pid} on this host"):
        _fit(tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_failed_checkpoint_writes_are_counted_and_the_last_line_says_how_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fitlens.core import files

    real = files._write_bytes
    calls = {"n": 0}

    def full_after_first(f: Any, data: bytes) -> None:  # a disk that fills up: cannot be made
        if os.path.basename(f.name).startswith(".ckpt-"):
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(28, "No space left on device (simulated)")
        real(f, data)

    monkeypatch.setattr(files, "_write_bytes", full_after_first)
    with pytest.warns(RuntimeWarning, match="Could not write a checkpoint"):
        _fit(tmp_path, epochs=3)  # 8 steps an epoch; checkpoints at each epoch end
    checkpoints = _summary(tmp_path)["checkpoints"]
    assert checkpoints["failed_this_session"] == 2
    assert checkpoints["steps_since_latest"] == 16
    err = capsys.readouterr().err
    assert "2 checkpoint write(s) failed" in err and "is 16 steps old" in err


@pytest.mark.parametrize(
    "name",
    [
        "accuracy_now",
        "accuracy_now_low",
        "val_loss",
        "train_eval_accuracy",
        "lr",
        "type",
        "step",
        "values",
    ],
)
def test_metric_names_that_clash_with_fitlens_keys_are_refused(name: str) -> None:
    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(1) == targets).float().mean()

    reserved = r"Reserved: \*_now, \*_now_low, \*_now_high, val_\*, train_eval_\*"
    with pytest.raises(ValueError, match=reserved) as caught:
        fitlens.fit(torch.nn.Linear(3, 2), _xy(), loss="cross_entropy", optimizer="sgd",
                    metrics={name: metric}, verbose=0)  # fmt: skip
    assert repr(name) in str(caught.value)


def test_history_jsonl_nests_metric_values_under_their_own_key(tmp_path: Path) -> None:
    history = _fit(tmp_path)
    first = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[0])
    assert set(first) == {"type", "epoch", "step", "size", "step_time", "data_time", "values"}
    assert set(first["values"]) == {"loss", "accuracy"}
    assert first["values"]["loss"] == history.batches["loss"][0]


def test_read_history_still_reads_the_flat_records_of_earlier_versions(tmp_path: Path) -> None:
    history = _fit(tmp_path)
    lines = (tmp_path / "history.jsonl").read_text().splitlines(keepends=True)
    flat = []
    for line in lines:
        record = json.loads(line)
        record.update(record.pop("values", {}))
        flat.append(json.dumps(record) + "\n")
    (tmp_path / "history.jsonl").write_text("".join(flat))
    again = read_history(tmp_path)
    assert again.history == history.history
    for col in history.batches.columns:
        np.testing.assert_array_equal(again.batches[col], history.batches[col].astype(float))


# -- a read-only file system and a directory the user may not write -------------------------
# Tests run as root here, and root ignores permission bits, so chmod cannot make a directory
# unwritable. A user and mount namespace (`unshare -rm`, no privilege needed) can mount a
# directory read-only for real (EROFS, which binds root too); `setpriv` runs a check as the
# unprivileged user nobody (EACCES).
_WORKER = Path(__file__).with_name("ro_worker.py")
_ENV = {**os.environ, "PYTHONPATH": str(Path(fitlens.__file__).parents[1])}


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    sys.platform != "linux" or not _namespaces_work(),
    reason="needs `unshare -rm` (user and mount namespaces) to mount a directory read-only",
)


def _in_namespace(shell: str) -> dict[str, Any]:
    """Runs ``shell`` (which runs the worker) in a new user and mount namespace; the worker's
    JSON line."""
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell],
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _read_only(mountpoint: Path) -> str:
    return f"mount --bind {mountpoint} {mountpoint} && mount -o remount,ro,bind {mountpoint}"


@needs_namespaces
@pytest.mark.parametrize("existing", [False, True])
def test_a_run_dir_on_a_read_only_file_system_is_one_clear_error_before_training(
    tmp_path: Path, existing: bool
) -> None:
    run_dir = tmp_path / "run"
    if existing:
        run_dir.mkdir()
    out = _in_namespace(f"{_read_only(tmp_path)} && {sys.executable} {_WORKER} {run_dir}")
    assert out["error"] == (
        f"OSError: [Errno 30] Cannot write to run_dir {run_dir}: Read-only file system. Choose "
        "a directory you can write to (not on a read-only file system)."
    )
    assert not out["chained"]  # no second error from a clean-up hiding the cause
    assert "epochs" not in out


@needs_namespaces
def test_resuming_a_run_whose_disk_became_read_only_is_refused_before_training(
    tmp_path: Path,
) -> None:
    _fit(tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    out = _in_namespace(
        f"{_read_only(tmp_path)} && {sys.executable} {_WORKER} {tmp_path / 'run'} --resume"
    )
    assert out["error"].startswith("OSError: [Errno 30] Cannot write to run_dir ")
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


@needs_namespaces
def test_a_disk_that_runs_full_mid_run_leaves_training_going_and_says_so(tmp_path: Path) -> None:
    # A real full disk: a 4 MB tmpfs, filled at the start of epoch 2 (a read-only remount is
    # refused while the history files are open for appending: "mount point is busy").
    disk = tmp_path / "disk"
    disk.mkdir()
    out = _in_namespace(
        f"mount -t tmpfs -o size=4m tmpfs {disk} && {sys.executable} {_WORKER} {disk / 'run'} "
        f"--fill-at-epoch 1 {disk / 'filler'}"
    )
    assert out["epochs"] == 3  # training finished
    warned = " ".join(out["warnings"])
    assert "Could not write a checkpoint" in warned and "No space left on device" in warned
    assert "Cannot write the history" in warned
    # The latest checkpoint is epoch 1's end: 16 steps old after epochs 2 and 3 of 8 steps.
    assert "2 checkpoint write(s) failed" in out["stderr"]
    assert "is 16 steps old" in out["stderr"]
    assert out["checkpoints"] == ["ckpt-00000001.pt"]  # epoch 1's end, kept; no torn file


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
    reason="runs the check as the user nobody: needs root and setpriv",
)
def test_a_run_dir_the_user_may_not_write_is_one_clear_error_before_training(
    tmp_path: Path,
) -> None:
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="fitlens-perm-"))  # pytest's tmp_path is 0700
    try:
        shared.chmod(0o755)  # root's directory: nobody may read it, not write it
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, str(_WORKER), str(shared / "run")],
            capture_output=True, text=True, env=_ENV, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout.splitlines()[-1])
        assert out["error"] == (
            f"PermissionError: [Errno 13] Cannot write to run_dir {shared / 'run'}: Permission denied. "
            "Choose a directory you can write to (not on a read-only file system)."
        )
        assert not out["chained"]
        assert not (shared / "run").exists()
    finally:
        import shutil

        shutil.rmtree(shared)
