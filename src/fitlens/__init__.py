"""fitlens: train PyTorch models in batches and see the truth about training progress.

The public names are those of ``__all__``, each imported lazily from the module named in
``_EXPORTS`` (so `import fitlens` and `fitlens explain` stay free of torch), plus the
``fitlens.keras`` and ``fitlens.lightning`` modules (they need the extras) and ``fitlens.losses``. The README's "API"
section lists the same names; ``tests/test_public_api.py`` checks that the three agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "fitlens.training.loop",
    "evaluate": "fitlens.adapters.evaluation",
    "predict": "fitlens.training.predict",
    "History": "fitlens.core.history",
    "BatchLog": "fitlens.core.history",
    "Callback": "fitlens.training.callbacks",
    "EarlyStopping": "fitlens.training.callbacks",
    "RunState": "fitlens.training.callbacks",
    "Progress": "fitlens.view.progress",
    "Accuracy": "fitlens.adapters.metrics",
    "Estimator": "fitlens.core.estimators",
    "EpochMean": "fitlens.core.estimators",
    "EMA": "fitlens.core.estimators",
    "EMATrend": "fitlens.core.estimators",
    "WindowMean": "fitlens.core.estimators",
    "TrendWindow": "fitlens.core.estimators",
    "LastValue": "fitlens.core.estimators",
    "AdaptiveTrend": "fitlens.core.estimators",
    "Checkpointing": "fitlens.safety.checkpoint",
    "NonFiniteError": "fitlens.safety.guard",
    "TrainingInterrupted": "fitlens.safety.signals",
    "read_history": "fitlens.safety.run_dir",
    "TensorBoard": "fitlens.integrations.tensorboard",
}

__all__ = [
    "EMA",
    "Accuracy",
    "AdaptiveTrend",
    "BatchLog",
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
    "RunState",
    "TensorBoard",
    "TrainingInterrupted",
    "TrendWindow",
    "WindowMean",
    "__version__",
    "evaluate",
    "fit",
    "predict",
    "read_history",
]

if TYPE_CHECKING:
    from fitlens.adapters.evaluation import evaluate
    from fitlens.adapters.metrics import Accuracy
    from fitlens.core.estimators import (
        EMA,
        AdaptiveTrend,
        EMATrend,
        EpochMean,
        Estimator,
        LastValue,
        TrendWindow,
        WindowMean,
    )
    from fitlens.core.history import BatchLog, History
    from fitlens.integrations.tensorboard import TensorBoard
    from fitlens.safety.checkpoint import Checkpointing
    from fitlens.safety.guard import NonFiniteError
    from fitlens.safety.run_dir import read_history
    from fitlens.safety.signals import TrainingInterrupted
    from fitlens.training.callbacks import Callback, EarlyStopping, RunState
    from fitlens.training.loop import fit
    from fitlens.training.predict import predict
    from fitlens.view.progress import Progress


# Submodules imported only when asked for (`fitlens.keras`, `import fitlens.keras`): the framework
# integrations and the loss classes.
_SUBMODULES = ("keras", "lightning", "losses")


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
