"""fitlens show / fitlens report on real run directories: finished, running, interrupted, resumed."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fitlens
from fitlens.cli.main import main
from fitlens.core.forecast import format_check_line, format_forecast_line
from fitlens.core.gap import format_gap_line
from fitlens.core.numbers import format_interval
from fitlens.report.facts import forecasts, gap_table
from fitlens.report.reader import read_run
from fitlens.safety.run_dir import JSONL, SUMMARY

from .runs import InterruptAt, train


def test_forecast_and_check_lines_are_the_ones_fit_printed(finished_run):
    _, history, printed = finished_run
    rows = forecasts(history)
    assert len(rows) == 2
    for r in rows:
        assert format_forecast_line(r.forecast) in printed
        assert r.check is not None and format_check_line(r.check) in printed


def test_the_gap_table_rebuilt_from_the_history_equals_fits_decompositions(finished_run):
    _, history, _ = finished_run
    for rebuilt, recorded in zip(gap_table(history), history.gaps, strict=True):
        for name, d in rebuilt.items():
            assert d.to_dict() == recorded["metrics"][name]


def test_show_prints_the_epochs_and_the_last_lines_fit_printed(finished_run, capsys):
    path, history, printed = finished_run
    assert main(["show", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "status: completed" in out
    for e in (1, 2, 3):
        assert f"\n    {e}  " in out
    assert f"{history.history['val_accuracy'][-1]:.4f}" in out
    h = history.history  # the now column shows the interval, as the display did
    shown = " ".join(format_interval(h["accuracy_now"][-1], h["accuracy_now_low"][-1],
                                     h["accuracy_now_high"][-1]))  # fmt: skip
    assert f"  {shown}  " in out
    # A run directory has no intervals, so the gap line is fit's without them.
    last_check = format_check_line(forecasts(history)[-1].check)
    assert last_check in out and last_check in printed


def test_show_json_is_strict_json_with_every_epoch(finished_run, capsys):
    path, history, _ = finished_run
    assert main(["show", str(path), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "fitlens.show/1"
    assert data["status"] == "completed"
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    assert data["epochs"][-1]["logs"]["accuracy_now"] == history.history["accuracy_now"][-1]
    assert data["in_progress"] is None


def test_a_run_still_writing_shows_its_running_epoch_and_ignores_a_torn_line(
    finished_run, tmp_path, capsys
):
    path, _history, _ = finished_run
    copy = tmp_path / "live"
    shutil.copytree(path, copy)
    lines = (copy / JSONL).read_text().splitlines(keepends=True)
    # Keep epoch 1 and the first 5 batches of epoch 2, then half a line, as a writer mid-append.
    kept, batches_of_2 = [], 0
    for line in lines:
        record = json.loads(line)
        if record["type"] == "epoch" and record["epoch"] > 1:
            continue
        if record["type"] == "batch" and record["epoch"] > 1:
            if record["epoch"] > 2 or batches_of_2 == 5:
                continue
            batches_of_2 += 1
        kept.append(line)
    (copy / JSONL).write_text("".join(kept) + '{"type": "batch", "epo')
    summary = json.loads((copy / SUMMARY).read_text())
    summary["status"] = "running"
    (copy / SUMMARY).write_text(json.dumps(summary))
    assert main(["show", str(copy), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "running"
    assert len(data["epochs"]) == 1
    assert data["in_progress"]["epoch"] == 2 and data["in_progress"]["steps_done"] == 5
    assert main(["report", str(copy), "-o", str(tmp_path / "r.html"), "--quiet"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "epoch 2 in progress: 5 of 12 steps flushed" in page


def test_an_interrupted_then_resumed_run_says_so(tmp_path, capsys):
    path = tmp_path / "run"
    with pytest.raises(fitlens.TrainingInterrupted):
        train(path, epochs=3, callbacks=[InterruptAt(epoch=1, step=4)])
    assert main(["show", str(path), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "interrupted"
    assert data["in_progress"] == {
        "epoch": 2,
        "steps_done": 4,
        "steps": 12,
        "means": data["in_progress"]["means"],
    }
    checkpoint = data["latest_checkpoint"]
    train(path, epochs=3, resume=True)
    assert main(["show", str(path), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "completed"
    assert data["resumed_from"] == checkpoint
    assert main(["report", str(path), "--quiet"]) == 0
    assert (
        f"resumed from checkpoint <code>{checkpoint}</code>" in (path / "report.html").read_text()
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
        (lambda p: p, "holds no history.jsonl"),
    ],
)
@pytest.mark.parametrize("command", ["show", "report"])
def test_a_wrong_path_is_one_line_without_traceback(tmp_path, capsys, make, message, command):
    assert main([command, str(make(tmp_path)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitlens {command}: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_report_says_what_it_does_unless_quiet(finished_run, tmp_path, capsys):
    path, _, _ = finished_run
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "reading" in err and "drawing 2 panels" in err and "wrote" in err
    assert main(["report", str(path), "-o", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_report_from_the_history_in_memory_shows_the_intervals(finished_run):
    from fitlens.report.html import render_page
    from fitlens.report.reader import history_run

    _, history, _ = finished_run
    page = render_page(history_run(history), [])
    val = history.gaps[0]["metrics"]["accuracy"]["validation"]
    assert f"[{val['low']:.4f}, {val['high']:.4f}]" in page
    assert "not recorded in a run directory" not in page


def _gap_intervals(gaps):
    """``(epoch, metric, role) -> (low, high)`` of every measured value in ``History.gaps``."""
    return {
        (g["epoch"], name, role): (d[role]["low"], d[role]["high"])
        for g in gaps
        for name, d in g["metrics"].items()
        for role in ("train_mode", "eval_mode", "validation")
        if d[role] is not None
    }


def test_a_report_from_the_run_directory_shows_the_intervals_fit_recorded(finished_run):
    from fitlens.report.html import render_page
    from fitlens.report.reader import read_run

    path, history, _ = finished_run
    recorded = _gap_intervals(history.gaps)
    assert len(recorded) == 3 * 2 * 3  # epochs x metrics x measured values, all with intervals
    assert _gap_intervals(fitlens.read_history(path).gaps) == recorded
    run = read_run(path)
    assert _gap_intervals(run.history.gaps) == recorded
    page = render_page(run, [])
    val = history.gaps[0]["metrics"]["accuracy"]["validation"]
    assert f"[{val['low']:.4f}, {val['high']:.4f}]" in page
    assert "not recorded in this run directory" not in page


def test_a_run_directory_of_an_earlier_version_without_intervals_still_reports(
    finished_run, tmp_path
):
    from fitlens.report.html import render_page
    from fitlens.report.reader import read_run

    path, history, _ = finished_run
    copy = tmp_path / "old"
    shutil.copytree(path, copy)
    records = [json.loads(line) for line in (copy / JSONL).read_text().splitlines()]
    for record in records:
        record.pop("gaps", None)
    (copy / JSONL).write_text("".join(json.dumps(r) + "\n" for r in records))
    run = read_run(copy)
    assert run.history.gaps == [] and run.history.history == history.history
    assert "not recorded in this run directory" in render_page(run, [])


def test_the_intervals_of_epochs_before_a_resume_stay_in_the_run_directory(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(fitlens.TrainingInterrupted):
        train(path, epochs=3, train_eval=True, callbacks=[InterruptAt(epoch=1, step=4)])
    before = _gap_intervals(fitlens.read_history(path).gaps)
    assert {k[0] for k in before} == {1}
    history, _ = train(path, epochs=3, train_eval=True, resume=True)
    after = _gap_intervals(fitlens.read_history(path).gaps)
    assert {k[0] for k in after} == {1, 2, 3}
    assert after == _gap_intervals(history.gaps)
    assert {k: v for k, v in after.items() if k[0] == 1} == before


def test_report_without_matplotlib_names_the_extra_and_show_still_works(finished_run):
    path, _, _ = finished_run
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["matplotlib"] = None
        from fitlens.cli.main import main
        print("report", main(["report", {str(path)!r}, "-o", "/dev/null", "--quiet"]))
        print("show", main(["show", {str(path)!r}, "--quiet"]) )
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "report 2" in result.stdout and "show 0" in result.stdout, result.stderr
    assert result.stderr.startswith("fitlens report: ")
    assert "pip install 'fitlens[plot]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_chunked_reader_gives_read_historys_history(finished_run, monkeypatch):
    import fitlens.report.reader as reader

    path, _, _ = finished_run
    monkeypatch.setattr(reader, "CHUNK", 7)  # many chunks, one partly filled
    seen: list[float] = []
    got = reader.stream_history(path, seen.append)
    want = fitlens.read_history(path)
    assert got.history == want.history and got.timing == want.timing
    assert got.epoch == want.epoch
    assert got.batches.columns == want.batches.columns
    for c in want.batches.columns:
        assert got.batches[c].tolist() == want.batches[c].tolist()
        assert got.batches[c].dtype == want.batches[c].dtype
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] < 1


def test_the_reader_reads_the_flat_batch_records_of_earlier_versions(finished_run, tmp_path):
    import fitlens.report.reader as reader

    path, _, _ = finished_run
    copy = tmp_path / "old"
    shutil.copytree(path, copy)
    records = [json.loads(line) for line in (copy / JSONL).read_text().splitlines()]
    for record in records:  # the values at the top level, as before they were nested
        record.update(record.pop("values", {}))
    (copy / JSONL).write_text("".join(json.dumps(r) + "\n" for r in records))
    got, want = reader.stream_history(copy), fitlens.read_history(path)
    assert got.history == want.history and got.batches.columns == want.batches.columns
    for c in want.batches.columns:
        assert got.batches[c].tolist() == want.batches[c].tolist()


class StopAt(fitlens.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, step, logs):
        if step == self.step:
            self.run.stop_training = True


def test_a_short_epoch_and_non_finite_batches_are_warned_about(tmp_path):
    from fitlens.report.facts import run_warnings

    history, _ = train(tmp_path / "run", epochs=3, callbacks=[StopAt(5)])
    warnings = run_warnings(history, None)
    assert warnings == [
        "Epoch 1 ended after 5 of 12 steps (the data ran out, or a callback stopped training)."
    ]
    rows = {c: np.array(history.batches[c]) for c in history.batches.columns}
    rows["loss"][3] = np.nan
    history.batches.truncate(0)
    history.batches.append(rows)
    assert "loss is NaN or infinite in 1 batches, first at epoch 1 step 4." in run_warnings(
        history, None
    )


def test_report_chart_writes_the_chart_alone_and_refuses_other_formats(
    finished_run, tmp_path, capsys
):
    path, _, _ = finished_run
    chart = tmp_path / "chart.png"
    assert (
        main(
            ["report", str(path), "-o", str(tmp_path / "r.html"), "--chart", str(chart), "--quiet"]
        )
        == 0
    )
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(path), "--chart", str(tmp_path / "c.jpg"), "--quiet"]) == 2
    assert "expected a file name ending in .png or .svg" in capsys.readouterr().err


def test_the_run_files_hold_each_now_interval_and_the_report_reads_it_back(finished_run):
    path, history, _ = finished_run
    back = read_run(path).history
    for key in ("accuracy_now_low", "accuracy_now_high", "loss_now_low", "loss_now_high"):
        assert back.history[key] == history.history[key]
    for rebuilt, recorded in zip(gap_table(back), history.gaps, strict=True):
        assert rebuilt["accuracy"].now_low == recorded["metrics"]["accuracy"]["now_low"]
    summary = json.loads((path / SUMMARY).read_text())
    assert summary["final_metrics"]["accuracy_now_high"] == history.history["accuracy_now_high"][-1]


def test_run_files_written_before_the_now_interval_still_read_show_and_report(
    finished_run, tmp_path
):
    path, _, _ = finished_run
    old = tmp_path / "old"
    shutil.copytree(path, old)
    lines = []
    for line in (old / JSONL).read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "epoch":
            record["logs"] = {
                k: v for k, v in record["logs"].items() if not k.endswith(("_low", "_high"))
            }
        lines.append(json.dumps(record) + "\n")
    (old / JSONL).write_text("".join(lines))
    back = read_run(old).history
    assert "accuracy_now_low" not in back.history
    gaps = gap_table(back)
    assert math.isnan(gaps[0]["accuracy"].now_low)
    assert format_gap_line(gaps[0]["accuracy"]).startswith("gap accuracy: mean ")
    rows = forecasts(back)  # the tolerance falls back to the batch noise alone
    assert len(rows) == 2 and all(math.isfinite(r.forecast.tolerance) for r in rows)
    assert main(["show", str(old), "--quiet"]) == 0
    assert main(["report", str(old), "-o", str(tmp_path / "r.html"), "--quiet"]) == 0


@pytest.mark.parametrize("command", [["show", "--json"], ["report", "-o", "page.html"]])
def test_show_and_report_read_a_run_directory_without_importing_torch(
    finished_run, tmp_path, command
):
    path, _, _ = finished_run
    src = Path(fitlens.__file__).parents[1]
    argv = [sys.executable, "-X", "importtime", "-m", "fitlens", command[0], str(path)]
    result = subprocess.run(
        [*argv, *command[1:], "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "fitlens.report.reader" in imported  # the log is the one of the run just made
    assert not [m for m in imported if m.split(".")[0] in ("torch", "keras", "lightning")]


def test_show_and_the_report_give_the_fp16_overflow_skipped_steps(finished_run, tmp_path, capsys):
    from fitlens.report.html import render_page
    from tests.training.test_update import Overflowing, _batches

    run_dir = tmp_path / "fp16"
    h = fitlens.fit(
        Overflowing(), _batches(4), loss="cross_entropy", optimizer="sgd", epochs=2,
        verbose=0, precision="16-mixed", run_dir=run_dir,
    )  # fmt: skip
    skipped = h.params["overflow_skipped_steps"]
    assert skipped > 0  # the scaler starts at 65536: the first steps overflow
    words = f"{skipped} optimizer step(s) skipped by the fp16 loss scaler for gradient overflow"
    assert main(["show", str(run_dir), "--quiet"]) == 0
    assert f"fp16: {words}" in capsys.readouterr().out
    assert main(["show", str(run_dir), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["overflow_skipped_steps"] == skipped
    assert words in render_page(read_run(run_dir), [])
    # a run without fp16 says nothing about it
    assert main(["show", str(finished_run[0]), "--quiet"]) == 0
    assert "fp16" not in capsys.readouterr().out
    assert "loss scaler" not in render_page(read_run(finished_run[0]), [])
