"""fitlens: train PyTorch models in batches and see the truth about training progress.

Public API (imported lazily, so `import fitlens` and `fitlens explain` stay free of torch)::

    fitlens.fit(model, train, loss=..., optimizer=..., metrics=[...], epochs=...) -> History
    fitlens.evaluate(model, data, loss=..., metrics=[...]) -> dict
    fitlens.History, fitlens.Callback, fitlens.EarlyStopping, fitlens.Progress
    fitlens.Checkpointing, fitlens.NonFiniteError, fitlens.TrainingInterrupted, fitlens.read_history
    fitlens.TensorBoard (needs fitlens[tensorboard])
    fitlens.EpochMean, fitlens.EMA, fitlens.EMATrend, fitlens.WindowMean, fitlens.TrendWindow,
    fitlens.LastValue
    fitlens.keras.FitlensCallback, fitlens.lightning.FitlensCallback (need the extras)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "fitlens.loop",
    "evaluate": "fitlens.evaluation",
    "History": "fitlens.history",
    "Callback": "fitlens.callbacks",
    "EarlyStopping": "fitlens.callbacks",
    "Progress": "fitlens.progress",
    "Accuracy": "fitlens.metrics",
    "Estimator": "fitlens.estimators",
    "EpochMean": "fitlens.estimators",
    "EMA": "fitlens.estimators",
    "EMATrend": "fitlens.estimators",
    "WindowMean": "fitlens.estimators",
    "TrendWindow": "fitlens.estimators",
    "LastValue": "fitlens.estimators",
    "Checkpointing": "fitlens.checkpoint",
    "NonFiniteError": "fitlens.keeper",
    "TrainingInterrupted": "fitlens.interrupt",
    "read_history": "fitlens.rundir",
    "TensorBoard": "fitlens.integrations.tensorboard",
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
    "TensorBoard",
    "TrainingInterrupted",
    "TrendWindow",
    "WindowMean",
    "__version__",
    "evaluate",
    "fit",
    "read_history",
]

if TYPE_CHECKING:
    from fitlens.callbacks import Callback, EarlyStopping
    from fitlens.checkpoint import Checkpointing
    from fitlens.estimators import (
        EMA,
        EMATrend,
        EpochMean,
        Estimator,
        LastValue,
        TrendWindow,
        WindowMean,
    )
    from fitlens.evaluation import evaluate
    from fitlens.history import History
    from fitlens.integrations.tensorboard import TensorBoard
    from fitlens.interrupt import TrainingInterrupted
    from fitlens.keeper import NonFiniteError
    from fitlens.loop import fit
    from fitlens.metrics import Accuracy
    from fitlens.progress import Progress
    from fitlens.rundir import read_history


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
