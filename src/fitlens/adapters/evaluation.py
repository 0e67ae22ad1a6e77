"""Evaluation passes: the model on a dataset, without updating it.

Sums stay on the device during the pass and reach the host once, at the end. Values are
sample-weighted means over the whole pass (the same definition as the training epoch mean), so
the numbers compare like with like; batches ``(x, y, w)`` (and class weights, for ``train_eval``)
are weighted as training weighs them. Each value also carries its sample count and per-sample
spread, for the intervals of the gap decomposition: per-sample values for the named losses,
``"accuracy"`` and callables returning one value per sample; for mean-reduced callables and
torchmetrics metrics only batch means exist, so the spread is estimated from the spread of batch
means scaled by batch size, ``sum_b n_b (m_b - m)^2 / (B - 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fitlens.adapters.data import ArrayData, BatchSource, batch_size_of, to_device, unpack_weighted
from fitlens.adapters.dtypes import Float64Cast, input_dtype
from fitlens.adapters.losses import LossFn, per_sample, resolve_loss, weighable
from fitlens.adapters.metrics import Accuracy, TrackedMetric, resolve_metrics
from fitlens.adapters.weights import BatchWeights


def forward(model: Any, x: Any) -> Any:
    """Call ``model`` on ``x``: a tensor, a tuple/list of positional inputs, or a dict of kwargs."""
    if isinstance(x, torch.Tensor):
        return model(x)
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple | list):
        return model(*x)
    return model(x)


@dataclass(frozen=True)
class PassValue:
    """One metric over one pass.

    Attributes:
        mean: the pass's value: the sample-weighted mean (with sample weights: the loss
            ``sum(w * loss) / N``, a metric ``sum(w * m) / sum(w)``, as in training).
        n: samples. sd: per-sample standard deviation (NaN when it cannot be estimated).
        kind: ``"proportion"`` (Accuracy: use a Wilson interval), ``"per_sample"`` (sd from
            per-sample values) or ``"batch"`` (sd from the spread of batch means).
        design: Kish's design effect ``n * sum(w**2) / sum(w)**2`` of a weighted mean (1 without
            weights): the interval of a weighted metric is that of ``n / design`` samples.
    """

    mean: float
    n: int
    sd: float
    kind: str
    design: float = 1.0


#: the sums kept per value and pass: numerator, denominator, squares, squared weights
_SUMS = 4


def _loss_sums(
    loss_fn: LossFn, outputs: Any, y: Any, weights: torch.Tensor | None, n: int
) -> list[torch.Tensor]:
    """The loss's sums over one batch. With per-sample values ``v`` (``w * loss`` when weighted,
    as training's ``sum(w * loss) / N``): ``sum(v)``, ``N``, ``sum(v * v)``, ``N``."""
    fn = per_sample(loss_fn) if weights is None else weighable(loss_fn)
    if fn is None:  # a callable's batch mean, counted for its N samples
        mean = loss_fn(outputs, y).detach().reshape(()).to(torch.float64)
        count = mean.new_tensor(float(n))
        return [mean * count, count, mean * mean * count, count]
    values = fn(outputs, y).detach().to(torch.float64)
    if weights is not None:
        values = values * weights.to(torch.float64)  # exact for weights of 1
    count = values.new_tensor(float(n))
    return [values.sum(), count, (values * values).sum(), count]


def _metric_sums(
    m: TrackedMetric, outputs: Any, y: Any, weights: torch.Tensor | None, n: int
) -> tuple[list[torch.Tensor], bool]:
    """A metric's sums over one batch: ``sum(w * v)``, ``sum(w)``, ``sum(w * v * v)`` and
    ``sum(w * w)`` over its per-sample values ``v`` (``w = 1`` without weights), or, for a batch
    value ``m`` (torchmetrics, mean-reduced callables), ``m`` counted with weight ``sum(w)``
    (``N`` without weights). The flag: whether the values were per sample."""
    if m.stateful:
        value, size = (
            m.weighted(outputs, y, weights, n) if weights is not None else (m.batch(outputs, y), n)
        )
        mean = value.reshape(()).to(torch.float64)
        count = mean.new_tensor(float(size)) if isinstance(size, int) else size.to(mean)
        return [mean * count, count, mean * mean * count, count], False
    values = m.values(outputs, y).to(torch.float64)
    w = weights.to(torch.float64) if weights is not None else None
    if values.ndim == 0:
        count = w.sum() if w is not None else values.new_tensor(float(n))
        return [values * count, count, values * values * count, count], False
    if w is None:
        count = values.new_tensor(float(n))
        return [values.sum(), count, (values * values).sum(), count], True
    weighted = w * values
    return [weighted.sum(), w.sum(), (weighted * values).sum(), (w * w).sum()], True


@torch.no_grad()
def measure_batches(
    model: torch.nn.Module,
    batches: Iterable[Any],
    loss_name: str,
    loss_fn: LossFn,
    metrics: Sequence[TrackedMetric],
    device: torch.device,
    *,
    name: str = "train",
    cast: Float64Cast | None = None,
    weigh: BatchWeights | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, PassValue]:
    """Mean, sample count and per-sample spread of the loss and metrics over ``batches``.

    Batches are ``(x, y)`` or ``(x, y, w)``; with sample weights ``w`` and/or class weights
    (``weigh``: `fitlens.adapters.weights.BatchWeights`) the values are weighted as training
    weighs them: the loss is ``sum(w * loss) / N`` over the pass, a metric with per-sample
    values (``"accuracy"``, callables returning one value per sample) ``sum(w * m) / sum(w)``,
    a batch value (mean-reduced callables, torchmetrics) counts with weight ``sum(w)``. Weights
    of 1 give the unweighted values bit for bit.

    The model runs in its *current* mode; the caller sets it. Sums stay on the device and reach
    the host once, at the end. Stateful (torchmetrics) metrics must be fresh copies; their mean
    is ``compute()``. ``cast``: the float64 rule (`fitlens.adapters.dtypes`), one warning per
    cast object; default: a new one for this pass.

    ``reduce``: when ``batches`` is this process's shard of the data (a data-parallel run), a
    function that sums a float64 vector over the processes (one collective, every process calls
    it, a process with no batch too): the pass's sums, sample and batch counts go through it in
    one call, so the values are those of the whole data, exactly. Stateful metrics sync their
    own state in ``compute()`` (torchmetrics does under torch.distributed).

    Raises:
        ValueError: a weighted batch with a loss that has no per-sample values (a callable).
    """
    cast = cast or Float64Cast(input_dtype(model), name)
    names = [loss_name] + [m.name for m in metrics]
    kinds = ["per_sample" if per_sample(loss_fn) is not None else "batch"]
    kinds += ["proportion" if isinstance(m.fn, Accuracy) else "batch" for m in metrics]
    totals: torch.Tensor | None = None
    samples = batches_seen = 0
    plain = BatchWeights(None, device, cast.dtype)
    for batch in batches:
        x, y, w = unpack_weighted(batch, name)
        x, y = cast(to_device(x, device)), cast(to_device(y, device))
        if w is not None:
            w = cast(to_device(w, device))
        weights = None if w is None and weigh is None else (weigh or plain)(y, w)
        outputs = forward(model, x)
        n = batch_size_of(y)
        sums = _loss_sums(loss_fn, outputs, y, weights, n)
        for i, m in enumerate(metrics, start=1):
            more, each = _metric_sums(m, outputs, y, weights, n)
            sums += more
            if each and kinds[i] == "batch":  # a callable with one value per sample
                kinds[i] = "per_sample"
        row = torch.stack(sums)
        totals = row if totals is None else totals + row
        samples += n
        batches_seen += 1
    if reduce is not None:
        empty = torch.zeros(_SUMS * len(names), dtype=torch.float64)
        local = totals if totals is not None else empty
        counts = torch.tensor([samples, batches_seen], dtype=torch.float64, device=local.device)
        summed = reduce(torch.cat([local, counts]))
        totals, samples, batches_seen = summed[:-2], int(summed[-2]), int(summed[-1])
        if samples == 0:
            totals = None
    if totals is None:
        return {
            k: PassValue(math.nan, 0, math.nan, kind) for k, kind in zip(names, kinds, strict=False)
        }
    return _values(totals.cpu().tolist(), names, kinds, metrics, samples, batches_seen)


def _values(
    sums: list[float],
    names: list[str],
    kinds: list[str],
    metrics: Sequence[TrackedMetric],
    samples: int,
    batches_seen: int,
) -> dict[str, PassValue]:
    """The pass values from each value's four sums (see `_metric_sums`)."""
    out: dict[str, PassValue] = {}
    for i, (key, kind) in enumerate(zip(names, kinds, strict=True)):
        total, count, sq, w2 = sums[_SUMS * i : _SUMS * (i + 1)]
        mean = total / count if count > 0 else math.nan
        if kind == "batch":  # a sample's spread from the batch means' spread
            dof: float = batches_seen - 1
            var = (sq - count * mean * mean) / dof if dof > 0 else math.nan
            design = 1.0
        else:  # weighted (reliability weights) variance; plain ddof=1 with weights of 1
            dof = count - w2 / count if count > 0 else 0.0
            var = (sq - count * mean * mean) / dof if dof > 0 else math.nan
            design = samples * w2 / (count * count) if count > 0 else 1.0
        sd = math.sqrt(max(var, 0.0)) if kind != "proportion" and not math.isnan(var) else math.nan
        out[key] = PassValue(mean, samples, sd, kind, design)
    for m in metrics:
        if m.stateful:
            old = out[m.name]
            out[m.name] = PassValue(m.compute(), old.n, old.sd, old.kind, old.design)
    return out


def evaluate(
    model: torch.nn.Module,
    data: Any,
    *,
    loss: str | LossFn,
    metrics: Sequence[Any] | Mapping[str, Any] = (),
    batch_size: int | None = None,
    steps: int | None = None,
    device: torch.device | str | None = None,
    sample_weight: Any = None,
) -> dict[str, float]:
    """Evaluate ``model`` in eval mode under ``torch.no_grad()``, like Keras's ``evaluate``.

    Args:
        model: a ``torch.nn.Module``; its train/eval mode is restored afterwards.
        data: the same forms `fit` accepts (arrays ``(x, y)`` or ``(x, y, w)``, a re-iterable,
            or a generator with ``steps``, whose batches may be ``(x, y, w)``).
        loss, metrics: as in `fit`.
        batch_size: for array data (default 256). steps: batches to use (required for a
            generator).
        device: default: the device of the model's first parameter.
        sample_weight: one weight per sample ``(N,)`` for arrays ``(x, y)``, as in Keras.

    Returns:
        ``{"loss": ..., metric name: ...}``, each a sample-weighted mean over the data; with
        sample weights weighted as `fit` weighs training (loss ``sum(w * loss) / N``,
        ``accuracy`` ``sum(w * right) / sum(w)``; see `measure_batches`).

    Raises:
        ValueError: weights with a loss that has no per-sample values (a callable), before the
            pass for arrays.
    """
    _, loss_fn = resolve_loss(loss)
    tracked = [m.fresh() for m in resolve_metrics(metrics, reserved=("loss",))]
    from_logits = getattr(loss_fn, "from_logits", None)
    for m in tracked:  # binary accuracy reads outputs as the named loss does (0.5 or 0)
        if isinstance(m.fn, Accuracy) and m.fn.from_logits is None and from_logits is not None:
            m.fn.from_logits = from_logits
    dev = torch.device(device) if device is not None else model_device(model)
    for m in tracked:
        m.to(dev)
    source = BatchSource(
        data,
        name="data",
        steps=steps,
        batch_size=batch_size,
        shuffle=False,
        sample_weight=sample_weight,
    )
    if isinstance(source.iterable, ArrayData) and source.iterable.w is not None:
        weighable(loss_fn)  # fails before the pass for a callable loss
    was_training = model.training
    model.eval()
    try:
        values = measure_batches(model, source.epoch(), "loss", loss_fn, tracked, dev, name="data")
    finally:
        model.train(was_training)
    return {k: v.mean for k, v in values.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
