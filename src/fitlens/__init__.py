"""fitlens: train PyTorch models in batches and see the truth about training progress.

Public API (imported lazily, so `import fitlens` and `fitlens explain` stay free of torch)::

    fitlens.fit(model, train, loss=..., optimizer=..., metrics=[...], epochs=...) -> History
    fitlens.evaluate(model, data, loss=..., metrics=[...]) -> dict
    fitlens.History, fitlens.Callback, fitlens.EarlyStopping, fitlens.Progress
    fitlens.Checkpointing, fitlens.NonFiniteError, fitlens.TrainingInterrupted, fitlens.read_history
    fitlens.EpochMean, fitlens.EMA, fitlens.EMATrend, fitlens.WindowMean, fitlens.TrendWindow,
    fitlens.LastValue
    fitlens.keras.FitlensCallback, fitlens.lightning.FitlensCallback (need the extras)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "fitlens.training.loop",
    "evaluate": "fitlens.adapters.evaluation",
    "History": "fitlens.core.history",
    "Callback": "fitlens.training.callbacks",
    "EarlyStopping": "fitlens.training.callbacks",
    "Progress": "fitlens.view.progress",
    "Accuracy": "fitlens.adapters.metrics",
    "Estimator": "fitlens.core.estimators",
    "EpochMean": "fitlens.core.estimators",
    "EMA": "fitlens.core.estimators",
    "EMATrend": "fitlens.core.estimators",
    "WindowMean": "fitlens.core.estimators",
    "TrendWindow": "fitlens.core.estimators",
    "LastValue": "fitlens.core.estimators",
    "Checkpointing": "fitlens.safety.checkpoint",
    "NonFiniteError": "fitlens.safety.guard",
    "TrainingInterrupted": "fitlens.safety.signals",
    "read_history": "fitlens.safety.run_dir",
}

__all__ = [
    "EMA",
    "Accuracy",
    "Callback",
    "Checkpointing",
    "EMATrend",
    "EarlyStopping",
    "EpochMean",
    "Estimator",
    "History",
    "LastValue",
    "NonFiniteError",
    "Progress",
    "TrainingInterrupted",
    "TrendWindow",
    "WindowMean",
    "__version__",
    "evaluate",
    "fit",
    "read_history",
]

if TYPE_CHECKING:
    from fitlens.adapters.evaluation import evaluate
    from fitlens.adapters.metrics import Accuracy
    from fitlens.core.estimators import (
        EMA,
        EMATrend,
        EpochMean,
        Estimator,
        LastValue,
        TrendWindow,
        WindowMean,
    )
    from fitlens.core.history import History
    from fitlens.safety.checkpoint import Checkpointing
    from fitlens.safety.guard import NonFiniteError
    from fitlens.safety.run_dir import read_history
    from fitlens.safety.signals import TrainingInterrupted
    from fitlens.training.callbacks import Callback, EarlyStopping
    from fitlens.training.loop import fit
    from fitlens.view.progress import Progress


# Framework integrations: imported only when asked for (`fitlens.keras`, `import fitlens.keras`).
_SUBMODULES = ("keras", "lightning")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"fitlens.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fitlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
