"""Fixtures for the explain tests: headless Chromium (shared with the report's), no matplotlib."""

from __future__ import annotations

import builtins

import pytest
from report.browser import browser as browser  # the fixture, for test_html_browser


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``import matplotlib...`` fails from here on, as without the ``[plot]`` extra."""
    real_import = builtins.__import__

    def importer(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importer)
