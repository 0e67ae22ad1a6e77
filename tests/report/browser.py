"""Headless Chromium for the page tests: the `browser` fixture and `Visit` (a page from a file).

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package, which
drives the system browser (``executable_path``; Playwright's own browser download is not used).
Under CI (``CI=true``) a missing browser fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>"


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        unavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing (pip install -e '.[dev]')")
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

    def charts(self) -> list[list]:
        """Per ``img.chart``: ``[loaded, natural width, natural height]``."""
        return self.page.eval_on_selector_all(
            "img.chart", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
        )

    def headings(self) -> list[str]:
        """The text of every ``<h2>``, in order."""
        return self.page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")

    def screenshot(self, path: Path) -> tuple[int, int]:
        """Save a full-page PNG to ``path``; its ``(width, height)`` in pixels."""
        self.page.screenshot(path=str(path), full_page=True)
        return png_size(path.read_bytes())

    def close(self) -> None:
        self.page.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])
