"""Per-epoch reconstruction: decide each metric's kind and weighting, then cut it into windows.

This is where the Keras-version rules meet the numeric core in :mod:`.reconstruct`:

* ``val_*`` metrics are printed once, at epoch end, from a separate evaluation: they are shown,
  never reconstructed (``kind="end_of_epoch"``).
* ``loss`` in tf.keras 2.0/2.1 and Keras 2.2+ is handed to callbacks per batch (see
  tensorflow/tensorflow#36400) but is not among ``ProgbarLogger``'s stateful metrics, so
  ``Progbar`` averages it by the counter's increment before display: what the log shows is a
  running mean like the others, weighted by the counter, while the (stateful) accuracy is a
  ``Mean`` weighted by samples. Both agree under equal batch sizes.
* AUC, precision, recall, F-scores, IoU, R² and count metrics are computed from counts
  accumulated over the epoch, not as means of per-batch values: shown, never reconstructed
  (``kind="cumulative"``). Keras 2 batch-wise functions with those names lose their windows
  too; that is the safe side.
* Everything else is a running mean (``kind="running_mean"``). Its weight is the counter
  (Keras 2 ``Progbar``), or the sample count with a step counter (Keras 3, tf.keras >= 2.2): the
  two agree under equal batch sizes except for a partial last batch, which the caller may allow
  for with ``min_last_batch``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from fitlens.explain.epochs import Epoch, Series, Shown
from fitlens.explain.reconstruct import Window, reconstruct_arrays

MetricKind = Literal["running_mean", "cumulative", "end_of_epoch"]

# Metrics that are fractions by definition; their bounds are clipped to [0, 1].
_UNIT_RANGE = re.compile(
    r"(?:^|_)(?:acc|accuracy|binary_accuracy|categorical_accuracy"
    r"|sparse_categorical_accuracy|top_k_categorical_accuracy)(?:_\d+)?$"
)
# Keras metrics computed from counts accumulated over the epoch (confusion matrices, sums),
# not means of per-batch values: no window of batches can be isolated from their displays.
_CUMULATIVE = re.compile(
    r"(?:^|_)(?:auc|precision|recall|f1_score|fbeta_score|iou|mean_iou|one_hot_iou"
    r"|one_hot_mean_iou|binary_iou|r2_score|true_positives|false_positives|true_negatives"
    r"|false_negatives|precision_at_recall|recall_at_precision|sensitivity_at_specificity"
    r"|specificity_at_sensitivity)(?:_\d+)?$"
)

#: Default target half-width of a window, in units of the display's rounding half-width
#: (100 × 0.00005 = ±0.005 for ``%.4f`` values).
DEFAULT_TOLERANCE_UNITS = 100.0


@dataclass(frozen=True)
class Options:
    """How to reconstruct.

    Attributes:
        tolerance: Target half-width of each window in the metric's units; ``None`` means
            ``DEFAULT_TOLERANCE_UNITS`` × the display's rounding half-width.
        min_last_batch: Smallest possible size of an epoch's last batch, as a fraction of a full
            batch, for logs that weight by samples but count steps. 1.0 assumes full batches.
    """

    tolerance: float | None = None
    min_last_batch: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.min_last_batch <= 1.0:
            raise ValueError(
                f"Expected min_last_batch in (0, 1]. Received: {self.min_last_batch!r}."
            )
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"Expected a positive tolerance. Received: {self.tolerance!r}.")


@dataclass
class MetricResult:
    """One metric in one epoch.

    Attributes:
        name: Metric name.
        kind: ``running_mean``, ``cumulative`` (AUC, precision, ...: shown, not reconstructed)
            or ``end_of_epoch``.
        series: The displays, in step order (see :attr:`shown` for them as objects).
        windows: Reconstructed windows tiling the epoch (empty for ``end_of_epoch``).
        end_weight_low: Smallest weight behind the last display (partial last batch), if any.
        clip: Known range of the metric, if any.
    """

    name: str
    kind: MetricKind
    series: Series
    windows: list[Window]
    end_weight_low: float | None = None
    clip: tuple[float, float] | None = None
    _shown: list[Shown] | None = field(default=None, repr=False)

    @property
    def shown(self) -> list[Shown]:
        """Displays in step order (built on first use)."""
        if self._shown is None:
            self._shown = self.series.points()
        return self._shown


@dataclass
class EpochResult:
    """Everything reconstructed about one epoch.

    Attributes:
        epoch: The parsed epoch.
        weighting: ``"counter"`` (Keras 1/2 ``Progbar``), ``"samples"`` (Keras 3, tf.keras >= 2.2)
            or ``"counter_or_samples"`` when the format does not say.
        metrics: Per metric, in display order.
    """

    epoch: Epoch
    weighting: str
    metrics: dict[str, MetricResult] = field(default_factory=dict)


def weighting_of(epoch: Epoch) -> str:
    """Infer how the displayed means are weighted from the line format (see module docs)."""
    if epoch.unit == "sample":
        return "counter"
    if epoch.style == "keras3":
        return "samples"
    if epoch.unit == "step":
        # tf.keras >= 2.2 (samples) and Keras 2.1-2.3 standalone (counter) both print ms/step.
        return "counter_or_samples"
    return "counter"


def clip_for(name: str) -> tuple[float, float] | None:
    """``(0, 1)`` for metrics that are fractions by definition (accuracy, AUC, ...), else None."""
    return (0.0, 1.0) if _UNIT_RANGE.search(name) else None


def analyze_epoch(epoch: Epoch, options: Options) -> EpochResult:
    """Reconstruct every metric of one epoch.

    Args:
        epoch: A parsed epoch.
        options: Tolerance and last-batch assumption.

    Returns:
        The epoch's metrics with their windows.
    """
    weighting = weighting_of(epoch)
    result = EpochResult(epoch, weighting)
    for name, series in epoch.series.items():
        steps, means, halves = series.arrays()
        kind: MetricKind = "running_mean"
        if name.startswith("val_"):
            kind = "end_of_epoch"
        elif _CUMULATIVE.search(name):
            kind = "cumulative"
        clip = clip_for(name)
        end_weight_low = None
        last_step = int(steps[-1])
        if (
            weighting != "counter"
            and options.min_last_batch < 1.0
            and epoch.target is not None
            and last_step == epoch.target
        ):
            end_weight_low = last_step - 1 + options.min_last_batch
        windows: list[Window] = []
        if kind == "running_mean":
            tolerance = options.tolerance
            if tolerance is None:
                tolerance = DEFAULT_TOLERANCE_UNITS * float(halves.max())
            windows = reconstruct_arrays(
                steps, means, halves, tolerance, end_weight_low=end_weight_low, clip=clip
            )
        result.metrics[name] = MetricResult(name, kind, series, windows, end_weight_low, clip)
    return result


def analyze(epochs: Iterable[Epoch], options: Options) -> Iterator[EpochResult]:
    """Reconstruct a stream of epochs lazily (memory stays at one epoch)."""
    for epoch in epochs:
        yield analyze_epoch(epoch, options)
