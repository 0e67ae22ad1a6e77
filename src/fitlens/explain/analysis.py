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
  two agree under equal batch sizes except for a partial last batch. Its size is not in the log,
  so windows that end at the last display hold for every size from one sample to a full batch
  (weight ``n - 1`` to ``n`` in steps) unless the caller gives the dataset and batch sizes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from fitlens.explain.epochs import Epoch, Series, Shown
from fitlens.explain.reconstruct import (
    EndCandidates,
    Window,
    WindowColumns,
    end_bounds,
    first_within,
    last_window,
    ranged_end_candidates,
    ranged_end_window,
    window_columns,
)

MetricKind = Literal["running_mean", "cumulative", "end_of_epoch"]

# Metrics that are fractions by definition; their bounds are clipped to [0, 1].
_UNIT_RANGE = (
    r"(?:^|_)(?:acc|accuracy|binary_accuracy|categorical_accuracy"
    r"|sparse_categorical_accuracy|top_k_categorical_accuracy)(?:_\d+)?$"
)
# Keras metrics computed from counts accumulated over the epoch (confusion matrices, sums),
# not means of per-batch values: no window of batches can be isolated from their displays.
_CUMULATIVE = (
    r"(?:^|_)(?:auc|precision|recall|f1_score|fbeta_score|iou|mean_iou|one_hot_iou"
    r"|one_hot_mean_iou|binary_iou|r2_score|true_positives|false_positives|true_negatives"
    r"|false_negatives|precision_at_recall|recall_at_precision|sensitivity_at_specificity"
    r"|specificity_at_sensitivity)(?:_\d+)?$"
)


@functools.cache
def _pattern(source: str) -> re.Pattern[str]:
    """``re.compile(source)``, on first use: compiling at import would cost every start-up."""
    return re.compile(source)


#: Default target half-width of a window, in units of the display's rounding half-width
#: (100 × 0.00005 = ±0.005 for ``%.4f`` values).
DEFAULT_TOLERANCE_UNITS = 100.0


#: How many of the shortest windows ending an epoch are tried before all of them are computed.
SHORTEST = 32

#: How many of the shortest windows ending an epoch are tried on scalars, one by one, before
#: any array is built (a precise one is usually among the first few).
SCALAR_END_WINDOWS = 16


#: How many first batches of each epoch are compared across epochs of a loop of ``fit`` calls.
FIRST_BATCHES = 3


#: How an epoch's last batch is treated: ``"exact"`` (the counter is the weight, or the sizes
#: given make every batch full), ``"known"`` (``--samples``/``--batch-size`` give its size),
#: ``"any"`` (the log does not say: every size from one sample to a full batch is allowed).
LastBatch = Literal["exact", "known", "any"]


@dataclass(frozen=True)
class Options:
    """How to reconstruct.

    Attributes:
        tolerance: Target half-width of each window in the metric's units; ``None`` means
            ``DEFAULT_TOLERANCE_UNITS`` × the display's rounding half-width.
        samples: Training samples per epoch, if the user knows them (with ``batch_size``).
        batch_size: Samples per full batch, if the user knows it (with ``samples``).
    """

    tolerance: float | None = None
    samples: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.tolerance is not None and not (
            self.tolerance > 0 and math.isfinite(self.tolerance)
        ):
            raise ValueError(
                f"Expected a positive, finite tolerance. Received: {self.tolerance!r}. "
                "Give a half-width in the metric's units, e.g. 0.005."
            )
        if (self.samples is None) != (self.batch_size is None):
            raise ValueError(
                "Expected --samples and --batch-size together (the last batch's size is their "
                f"remainder). Received: samples={self.samples!r}, batch_size={self.batch_size!r}."
            )
        for name, value in (("samples", self.samples), ("batch_size", self.batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"Expected a positive {name}. Received: {value!r}.")

    def last_batch(self, target: int) -> float | None:
        """The last batch's size as a fraction of a full batch, when the sizes given fit.

        Returns:
            ``None`` when no sizes were given or they do not give ``target`` steps.
        """
        if self.samples is None or self.batch_size is None:
            return None
        if -(-self.samples // self.batch_size) != target:
            return None
        return (self.samples - (target - 1) * self.batch_size) / self.batch_size


class Ahead(NamedTuple):
    """What a boundary needs of one metric, computed for a batch of epochs at once
    (:func:`fitlens.explain.jumps.prepare`); the same values as computed one by one.

    Attributes:
        first: The first display.
        last: The last display.
        first_window: The window from the epoch start to the first display.
        second_half: Index of the first display before the last at or after half its step.
        sees_end: Whether a display before the last is in the epoch's second half.
        early: The window over the first half (``None`` with one display).
        late: The window over the second half (``None`` with one display).
    """

    first: Shown
    last: Shown
    first_window: Window
    second_half: int
    sees_end: bool
    early: Window | None
    late: Window | None


class MetricResult:
    """One metric in one epoch.

    Attributes:
        name: Metric name.
        kind: ``running_mean``, ``cumulative`` (AUC, precision, ...: shown, not reconstructed)
            or ``end_of_epoch``.
        series: The displays, in step order (see :attr:`shown` for them as objects).
        tolerance: Target half-width of its windows; ``None`` when it is not reconstructed
            (``end_of_epoch``, ``cumulative``, a ``verbose=2`` line without counter).
        end_weight_low: Smallest weight behind the last display (partial last batch), if any.
        end_weight_high: Largest weight behind the last display, if not its counter.
        clip: Known range of the metric, if any.

    The rest is computed on first use or ahead for a batch of epochs
    (:func:`fitlens.explain.jumps.prepare`): ``ahead`` (:class:`Ahead`), ``end_choice``
    (``(jump, window)``: :func:`fitlens.explain.jumps.choose_end_window` for that jump) and
    ``first_batches`` (the epoch's first single-batch windows, as the report shows them).

    A plain class with slots, not a dataclass: one is made per metric and epoch, and
    ``@dataclass`` compiles its methods at every start-up.
    """

    __slots__ = (
        "_arrays",
        "_candidates",
        "_columns",
        "_ends",
        "_last_pick",
        "_shortest",
        "_shown",
        "_windows",
        "ahead",
        "clip",
        "end_choice",
        "end_weight_high",
        "end_weight_low",
        "first_batches",
        "kind",
        "name",
        "series",
        "tolerance",
    )

    def __init__(
        self,
        name: str,
        kind: MetricKind,
        series: Series,
        tolerance: float | None,
        end_weight_low: float | None = None,
        end_weight_high: float | None = None,
        clip: tuple[float, float] | None = None,
        _arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.series = series
        self.tolerance = tolerance
        self.end_weight_low = end_weight_low
        self.end_weight_high = end_weight_high
        self.clip = clip
        self._arrays = _arrays
        self._shown: list[Shown] | None = None
        self._columns: WindowColumns | None = None
        self._windows: list[Window] | None = None
        self._ends: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._shortest: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._candidates: EndCandidates | None = None
        self._last_pick: int | None = None
        self.ahead: Ahead | None = None
        self.end_choice: tuple[float, Window] | None = None
        self.first_batches: tuple[Window, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"MetricResult(name={self.name!r}, kind={self.kind!r}, series={self.series!r}, "
            f"tolerance={self.tolerance!r}, end_weight_low={self.end_weight_low!r}, "
            f"end_weight_high={self.end_weight_high!r}, clip={self.clip!r}, "
            f"ahead={self.ahead!r}, end_choice={self.end_choice!r})"
        )

    @property
    def ranged(self) -> bool:
        """Whether the last display's weight is a range or a known partial batch."""
        return self.end_weight_low is not None or self.end_weight_high is not None

    @property
    def held(self) -> EndCandidates | None:
        """The :data:`SHORTEST` windows that end the epoch as :func:`prepare` computed them for
        a batch of epochs (all of them in a shorter epoch), when it did and none is empty: the
        same doubles as :attr:`shortest_end_windows` (displays are finite), as lists."""
        held = self._candidates
        return held if held is not None and held.empty == held.size else None

    def ranged_end_window(self, count: int, enough: float) -> tuple[Window, bool] | None:
        """:func:`~fitlens.explain.reconstruct.ranged_end_window` of the displays (at least two),
        from the windows :func:`prepare` computed for a batch of epochs when it did."""
        held = self._candidates
        if held is not None and (count <= held.size or held.size == len(self.arrays[0])):
            return held.scan(count, enough)
        steps, means, halves = self.arrays
        return ranged_end_window(
            steps,
            means,
            halves,
            count,
            enough,
            end_weight_low=self.end_weight_low,
            end_weight_high=self.end_weight_high,
            clip=self.clip,
        )

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`Series.arrays` of :attr:`series`, kept here (the report asks for them often)."""
        if self._arrays is None:
            self._arrays = self.series.arrays()
        return self._arrays

    def _reconstruct(self, last_only: bool) -> WindowColumns:
        steps, means, halves = self.arrays
        if self.tolerance is None:
            steps = steps[:0]
        return window_columns(
            steps,
            means,
            halves,
            self.tolerance or 1.0,
            end_weight_low=self.end_weight_low,
            end_weight_high=self.end_weight_high,
            clip=self.clip,
            last_only=last_only,
        )

    @property
    def columns(self) -> WindowColumns:
        """Reconstructed windows tiling the epoch, as columns (computed on first use; none
        when the metric is not reconstructed)."""
        if self._columns is None:
            self._columns = self._reconstruct(last_only=False)
        return self._columns

    @property
    def windows(self) -> list[Window]:
        """The windows as objects (built on first use)."""
        if self._windows is None:
            self._windows = self.columns.rows()
        return self._windows

    @property
    def last_window(self) -> Window | None:
        """The window that ends the epoch, without reconstructing the others."""
        if self._columns is not None:
            return self._columns.row(-1) if len(self._columns.first) else None
        if self.tolerance is None:
            return None
        steps, means, halves = self.arrays
        held = self.held
        if held is not None:
            # The same search on the windows computed ahead: the first precise one, else the
            # whole epoch when they are all there are, else all windows from the arrays.
            if self._last_pick is None:
                window, precise = held.pick(held.size, self.tolerance)
                if precise:
                    return window
            elif self._last_pick >= 0:
                return held.window(self._last_pick)
            if held.size == len(steps):
                return held.window(len(steps) - 1)
            first, value, low, high = self.end_windows
            fits = np.flatnonzero((high - low) / 2 <= self.tolerance)
            i = int(fits[0]) if len(fits) else len(first) - 1
            return Window(
                int(first[i]), int(steps[-1]), float(value[i]), float(low[i]), float(high[i])
            )
        if self.ranged:
            # window_columns' last window: the shortest one ending the epoch that is precise
            # enough (usually among the few shortest, tried on scalars), else the whole epoch.
            if len(steps) > 1:
                found = self.ranged_end_window(SCALAR_END_WINDOWS, self.tolerance)
                if found is not None and found[1]:
                    return found[0]
            first, value, low, high = self.shortest_end_windows
            fits = np.flatnonzero((high - low) / 2 <= self.tolerance)
            if not len(fits):
                first, value, low, high = self.end_windows
                fits = np.flatnonzero((high - low) / 2 <= self.tolerance)
            i = int(fits[0]) if len(fits) else len(first) - 1
            return Window(
                int(first[i]), int(steps[-1]), float(value[i]), float(low[i]), float(high[i])
            )
        return last_window(
            steps,
            means,
            halves,
            self.tolerance,
            end_weight_low=self.end_weight_low,
            end_weight_high=self.end_weight_high,
            clip=self.clip,
        )

    @property
    def shortest_end_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The first :data:`SHORTEST` of :attr:`end_windows` (all of them once computed): the
        search for a precise enough window ending the epoch rarely needs more."""
        if self._ends is not None:
            return self._ends
        if self._shortest is None:
            self._shortest = self._end_bounds(SHORTEST)
        return self._shortest

    def _end_bounds(
        self, count: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        steps, means, halves = self.arrays
        return end_bounds(
            steps,
            means,
            halves,
            end_weight_low=self.end_weight_low,
            end_weight_high=self.end_weight_high,
            clip=self.clip,
            count=count,
        )

    @property
    def end_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`~fitlens.explain.reconstruct.end_bounds` of the displays, computed once: every
        window that ends at the last display, shortest first, then the whole epoch."""
        if self._ends is None:
            self._ends = self._end_bounds(None)
        return self._ends

    @property
    def shown(self) -> list[Shown]:
        """Displays in step order (built on first use)."""
        if self._shown is None:
            self._shown = self.series.points()
        return self._shown


class EpochResult:
    """Everything reconstructed about one epoch.

    Attributes:
        epoch: The parsed epoch.
        weighting: ``"counter"`` (Keras 1/2 ``Progbar``), ``"samples"`` (Keras 3, tf.keras >= 2.2)
            or ``"counter_or_samples"`` when the format does not say.
        last_batch: How the last batch was treated (see :data:`LastBatch`).
        sizes_mismatch: True when ``--samples``/``--batch-size`` were given but do not give this
            epoch's step count (they were not used for it).
        metrics: Per metric, in display order.
    """

    __slots__ = ("epoch", "last_batch", "metrics", "sizes_mismatch", "weighting")

    def __init__(
        self,
        epoch: Epoch,
        weighting: str,
        last_batch: LastBatch = "exact",
        sizes_mismatch: bool = False,
        metrics: dict[str, MetricResult] | None = None,
    ) -> None:
        self.epoch = epoch
        self.weighting = weighting
        self.last_batch = last_batch
        self.sizes_mismatch = sizes_mismatch
        self.metrics: dict[str, MetricResult] = {} if metrics is None else metrics

    def __repr__(self) -> str:
        return (
            f"EpochResult(epoch={self.epoch!r}, weighting={self.weighting!r}, "
            f"last_batch={self.last_batch!r}, sizes_mismatch={self.sizes_mismatch!r}, "
            f"metrics={self.metrics!r})"
        )


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
    return (0.0, 1.0) if _pattern(_UNIT_RANGE).search(name) else None


@functools.lru_cache(maxsize=4096)
def _kind_and_clip(name: str) -> tuple[MetricKind, tuple[float, float] | None]:
    """A metric's kind and range, from its name (the same few names come every epoch)."""
    kind: MetricKind = "running_mean"
    if name.startswith("val_"):
        kind = "end_of_epoch"
    elif _pattern(_CUMULATIVE).search(name):
        kind = "cumulative"
    return kind, clip_for(name)


def end_weights(epoch: Epoch, weighting: str, options: Options) -> tuple[LastBatch, float | None]:
    """How much weight the last display of a finished epoch may carry beyond the step before it.

    Returns:
        ``(last_batch, fraction)``: ``fraction`` is the last batch's size as a fraction of a full
        one when known (``"known"``), ``None`` otherwise.
    """
    target = epoch.target
    if weighting == "counter" or target is None or not epoch.complete or epoch.summary_only:
        return "exact", None
    fraction = options.last_batch(target)
    if fraction is None:
        return "any", None
    return ("exact", None) if fraction == 1.0 else ("known", fraction)


def analyze_epoch(epoch: Epoch, options: Options) -> EpochResult:
    """Reconstruct every metric of one epoch.

    Args:
        epoch: A parsed epoch.
        options: Tolerance and batch sizes.

    Returns:
        The epoch's metrics with their windows (none for a ``verbose=2`` line without counter).
    """
    weighting = weighting_of(epoch)
    last_batch, fraction = end_weights(epoch, weighting, options)
    mismatch = options.samples is not None and last_batch == "any"
    result = EpochResult(epoch, weighting, last_batch, mismatch)
    for name, series in epoch.series.items():
        arrays = series.arrays()
        steps, _, halves = arrays
        kind, clip = _kind_and_clip(name)
        low = high = None
        last_step = int(steps[-1])
        if last_batch != "exact" and last_step == epoch.target:
            if fraction is None:
                low = float(last_step - 1)
            else:
                low = high = last_step - 1 + fraction
        tolerance = None
        if kind == "running_mean" and not epoch.summary_only:
            tolerance = options.tolerance
            if tolerance is None:
                tolerance = DEFAULT_TOLERANCE_UNITS * float(halves.max())
        result.metrics[name] = MetricResult(
            name, kind, series, tolerance, low, high, clip, _arrays=arrays
        )
    return result


def prepare(results: Sequence[EpochResult]) -> None:
    """Compute ahead, for a batch of epochs at once, the windows that end each epoch whose last
    batch may be partial (what :meth:`MetricResult.ranged_end_window` scans for the report's
    last window and for the level before each jump).

    The answers are the same as without it, bit for bit; one pass of array arithmetic over a
    batch replaces a loop on scalars per metric and epoch (the bulk of the work on short epochs).
    """
    metrics = [
        m
        for result in results
        for m in result.metrics.values()
        if m.kind == "running_mean" and m.ranged and m._candidates is None and len(m.arrays[0]) > 1
    ]
    found = ranged_end_candidates(
        [m.arrays for m in metrics],
        [(m.end_weight_low, m.end_weight_high) for m in metrics],
        [m.clip for m in metrics],
        SHORTEST,
    )
    for m, held in zip(metrics, found, strict=True):
        m._candidates = held
    # The report's last window: the first within the tolerance, found for all at once.
    tolerances = np.array([math.nan if m.tolerance is None else m.tolerance for m in metrics])
    for m, i in zip(metrics, first_within(found, tolerances), strict=True):
        m._last_pick = i


def analyze(epochs: Iterable[Epoch], options: Options) -> Iterator[EpochResult]:
    """Reconstruct a stream of epochs lazily (memory stays at one epoch)."""
    for epoch in epochs:
        yield analyze_epoch(epoch, options)
