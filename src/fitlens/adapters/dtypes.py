"""One rule for float64 inputs: they become the model's floating-point parameter dtype.

NumPy's default float is float64 and PyTorch's is float32, so float64 data is common and a
float32 model fails on it (``mat1 and mat2 must have the same dtype``). Arrays, tensors and
batches from loaders or generators are treated alike: every float64 tensor in a batch (inputs,
targets and sample weights) is cast to the dtype of the model's first floating-point parameter,
with one warning per `fit` (or `evaluate`, `predict`) call saying so. A float64 model keeps
float64 inputs; other dtypes (float16, integers, bool) are left as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

_FLOAT64 = torch.float64


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter; torch's default without one."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


class Float64Cast:
    """Casts the float64 tensors of a batch to ``dtype``; warns the first time it does.

    Args:
        dtype: the model's parameter dtype (see `input_dtype`).
        name: the argument the data came from (``"train"``, ``"validation_data"``...), for the
            warning.
    """

    def __init__(self, dtype: torch.dtype, name: str) -> None:
        self.dtype, self.name = dtype, name
        self.active = dtype != torch.float64
        self.warned = False

    def __call__(self, obj: Any) -> Any:
        """``obj`` (a tensor, or a tuple/list/dict of them) with float64 tensors cast."""
        if isinstance(obj, torch.Tensor):  # per step: one type and one dtype check
            if obj.dtype is not _FLOAT64 or not self.active:
                return obj
            if not self.warned:
                self.warned = True
                warnings.warn(
                    f"`{self.name}` holds float64 tensors; fitlens casts them to the model's "
                    f"{self.dtype} (one rule for arrays, tensors and loaders). Convert the data "
                    "once beforehand (e.g. x.astype('float32')) to skip the per-batch cast.",
                    UserWarning,
                    stacklevel=2,
                )
            return obj.to(self.dtype)
        if not self.active:
            return obj
        if isinstance(obj, Mapping):
            return {k: self(v) for k, v in obj.items()}
        if isinstance(obj, tuple | list):
            return type(obj)(self(v) for v in obj)
        return obj


__all__ = ["Float64Cast", "input_dtype"]
