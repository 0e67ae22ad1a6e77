"""The HTML report in a real headless Chromium: renders, fetches nothing, runs nothing it shows.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package, which
drives the system browser (``executable_path``; Playwright's own browser download is not used).
Under CI (``CI=true``) a missing browser fails these tests instead of skipping them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fitlens.cli.main import main

from .browser import HOSTILE, Visit
from .runs import train


def test_the_report_renders_with_no_console_message_and_no_request(finished_run, tmp_path, browser):
    path, _, _ = finished_run
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out), "--quiet"]) == 0
    visit = Visit(browser, out)
    try:
        assert visit.console == [] and visit.errors == []
        assert visit.requests == [visit.url]  # the page itself; charts are inline data
        charts = visit.charts()
        assert len(charts) == 1 and charts[0][0] and charts[0][1] > 400 and charts[0][2] > 300
        assert visit.headings() == [
            "How the run ended",
            "Warnings",
            "Charts",
            "Epochs",
            "Gap decomposition",
            "Where the time went",
            "Forecasts of the epoch-start jump",
            "Settings",
        ]
        width, height = visit.screenshot(tmp_path / "report.png")
        assert width == 1200 and height > 1500
    finally:
        visit.close()


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """A real run whose metric name and directory name are HTML."""
    root = tmp_path_factory.mktemp("hostile")
    run_dir = root / "run<b>&amp;"
    train(run_dir, epochs=2, metrics={HOSTILE: "accuracy"})
    out = root / "report.html"
    assert main(["report", str(run_dir), "-o", str(out), "--quiet"]) == 0
    return run_dir, out


def _check_inert(browser, page_path: Path, run_dir: Path) -> None:
    visit = Visit(browser, page_path)
    try:
        assert visit.dialogs == [] and visit.errors == []
        assert visit.requests == [visit.url]  # an <img src=x> would have requested x
        assert visit.page.eval_on_selector_all("img:not(.chart)", "els => els.length") == 0
        text = visit.page.inner_text("body")
        assert HOSTILE in text  # shown as text
        assert str(run_dir) in text
        data = visit.page.evaluate(
            "JSON.parse(document.getElementById('fitlens-run').textContent).params.metrics"
        )
        assert HOSTILE in data
    finally:
        visit.close()


def test_a_metric_named_like_markup_shows_as_text_and_runs_nothing(hostile_report, browser):
    run_dir, out = hostile_report
    _check_inert(browser, out, run_dir)


def test_the_escaping_holds_without_the_content_security_policy(hostile_report, browser, tmp_path):
    # The page forbids scripts; this proves the escaping alone keeps the markup inert.
    run_dir, out = hostile_report
    page = out.read_text(encoding="utf-8")
    start = page.index('<meta http-equiv="Content-Security-Policy"')
    stripped = page[:start] + page[page.index(">", start) + 1 :]
    assert "Content-Security-Policy" not in stripped
    bare = tmp_path / "no-csp.html"
    bare.write_text(stripped, encoding="utf-8")
    _check_inert(browser, bare, run_dir)
