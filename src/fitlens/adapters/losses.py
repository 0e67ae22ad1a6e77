"""Loss functions by name, and the first-batch checks that catch shape, dtype and logit mistakes.

A name means what it means where it comes from:

* **Keras names take probabilities** (Keras's default ``from_logits=False``):
  ``"binary_crossentropy"``, ``"categorical_crossentropy"`` (one-hot or soft targets shaped like
  the outputs) and ``"sparse_categorical_crossentropy"`` (class indices). Probabilities are
  clipped to ``[1e-7, 1 - 1e-7]`` (Keras's epsilon) and, for the categorical losses, divided by
  their sum over the last axis first, as Keras does. `BinaryCrossentropy(from_logits=True)`,
  `CategoricalCrossentropy(from_logits=True)` and `SparseCategoricalCrossentropy(from_logits=True)`
  take logits instead (``fitlens.losses``).
* **PyTorch names follow ``torch.nn.functional``**: ``"cross_entropy"`` takes logits (class
  dimension 1; targets class indices or class probabilities), ``"binary_cross_entropy"`` takes
  probabilities (as ``F.binary_cross_entropy``; clipped like the Keras name) and
  ``"binary_cross_entropy_with_logits"`` takes logits.
* ``"mse"`` / ``"mean_squared_error"`` and ``"mae"`` / ``"mean_absolute_error"``.

Every loss returns the *mean over the batch* as a 0-d tensor; the loop weights it by the batch
size, as Keras does. With sample weights ``w``, the batch's loss is ``sum(w * loss) / N``
(Keras's ``"sum_over_batch_size"`` reduction); see `weighted_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fitlens.core.metric_range import NONNEGATIVE, UNBOUNDED, MetricRange, declared_range

LossFn = Callable[[Any, Any], torch.Tensor]

#: Keras's ``backend.epsilon()``: probabilities are clipped to ``[EPSILON, 1 - EPSILON]``.
EPSILON = 1e-7


def _squeeze_pair(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Let ``(N, 1)`` outputs meet ``(N,)`` targets, as Keras users expect."""
    if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
        return outputs.squeeze(-1)
    return outputs


def _describe(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} and dtype {t.dtype}"
    return type(t).__name__


def _per_row(values: torch.Tensor) -> torch.Tensor:
    """Elementwise losses ``(N, ...)`` to one value per sample ``(N,)``: the mean of the rest."""
    return values.reshape(values.shape[0], -1).mean(dim=1) if values.ndim > 1 else values


class Loss:
    """A named loss: ``loss(outputs, targets)`` is the batch mean, a 0-d tensor.

    Attributes:
        from_logits: True when the loss reads logits, False for probabilities, None when it
            reads neither (regression).
    """

    from_logits: bool | None = None

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r}, from_logits={self.from_logits})"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.elementwise(outputs, targets).mean()

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of every element, leading dimension the samples (no reduction)."""
        raise NotImplementedError

    def per_sample(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One value per sample, shape ``(N,)``: the mean over each sample's elements."""
        return _per_row(self.elementwise(outputs, targets))

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, got: str) -> None:
        """Raise a ValueError naming both shapes when outputs and targets cannot pair."""
        squeezed = _squeeze_pair(outputs, targets)
        if squeezed.shape != targets.shape:
            raise ValueError(
                f"{self.__name__!r} expects outputs shaped like the targets (or (N, 1) for "
                f"targets (N,)). {got}"
            )
        if not outputs.is_floating_point():
            raise ValueError(f"{self.__name__!r} expects floating-point model outputs. {got}")


class _Regression(Loss):
    def __init__(self, name: str, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__(name)
        self.fn = fn

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = _squeeze_pair(outputs, targets)
        return self.fn(outputs, targets.to(outputs.dtype))

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = _squeeze_pair(outputs, targets)
        return self.fn(outputs, targets.to(outputs.dtype), reduction="none")


class BinaryCrossentropy(Loss):
    """Binary cross-entropy; targets in {0, 1} or soft labels in [0, 1].

    Args:
        from_logits: False (default, as Keras): outputs are probabilities, clipped to
            ``[1e-7, 1 - 1e-7]``; True: outputs are logits (``binary_cross_entropy_with_logits``,
            stable for any logit).
        name: the display name.

    Example:
        >>> import torch
        >>> round(BinaryCrossentropy()(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])).item(), 4)
        0.1643
    """

    def __init__(self, from_logits: bool = False, name: str = "binary_crossentropy") -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = _squeeze_pair(outputs, targets)
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))
        p = outputs.clamp(EPSILON, 1.0 - EPSILON)
        return F.binary_cross_entropy(p, targets.to(outputs.dtype))

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = _squeeze_pair(outputs, targets)
        t = targets.to(outputs.dtype)
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(outputs, t, reduction="none")
        p = outputs.clamp(EPSILON, 1.0 - EPSILON)
        return F.binary_cross_entropy(p, t, reduction="none")


def _log_probabilities(outputs: torch.Tensor, dim: int, from_logits: bool) -> torch.Tensor:
    """Log class probabilities along ``dim``: log-softmax of logits, or of probabilities
    normalised to sum 1 and clipped to ``[1e-7, 1 - 1e-7]`` (Keras's recipe)."""
    if from_logits:
        return F.log_softmax(outputs, dim=dim)
    p = outputs / outputs.sum(dim=dim, keepdim=True)
    return p.clamp(EPSILON, 1.0 - EPSILON).log()


class CategoricalCrossentropy(Loss):
    """Categorical cross-entropy with one-hot or soft targets shaped like the outputs; the
    classes lie along the last axis (as in Keras).

    Args:
        from_logits: False (default, as Keras): outputs are probabilities; True: logits.
        name: the display name.
    """

    def __init__(self, from_logits: bool = False, name: str = "categorical_crossentropy") -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = _log_probabilities(outputs, -1, bool(self.from_logits))
        return -(targets.to(log_p.dtype) * log_p).sum(dim=-1)

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, got: str) -> None:
        if outputs.ndim < 2 or not outputs.is_floating_point() or targets.shape != outputs.shape:
            raise ValueError(
                f"{self.__name__!r} expects float outputs (N, C) and one-hot or soft targets of "
                f"the same shape. {got} For class indices use "
                "loss='sparse_categorical_crossentropy'."
            )


class SparseCategoricalCrossentropy(Loss):
    """Categorical cross-entropy with integer class indices; the classes lie along the last
    axis of the outputs (as in Keras); targets ``(N,)`` or ``(N, 1)``.

    Args:
        from_logits: False (default, as Keras): outputs are probabilities; True: logits.
        name: the display name.
    """

    def __init__(
        self, from_logits: bool = False, name: str = "sparse_categorical_crossentropy"
    ) -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)

    @staticmethod
    def _targets(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == outputs.ndim and targets.shape[-1] == 1:
            targets = targets.squeeze(-1)
        return targets.to(torch.long)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self._targets(outputs, targets)
        if self.from_logits and outputs.ndim == 2:  # the fused kernel for the common case
            return F.cross_entropy(outputs, t)
        return self.elementwise(outputs, targets).mean()

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self._targets(outputs, targets)
        log_p = _log_probabilities(outputs, -1, bool(self.from_logits))
        return F.nll_loss(log_p.movedim(-1, 1), t, reduction="none")

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, got: str) -> None:
        t = (
            targets.squeeze(-1)
            if targets.ndim == outputs.ndim and targets.shape[-1:] == (1,)
            else targets
        )
        if outputs.ndim < 2 or not outputs.is_floating_point() or t.shape != outputs.shape[:-1]:
            raise ValueError(
                f"{self.__name__!r} expects float outputs (N, C) and class indices of shape "
                f"{tuple(outputs.shape[:-1])}. {got} For one-hot targets use "
                "loss='categorical_crossentropy'."
            )


class CrossEntropy(Loss):
    """``torch.nn.functional.cross_entropy``: logits with classes along dimension 1; targets
    class indices ``(N, ...)`` or class probabilities shaped like the outputs."""

    from_logits = True

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, got: str) -> None:
        if outputs.ndim < 2 or not outputs.is_floating_point():
            raise ValueError(
                f"'cross_entropy' expects float logits of shape (N, C). {got} "
                "For a single output unit use loss='binary_cross_entropy_with_logits'."
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


cross_entropy = CrossEntropy("cross_entropy")
mse = _Regression("mse", F.mse_loss)
mae = _Regression("mae", F.l1_loss)

LOSSES: dict[str, Callable[[], Loss]] = {
    "cross_entropy": lambda: cross_entropy,
    "binary_cross_entropy": lambda: BinaryCrossentropy(False, "binary_cross_entropy"),
    "binary_cross_entropy_with_logits": lambda: BinaryCrossentropy(
        True, "binary_cross_entropy_with_logits"
    ),
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mse": lambda: mse,
    "mean_squared_error": lambda: mse,
    "mae": lambda: mae,
    "mean_absolute_error": lambda: mae,
}


def resolve_loss(loss: str | LossFn) -> tuple[str, LossFn]:
    """``(display name, callable)`` for a loss name or a callable ``(outputs, targets)``."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"Unknown loss {loss!r}. Expected one of {sorted(LOSSES)}, or a callable "
                "(outputs, targets) -> scalar tensor such as torch.nn.CrossEntropyLoss()."
            )
        return loss, LOSSES[loss]()
    if callable(loss):
        return getattr(loss, "__name__", type(loss).__name__), loss
    raise TypeError(
        f"Expected `loss` to be a name or a callable (outputs, targets) -> tensor. "
        f"Received: {loss!r}."
    )


def per_sample(loss_fn: LossFn) -> Callable[[Any, Any], torch.Tensor] | None:
    """The per-sample version ``(outputs, targets) -> (N,)`` of a named loss; None for a user
    callable (only its batch mean is known)."""
    return loss_fn.per_sample if isinstance(loss_fn, Loss) else None


def weighable(loss_fn: LossFn) -> Callable[[Any, Any], torch.Tensor]:
    """The per-sample version of a loss that sample weights can weigh.

    Raises:
        ValueError: for a user callable, which gives no per-sample values to weigh.
    """
    fn = per_sample(loss_fn)
    if fn is None:
        raise ValueError(
            f"Sample and class weights need per-sample loss values, which the callable "
            f"{getattr(loss_fn, '__name__', type(loss_fn).__name__)!r} does not give. Use a "
            "named loss (e.g. loss='sparse_categorical_crossentropy') or fitlens.losses.*."
        )
    return fn


def weighted_loss(
    loss_fn: LossFn, outputs: Any, targets: Any, weights: torch.Tensor
) -> torch.Tensor:
    """The batch's loss with per-sample ``weights``: ``sum(w * loss) / N``, as Keras reduces it.

    Raises:
        ValueError: for a user callable (see `weighable`).
    """
    values = weighable(loss_fn)(outputs, targets)
    return (values * weights.to(values.dtype)).sum() / values.shape[0]


def check_first_batch(fn: LossFn, outputs: Any, targets: Any) -> None:
    """Raise a clear ValueError for outputs/targets a built-in loss cannot pair.

    Runs on the first batch only and reads shapes and dtypes, never values (no host sync).
    """
    if not (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor)):
        return
    got = f"Model outputs have {_describe(outputs)}; targets have {_describe(targets)}."
    if outputs.shape[:1] != targets.shape[:1]:
        raise ValueError(f"Model outputs and targets disagree on the batch size. {got}")
    if isinstance(fn, Loss):
        fn.check(outputs, targets, got)


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
    if isinstance(fn, (Loss, *_NONNEGATIVE_MODULES)):  # every named loss is >= 0
        return NONNEGATIVE
    return UNBOUNDED


__all__ = [
    "EPSILON",
    "LOSSES",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "CrossEntropy",
    "Loss",
    "LossFn",
    "SparseCategoricalCrossentropy",
    "check_first_batch",
    "loss_range",
    "per_sample",
    "resolve_loss",
    "weighable",
    "weighted_loss",
]
