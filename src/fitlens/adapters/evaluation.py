"""Evaluation passes: the model on a dataset, without updating it.

Sums stay on the device during the pass and reach the host once, at the end. Values are
sample-weighted means over the whole pass (the same definition as the training epoch mean), so
the numbers compare like with like. Each value also carries its sample count and per-sample
spread, for the intervals of the gap decomposition: per-sample losses for the named losses; for
user callables and torchmetrics metrics only batch means exist, so the spread is estimated from
the spread of batch means scaled by batch size, ``sum_b n_b (m_b - m)^2 / (B - 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fitlens.adapters.data import BatchSource, batch_size_of, to_device, unpack
from fitlens.adapters.dtypes import Float64Cast, input_dtype
from fitlens.adapters.losses import LossFn, per_sample, resolve_loss
from fitlens.adapters.metrics import Accuracy, TrackedMetric, resolve_metrics


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
        mean: sample-weighted mean (the definition `evaluate` uses).
        n: samples. sd: per-sample standard deviation (NaN when it cannot be estimated).
        kind: ``"proportion"`` (Accuracy: use a Wilson interval), ``"per_sample"`` (sd from
            per-sample values) or ``"batch"`` (sd from the spread of batch means).
    """

    mean: float
    n: int
    sd: float
    kind: str


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
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, PassValue]:
    """Mean, sample count and per-sample spread of the loss and metrics over ``batches``.

    The model runs in its *current* mode; the caller sets it. Sums stay on the device and reach
    the host once, at the end. Stateful (torchmetrics) metrics must be fresh copies; their mean
    is ``compute()``. ``cast``: the float64 rule (`fitlens.adapters.dtypes`), one warning per
    cast object; default: a new one for this pass.

    ``reduce``: when ``batches`` is this process's shard of the data (a data-parallel run), a
    function that sums a float64 vector over the processes (one collective, every process calls
    it, a process with no batch too): the pass's sums, sample and batch counts go through it in
    one call, so the values are those of the whole data, exactly. Stateful metrics sync their
    own state in ``compute()`` (torchmetrics does under torch.distributed).
    """
    cast = cast or Float64Cast(input_dtype(model), name)
    names = [loss_name] + [m.name for m in metrics]
    per_sample_fn = per_sample(loss_fn)
    kinds = ["per_sample" if per_sample_fn is not None else "batch"]
    kinds += ["proportion" if isinstance(m.fn, Accuracy) else "batch" for m in metrics]
    totals: torch.Tensor | None = None
    samples = batches_seen = 0
    for batch in batches:
        x, y = unpack(batch, name)
        x, y = cast(to_device(x, device)), cast(to_device(y, device))
        outputs = forward(model, x)
        n = batch_size_of(y)
        values = [loss_fn(outputs, y).detach().reshape(())]
        values += [m.batch(outputs, y) for m in metrics]
        means = torch.stack([v.to(torch.float64) for v in values])
        squares = means * means * n  # batch-spread fallback: n_b * m_b**2
        if per_sample_fn is not None:
            losses = per_sample_fn(outputs, y).to(torch.float64)
            squares[0] = (losses * losses).sum()
        row = torch.cat([means * n, squares])
        totals = row if totals is None else totals + row
        samples += n
        batches_seen += 1
    if reduce is not None:
        local = totals if totals is not None else torch.zeros(2 * len(names), dtype=torch.float64)
        counts = torch.tensor([samples, batches_seen], dtype=torch.float64, device=local.device)
        summed = reduce(torch.cat([local, counts]))
        totals, samples, batches_seen = summed[:-2], int(summed[-2]), int(summed[-1])
        if samples == 0:
            totals = None
    if totals is None:
        return {
            k: PassValue(math.nan, 0, math.nan, kind) for k, kind in zip(names, kinds, strict=False)
        }
    sums = totals.cpu().tolist()
    out: dict[str, PassValue] = {}
    for i, (key, kind) in enumerate(zip(names, kinds, strict=True)):
        mean = sums[i] / samples
        sq = sums[len(names) + i]
        dof = (samples if kind == "per_sample" else batches_seen) - 1
        var = (sq - samples * mean * mean) / dof if dof > 0 else math.nan
        sd = math.sqrt(max(var, 0.0)) if kind != "proportion" else math.nan
        out[key] = PassValue(mean, samples, sd, kind)
    for m in metrics:
        if m.stateful:
            old = out[m.name]
            out[m.name] = PassValue(m.compute(), old.n, old.sd, old.kind)
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
) -> dict[str, float]:
    """Evaluate ``model`` in eval mode under ``torch.no_grad()``, like Keras's ``evaluate``.

    Args:
        model: a ``torch.nn.Module``; its train/eval mode is restored afterwards.
        data: the same forms `fit` accepts (arrays ``(x, y)``, a re-iterable, or a generator
            with ``steps``).
        loss, metrics: as in `fit`.
        batch_size: for array data (default 256). steps: batches to use (required for a
            generator).
        device: default: the device of the model's first parameter.

    Returns:
        ``{"loss": ..., metric name: ...}``, each a sample-weighted mean over the data.
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
    source = BatchSource(data, name="data", steps=steps, batch_size=batch_size, shuffle=False)
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
