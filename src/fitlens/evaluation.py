"""Evaluation passes: the model on a dataset, without updating it.

Sums stay on the device during the pass and reach the host once, at the end. Values are
sample-weighted means over the whole pass (the same definition as the training epoch mean), so
the numbers compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from fitlens.data import BatchSource, batch_size_of, to_device, unpack
from fitlens.losses import LossFn, resolve_loss
from fitlens.metrics import TrackedMetric, resolve_metrics


def forward(model: Any, x: Any) -> Any:
    """Call ``model`` on ``x``: a tensor, a tuple/list of positional inputs, or a dict of kwargs."""
    if isinstance(x, torch.Tensor):
        return model(x)
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple | list):
        return model(*x)
    return model(x)


@torch.no_grad()
def evaluate_batches(
    model: torch.nn.Module,
    batches: Iterable[Any],
    loss_name: str,
    loss_fn: LossFn,
    metrics: Sequence[TrackedMetric],
    device: torch.device,
    *,
    name: str = "validation_data",
) -> tuple[dict[str, float], int]:
    """Mean loss and metrics of ``model`` over ``batches`` in its *current* train/eval mode.

    The caller sets the mode. Returns ``({name: mean}, samples)``; with no batches the values
    are NaN and samples 0. Stateful (torchmetrics) metrics must be fresh copies.
    """
    totals: torch.Tensor | None = None
    samples = 0
    for batch in batches:
        x, y = unpack(batch, name)
        x, y = to_device(x, device), to_device(y, device)
        outputs = forward(model, x)
        n = batch_size_of(y)
        values = [loss_fn(outputs, y).detach().reshape(())]
        values += [m.batch(outputs, y) for m in metrics]
        stacked = torch.stack([v.to(torch.float64) for v in values]) * n
        totals = stacked if totals is None else totals + stacked
        samples += n
    names = [loss_name] + [m.name for m in metrics]
    if totals is None:
        return {k: float("nan") for k in names}, 0
    means = (totals / samples).cpu().tolist()
    out = dict(zip(names, means, strict=True))
    for m in metrics:
        if m.stateful:
            out[m.name] = m.compute()
    return out, samples


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
    dev = torch.device(device) if device is not None else model_device(model)
    for m in tracked:
        m.to(dev)
    source = BatchSource(data, name="data", steps=steps, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    try:
        values, _ = evaluate_batches(
            model, source.epoch(), "loss", loss_fn, tracked, dev, name="data"
        )
    finally:
        model.train(was_training)
    return values


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
