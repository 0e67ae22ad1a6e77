"""`fitlens explain --html` in a real headless Chromium: renders, fetches nothing, runs nothing.

Uses the report's browser fixture (``tests/report/browser.py``): Debian's ``chromium`` driven by
Playwright; under ``CI=true`` a missing browser fails instead of skipping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report.browser import HOSTILE, Visit

from fitlens.explain.command import main
from fitlens.explain.html import SECTIONS

from .test_command import LOG

# A user's own lines with markup around the progress output, and a metric named like markup
# (the parser reads names of letters, digits and ``_.-/`` only, so that line is an "other" line).
HOSTILE_LOG = (
    b"<script>alert(2)</script> loading data\n"
    + LOG.replace(b"Epoch 2/2\n", b"Epoch 2/2\n" + HOSTILE.encode() + b" user line\n")
    + b"100/100 [====] - 10s - loss: 0.3000 - "
    + HOSTILE.encode()
    + b": 0.5000\n"
)


def _page(tmp_path: Path, name: str, log: bytes) -> tuple[Path, Path]:
    pytest.importorskip("matplotlib")
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "train.log"
    path.write_bytes(log)
    out = tmp_path / "explain.html"
    assert main([str(path), "--html", str(out)]) == 0
    return path, out


def test_the_explain_page_renders_with_no_console_message_and_no_request(tmp_path, browser, capsys):
    _, out = _page(tmp_path, "run", LOG)
    capsys.readouterr()
    visit = Visit(browser, out)
    try:
        assert visit.console == [] and visit.errors == [] and visit.dialogs == []
        assert visit.requests == [visit.url]  # the page itself; the chart is inline data
        charts = visit.charts()
        assert len(charts) == 1 and charts[0][0] and charts[0][1] > 400 and charts[0][2] > 300
        assert visit.headings() == list(SECTIONS)
        width, height = visit.screenshot(tmp_path / "explain.png")
        assert width == 1200 and height > 900
    finally:
        visit.close()


def _check_inert(browser, page: Path, log: Path) -> None:
    visit = Visit(browser, page)
    try:
        assert visit.dialogs == [] and visit.errors == [] and visit.console == []
        assert visit.requests == [visit.url]  # an <img src=x> would have requested x
        assert visit.page.eval_on_selector_all("img:not(.chart)", "els => els.length") == 0
        assert visit.page.eval_on_selector_all("script:not([type])", "els => els.length") == 0
        text = visit.page.inner_text("body")
        assert str(log) in text and HOSTILE in text  # the path, shown as text
    finally:
        visit.close()


def test_markup_in_the_path_metric_and_user_lines_shows_as_text_and_runs_nothing(
    tmp_path, browser, capsys
):
    log, out = _page(tmp_path, HOSTILE, HOSTILE_LOG)
    capsys.readouterr()
    _check_inert(browser, out, log)
    # Without the Content-Security-Policy, the escaping alone keeps the markup inert.
    page = out.read_text(encoding="utf-8")
    start = page.index('<meta http-equiv="Content-Security-Policy"')
    bare = tmp_path / "no-csp.html"
    bare.write_text(page[:start] + page[page.index(">", start) + 1 :], encoding="utf-8")
    assert "Content-Security-Policy" not in bare.read_text(encoding="utf-8")
    _check_inert(browser, bare, log)
