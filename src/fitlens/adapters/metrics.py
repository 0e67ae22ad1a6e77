"""Training metrics: ``"accuracy"``, user callables, and torchmetrics metrics.

A metric produces, per batch, a 0-d tensor that stays on the device (no host sync); the loop
weights it by the batch size for the epoch mean, exactly like the loss. A torchmetrics
``Metric`` is *stateful*: its epoch value is ``metric.compute()`` over the epoch's accumulated
state (what torchmetrics would report), and its per-batch value is what ``metric(...)`` returns.

Every metric has a range (`fitlens.core.metric_range.MetricRange`) that its now estimate and
interval never leave: ``"accuracy"`` is a rate in [0, 1]; a torchmetrics metric has the bounds
it declares (``plot_lower_bound`` / ``plot_upper_bound``); a callable is unbounded unless it
says otherwise with an attribute ``fitlens_range``: a ``(low, high)`` pair (``None`` for no
bound) or a ``MetricRange``::

    def precision_at_1(outputs, targets): ...
    precision_at_1.fitlens_range = (0.0, 1.0)
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fitlens.adapters.data import batch_size_of
from fitlens.core.metric_range import RATE, UNBOUNDED, MetricRange, declared_range

MetricFn = Callable[[Any, Any], torch.Tensor]


class Accuracy:
    """Fraction of correct predictions in a batch, from logits or probabilities.

    * Multiclass: outputs ``(N, C)`` with ``C > 1``; targets class indices ``(N,)`` or one-hot
      / probabilities ``(N, C)``. The prediction is the arg-max.
    * Binary: outputs ``(N,)`` or ``(N, 1)``; targets in {0, 1}. The prediction is
      ``output > 0`` for logits and ``output > 0.5`` for probabilities.

    Args:
        from_logits: whether binary outputs are logits. ``None`` lets `fit` decide on the first
            training batch: outputs produced by a sigmoid are probabilities, anything else
            logits (logits are assumed until then).
    """

    __name__ = "accuracy"

    def __init__(self, from_logits: bool | None = None) -> None:
        self.from_logits = from_logits

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.correct(outputs, targets).mean(dtype=torch.get_default_dtype())

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per prediction, whether it is right (bool, the targets' shape)."""
        if outputs.ndim >= 2 and outputs.shape[-1] > 1:
            pred = outputs.argmax(-1)
            if targets.is_floating_point() and targets.shape == outputs.shape:
                targets = targets.argmax(-1)
            return pred == targets
        if outputs.ndim == targets.ndim + 1:
            outputs = outputs.squeeze(-1)
        pred = outputs > (0.5 if self.from_logits is False else 0.0)
        return pred == (targets > 0.5)

    def per_sample(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One value per sample ``(N,)``: the fraction of its predictions that are right."""
        right = self.correct(outputs, targets).to(torch.get_default_dtype())
        return right.reshape(right.shape[0], -1).mean(dim=1)


def configure_from_outputs(
    metrics: Sequence[TrackedMetric], outputs: Any, from_logits: bool | None = None
) -> list[str]:
    """Settle choices that depend on the model's outputs, on the first training batch.

    Binary `Accuracy` with ``from_logits=None`` takes the loss's reading (``from_logits``: a
    named loss says whether it reads logits); without one, whether the outputs came out of a
    sigmoid (the autograd node says so, without a host sync).

    Returns:
        One line per binary accuracy saying which threshold it uses (empty when none is binary).
    """
    grad_fn = getattr(outputs, "grad_fn", None)
    from_sigmoid = grad_fn is not None and "Sigmoid" in type(grad_fn).__name__
    binary = isinstance(outputs, torch.Tensor) and (outputs.ndim < 2 or outputs.shape[-1] == 1)
    notes = []
    for m in metrics:
        if not isinstance(m.fn, Accuracy):
            continue
        why = "as set"
        if m.fn.from_logits is None:
            if from_logits is not None:
                m.fn.from_logits, why = from_logits, "as the loss reads them"
            else:
                m.fn.from_logits = not from_sigmoid
                why = "the model ends in a sigmoid" if from_sigmoid else "no sigmoid at the end"
        if binary:
            read, cut = ("logits", "0") if m.fn.from_logits else ("probabilities", "0.5")
            notes.append(
                f"{m.name}: binary outputs read as {read} ({why}): a sample counts as "
                f"positive when its output > {cut}."
            )
    return notes


_NAMED: dict[str, Callable[[], MetricFn]] = {"accuracy": Accuracy, "acc": Accuracy}


def _is_torchmetric(obj: Any) -> bool:
    tm = sys.modules.get("torchmetrics")  # never import it just to check
    return tm is not None and isinstance(obj, tm.Metric)


def metric_range(fn: Any, name: str) -> MetricRange:
    """The range of a metric's values: declared (``fitlens_range``), a rate for `Accuracy`,
    a torchmetrics metric's ``plot_lower_bound``/``plot_upper_bound``, else unbounded."""
    declared = declared_range(fn, name)
    if declared is not None:
        return declared
    if isinstance(fn, Accuracy):
        return RATE
    if _is_torchmetric(fn):
        low, high = getattr(fn, "plot_lower_bound", None), getattr(fn, "plot_upper_bound", None)
        return MetricRange(
            -math.inf if low is None else float(low), math.inf if high is None else float(high)
        )
    return UNBOUNDED


class TrackedMetric:
    """One named metric as the loop uses it.

    Attributes:
        name: the display name, exactly as the user gave it.
        stateful: True for torchmetrics metrics (epoch value from ``compute()``).
        range: the `MetricRange` of its values (`metric_range`).
    """

    def __init__(self, name: str, fn: Any) -> None:
        self.name = name
        self.fn = fn
        self.stateful = _is_torchmetric(fn)
        self.range = metric_range(fn, name)
        #: a torchmetrics metric whose ``update`` takes per-sample ``sample_weight``
        self.takes_weights = self.stateful and _takes_sample_weight(fn)
        self.warned = [False]  # one warning per metric, shared with its fresh copies

    def to(self, device: torch.device) -> TrackedMetric:
        if self.stateful:
            self.fn = self.fn.to(device)
        return self

    def batch(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The batch's value as a detached 0-d tensor on the outputs' device (the mean of a
        callable's per-sample values)."""
        if self.stateful:
            outputs = _squeezed(outputs, targets)
        value = self.fn(outputs, targets)
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        # Per step: each tensor op here costs microseconds, so only do the ones needed.
        if value.ndim:
            value = self._shaped(value, targets)
            if value.ndim:
                value = value.mean(dtype=_float(value))
        return value.detach() if value.requires_grad else value

    def _shaped(self, value: torch.Tensor, targets: Any) -> torch.Tensor:
        """A callable's value: 0-d (a batch value) or ``(N,)`` (one value per sample)."""
        if value.numel() == 1:
            return value.reshape(())
        n = batch_size_of(targets)
        if value.shape[0] == n and value.numel() == n:
            return value.reshape(n)
        raise ValueError(
            f"Metric {self.name!r} returned a tensor of shape {tuple(value.shape)}; expected "
            f"one value per batch (a scalar) or one per sample (shape ({n},))."
        )

    def values(self, outputs: Any, targets: Any) -> torch.Tensor:
        """A non-stateful metric's values on a batch, detached: ``(N,)`` per sample when it
        gives them (``"accuracy"``, a callable returning one value per sample), else the 0-d
        batch value."""
        per_sample = getattr(self.fn, "per_sample", None)
        if per_sample is not None:
            return per_sample(outputs, targets).detach()
        value = self.fn(outputs, targets)
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        return self._shaped(value, targets).detach()

    def weighted(
        self, outputs: Any, targets: Any, weights: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """``(value, weight)`` of the batch under per-sample ``weights`` (see
        `fitlens.adapters.weights`), as Keras weighs a metric:

        * per-sample values ``m`` (``"accuracy"``, a callable returning shape ``(N,)``): the
          weighted mean ``sum(w * m) / sum(w)``, with weight ``sum(w)``;
        * a callable's batch value (a mean already): that value for each of its samples, so
          weight ``sum(w)`` (Keras broadcasts a scalar metric over the sample weights);
        * a torchmetrics metric whose ``update`` takes ``sample_weight``: called with them,
          weight ``sum(w)``; any other is left unweighted (weight ``size``), with one warning.
        """
        if self.stateful:
            if not self.takes_weights:
                self._warn_unweighted()
                return self.batch(outputs, targets), size
            value = self.fn(_squeezed(outputs, targets), targets, sample_weight=weights)
            return torch.as_tensor(value).detach().reshape(()), weights.sum()
        values = self.values(outputs, targets)
        w = weights.to(_float(values))
        total = w.sum()
        if values.ndim == 0:
            return values, total
        # an all-zero-weight batch: value 0 with weight 0 (it then counts for nothing)
        value = (values * w).sum() / total.clamp_min(torch.finfo(w.dtype).tiny)
        return value, total

    def _warn_unweighted(self) -> None:
        if not self.warned[0]:
            self.warned[0] = True
            warnings.warn(
                f"Metric {self.name!r} ({type(self.fn).__name__}) takes no sample weights (its "
                "update() has no `sample_weight`): it is computed unweighted, while the loss and "
                "the other metrics are weighted.",
                UserWarning,
                stacklevel=5,
            )

    def reset(self) -> None:
        if self.stateful:
            self.fn.reset()

    def compute(self) -> float:
        """The stateful metric's value over everything since the last reset (host sync)."""
        return float(self.fn.compute())

    def fresh(self) -> TrackedMetric:
        """An independent copy for another pass (validation), sharing no state."""
        clone = TrackedMetric(self.name, copy.deepcopy(self.fn) if self.stateful else self.fn)
        clone.warned = self.warned
        clone.reset()
        return clone


def _squeezed(outputs: Any, targets: Any) -> Any:
    """Binary outputs ``(N, 1)`` as ``(N,)`` for targets ``(N,)``, as torchmetrics wants them."""
    if isinstance(outputs, torch.Tensor) and outputs.ndim == targets.ndim + 1:
        return outputs.squeeze(-1) if outputs.shape[-1] == 1 else outputs
    return outputs


def _float(value: torch.Tensor) -> torch.dtype:
    return value.dtype if value.is_floating_point() else torch.get_default_dtype()


def _takes_sample_weight(metric: Any) -> bool:
    try:
        return "sample_weight" in inspect.signature(metric.update).parameters
    except (TypeError, ValueError):
        return False


def _name_of(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    name = getattr(spec, "__name__", None)
    if isinstance(name, str):
        return name
    cls = type(spec).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(cls))


def _resolve_one(spec: Any) -> Any:
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(
                f"Unknown metric {spec!r}. Expected one of {sorted(_NAMED)}, a callable "
                "(outputs, targets) -> tensor, or a torchmetrics.Metric."
            )
        return _NAMED[spec]()
    if callable(spec):
        return spec
    raise TypeError(
        f"Expected a metric name, a callable (outputs, targets) -> tensor, or a "
        f"torchmetrics.Metric. Received: {spec!r}."
    )


def resolve_metrics(
    metrics: Sequence[Any] | Mapping[str, Any], reserved: Sequence[str] = ()
) -> list[TrackedMetric]:
    """Named metrics from a list (names inferred) or a dict ``{display name: metric}``."""
    if isinstance(metrics, str) or not isinstance(metrics, Sequence | Mapping):
        raise TypeError(
            f"Expected `metrics` to be a list or a dict of metrics. Received: {metrics!r}. "
            "Wrap a single metric in a list: metrics=['accuracy']."
        )
    items = (
        list(metrics.items())
        if isinstance(metrics, Mapping)
        else [(_name_of(m), m) for m in metrics]
    )
    out: list[TrackedMetric] = []
    seen = set(reserved)
    for name, spec in items:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected metric names to be non-empty strings. Received: {name!r}.")
        if name in seen:
            raise ValueError(
                f"Metric name {name!r} is used twice (or clashes with the loss). "
                "Pass a dict {name: metric} to choose distinct names."
            )
        seen.add(name)
        out.append(TrackedMetric(name, _resolve_one(spec)))
    return out
