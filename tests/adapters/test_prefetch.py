"""fit(prefetch=N): same batches in the same order, errors and stops handled in the main thread."""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fitlens
from fitlens.adapters.prefetch import Prefetcher


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fitlens-prefetch"]


def _wait_no_prefetch_thread(seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _prefetch_threads()


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n)
    ]


def _fit(train, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    kw.setdefault("verbose", 0)
    return fitlens.fit(model, train, loss="cross_entropy", optimizer="sgd", **kw)


def test_training_with_prefetch_matches_training_without_it_batch_for_batch():
    data = _batches(30)
    plain = _fit(iter(data), steps_per_epoch=10, epochs=3)
    ahead = _fit(iter(data), steps_per_epoch=10, epochs=3, prefetch=4)
    np.testing.assert_array_equal(plain.batches["loss"], ahead.batches["loss"])
    assert _wait_no_prefetch_thread()


def test_shuffled_array_data_with_dropout_trains_identically_with_prefetch():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)

    def run(prefetch: int) -> np.ndarray:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)
        )
        history = fitlens.fit(
            model,
            (x, y),
            loss="cross_entropy",
            optimizer="sgd",
            batch_size=8,
            epochs=3,
            verbose=0,
            prefetch=prefetch,
        )
        return history.batches["loss"]

    np.testing.assert_array_equal(run(0), run(3))


def test_numpy_batches_arrive_as_tensors_of_their_dtype_with_weights_when_given():
    # float64 is cast after the read-ahead, by fit's one float64 rule (adapters/dtypes.py)
    data = [(np.ones((2, 4)), np.zeros(2, dtype=np.int64)) for _ in range(3)]
    data.append((np.ones((2, 4), np.float32), np.zeros(2, dtype=np.int64), np.ones(2)))
    pf = Prefetcher(2, torch.device("cpu"))
    got = list(pf.epoch(iter(data)))
    pf.close()
    assert [x.dtype for x, _, _ in got] == [torch.float64] * 3 + [torch.float32]
    assert [y.dtype for _, y, _ in got] == [torch.int64] * 4
    assert [w is None for _, _, w in got] == [True] * 3 + [False]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), depth=st.integers(1, 8))
def test_prefetcher_yields_every_batch_once_in_order(n, depth):
    data = [(torch.tensor([i]), torch.tensor([i])) for i in range(n)]
    pf = Prefetcher(depth, torch.device("cpu"))
    got = [int(x) for x, *_ in pf.epoch(iter(data))]
    pf.close()
    assert got == list(range(n))


def test_generator_error_surfaces_in_the_main_thread_with_its_original_traceback():
    def exploding_generator() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from _batches(3)
        raise OSError("disk read failed at batch 4")

    with pytest.raises(OSError, match="disk read failed at batch 4") as info:
        _fit(exploding_generator(), steps_per_epoch=10, prefetch=2)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "exploding_generator" in frames
    assert _wait_no_prefetch_thread()


def test_a_malformed_batch_is_reported_as_without_prefetch():
    bad = iter([(torch.zeros(2, 4),)] * 3)
    with pytest.raises(ValueError, match=r"Expected each batch of `train` to be an \(x, y\) pair"):
        _fit(bad, steps_per_epoch=3, prefetch=2)


class _StopAt(fitlens.Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_batch_end(self, step, logs):
        if step == self.at:
            self.run.stop_training = True


def test_early_stop_ends_the_reading_thread_and_reads_at_most_depth_batches_ahead():
    read = []

    def endless():
        i = 0
        while True:
            read.append(i)
            yield torch.randn(8, 4), torch.randint(0, 2, (8,))
            i += 1

    history = _fit(endless(), steps_per_epoch=1000, prefetch=3, callbacks=[_StopAt(5)])
    assert len(history.batches) == 5
    assert _wait_no_prefetch_thread()
    # 5 trained, up to 3 queued, 1 in the thread's hands when it was told to stop.
    assert len(read) <= 5 + 3 + 1


def test_generator_exhaustion_ends_the_epoch_and_the_thread():
    with pytest.warns(UserWarning, match="ran out of data after 4 of 10 steps"):
        history = _fit(iter(_batches(4)), steps_per_epoch=10, epochs=2, prefetch=2)
    assert len(history.batches) == 4
    assert _wait_no_prefetch_thread()


class _Interrupt(fitlens.Callback):
    def on_batch_end(self, step, logs):
        if step == 3:
            raise KeyboardInterrupt


def test_keyboard_interrupt_in_the_loop_stops_the_reading_thread():
    with pytest.raises(KeyboardInterrupt):
        _fit(iter(_batches(50)), steps_per_epoch=50, prefetch=2, callbacks=[_Interrupt()])
    assert _wait_no_prefetch_thread()


@pytest.mark.timeout(60)
def test_ctrl_c_while_waiting_for_a_slow_generator_does_not_hang():
    def slow():
        while True:
            time.sleep(0.05)
            yield torch.randn(8, 4), torch.randint(0, 2, (8,))

    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.5, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _fit(slow(), steps_per_epoch=10_000, prefetch=2)
    finally:
        timer.cancel()
    assert _wait_no_prefetch_thread()


@pytest.mark.timeout(60)
def test_close_returns_even_when_the_generator_is_stuck():
    release = threading.Event()

    def stuck():
        yield torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)
        release.wait()  # never set until the end of the test
        yield torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)

    pf = Prefetcher(1, torch.device("cpu"), timeout=0.2)
    it = pf.epoch(stuck())
    next(it)
    pf.close()  # must return although the thread is blocked inside the generator
    release.set()
    assert _wait_no_prefetch_thread()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_invalid_prefetch_is_rejected_before_training(bad):
    with pytest.raises(ValueError, match="Expected `prefetch` to be an integer >= 0"):
        _fit(_batches(2), prefetch=bad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefetch_copies_on_a_side_stream_and_matches_the_plain_run():
    data = [(x.numpy(), y) for x, y in _batches(20)]  # numpy inputs too
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).cuda()
    plain = fitlens.fit(
        model, iter(data), loss="cross_entropy", optimizer="sgd", steps_per_epoch=20, verbose=0
    )
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).cuda()
    ahead = fitlens.fit(
        model,
        iter(data),
        loss="cross_entropy",
        optimizer="sgd",
        steps_per_epoch=20,
        verbose=0,
        prefetch=3,
    )
    np.testing.assert_allclose(plain.batches["loss"], ahead.batches["loss"], rtol=1e-6)
    pf = Prefetcher(2, torch.device("cuda"))
    x, *_ = next(pf.epoch(iter(data)))
    pf.close()
    assert x.is_cuda
