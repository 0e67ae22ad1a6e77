"""What a checkpoint belongs to, and what a resuming call changed.

`describe` records the run as a `fit` call sets it up, before any checkpoint is restored: the
model's state names and shapes, the optimizer's class and hyper-parameters (as built, so that
an LR scheduler's later changes are not mistaken for a new setting), the training data's kind
and size, the epochs, the metric names, the precision and gradient accumulation, and the
fitlens version. It is saved in every checkpoint
(as JSON) and carried across resumes unchanged: a run is compared with how it began.

`compare` lists what differs between a checkpoint and the resuming call: the differences that
would make the resume wrong (another architecture, optimizer, learning rate, data, precision, accumulation, or fewer
epochs than the checkpoint has already passed) as errors, all in one message, before anything is
restored; those where continuing is sound (more epochs, another fitlens version) as warnings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from fitlens.adapters.data import BatchSource


def _plain(value: Any) -> Any:
    """A JSON-able, comparable form of a hyper-parameter value."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def data_size(source: BatchSource) -> int | None:
    """The number of training samples when the data says (arrays, a DataLoader's dataset)."""
    data = source.iterable
    n = getattr(data, "n", None)
    if isinstance(n, int):
        return n
    try:
        return len(data.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


def describe(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    source: BatchSource,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The identity of a run as this call sets it up (see the module docstring)."""
    import fitlens

    groups = [
        {k: _plain(v) for k, v in sorted(g.items()) if k not in ("params", "initial_lr")}
        for g in optimizer.param_groups
    ]
    return {
        "model": {k: list(v.shape) for k, v in model.state_dict().items()},
        "optimizer": type(optimizer).__name__,
        "hyperparameters": groups,
        "data": type(source.iterable).__name__,
        "samples": data_size(source),
        "steps": source.steps,
        "epochs": params.get("epochs"),
        "metrics": params.get("metrics"),
        "precision": params.get("precision"),
        "accumulate": params.get("accumulate"),
        "fitlens": fitlens.__version__,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _model_differences(saved: dict[str, list[int]], now: dict[str, list[int]]) -> list[str]:
    out = [
        f"model: {k} (shape {saved[k]}) is missing from this model" for k in saved if k not in now
    ]
    out += [f"model: {k} (shape {now[k]}) is not in the checkpoint" for k in now if k not in saved]
    out += [
        f"model: {k} has shape {now[k]}, the checkpoint's has {saved[k]}"
        for k in saved
        if k in now and saved[k] != now[k]
    ]
    return out


def compare(
    saved: dict[str, Any],
    now: dict[str, Any],
    position: tuple[int, int],
    overridden: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)``: each difference between the checkpoint's identity ``saved`` and
    this call's ``now``, in words; ``position``: the checkpoint's 0-based epoch and step;
    ``overridden``: hyper-parameters this call sets anew on purpose (not differences)."""
    errors = _model_differences(saved["model"], now["model"])
    if saved["optimizer"] != now["optimizer"]:
        errors.append(f"optimizer: {now['optimizer']}, the checkpoint's is {saved['optimizer']}")
    else:
        old_groups, new_groups = saved["hyperparameters"], now["hyperparameters"]
        if len(old_groups) != len(new_groups):
            errors.append(
                f"optimizer: {len(new_groups)} parameter groups, the checkpoint has "
                f"{len(old_groups)}"
            )
        for i, (old, new) in enumerate(zip(old_groups, new_groups, strict=False)):
            for key in sorted((set(old) | set(new)) - set(overridden)):
                if not _same(old.get(key), new.get(key)):
                    errors.append(
                        f"optimizer hyper-parameter {key!r} (group {i}): {new.get(key)!r}, the "
                        f"checkpoint's run started with {old.get(key)!r}"
                    )
    if saved["metrics"] != now["metrics"]:
        errors.append(f"metrics: {now['metrics']}, the checkpoint tracks {saved['metrics']}")
    for key, what in (
        ("precision", "precision"),  # a scaler's state, a group's gradients belong to them
        ("accumulate", "accumulate"),
        ("data", "training data"),
        ("samples", "training samples"),
        ("steps", "steps per epoch"),
    ):
        if saved.get(key) != now[key] and None not in (saved.get(key), now[key]):
            errors.append(f"{what}: {now[key]}, the checkpoint's: {saved[key]}")
    epoch, step = position
    end, started = now["epochs"], saved["epochs"]
    if end is not None and (epoch > end or (epoch == end and step > 0)):
        errors.append(
            f"epochs: this call ends after epoch {end}, but the checkpoint is already at epoch "
            f"{epoch + 1}, step {step}"
        )
    warned = []
    if end is not None and started is not None and end != started and not errors:
        warned.append(f"epochs: the run was started for {started}, this call runs to {end}")
    if saved["fitlens"] != now["fitlens"]:
        warned.append(f"fitlens {now['fitlens']}, the checkpoint was written by {saved['fitlens']}")
    return errors, warned


__all__ = ["compare", "data_size", "describe"]
