"""Real Keras 3 logs (torch backend): every reconstructed interval contains Keras's own value.

Each case trains a tiny model in a subprocess whose stdout is a pseudo-terminal, a pipe, or
``verbose=2`` output, while a callback records the unrounded running means Keras computes. The
true mean of batches ``a+1..b`` is then ``(W_b M_b - W_a M_a) / (W_b - W_a)`` with ``W`` the
samples seen (Keras 3 weights its ``Mean`` metrics by batch size).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fitlens.explain.analysis import Options, analyze
from fitlens.explain.epochs import split_epochs
from fitlens.explain.jumps import boundaries
from fitlens.explain.parse import ParseStats, Progress, iter_records
from fitlens.explain.reconstruct import _SLACK, trailing_windows

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None,
    reason="needs keras 3 and torch (the dev extras)",
)

SCRIPT = Path(__file__).with_name("keras_train.py")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "KERAS_BACKEND": "torch",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _train(
    tmp: Path, samples: int, batch: int, epochs: int, verbose: int, tty: bool, mode: str = ""
):
    truth_path = tmp / "truth.json"
    cmd = [sys.executable, str(SCRIPT), str(samples), str(batch), str(epochs), str(verbose)]
    cmd += [str(truth_path), *([mode] if mode else [])]
    if tty:
        master, slave = os.openpty()
        proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.DEVNULL, env=_env())
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=120) == 0
        log = b"".join(chunks)
    else:
        result = subprocess.run(cmd, capture_output=True, env=_env(), timeout=120, check=True)
        log = result.stdout
    # Kept beside the truth, so that a failure can be replayed on the exact log: pytest keeps
    # the temporary folders of the last three runs, and the assertions name the path.
    log_path = tmp / "keras.log"
    log_path.write_bytes(log)
    truth = json.loads(truth_path.read_text())
    truth["log_path"] = str(log_path)
    return log, truth


# float32 unit roundoff: Keras 3 keeps each Mean's ``total`` and ``count`` in float32.
_U32 = 2.0**-24


def _total_error(batches: int, weight: float, mean: float) -> float:
    """Bound on |W*M - exact total| for a running mean M read back from Keras.

    ``total`` is a float32 sum of ``batches`` non-negative batch totals (binary cross-entropy and
    accuracy are both >= 0 per sample), so its rounding error is at most ``batches * u * total``;
    the division ``total / count`` adds one more ``u`` (``count`` is an exact float32 integer below
    2**24). With ``W * M`` standing for ``total`` that is ``(batches + 1) * u * W * |M|``.
    """
    return (batches + 1) * _U32 * weight * abs(mean)


def _check_intervals(log: bytes, truth: dict, options: Options) -> list:
    results = list(analyze(split_epochs(iter_records([log], ParseStats())), options))
    samples, batch = truth["samples"], truth["batch"]
    kept = f"log kept at {truth['log_path']}, Keras's values beside it in truth.json"
    found = [(r.epoch.header, r.epoch.first_line, r.epoch.last_step) for r in results]
    assert len(results) == len(truth["epochs"]), (found, kept)
    checked = 0
    for result, epoch_truth in zip(results, truth["epochs"], strict=True):
        running = epoch_truth["batches"]
        steps = len(running)
        weights = [min(batch * (k + 1), samples) for k in range(steps)]
        for name in ("loss", "accuracy"):
            metric = result.metrics[name]
            for w in metric.windows:
                a, b = w.first_batch - 1, w.last_batch
                w_a = weights[a - 1] if a > 0 else 0
                m_a = running[a - 1][name] if a > 0 else 0.0
                w_b, m_b = weights[b - 1], running[b - 1][name]
                true = (w_b * m_b - w_a * m_a) / (w_b - w_a)
                # The truth itself carries Keras's float32 rounding (it can exceed a [0, 1] clip
                # by ~1e-6); compare within that derived bound, not a guessed epsilon.
                slack = (_total_error(b, w_b, m_b) + _total_error(a, w_a, m_a)) / (w_b - w_a)
                assert w.low - slack <= true <= w.high + slack, (name, w, true, slack, kept)
                checked += 1
            # The epoch's shown end equals Keras's epoch mean, rounded.
            end = metric.shown[-1].mean
            assert abs(end - epoch_truth["end"][name]) <= 0.5e-4 + 1e-9, (name, end, kept)
    assert checked > 0
    return results


@pytest.mark.timeout(120)
def test_terminal_capture_intervals_contain_the_truth(tmp_path):
    log, truth = _train(tmp_path, samples=640, batch=16, epochs=3, verbose=1, tty=True)
    assert b"\x08" in log and b"\x1b[" in log  # really a terminal capture
    results = _check_intervals(log, truth, Options())
    assert results[0].epoch.style == "keras3" and results[0].weighting == "samples"
    assert len(boundaries(results)) == 4  # loss and accuracy across two boundaries


@pytest.mark.timeout(120)
def test_piped_output_intervals_contain_the_truth(tmp_path):
    log, truth = _train(tmp_path, samples=640, batch=16, epochs=2, verbose=1, tty=False)
    _check_intervals(log, truth, Options())


@pytest.mark.timeout(120)
def test_verbose2_intervals_contain_the_truth_and_boundaries_are_unknown(tmp_path):
    log, truth = _train(tmp_path, samples=640, batch=16, epochs=3, verbose=2, tty=False)
    results = _check_intervals(log, truth, Options())
    assert {(b.verdict, b.reason) for b in boundaries(results)} == {("unknown", "no_view_inside")}


@pytest.mark.timeout(120)
def test_a_partial_last_batch_is_covered_without_knowing_its_size_and_narrowed_by_the_sizes(
    tmp_path,
):
    # 650 samples in batches of 16: the last batch holds 10 (0.625 of a full one).
    log, truth = _train(tmp_path, samples=650, batch=16, epochs=2, verbose=1, tty=False)
    unknown = _check_intervals(log, truth, Options())
    known = _check_intervals(log, truth, Options(samples=650, batch_size=16))
    assert unknown[0].last_batch == "any" and known[0].last_batch == "known"
    for name in ("loss", "accuracy"):
        wide, narrow = unknown[0].metrics[name], known[0].metrics[name]
        # Every window that ends the epoch: knowing the size picks one weight of the range, so
        # its bounds lie inside the unknown-size ones (up to the float slack both carry).
        for w, n in zip(
            trailing_windows(wide.shown, end_weight_low=wide.end_weight_low, clip=wide.clip),
            trailing_windows(
                narrow.shown,
                end_weight_low=narrow.end_weight_low,
                end_weight_high=narrow.end_weight_high,
                clip=narrow.clip,
            ),
            strict=True,
        ):
            slack = 2 * _SLACK * (abs(w.low) + abs(w.high) + 1.0) if math.isfinite(w.low) else 0
            assert w.low - slack <= n.low and n.high <= w.high + slack, (name, w, n)
        # The last batch alone: any size allows anything; the known size bounds it.
        alone = trailing_windows(
            narrow.shown,
            end_weight_low=narrow.end_weight_low,
            end_weight_high=narrow.end_weight_high,
        )[0]
        assert math.isfinite(alone.low) and math.isfinite(alone.high)


@pytest.mark.timeout(120)
def test_validation_and_auc_values_are_shown_but_not_reconstructed(tmp_path):
    # 800 samples, 20% held out: 640 trained in 40 full batches of 16.
    log, truth = _train(
        tmp_path, samples=800, batch=16, epochs=2, verbose=1, tty=False, mode="extras"
    )
    results = _check_intervals(log, truth, Options())
    kinds = {name: m.kind for name, m in results[0].metrics.items()}
    assert kinds["auc"] == "cumulative"
    assert kinds["val_loss"] == kinds["val_accuracy"] == kinds["val_auc"] == "end_of_epoch"
    assert (
        abs(results[0].metrics["val_loss"].shown[-1].mean - truth["epochs"][0]["end"]["val_loss"])
        <= 0.5e-4 + 1e-9
    )


@pytest.mark.timeout(120)
def test_out_of_order_updates_behind_a_slow_callback_are_merged_into_their_epoch(tmp_path):
    log, truth = _train(
        tmp_path, samples=640, batch=16, epochs=2, verbose=1, tty=False, mode="slow"
    )
    steps = [r.step for r in iter_records([log]) if isinstance(r, Progress)]
    went_back = [(a, b) for a, b in itertools.pairwise(steps) if 1 < b < a]
    assert went_back, "the log has no out-of-order update to test"
    results = _check_intervals(log, truth, Options())
    assert [r.epoch.header for r in results] == ["Epoch 1/2", "Epoch 2/2"]
    assert all(r.epoch.complete for r in results)
    assert {b.metric for b in boundaries(results)} == {"loss", "accuracy"}


@pytest.mark.timeout(120)
def test_a_late_first_step_redrawn_on_its_bars_line_stays_in_its_epoch(tmp_path):
    # Batch 1's callbacks run last (after every other batch's): the bar draws step 1 after
    # later steps, on the same line, as a loaded machine sometimes makes any Keras 3 bar do.
    log, truth = _train(
        tmp_path, samples=640, batch=16, epochs=2, verbose=1, tty=False, mode="late_first"
    )
    back = [
        (a.step, b.step)
        for a, b in itertools.pairwise(r for r in iter_records([log]) if isinstance(r, Progress))
        if b.step == 1 < a.step and a.line == b.line
    ]
    assert back, f"the log draws no late step 1 to test ({truth['log_path']})"
    results = _check_intervals(log, truth, Options())
    assert [r.epoch.header for r in results] == ["Epoch 1/2", "Epoch 2/2"]
    assert all(r.epoch.complete for r in results)
    assert all(r.metrics["loss"].series.arrays()[0][0] == 1 for r in results)


@pytest.mark.timeout(120)
def test_a_verbose2_loop_of_single_epoch_fits_gives_one_epoch_per_call(tmp_path):
    # Keras 3 prints no 'Epoch' header for fit(epochs=1): the user's line between the calls and
    # the counter back at its full count are all that separate the epochs.
    log, truth = _train(
        tmp_path, samples=640, batch=16, epochs=3, verbose=2, tty=False, mode="loop"
    )
    assert b"Epoch" not in log
    results = _check_intervals(log, truth, Options())
    assert len(results) == 3
    assert [b.from_epoch for b in boundaries(results)] == [1, 1, 2, 2]


@pytest.mark.timeout(120)
def test_a_verbose1_loop_of_single_epoch_fits_restarts_the_bar_at_each_call(tmp_path):
    # No headers again; each call's bar starts back at step 1: a new bar, not an out-of-order
    # update of the previous one.
    log, truth = _train(
        tmp_path, samples=640, batch=16, epochs=3, verbose=1, tty=False, mode="loop"
    )
    results = _check_intervals(log, truth, Options())
    assert len(results) == 3 and all(r.epoch.complete for r in results)
    assert [b.from_epoch for b in boundaries(results)] == [1, 1, 2, 2]
