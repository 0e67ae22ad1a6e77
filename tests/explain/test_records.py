"""The parser's record classes: written by hand (no ``@dataclass``, which costs import time),
they keep what a dataclass gave their users: keyword construction, defaults, ``==``, ``repr``."""

from __future__ import annotations

import pytest

from fitlens.explain.epochs import Epoch
from fitlens.explain.records import EpochHeader, ParseStats


def test_epoch_header_compares_by_value_hashes_and_refuses_assignment() -> None:
    header = EpochHeader(3, 10, line=7)
    assert header == EpochHeader(number=3, total=10, line=7)
    assert header != EpochHeader(3, 10, 8)
    assert header != (3, 10, 7)  # not a tuple: a record of its own kind
    assert len({header, EpochHeader(3, 10, 7)}) == 1
    assert repr(header) == "EpochHeader(number=3, total=10, line=7)"
    with pytest.raises(AttributeError):
        header.number = 4  # type: ignore[misc]


def test_parse_stats_start_at_zero_and_count_in_place() -> None:
    stats = ParseStats()
    assert (stats.bytes_read, stats.lines, stats.progress, stats.other, stats.rejected) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert stats.first_rejected_line is None
    stats.rejected += 2
    assert stats == ParseStats(rejected=2)
    assert repr(stats).startswith("ParseStats(bytes_read=0, lines=0, progress=0, other=0")
    with pytest.raises(AttributeError):
        stats.typo = 1  # type: ignore[attr-defined]


def test_each_epoch_gets_its_own_series_and_final_dicts() -> None:
    first, second = Epoch(1), Epoch(2, target=5, last_step=5)
    first.series["loss"] = None  # type: ignore[assignment]
    assert second.series == {} and second.final == {}
    assert (second.header, second.unit, second.style, second.complete) == (
        None,
        "unknown",
        "plain",
        True,
    )
    assert Epoch(2, target=5, last_step=5) == second
