"""Optimizers by name, with Keras's default learning rates (what a Keras user expects)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

_DEFAULTS: dict[str, Callable[[Iterable[Any]], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-3),
}


def resolve_optimizer(
    optimizer: str | torch.optim.Optimizer, model: torch.nn.Module
) -> torch.optim.Optimizer:
    """The optimizer itself, or a new one over ``model``'s parameters for a name.

    Names (case-insensitive) and their learning rates: sgd 0.01, adam/adamw/rmsprop/adagrad 0.001.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        make = _DEFAULTS.get(optimizer.lower())
        if make is None:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}. Expected one of {sorted(_DEFAULTS)} or a "
                "torch.optim.Optimizer instance, e.g. torch.optim.SGD(model.parameters(), lr=0.1)."
            )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "The model has no trainable parameters, so there is nothing to optimize."
            )
        return make(params)
    raise TypeError(
        f"Expected `optimizer` to be a name or a torch.optim.Optimizer. Received: {optimizer!r}."
    )
