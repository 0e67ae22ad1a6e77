"""`MetricStream`: what it records depends on the batch values alone, not on when it was read."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.core.history import BatchLog
from fitlens.core.metric_range import NONNEGATIVE, RATE
from fitlens.core.stream import MetricStream

NAMES = ["loss", "accuracy"]


def _stream() -> MetricStream:
    ranges = {"loss": NONNEGATIVE, "accuracy": RATE}
    return MetricStream(NAMES, "adaptive_trend", BatchLog(NAMES), ranges=ranges)


def _feed(stream: MetricStream, rows: np.ndarray, start: int, stop: int) -> None:
    n = stop - start
    stream.append(
        np.arange(start + 1, stop + 1),
        rows[start:stop],
        np.full((n, len(NAMES)), 32.0),
        np.full(n, 32.0),
        np.full(n, 1e-3),
        np.full(n, 1e-4),
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 150), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_now_estimates_read_at_any_chunk_hold_the_state_of_a_stream_read_only_at_the_end(
    seed, chunks, reads
):
    """The now estimates take the whole blocks gathered since their last read in one stacked
    update: a stream read after any chunks (a display's refreshes) must end in the state, and
    read the estimates, of one read only at the end, bit for bit, across an epoch boundary."""
    rng = np.random.default_rng(seed)
    total = sum(chunks)
    rows = np.column_stack([1.0 + rng.random(total), rng.random(total)])
    read, quiet = _stream(), _stream()
    start = 0
    for i, size in enumerate(chunks):
        for stream in (read, quiet):
            _feed(stream, rows, start, start + size)
        start += size
        if reads[i]:
            read.snapshot()
        if i == len(chunks) // 2:  # an epoch boundary: the partial block goes to the nows
            for stream in (read, quiet):
                stream.begin_epoch(1)
    assert read.snapshot() == quiet.snapshot()
    mine, theirs = read.state_dict(), quiet.state_dict()
    for name in NAMES:
        for key, value in theirs["nows"][name].items():
            assert np.array_equal(mine["nows"][name][key], value, equal_nan=True), key
