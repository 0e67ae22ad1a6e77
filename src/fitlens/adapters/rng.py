"""The global random states (Python, NumPy, torch CPU, CUDA): captured and restored in one place.

Used by the resume position (checkpoints keep them, so a resumed run draws the same numbers) and
by the ``train_eval`` passes (which must leave them as they found them). The captured state holds
only plain containers and tensors, so it loads back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """The current global random states (Python, NumPy, torch CPU, CUDA if initialised)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": list(np.random.get_state(legacy=True)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore states produced by `capture_rng` (CUDA ones only where CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["capture_rng", "restore_rng"]
