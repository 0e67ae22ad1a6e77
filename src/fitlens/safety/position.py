"""Where a run is in its data and its random streams, so that a resumed run continues exactly.

A checkpoint taken after step ``s`` of epoch ``e`` stores:

* the random states *now* (Python's ``random``, NumPy's global generator, torch's CPU generator
  and, when CUDA is initialised, every CUDA generator), restored last on resume so that dropout,
  augmentation, ... draw what the uninterrupted run drew;
* the states at the *start of epoch e* of torch's CPU generator and of every ``torch.Generator``
  attached to a ``DataLoader`` (``loader.generator``, its sampler's and batch sampler's). On
  resume they are restored, the epoch's iterator is rebuilt (so array data draws the same
  ``torch.randperm`` and a DataLoader the same sampler order and worker seeds), the ``s``
  batches already trained on are fetched and dropped, and only then are the *now* states restored.

What is restored exactly (CPU, deterministic ops):

* ``(x, y)`` arrays: exact.
* a re-iterable (``DataLoader``, list of batches) whose order comes from torch's global generator
  or from a seeded ``torch.Generator`` attached to it: exact. Fast-forwarding loads and discards
  the consumed batches of the current epoch (they are not trained on twice).
* a generator: pass a *factory* (a zero-argument callable returning a fresh generator) or a fresh
  generator; fitlens skips the ``epoch * steps_per_epoch + step`` batches already consumed.
  Exact when the generator draws its randomness from its own seeded generator
  (``np.random.default_rng(seed)``, ``torch.Generator().manual_seed(seed)``); a generator drawing
  from the *global* RNGs replays a different stream, because its draws used to interleave with the
  model's.

Not restored: DataLoader worker processes' own RNG consumption beyond their seeds, samplers with
private state of other kinds, and any RNG a model keeps outside those named above.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fitlens.adapters.data import BatchSource
from fitlens.adapters.rng import restore_rng


def data_generators(data: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects that decide a DataLoader's order (unique, stable order)."""
    found: list[torch.Generator] = []
    candidates = [
        getattr(data, "generator", None),
        getattr(getattr(data, "sampler", None), "generator", None),
        getattr(getattr(getattr(data, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    for g in candidates:
        if (
            isinstance(g, torch.Generator)
            and g.device.type == "cpu"
            and all(g is not f for f in found)
        ):
            found.append(g)
    return found


class DataPosition:
    """Tracks the start-of-epoch random states of a `BatchSource` and fast-forwards it on resume."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source
        self.generators = data_generators(source.iterable)
        self.epoch_start: dict[str, Any] = {}

    def begin_epoch(self) -> None:
        """Record the states that decide this epoch's order (call before drawing any batch)."""
        self.epoch_start = {
            "torch": torch.get_rng_state(),
            "generators": [g.get_state() for g in self.generators],
        }

    def state_dict(self) -> dict[str, Any]:
        """Start-of-epoch states, plus the data generators' states now (for the next epochs)."""
        return {**self.epoch_start, "generators_now": [g.get_state() for g in self.generators]}

    def resume_epoch(
        self, epoch_start: dict[str, Any], epoch: int, step: int, now_rng: dict[str, Any]
    ) -> Iterator[Any]:
        """The iterator of a resumed epoch, positioned after ``step`` batches of 0-based ``epoch``.

        ``now_rng`` (from `capture_rng` at checkpoint time) is restored once the position is
        reached. For a generator source, the consumed batches of earlier epochs are skipped too.
        """
        saved = epoch_start.get("generators", [])
        if len(saved) != len(self.generators):
            raise ValueError(
                f"The checkpoint recorded {len(saved)} data-order generator(s), but `train` now "
                f"has {len(self.generators)}. Resume with the same kind of DataLoader (seeded "
                "generator or not) as the interrupted run."
            )
        source = self.source
        if not source.restarts_each_epoch:
            _skip(source.raw_iterator(), epoch * (source.steps or 0))
        if step == 0:  # an epoch boundary: the states now are this epoch's start states
            self._restore_now(now_rng, epoch_start)
            self.begin_epoch()
            return source.epoch()
        if source.restarts_each_epoch:
            torch.set_rng_state(epoch_start["torch"])
            for g, s in zip(self.generators, saved, strict=True):
                g.set_state(s)
        self.epoch_start = {"torch": epoch_start["torch"], "generators": saved}
        batches = source.epoch()
        _skip(batches, step)
        self._restore_now(now_rng, epoch_start)
        return batches

    def _restore_now(self, now_rng: dict[str, Any], epoch_start: dict[str, Any]) -> None:
        restore_rng(now_rng)
        for g, s in zip(self.generators, epoch_start["generators_now"], strict=True):
            g.set_state(s)  # where the next epochs' orders start


def _skip(batches: Iterator[Any], n: int) -> None:
    for i in range(n):
        try:
            next(batches)
        except StopIteration:
            raise ValueError(
                f"Cannot resume: the data ran out after {i} of the {n} batches to skip. Resume "
                "with the same data (a fresh generator, or a factory that makes one)."
            ) from None
