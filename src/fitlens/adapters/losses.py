"""Loss functions by name, and the first-batch check that catches shape and dtype mistakes.

Every loss returns the *mean over the batch* as a 0-d tensor; the loop weights it by the batch
size, as Keras does. ``"binary_cross_entropy"`` takes logits (it is
``binary_cross_entropy_with_logits``): end the model without a sigmoid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fitlens.core.metric_range import NONNEGATIVE, UNBOUNDED, MetricRange, declared_range

LossFn = Callable[[Any, Any], torch.Tensor]


def _squeeze_pair(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Let ``(N, 1)`` outputs meet ``(N,)`` targets, as Keras users expect."""
    if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
        return outputs.squeeze(-1)
    return outputs


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy from logits ``(N, C)`` and class indices ``(N,)`` or probabilities."""
    return F.cross_entropy(outputs, targets)


def binary_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy from logits; targets in {0, 1} (or soft labels in [0, 1])."""
    outputs = _squeeze_pair(outputs, targets)
    return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    outputs = _squeeze_pair(outputs, targets)
    return F.mse_loss(outputs, targets.to(outputs.dtype))


def mae(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    outputs = _squeeze_pair(outputs, targets)
    return F.l1_loss(outputs, targets.to(outputs.dtype))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "sparse_categorical_crossentropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "binary_crossentropy": binary_cross_entropy,
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
}


def resolve_loss(loss: str | LossFn) -> tuple[str, LossFn]:
    """``(display name, callable)`` for a loss name or a callable ``(outputs, targets)``."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"Unknown loss {loss!r}. Expected one of {sorted(LOSSES)}, or a callable "
                "(outputs, targets) -> scalar tensor such as torch.nn.CrossEntropyLoss()."
            )
        return loss, LOSSES[loss]
    if callable(loss):
        return getattr(loss, "__name__", type(loss).__name__), loss
    raise TypeError(
        f"Expected `loss` to be a name or a callable (outputs, targets) -> tensor. "
        f"Received: {loss!r}."
    )


def _describe(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} and dtype {t.dtype}"
    return type(t).__name__


def check_first_batch(fn: LossFn, outputs: Any, targets: Any) -> None:
    """Raise a clear ValueError for outputs/targets a built-in loss cannot pair.

    Runs on the first batch only and reads shapes and dtypes, never values (no host sync).
    """
    if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor)):
        return
    got = f"Model outputs have {_describe(outputs)}; targets have {_describe(targets)}."
    if outputs.shape[:1] != targets.shape[:1]:
        raise ValueError(f"Model outputs and targets disagree on the batch size. {got}")
    if fn is cross_entropy:
        if outputs.ndim < 2 or not outputs.is_floating_point():
            raise ValueError(
                f"'cross_entropy' expects float logits of shape (N, C). {got} "
                "For a single output unit use loss='binary_cross_entropy'."
            )
        if targets.is_floating_point():
            if targets.shape != outputs.shape:
                raise ValueError(
                    f"'cross_entropy' with float targets expects class probabilities shaped like "
                    f"the outputs. {got} Pass integer class indices of shape (N,) instead."
                )
        elif targets.shape != outputs.shape[:1] + outputs.shape[2:]:
            raise ValueError(
                f"'cross_entropy' expects integer class indices of shape "
                f"{tuple(outputs.shape[:1] + outputs.shape[2:])}. {got}"
            )
    elif fn in (binary_cross_entropy, mse, mae):
        squeezed = _squeeze_pair(outputs, targets)
        if squeezed.shape != targets.shape:
            raise ValueError(
                f"The loss expects outputs shaped like the targets (or (N, 1) for targets (N,)). "
                f"{got}"
            )
        if not outputs.is_floating_point():
            raise ValueError(f"The loss expects floating-point model outputs. {got}")


def _per_sample_ce(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(o, t, reduction="none")


def _per_sample_bce(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    o = _squeeze_pair(o, t)
    return F.binary_cross_entropy_with_logits(o, t.to(o.dtype), reduction="none")


def _per_sample_mse(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    o = _squeeze_pair(o, t)
    return F.mse_loss(o, t.to(o.dtype), reduction="none")


def _per_sample_mae(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    o = _squeeze_pair(o, t)
    return F.l1_loss(o, t.to(o.dtype), reduction="none")


#: Each named loss's per-sample version (reduction="none"), for the spread behind intervals.
PER_SAMPLE: dict[Any, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    cross_entropy: _per_sample_ce,
    binary_cross_entropy: _per_sample_bce,
    mse: _per_sample_mse,
    mae: _per_sample_mae,
}


#: torch.nn losses that cannot go below zero whatever their settings.
_NONNEGATIVE_MODULES = (
    torch.nn.CrossEntropyLoss,
    torch.nn.BCELoss,
    torch.nn.BCEWithLogitsLoss,
    torch.nn.MSELoss,
    torch.nn.L1Loss,
    torch.nn.SmoothL1Loss,
    torch.nn.HuberLoss,
)


def loss_range(fn: Any, name: str = "loss") -> MetricRange:
    """The range of a loss's values, which its now estimate and interval never leave.

    >= 0 for the built-in names and the torch.nn losses that cannot be negative (cross-entropy,
    squared and absolute errors); what a callable declares with ``fitlens_range`` (see
    `fitlens.core.metric_range.declared_range`); else unbounded.
    """
    declared = declared_range(fn, name)
    if declared is not None:
        return declared
    if fn in LOSSES.values() or isinstance(fn, _NONNEGATIVE_MODULES):
        return NONNEGATIVE
    return UNBOUNDED
