"""Fixtures for the report tests: real runs of `fitlens.fit` with a run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import fitlens

from .browser import browser as browser  # the fixture, for test_browser
from .runs import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, fitlens.History, str]:
    """A completed 3-epoch run with train_eval, in a run directory."""
    path = tmp_path_factory.mktemp("run") / "finished"
    history, printed = train(path, train_eval=True)
    return path, history, printed
