"""The `fitlens explain` command: outputs, stdin, and one-line errors for bad input."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fitlens.explain import command
from fitlens.explain.command import main

SRC = Path(__file__).parents[2] / "src"
LOG = (
    b"Epoch 1/2\n"
    b"  1/100 [....] - ETA: 9s - loss: 0.9000 - acc: 0.5000\n"
    b" 50/100 [==..] - ETA: 5s - loss: 0.7000 - acc: 0.6000\n"
    b" 99/100 [===.] - ETA: 0s - loss: 0.6000 - acc: 0.7000\n"
    b"100/100 [====] - 10s - loss: 0.5990 - acc: 0.7010 - val_loss: 0.5000 - val_acc: 0.8000\n"
    b"Epoch 2/2\n"
    b"  1/100 [....] - ETA: 9s - loss: 0.4000 - acc: 0.9000\n"
    b"100/100 [====] - 10s - loss: 0.3000 - acc: 0.9100\n"
)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "train.log"
    path.write_bytes(LOG)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("fitlens explain: ")
    assert "Traceback" not in err
    return err


def test_json_output_has_the_documented_schema(log, capsys):
    assert main([str(log), "--json", "--windows"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "fitlens.explain/2"
    epoch = report["epochs"][0]
    assert epoch["metrics"]["val_acc"]["kind"] == "end_of_epoch"
    window = epoch["metrics"]["acc"]["windows"][0]
    assert set(window) == {"first_batch", "last_batch", "value", "low", "high"}
    boundary = report["boundaries"][0]
    assert set(boundary) >= {
        "metric",
        "from_epoch",
        "shown_end_mean",
        "next_start",
        "jump",
        "lag_explains",
        "verdict",
    }
    assert boundary["verdict"] in {"averaging_lag", "not_averaging_lag", "mixed", "unknown"}


def test_a_rising_epoch_whose_end_level_meets_the_next_start_is_averaging_lag(log, capsys):
    assert main([str(log), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (acc,) = [b for b in report["boundaries"] if b["metric"] == "acc"]
    # Batches 51-99 averaged (99·0.7 − 50·0.6)/49 = 0.802; the last batch of epoch 1 reached
    # 100·0.701 − 99·0.7 = 0.8 (± 0.01): most of the jump to 0.9 is not lag.
    assert acc["verdict"] in {"mixed", "unknown", "not_averaging_lag"}


def test_text_output_is_the_default(log, capsys):
    assert main([str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fitlens explain: ")
    assert "Assumptions:" in out


def test_stdin_is_read_when_the_path_is_a_dash(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LOG)))
    assert main(["-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "stdin"


def test_plot_writes_a_png(log, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out.png"
    assert main([str(log), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().err == f"fitlens explain: plot written to {out}\n"


def test_plot_without_matplotlib_says_what_to_install(log, tmp_path, no_matplotlib, capsys):
    assert main([str(log), "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install 'fitlens[plot]'" in _error(capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02ELF\x00" * 100, "binary"),
        (b"hello\nthis is not a keras log\n", "no Keras progress lines"),
        (b"500/406 [====] - loss: 0.1000\n" * 3, "garbled"),
        (b"1/2 [==] - loss: 0.12\n2/2 [==] - acc: 0.1\n", "none shows a metric value"),
        (b"1/99999999999999999 [==] - loss: 0.1000\n", "no Keras progress lines"),
        (b"3/3 - loss: " + b"9" * 40 + b".0000\n", "none shows a metric value"),
    ],
    ids=["empty", "binary", "no-progress", "garbled", "truncated", "absurd-target", "absurd-value"],
)
def test_bad_input_gets_one_line_and_exit_code_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.log"
    path.write_bytes(content)
    assert main([str(path)]) == 2
    assert message in _error(capsys)


def test_a_missing_file_gets_one_line_and_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.log")]) == 2
    assert "no such file" in _error(capsys)


def test_a_directory_gets_one_line_and_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "directory" in _error(capsys)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tolerance", "inf"], "positive, finite tolerance"),
        (["--tolerance", "nan"], "positive, finite tolerance"),
        (["--tolerance", "0"], "positive, finite tolerance"),
        (["--samples", "650"], "--samples and --batch-size together"),
        (["--samples", "0", "--batch-size", "16"], "positive samples"),
        (["--plot", "out.weird"], "expected a file ending in one of .png"),
        (["--plot", "no-such-folder/out.png"], "does not exist"),
    ],
    ids=["inf", "nan", "zero", "samples-alone", "zero-samples", "weird-ext", "no-folder"],
)
def test_bad_options_get_one_line_and_exit_code_2(log, capsys, options, message):
    assert main([str(log), *options]) == 2
    assert message in _error(capsys)


def test_a_plot_path_that_is_a_directory_gets_one_line(log, tmp_path, capsys):
    assert main([str(log), "--plot", str(tmp_path)]) == 2
    assert "is a directory" in _error(capsys)
    assert list(tmp_path.iterdir()) == [log]  # nothing written, nothing renamed


def test_missing_arguments_exit_with_code_2(capsys):
    assert main([]) == 2
    capsys.readouterr()


def test_help_exits_with_code_0(capsys):
    assert main(["--help"]) == 0
    assert "fitlens explain" in capsys.readouterr().out


def test_the_command_never_imports_torch(tmp_path, log):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fitlens", "explain", str(log)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "torch" not in result.stderr
    assert "matplotlib" not in result.stderr


def test_the_module_entry_point_runs_main(log):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "fitlens", "explain", str(log), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "fitlens.explain/2"


def test_tf_keras_2_0_sample_counting_logs_reconstruct_loss_as_a_running_mean(tmp_path, capsys):
    # Synthetic format test: tf.keras 2.0/2.1 count samples and print us/sample; the progress
    # bar averages the per-batch loss by the counter before display.
    path = tmp_path / "tf20.log"
    path.write_bytes(
        b"Epoch 1/1\n"
        b"  32/6400 [....] - ETA: 9s - loss: 0.9000 - accuracy: 0.5000\r"
        b"3200/6400 [==..] - ETA: 5s - loss: 0.7000 - accuracy: 0.6000\r"
        b"6400/6400 [====] - 3s 50us/sample - loss: 0.6000 - accuracy: 0.7000\n"
    )
    assert main([str(path), "--json", "--windows"]) == 0
    (epoch,) = json.loads(capsys.readouterr().out)["epochs"]
    assert (epoch["counter_unit"], epoch["weighting"]) == ("sample", "counter")
    loss = epoch["metrics"]["loss"]
    assert loss["kind"] == "running_mean"
    assert loss["windows"][0] == pytest.approx(
        {"first_batch": 1, "last_batch": 32, "value": 0.9, "low": 0.89995, "high": 0.90005}
    )


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    path = tmp_path / "long.log"
    path.write_bytes(LOG * 2000)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fitlens", "explain", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err


def _big_log(path, megabytes: float) -> None:
    """A Keras 2 one-line-per-step log of about ``megabytes`` MB (epochs of 200 steps)."""
    lines = []
    for step in range(1, 201):
        lines.append(f"{step:3d}/200 [==>...] - ETA: 3s - loss: {1 / step:.4f} - acc: 0.5000\n")
    epoch = "".join(lines)
    count = int(megabytes * 1e6 / len(epoch)) + 1
    with open(path, "w") as f:
        for k in range(1, count + 1):
            f.write(f"Epoch {k}/{count}\n" + epoch)


def test_a_big_log_gets_a_progress_line_per_tenth_and_quiet_silences_them(tmp_path):
    path = tmp_path / "big.log"
    _big_log(path, 52)  # just above PROGRESS_BYTES
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "fitlens", "explain", str(path)]
    loud = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    lines = loud.stderr.splitlines()
    assert [line.split("] ")[1].split(" of ")[0] for line in lines[:-1]] == [
        f"read {p}%" for p in range(10, 101, 10)
    ]
    assert lines[-1].endswith(f"done: {loud.stdout.split('Read ')[1].split(' ')[0]} epoch(s)")
    quiet = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, env=env, check=True)
    assert quiet.stderr == ""
    assert quiet.stdout == loud.stdout


def test_a_big_log_from_a_pipe_gets_a_line_per_50_mb(tmp_path):
    path = tmp_path / "big.log"
    _big_log(path, 52)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "fitlens", "explain", "-"],
        input=path.read_bytes(),  # through a pipe: no size to take tenths of
        capture_output=True,
        env=env,
        check=True,
    )
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2 and "read 50 MB of stdin" in lines[0] and "done:" in lines[1]


def test_a_small_log_gets_no_progress_lines_and_quiet_hides_the_files_written(
    log, tmp_path, capsys
):
    out = tmp_path / "page.html"
    assert main([str(log), "--html", str(out)]) == 0
    assert capsys.readouterr().err.startswith("fitlens explain: page written to")
    assert main([str(log), "--html", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def _varied_log(path: Path, seed: int) -> None:
    """A Keras 2 log whose last lines show ms/step (so the last batch may be partial), with
    epochs from 2 to 40 steps (shorter and longer than the windows computed ahead), noisy values
    and a few shown every other step."""
    rng = random.Random(seed)
    out = []
    for k in range(1, 61):
        target = rng.choice([2, 3, 5, 16, 17, 18, 40, 100])
        level, acc = rng.uniform(0.1, 2.0), rng.uniform(0.3, 0.99)
        stride = rng.choice([1, 1, 2])
        out.append(f"Epoch {k}/60\n")
        for step in [*range(1, target, stride), target]:
            loss = level * (1 + rng.uniform(-0.2, 0.2) / step)
            a = min(1.0, acc + rng.uniform(-0.3, 0.3) / step)
            tail = "- 1s 5ms/step" if step == target else "- ETA: 1s"
            out.append(f"{step:3d}/{target} [==>...] {tail} - loss: {loss:.4f} - acc: {a:.4f}\n")
    path.write_text("".join(out))


@pytest.mark.parametrize("seed", [0, 1])
def test_epochs_analysed_in_batches_report_exactly_what_one_at_a_time_does(
    tmp_path, capsys, monkeypatch, seed
):
    """The windows computed ahead for a batch of epochs (explain_stream's batches, cut by epoch
    count or by displays, a partial batch at the end) give byte for byte the report and JSON
    that the scalar scan per epoch gives."""
    path = tmp_path / "train.log"
    _varied_log(path, seed)
    outputs = {}
    for epochs, displays in [(128, 65_536), (7, 65_536), (1, 65_536), (128, 50)]:
        monkeypatch.setattr(command, "BATCH_EPOCHS", epochs)
        monkeypatch.setattr(command, "BATCH_DISPLAYS", displays)
        for args in ([], ["--json"]):
            assert main([str(path), *args]) == 0
            outputs[(epochs, displays, *args)] = capsys.readouterr().out
    monkeypatch.setattr(command, "prepare", lambda results: None)  # the scalar scan alone
    for args in ([], ["--json"]):
        assert main([str(path), *args]) == 0
        alone = capsys.readouterr().out
        assert "averaging lag" in alone or args
        for key, text in outputs.items():
            if key[2:] == tuple(args):
                assert text == alone, key
