"""Whether the first batch's outputs look like logits or probabilities, against what the loss reads.

A Keras user whose model ends in a sigmoid and who names a logits loss trains on
``sigmoid(sigmoid(x))``; a PyTorch user whose model ends in a linear layer and who names a Keras
loss (probabilities) trains on clipped values with no gradient. Neither fails, so `fit` looks at
the first batch's values once (one host sync, first batch only) and warns:

* a **probability** loss sees values below 0 or above 1: they look like logits;
* a **logits** loss sees outputs made by a final sigmoid or softmax (the autograd graph says
  so, through reshapes), or rows that are non-negative and sum to 1 within 1e-3 along the class
  axis (categorical): they look like probabilities. Values alone cannot tell binary logits from
  probabilities (a fresh model's logits often all lie in ``[0, 1]``), so binary outputs are
  judged by the graph only.
"""

from __future__ import annotations

from typing import Any

import torch

from fitlens.adapters.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    CrossEntropy,
    LossFn,
    SparseCategoricalCrossentropy,
)

#: How far from 1 a row's sum may be for the row to count as a probability distribution.
SUM_TOLERANCE = 1e-3
#: Autograd nodes that only reshape or pick: looked through to find the last real operation.
_VIEWS = ("View", "Reshape", "Squeeze", "Unsqueeze", "Select", "Slice", "Expand", "Permute", "T")

_LOGIT_NAMES = {
    "binary": "'binary_cross_entropy_with_logits'",
    "categorical": "fitlens.losses.CategoricalCrossentropy(from_logits=True)",
    "sparse": "'cross_entropy'",
}
_PROBABILITY_NAMES = {
    "binary": "'binary_crossentropy'",
    "categorical": "'categorical_crossentropy'",
    "sparse": "'sparse_categorical_crossentropy'",
}


def _kind(loss_fn: LossFn) -> tuple[str, int] | None:
    """``(kind, class axis)`` of a named classification loss; None for anything else."""
    if isinstance(loss_fn, BinaryCrossentropy):
        return "binary", -1
    if isinstance(loss_fn, CategoricalCrossentropy):
        return "categorical", -1
    if isinstance(loss_fn, SparseCategoricalCrossentropy):
        return "sparse", -1
    if isinstance(loss_fn, CrossEntropy):
        return "sparse", 1
    return None


def _made_by(outputs: torch.Tensor, names: tuple[str, ...]) -> bool:
    """Whether the last operation that made ``outputs`` (looking through reshapes) is one of
    ``names``, read from the autograd graph (no host sync)."""
    node = outputs.grad_fn
    for _ in range(4):
        if node is None:
            return False
        kind = type(node).__name__.removesuffix("Backward0").removesuffix("Backward1")
        if any(kind.startswith(n) for n in names):
            return True
        if kind not in _VIEWS or not node.next_functions:
            return False
        node = node.next_functions[0][0]
    return False


def output_kind_warning(loss_fn: LossFn, outputs: Any) -> str | None:
    """A warning when ``outputs`` look like logits for a probability loss, or like probabilities
    for a logits loss; None when they fit (or the loss is not a named classification loss).

    Reads the values: one host synchronisation. Call it on the first batch only.
    """
    kind = _kind(loss_fn)
    if kind is None or not isinstance(outputs, torch.Tensor) or outputs.numel() == 0:
        return None
    name, axis = kind
    o = outputs.detach()
    if not o.is_floating_point():
        return None
    stats = [o.min(), o.max()]
    if name != "binary" and o.ndim >= 2:
        stats.append((o.sum(dim=axis) - 1).abs().max())
    low, high, *rest = torch.stack(stats).float().tolist()
    in_unit = low >= 0.0 and high <= 1.0
    loss_name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    if not getattr(loss_fn, "from_logits", True):
        if in_unit:
            return None
        return (
            f"The loss {loss_name!r} reads probabilities (Keras's default from_logits=False), "
            f"but the model's first outputs range over [{low:.3g}, {high:.3g}]: they look like "
            f"logits, and the loss clips them to [1e-7, 1 - 1e-7] (no gradient outside). End the "
            f"model with a {'sigmoid' if name == 'binary' else 'softmax'}, or pass "
            f"loss={_LOGIT_NAMES[name]} (or from_logits=True) to train on logits."
        )
    looks_like_probabilities = _made_by(outputs, ("Sigmoid", "Softmax")) or (
        name != "binary" and bool(rest) and in_unit and rest[0] <= SUM_TOLERANCE
    )
    if not looks_like_probabilities:
        return None
    return (
        f"The loss {loss_name!r} reads logits, but the model's first outputs all lie in "
        f"[{low:.3g}, {high:.3g}]{'' if name == 'binary' else ' and sum to 1'}: they look like "
        f"probabilities (did the model end in a {'sigmoid' if name == 'binary' else 'softmax'}?). "
        f"Remove that last activation, or pass loss={_PROBABILITY_NAMES[name]} to train on "
        "probabilities."
    )


__all__ = ["output_kind_warning"]
