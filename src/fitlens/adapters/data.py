"""Turning what users pass as data into a stream of ``(x, y)`` batches per epoch.

Three forms, as Keras accepts them:

* a **generator or iterator** (``iter(obj) is obj``): Keras's ``fit_generator`` case. It needs
  ``steps_per_epoch``; the same iterator continues across epochs. A zero-argument callable that
  returns one (a *generator factory*) is accepted too, so that a resumed run can start it afresh. If it runs out early, the
  epoch ends there with a warning and training stops (there is nothing left to train on).
* a **re-iterable** (a ``DataLoader``, a list of batches, ...): iterated afresh every epoch;
  with ``steps_per_epoch`` only that many batches of each pass are used.
* a **tuple of arrays** ``(x, y)`` or ``(x, y, sample_weight)`` (tensors or numpy arrays; ``x``
  may be a tuple or dict of them) with ``batch_size``: shuffled every epoch (``shuffle=True``,
  as Keras) with torch's global generator, so ``torch.manual_seed`` makes runs repeatable. The
  last batch may be smaller.

Batches are ``(x, y)`` or ``(x, y, w)`` with ``w`` one weight per sample. Numpy arrays become
tensors of their own dtype; float64 inputs of any form then follow one rule (see
`fitlens.adapters.dtypes`). Mistakes that would otherwise run silently fail here, before the
first step: ``batch_size`` with data that batches itself, and a list ``[x, y]`` (a list is a list
of batches; pass the tuple ``(x, y)``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Batch = tuple[Any, Any]


def _is_array(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor | np.ndarray)


def is_array_tree(obj: Any) -> bool:
    if _is_array(obj):
        return True
    if isinstance(obj, tuple | list):
        return len(obj) > 0 and all(_is_array(o) for o in obj)
    if isinstance(obj, Mapping):
        return len(obj) > 0 and all(_is_array(o) for o in obj.values())
    return False


def first_len(obj: Any) -> int:
    if _is_array(obj):
        return int(obj.shape[0])
    if isinstance(obj, Mapping):
        return first_len(next(iter(obj.values())))
    return first_len(obj[0])


def _leading_lengths(obj: Any) -> list[int]:
    if _is_array(obj):
        return [int(obj.shape[0])] if obj.ndim else [-1]
    values = obj.values() if isinstance(obj, Mapping) else obj
    return [n for v in values for n in _leading_lengths(v)]


def take(obj: Any, index: torch.Tensor) -> Any:
    """The rows ``index`` of a tensor, an array, or a tuple/list/dict of them."""
    if isinstance(obj, torch.Tensor):
        return obj[index.to(obj.device)]
    if isinstance(obj, np.ndarray):
        return obj[index.numpy()]
    if isinstance(obj, Mapping):
        return {k: take(v, index) for k, v in obj.items()}
    return type(obj)(take(v, index) for v in obj)


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move a tensor, numpy array, or a tuple/list/dict of them to ``device``."""
    if isinstance(obj, torch.Tensor):
        # Comparing devices is cheaper than a no-op .to() (this runs every step).
        return obj if obj.device == device else obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj).to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def batch_size_of(x: Any) -> int:
    """Samples in a batch: the first dimension of ``x`` (or of its first tensor)."""
    if isinstance(x, torch.Tensor) and x.ndim:
        return x.shape[0]
    return first_len(x)


@dataclass
class ArrayData:
    """In-memory ``(x, y)`` arrays served in shuffled batches of ``batch_size``; with per-sample
    weights ``w``, ``(x, y, w)`` batches."""

    x: Any
    y: Any
    batch_size: int
    shuffle: bool = True
    w: Any = None

    def __post_init__(self) -> None:
        self.n = first_len(self.x)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        order = torch.randperm(self.n) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.w is None:
                yield take(self.x, index), take(self.y, index)
            else:
                yield take(self.x, index), take(self.y, index), take(self.w, index)


class BatchSource:
    """Serves each epoch's batches from any of the accepted data forms.

    Attributes:
        steps: batches per epoch, or None when unknown until the first pass ends.
        kind: ``"generator"``, ``"iterable"`` or ``"arrays"``.
    """

    def __init__(
        self,
        data: Any,
        *,
        name: str,
        steps: int | None = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        sample_weight: Any = None,
    ) -> None:
        steps_arg = "steps_per_epoch" if name == "train" else "validation_steps"
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps <= 0):
            raise ValueError(
                f"Expected `{steps_arg}` to be a positive integer. Received: {steps!r}."
            )
        self.name = name
        self._iterator: Iterator[Batch] | None = None
        if not isinstance(shuffle, bool):
            raise TypeError(f"Expected `shuffle` to be True or False. Received: {shuffle!r}.")
        _refuse_list_pair(data, name)
        if sample_weight is not None:
            if not (isinstance(data, tuple) and len(data) == 2 and all(map(is_array_tree, data))):
                raise ValueError(
                    f"`sample_weight=` goes with arrays `{name}=(x, y)`. Received `{name}` as "
                    f"{type(data).__name__}: yield (x, y, w) batches from it instead."
                )
            data = (data[0], data[1], sample_weight)
        if isinstance(data, tuple) and len(data) in (2, 3) and all(is_array_tree(d) for d in data):
            if batch_size is None:
                batch_size = 32 if name == "train" else 256
            if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
                raise ValueError(
                    f"Expected `batch_size` to be a positive integer. Received: {batch_size!r}."
                )
            if len(data) == 3 and not _is_array(data[2]):
                raise ValueError(
                    f"Expected the sample weights of `{name}` to be one array of shape (N,). "
                    f"Received: {type(data[2]).__name__}."
                )
            lengths = {n for d in data for n in _leading_lengths(d)}
            if len(lengths) != 1:
                raise ValueError(
                    f"Expected every array in `{name}` to have the same number of samples "
                    f"(first dimension). Received lengths {sorted(lengths)}."
                )
            n = lengths.pop()
            if n <= 0:
                raise ValueError(f"Expected `{name}` to hold at least one sample. Received 0.")
            self.kind = "arrays"
            weights = data[2] if len(data) == 3 else None
            self.iterable: Iterable[Any] = ArrayData(
                data[0], data[1], int(batch_size), shuffle, weights
            )
            full = len(self.iterable)
            self.steps: int | None = min(full, steps) if steps else full
            return
        if batch_size is not None:
            raise ValueError(_batch_size_clash(data, name, batch_size))
        if isinstance(data, Iterator) or _is_factory(data):
            if _is_factory(data):  # a generator factory: fitlens makes the generator (resume)
                data = data()
                if not isinstance(data, Iterator):
                    raise TypeError(
                        f"Expected the `{name}` factory to return a generator or iterator. "
                        f"Received: {type(data).__name__}."
                    )
            if steps is None:
                raise ValueError(
                    f"`{name}` is a generator or iterator, so fitlens cannot know where an epoch "
                    f"ends. Pass `{steps_arg}=N` (batches per epoch), as Keras's fit_generator "
                    "requires, or pass a re-iterable such as a DataLoader or a list of batches."
                )
            self.kind = "generator"
            self.iterable = data
            self._iterator = data
            self.steps = int(steps)
        elif isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
            self.kind = "iterable"
            self.iterable = data
            try:
                full = len(data)  # type: ignore[arg-type]
            except TypeError:
                self.steps = int(steps) if steps else None
            else:
                if full == 0:
                    raise ValueError(
                        f"Expected `{name}` to yield at least one batch. Received an empty "
                        f"{type(data).__name__}."
                    )
                self.steps = min(full, int(steps)) if steps else full
        else:
            raise TypeError(
                f"Expected `{name}` to be a generator of (x, y) batches (or a function returning "
                "one), a re-iterable such as "
                "a DataLoader or a list of batches, or a tuple (x, y) of arrays or tensors. "
                f"Received: {type(data).__name__}."
            )

    @property
    def restarts_each_epoch(self) -> bool:
        """True when every epoch starts a fresh pass (not a continuing generator)."""
        return self.kind != "generator"

    def raw_iterator(self) -> Iterator[Batch]:
        """The continuing iterator of a generator source (used to skip consumed batches)."""
        if self._iterator is None:
            raise TypeError(f"`{self.name}` is not a generator; it restarts every epoch.")
        return self._iterator

    def epoch(self) -> Iterator[Batch]:
        """The batches of one epoch (at most ``steps``)."""
        source = self._iterator if self._iterator is not None else iter(self.iterable)
        yield from source if self.steps is None else itertools.islice(source, self.steps)


def _refuse_list_pair(data: Any, name: str) -> None:
    """A list ``[x, y]`` of arrays: Keras reads a list as several inputs, fitlens as a list of
    batches; neither is meant, so ask for the tuple. (A list of batches holds pairs, never a
    bare array, so the two cannot be confused.)"""
    if isinstance(data, list) and len(data) in (2, 3) and all(_is_array(d) for d in data):
        raise TypeError(
            f"Expected `{name}` as a tuple (x, y) of arrays. Received a list of "
            f"{len(data)} arrays; a list is read as a list of batches. Pass a tuple: "
            f"{name}=(x, y)."
        )


def _batch_size_clash(data: Any, name: str, batch_size: Any) -> str:
    own = getattr(data, "batch_size", None)
    theirs = f" (its batch_size={own})" if own is not None else ""
    return (
        f"`batch_size={batch_size!r}` applies to arrays, but `{name}` is a "
        f"{type(data).__name__}{theirs}, which makes its own batches. Remove `batch_size=` or "
        "set the batch size where the batches are made (e.g. DataLoader(..., batch_size=N))."
    )


def _is_factory(obj: Any) -> bool:
    """A zero-argument callable that makes a generator (not a DataLoader, tensor, ...)."""
    return callable(obj) and not isinstance(obj, Iterable | torch.Tensor | np.ndarray)


def unpack_weighted(batch: Any, name: str) -> tuple[Any, Any, Any]:
    """Split a batch into ``(x, y, w)`` (``w`` None when the batch has no sample weights)."""
    if isinstance(batch, tuple | list):  # per step: the common forms first, few checks
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
    if isinstance(batch, Mapping) and "sample_weight" in batch:
        x, y = unpack({k: v for k, v in batch.items() if k != "sample_weight"}, name)
        return x, y, batch["sample_weight"]
    x, y = unpack(batch, name)
    return x, y, None


def unpack(batch: Any, name: str) -> Batch:
    """Split a batch into ``(x, y)``, with a clear error for anything else."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping) and {"x", "y"} <= set(batch):
        return batch["x"], batch["y"]
    got = (
        f"a {len(batch)}-item {type(batch).__name__}"
        if isinstance(batch, tuple | list)
        else type(batch).__name__
    )
    raise ValueError(
        f"Expected each batch of `{name}` to be an (x, y) pair or an (x, y, w) triple "
        f"(w: one weight per sample). Received {got}. Yield `(inputs, targets)` from your "
        "generator or dataset."
    )
