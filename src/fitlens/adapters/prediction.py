"""What `fitlens.predict` reads and returns: batches of inputs, and the outputs stacked.

Inputs, as Keras's ``predict`` takes them:

* **arrays**: a tensor or numpy array, or a tuple/list/dict of them (the model's positional or
  keyword inputs), cut into batches of ``batch_size`` in order;
* **batches** from a ``DataLoader``, a generator (with ``steps``) or a list: each batch is the
  inputs, or a tuple ``(x, y)`` / ``(x, y, w)`` whose targets and weights are ignored (so the
  training loader can be reused); a one-element tuple ``(x,)`` (a ``TensorDataset(x)``) is
  ``x``; a dict with an ``"x"`` key is ``batch["x"]``, any other dict keyword inputs.

Outputs are stacked along the first dimension in the structure the model returns them: a
tensor, a tuple/list of tensors, or a dict of tensors (nested structures too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fitlens.adapters.data import BatchSource, first_len, is_array_tree, take


def _is_inputs(data: Any) -> bool:
    """Arrays (or a tuple/list/dict of them) rather than a source of batches."""
    return isinstance(data, torch.Tensor | np.ndarray) or (
        isinstance(data, tuple | Mapping) and is_array_tree(data)
    )


class InputBatches:
    """The batches of inputs ``x`` that ``predict`` runs the model on, in order.

    Attributes:
        steps: batches in the pass; None when unknown until it ends.
    """

    def __init__(self, data: Any, batch_size: int | None, steps: int | None) -> None:
        self._arrays: Any = None
        if _is_inputs(data):
            if batch_size is None:
                batch_size = 32
            if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
                raise ValueError(
                    f"Expected `batch_size` to be a positive integer. Received: {batch_size!r}."
                )
            self._arrays, self.batch_size = data, int(batch_size)
            self.n = first_len(data)
            full = math.ceil(self.n / self.batch_size)
            self.steps: int | None = min(full, steps) if steps else full
            return
        self._source = BatchSource(data, name="data", steps=steps, batch_size=batch_size)
        self.steps = self._source.steps

    def __iter__(self) -> Iterator[Any]:
        """Each batch's inputs ``x``, as ``(x, None)`` pairs (the form the read-ahead takes)."""
        if self._arrays is not None:
            for i in range(self.steps or 0):
                index = torch.arange(i * self.batch_size, min((i + 1) * self.batch_size, self.n))
                yield take(self._arrays, index), None
            return
        for batch in self._source.epoch():
            yield inputs_of(batch), None


def inputs_of(batch: Any) -> Any:
    """The inputs of one batch from a loader or generator (see the module's docstring)."""
    if isinstance(batch, tuple | list) and len(batch) in (1, 2, 3):
        return batch[0]
    if isinstance(batch, Mapping) and "x" in batch:
        return batch["x"]
    return batch


def stack(outputs: Sequence[Any]) -> Any:
    """Concatenate a list of per-batch outputs along the first dimension, keeping the model's
    structure (tensor, tuple/list, dict, nested).

    Raises:
        TypeError: for outputs that are not tensors or containers of them.
    """
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([o.reshape(1) if o.ndim == 0 else o for o in outputs])
    if isinstance(first, Mapping):
        return {k: stack([o[k] for o in outputs]) for k in first}
    if isinstance(first, tuple | list):
        stacked = [stack([o[i] for o in outputs]) for i in range(len(first))]
        return type(first)(stacked) if not hasattr(first, "_fields") else type(first)(*stacked)
    raise TypeError(
        "Expected the model to return a tensor, or a tuple, list or dict of tensors. "
        f"Received: {type(first).__name__}."
    )


def to_cpu(outputs: Any) -> Any:
    """Detached CPU copies of the tensors in ``outputs`` (same structure)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach().to("cpu")
    if isinstance(outputs, Mapping):
        return {k: to_cpu(v) for k, v in outputs.items()}
    if isinstance(outputs, tuple | list):
        moved = [to_cpu(v) for v in outputs]
        return type(outputs)(*moved) if hasattr(outputs, "_fields") else type(outputs)(moved)
    return outputs


__all__ = ["InputBatches", "inputs_of", "stack", "to_cpu"]
