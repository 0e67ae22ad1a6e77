"""The pure formatters, tested against exact strings."""

from __future__ import annotations

import io

from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream
from fitlens.explain.report import fmt
from fitlens.explain.writer import Explained, render_text, to_json

LOG = (
    b"Epoch 1/1\n"
    b"  1/406 [....] - ETA: 11726s - loss: 0.7993 - acc: 0.5996\n"
    b"  2/406 [....] - ETA: 11237s - loss: 0.7260 - acc: 0.6587\n"
    b"  3/406 [....] - ETA: 14136s - loss: 0.6619 - acc: 0.7279\n"
    b"404/406 [===.] - ETA: 53s - loss: 0.3542 - acc: 0.8917\n"
    b"405/406 [===.] - ETA: 26s - loss: 0.3541 - acc: 0.8917\n"
    b"406/406 [====] - 10798s - loss: 0.3539 - acc: 0.8918\n"
    b"Epoch 1/1\n"
    b"  1/406 [....] - ETA: 15158s - loss: 0.2152 - acc: 0.9424\n"
)


def _explained() -> Explained:
    return explain_stream(io.BytesIO(LOG), "seed.log", Options())


def test_numbers_are_formatted_like_keras_prints_them():
    assert fmt(0.89184) == "0.8918"
    assert fmt(5e-4) == "5.0000e-04"
    assert fmt(-0.25) == "-0.2500"
    assert fmt(0.0) == "0.0000"


def test_the_accuracy_boundary_reads_as_plain_words_with_numbers():
    text = render_text(_explained())
    assert (
        "  acc: epoch 1 ended at a shown mean of 0.8918; epoch 2 starts at 0.9424 "
        "(first values: 0.9424 at 1): a jump of +0.0506.\n"
        "    Near the end of epoch 1, batches 405-406 averaged 0.9120 "
        "(between 0.8917 and 0.9323).\n"
        "    Averaging lag explains -0.0001 to +0.0405 of it (0.0%-80.1% of the jump).\n"
    ) in text


def test_json_report_is_plain_data_with_the_schema_tag():
    report = to_json(_explained())
    assert report["schema"] == "fitlens.explain/2"
    assert report["input"]["progress_lines"] == 7
    (acc,) = [b for b in report["boundaries"] if b["metric"] == "acc"]
    assert acc["end_level"]["first_batch"] == 405
