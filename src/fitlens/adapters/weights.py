"""Per-sample weights, Keras's way: ``class_weight={class: w}`` and ``sample_weight``.

A batch's weights come from its own third element (``(x, y, w)`` from arrays, a generator or a
loader) and/or from ``class_weight``, which gives every sample the weight of its class (the
class is the integer target, the arg-max of a one-hot target, or the rounded binary target);
classes missing from the dict weigh 1. With both, a sample's weight is the product.

What the weights do, as in Keras:

* the **loss** of a batch is ``sum(w * loss) / N`` (Keras's ``"sum_over_batch_size"``), and the
  epoch's loss is the mean of those weighted by ``N``;
* a **metric** with per-sample values (`Accuracy`, a callable returning shape ``(N,)``) is the
  weighted mean ``sum(w * m) / sum(w)`` per batch, counted with weight ``sum(w)`` in the epoch
  mean and the now estimate, so the epoch value is ``sum over the epoch of w * m / sum of w``,
  exactly. A callable's batch mean counts for each of its samples, with weight ``sum(w)`` (Keras
  broadcasts a scalar metric over the weights). A torchmetrics metric is weighted only when its
  ``update`` takes ``sample_weight``; others stay unweighted, with one warning
  (`fitlens.adapters.metrics.TrackedMetric.weighted`).

Evaluation passes (``validation_data=(x, y, w)``, `fitlens.evaluate`, ``train_eval``) weigh the
same way (`fitlens.adapters.evaluation.measure_batches`); ``class_weight`` weighs training and
``train_eval`` (the training data), not validation, as in Keras.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def check_class_weight(class_weight: Any) -> dict[int, float] | None:
    """``class_weight`` as ``{class index: weight}``; None when not given.

    Raises:
        TypeError / ValueError: for anything but a dict of non-negative integer classes to
            finite non-negative weights.
    """
    if class_weight is None:
        return None
    if not isinstance(class_weight, Mapping) or not class_weight:
        raise TypeError(
            "Expected `class_weight` to be a non-empty dict {class index: weight}, e.g. "
            f"{{0: 1.0, 1: 5.0}}. Received: {class_weight!r}."
        )
    out: dict[int, float] = {}
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(
                f"Expected `class_weight` keys to be class indices (integers >= 0). Received: {k!r}."
            )
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(
                f"Expected `class_weight` values to be finite numbers >= 0. Received {k}: {v!r}."
            )
        out[k] = float(v)
    return out


def classes_of(y: torch.Tensor) -> torch.Tensor:
    """The class index of each sample: integer targets as they are, the arg-max of one-hot or
    soft targets ``(N, C)``, and rounded binary targets ``(N,)`` / ``(N, 1)``."""
    if y.is_floating_point():
        if y.ndim >= 2 and y.shape[-1] > 1:
            return y.argmax(dim=-1)
        return y.round().to(torch.long).reshape(y.shape[0])
    return y.reshape(y.shape[0]) if y.ndim == 2 and y.shape[1] == 1 else y


class BatchWeights:
    """Each batch's per-sample weights ``(N,)`` (float, on the batch's device), or None.

    Args:
        class_weight: as checked by `check_class_weight`, or None.
        device, dtype: where and in what dtype the weights live (the model's).
    """

    def __init__(
        self, class_weight: dict[int, float] | None, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.dtype = dtype
        self.table: torch.Tensor | None = None
        if class_weight is not None:
            size = max(class_weight) + 1
            table = [class_weight.get(c, 1.0) for c in range(size)] + [1.0]  # last: unlisted
            self.table = torch.tensor(table, dtype=dtype, device=device)

    def __call__(self, y: Any, w: Any) -> torch.Tensor | None:
        """The weights of a batch with targets ``y`` and its own sample weights ``w`` (or None)."""
        if w is not None:
            if not isinstance(w, torch.Tensor):
                raise TypeError(
                    "Expected a batch's sample weights to be a tensor or array of shape (N,). "
                    f"Received: {type(w).__name__}."
                )
            w = w.reshape(w.shape[0]) if w.ndim == 2 and w.shape[1] == 1 else w
            n = y.shape[0] if isinstance(y, torch.Tensor) else w.shape[0]
            if w.ndim != 1 or w.shape[0] != n:
                raise ValueError(
                    f"Expected one sample weight per sample: shape ({n},). Received weights of "
                    f"shape {tuple(w.shape)}."
                )
            w = w.to(self.dtype)
        if self.table is None:
            return w
        if not isinstance(y, torch.Tensor):
            raise TypeError(
                f"`class_weight` needs tensor targets to read classes from. Received: "
                f"{type(y).__name__}."
            )
        last = self.table.shape[0] - 1
        classes = classes_of(y).clamp(0, last)  # classes beyond the dict land on the 1.0 slot
        by_class = self.table[classes]
        return by_class if w is None else by_class * w


__all__ = ["BatchWeights", "check_class_weight", "classes_of"]
