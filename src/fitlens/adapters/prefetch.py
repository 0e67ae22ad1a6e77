"""Reading the next batches in a background thread while the model computes: ``fit(prefetch=N)``.

A Python generator that loads or decodes data blocks the training loop for as long as it takes
to make a batch. When that work releases the GIL (file and network I/O, ``time.sleep``, most
numpy and torch kernels, image decoding in C), a second thread can run it while the main thread
computes the step, so an epoch takes about ``max(data, compute)`` instead of their sum.

`Prefetcher` keeps one daemon thread per epoch that pulls batches from the epoch's iterator into
a bounded queue of ``depth`` batches:

* **order**: one thread, one FIFO queue: batches arrive exactly in the order the data gave them.
* **errors**: an exception raised by the user's generator (or by unpacking its batch) is
  re-raised in the main thread; it is the same exception object, so its traceback still shows
  the generator's frames.
* **shutdown**: `close` (called by `fit` on early stop, Ctrl-C, errors and at the end) tells the
  thread to stop and empties the queue so that a blocked ``put`` returns; the thread finishes
  the batch it is reading, if any, and exits. Closing never waits for more than ``timeout``
  seconds, so a generator stuck in I/O cannot hang the program (the thread is a daemon).
  The thread reads at most ``depth`` batches beyond the one being trained on; with
  ``steps_per_epoch`` it never reads past the epoch's last batch.
* **CUDA**: batches are copied into pinned (page-locked) host memory and sent to the GPU with
  ``non_blocking=True`` on a side stream from the background thread; the training stream waits
  on an event recorded after the copy, and each tensor is marked as used by the training stream
  (``record_stream``) so that the caching allocator does not reuse its memory early. On CPU none
  of this runs: the thread only reads batches and turns numpy arrays into tensors.

Example:
    >>> import torch
    >>> batches = iter([(torch.zeros(2, 3), torch.zeros(2)) for _ in range(4)])
    >>> pf = Prefetcher(depth=2, device=torch.device("cpu"))
    >>> sum(1 for _ in pf.epoch(batches))
    4
    >>> pf.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from fitlens.adapters.data import to_device, unpack_weighted

_END = object()  # the worker read the whole epoch


class _Failure:
    """An exception raised in the worker, carried to the main thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def validate_prefetch(prefetch: Any) -> int:
    """``prefetch`` as a queue depth: an integer >= 0 (0: no background thread)."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(
            f"Expected `prefetch` to be an integer >= 0 (batches read ahead in a background "
            f"thread; 0 turns it off). Received: {prefetch!r}."
        )
    return prefetch


def _each_tensor(obj: Any, fn: Callable[[torch.Tensor], Any]) -> None:
    if isinstance(obj, torch.Tensor):
        fn(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _each_tensor(v, fn)
    elif isinstance(obj, tuple | list):
        for v in obj:
            _each_tensor(v, fn)


def _pin(obj: Any) -> Any:
    """Copy host arrays into pinned memory (the source of an asynchronous copy).

    Numpy arrays become tensors first (as `to_device` converts them); tensors already on a GPU
    are left where they are.
    """
    if isinstance(obj, np.ndarray):
        obj = to_device(obj, torch.device("cpu"))
    if isinstance(obj, torch.Tensor):
        return obj.pin_memory() if obj.device.type == "cpu" and not obj.is_pinned() else obj
    if isinstance(obj, dict):
        return {k: _pin(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(_pin(v) for v in obj)
    return obj


class _CudaCopier:
    """Sends batches to a CUDA device on a side stream; the training stream waits for them."""

    def __init__(self, device: torch.device) -> None:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def send(self, batch: Any) -> tuple[Any, torch.cuda.Event]:
        """In the worker: pin, copy asynchronously on the side stream, record an event."""
        host = _pin(batch)
        with torch.cuda.stream(self.stream):
            moved = to_device(host, self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return moved, done

    def receive(self, moved: Any, done: torch.cuda.Event) -> Any:
        """In the main thread: order the training stream after the copy; no host sync."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        _each_tensor(moved, lambda t: t.record_stream(current))
        return moved


class Prefetcher:
    """Reads each epoch's batches ``depth`` ahead in a background thread.

    Args:
        depth: most batches waiting in the queue (>= 1); memory grows with it.
        device: where batches go; on a CUDA device they are copied on a side stream.
        timeout: most seconds `close` waits for the thread to finish the batch it is reading.

    The iterator returned by `epoch` yields ``(x, y)`` pairs already on ``device``.
    """

    def __init__(self, depth: int, device: torch.device, timeout: float = 5.0) -> None:
        if validate_prefetch(depth) < 1:
            raise ValueError(f"Expected `depth` >= 1. Received: {depth!r}.")
        self.depth = depth
        self.device = device
        self.timeout = timeout
        self._copier = (
            _CudaCopier(device) if device.type == "cuda" and torch.cuda.is_available() else None
        )
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def epoch(self, batches: Iterator[Any]) -> Iterator[tuple[Any, ...]]:
        """Start reading ``batches`` in the background; iterate the result in the main thread."""
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._work,
            args=(batches, self._queue, self._stop),
            name="fitlens-prefetch",
            daemon=True,
        )
        self._thread.start()
        return self._receive(self._queue)

    def _work(self, batches: Iterator[Any], q: queue.Queue[Any], stop: threading.Event) -> None:
        item: Any = _END
        try:
            while not stop.is_set():  # checked before each read: no read after close()
                batch = next(batches, _END)
                if batch is _END:
                    break
                parts = unpack_weighted(batch, "train")
                if self._copier is not None:
                    item = self._copier.send(parts)
                else:
                    item = tuple(to_device(p, self.device) for p in parts)
                if not self._put(q, stop, item):
                    return
            item = _END
        except BaseException as e:
            item = _Failure(e)
        self._put(q, stop, item)

    @staticmethod
    def _put(q: queue.Queue[Any], stop: threading.Event, item: Any) -> bool:
        """Block until the queue has room; False when asked to stop meanwhile."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _receive(self, q: queue.Queue[Any]) -> Iterator[tuple[Any, ...]]:
        copier = self._copier
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error  # the original exception, traceback included
            yield copier.receive(*item) if copier is not None else item

    def close(self) -> None:
        """Stop the thread (if running) and drop the batches it read ahead."""
        thread, q = self._thread, self._queue
        if thread is None or q is None:
            return
        self._stop.set()
        deadline = time.monotonic() + self.timeout
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                while True:
                    q.get_nowait()  # make room so that a blocked put returns
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        # Still alive: stuck inside the user's generator; the daemon thread is left behind.
        self._thread = self._queue = None
