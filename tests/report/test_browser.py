"""The HTML report in a real headless Chromium: renders, fetches nothing, runs nothing it shows.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package, which
drives the system browser (``executable_path``; Playwright's own browser download is not used).
Under CI (``CI=true``) a missing browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from fitlens.cli.main import main

from .runs import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>"


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Visit:
    """A page opened from a file, with everything it logged, requested and popped up."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        self.page.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_report_renders_with_no_console_message_and_no_request(finished_run, tmp_path, browser):
    path, _, _ = finished_run
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out), "--quiet"]) == 0
    visit = Visit(browser, out)
    try:
        assert visit.console == [] and visit.errors == []
        assert visit.requests == [visit.url]  # the page itself; charts are inline data
        charts = visit.page.eval_on_selector_all(
            "img.chart", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
        )
        assert len(charts) == 1 and charts[0][0] and charts[0][1] > 400 and charts[0][2] > 300
        headings = visit.page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        assert headings == [
            "How the run ended",
            "Warnings",
            "Charts",
            "Epochs",
            "Gap decomposition",
            "Where the time went",
            "Forecasts of the epoch-start jump",
            "Settings",
        ]
        shot = tmp_path / "report.png"
        visit.page.screenshot(path=str(shot), full_page=True)
        width, height = _png_size(shot.read_bytes())
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
