"""`fitlens explain --html`: the page says what the text report says, escaped, and nothing else."""

from __future__ import annotations

import io
import json
import re

import pytest

from fitlens.explain import plot
from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream, main
from fitlens.explain.html import ENVELOPE_CAPTION, SECTIONS, render_html
from fitlens.explain.writer import Explained, render_text, to_json
from fitlens.report.page import CSP

from .pages import read_page
from .test_command import LOG
from .test_plot import _long_log

# Two fit calls of one epoch each: the same first batches come back.
FIT_LOOP = (
    b"Epoch 1/1\n"
    b"  1/10 [....] - ETA: 9s - loss: 0.9000\n"
    b"  2/10 [....] - ETA: 8s - loss: 0.8000\n"
    b"  9/10 [===.] - ETA: 1s - loss: 0.6000\n"
    b" 10/10 [====] - 1s - loss: 0.5900\n"
    b"Epoch 1/1\n"
    b"  1/10 [....] - ETA: 9s - loss: 0.4000\n"
    b"  2/10 [....] - ETA: 8s - loss: 0.4500\n"
    b" 10/10 [====] - 1s - loss: 0.4000\n"
)


def _explained(log: bytes, source: str = "train.log") -> Explained:
    return explain_stream(io.BytesIO(log), source, Options(), keep_results=True)


def _block(text: str, start: str, end: str) -> list[str]:
    """The text report's lines between the line ``start`` and the next line ``end``."""
    lines = text.splitlines()
    i = lines.index(start) + 1
    j = lines.index(end, i)
    return lines[i:j]


def test_the_page_holds_every_sentence_of_the_text_report_in_its_section():
    explained = _explained(LOG)
    text = render_text(explained)
    page = read_page(render_html(explained))
    sections = {s.heading: s for s in page.sections}
    assert [s.heading for s in page.sections] == list(SECTIONS)
    bottom = [line.strip() for line in _block(text, "Bottom line:", "")]
    assert sections["Bottom line"].items == bottom and len(bottom) == 2
    details = text.split("Jumps at epoch boundaries:\n")[1].splitlines()
    assert [line for s in sections["Verdicts per boundary"].lines for line in s.splitlines()] == [
        line for line in details if not line.startswith("Epoch ")
    ]
    rules = [
        line for line in text.splitlines() if line.startswith(("Last batch:", "Assump", "Rul"))
    ]
    assert sections["Assumptions and rules"].paragraphs == rules
    epochs = text.split(rules[-1] + "\n\n")[1].split("\n\nJumps at")[0].split("\n\n")
    assert sections["Epochs"].lines == epochs


def test_the_verdict_table_gives_each_boundary_with_the_bounds_the_text_states():
    explained = _explained(LOG)
    text = render_text(explained)
    rows = read_page(render_html(explained)).sections[1].rows
    assert rows[0] == [
        "boundary",
        "metric",
        "shown end mean",
        "next start",
        "jump",
        "averaging lag explains",
        "share of the jump",
        "verdict",
    ]
    assert [r[:5] for r in rows[1:]] == [
        ["1 \u2192 2", "loss", "0.5990", "0.4000", "-0.1990"],
        ["1 \u2192 2", "acc", "0.7010", "0.9000", "+0.1990"],
    ]
    stated = re.findall(r"Averaging lag explains (\S+) to (\S+) of it \((\S+) of the jump\)", text)
    assert [[f"[{low}, {high}]", share] for low, high, share in stated] == [
        r[5:7] for r in rows[1:]
    ]
    verdicts = re.findall(r"Verdict: ([a-z ]+?)[.:(]", text)
    assert [v.strip() for v in verdicts] == [r[7] for r in rows[1:]]


def test_a_loop_of_fit_calls_shows_the_same_batches_compared():
    explained = _explained(FIT_LOOP)
    lines = render_text(explained).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Same data at every"))
    same = read_page(render_html(explained)).sections[2].lines
    assert same == ["\n".join(lines[start : lines.index("", start)])]
    # Batch 2 is 2 x its shown mean minus batch 1, so its half-width is 3 x the rounding's.
    assert "  loss batch 1: 0.9000 -> 0.4000 (each within ±5e-05)\n" in same[0]
    assert "  loss batch 2: 0.7000 -> 0.5000 (each within ±0.00015)\n" in same[0]


def test_a_log_without_a_fit_loop_says_why_there_is_no_comparison():
    section = read_page(render_html(_explained(LOG))).sections[2]
    assert section.lines == [] and "does not repeat 'Epoch 1/1'" in section.paragraphs[0]


def test_the_page_inlines_the_json_report_and_the_content_security_policy():
    explained = _explained(LOG)
    page = render_html(explained)
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    block = re.search(r'<script type="application/json" id="fitlens-explain">(.*?)</script>', page)
    assert block is not None and json.loads(block.group(1)) == to_json(explained)
    assert page.count("<script") == 1  # the data block only: nothing executable


def test_the_path_and_other_log_text_are_escaped():
    source = "runs/<b>x</b>&\"'.log"
    page_text = render_html(_explained(LOG, source))
    page = read_page(page_text)
    assert page.title == f"fitlens explain: {source}" and page.h1 == page.title
    assert "<b>" not in page_text and "runs/&lt;b&gt;x&lt;/b&gt;&amp;&quot;&#x27;.log" in page_text
    assert "b" not in page.tags


def test_without_a_chart_the_page_says_what_it_needs():
    chart = read_page(render_html(_explained(LOG))).sections[4]
    assert chart.paragraphs == [
        "No chart: it needs matplotlib (pip install 'fitlens[plot]') and a running-mean metric."
    ]


def test_html_writes_the_page_with_its_chart_and_still_prints_the_report(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    log = tmp_path / "train.log"
    log.write_bytes(LOG)
    assert main([str(log)]) == 0
    plain = capsys.readouterr().out
    out = tmp_path / "out.html"
    assert main([str(log), "--html", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain
    assert captured.err == f"fitlens explain: page written to {out}\n"
    page = out.read_text(encoding="utf-8")
    assert page.count('<img class="chart"') == 1
    assert page.count("data:image/svg+xml;base64,") == 1


def test_html_without_matplotlib_writes_the_page_without_its_chart(tmp_path, no_matplotlib, capsys):
    log = tmp_path / "train.log"
    log.write_bytes(LOG)
    out = tmp_path / "out.html"
    assert main([str(log), "--html", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"fitlens explain: page written to {out} without its chart (")
    assert "pip install 'fitlens[plot]'" in err
    assert "No chart: it needs matplotlib" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("out.txt", "expected a file ending in .html or .htm; received .txt"),
        ("missing/out.html", "does not exist"),
        (".", "is a directory"),
    ],
)
def test_a_bad_html_path_is_one_line_before_any_work(tmp_path, capsys, name, expected):
    log = tmp_path / "train.log"
    log.write_bytes(LOG)
    target = str(tmp_path / name) if name != "." else str(tmp_path)
    assert main([str(log), "--html", target]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("fitlens explain: --html ") and expected in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.log"]


def test_a_long_logs_page_streams_the_reports_and_draws_an_envelope(tmp_path, capsys, monkeypatch):
    # The page of a log with more windows than the chart keeps: the same text on stdout, the
    # same JSON inline as --json prints, and a chart of per-column envelopes that says so.
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(plot, "EXACT_POINTS", 500)
    log = tmp_path / "long.log"
    log.write_bytes(_long_log(200))
    assert main([str(log)]) == 0
    plain = capsys.readouterr().out
    assert main([str(log), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    out = tmp_path / "out.html"
    assert main([str(log), "--html", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == plain
    page_text = out.read_text()
    block = re.search(
        r'<script type="application/json" id="fitlens-explain">(.*?)</script>', page_text
    )
    assert block is not None and json.loads(block.group(1)) == report
    page = read_page(page_text)
    assert [s.heading for s in page.sections] == list(SECTIONS)
    assert len(page.sections[5].lines) == 200  # every epoch's lines, as the text report
    assert ENVELOPE_CAPTION.strip() in page_text


def test_a_streamed_page_is_the_page_of_the_explained_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(FIT_LOOP)
    out = tmp_path / "out.html"
    assert main([str(log), "--html", str(out), "--quiet"]) == 0
    charts = re.findall(r"<figure>.*?</figure>", out.read_text())
    without_chart = re.sub(r"<figure>.*?</figure>", "", out.read_text())
    expected = render_html(_explained(FIT_LOOP, str(log)))
    if charts:
        expected = re.sub(r"<p class=note>No chart:.*?</p>", "", expected)
    assert without_chart == expected
