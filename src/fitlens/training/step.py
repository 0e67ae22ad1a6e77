"""One training step of `fitlens.fit`: forward, loss, backward, optimizer step, values recorded.

`TrainStep.run(x, y)` is the step. Its first call checks what only the first batch can show
(the model runs on the inputs, the loss pairs outputs and targets, the loss is a scalar with a
gradient; each failure names the shapes) and configures the metrics from the outputs; then the
checked forward and loss replace themselves with the plain ones, so no step branches on it.

The step's values (the loss, then each metric) go to the `Lens` as 0-d tensors still on the
device: no host synchronisation, except with ``on_nonfinite="skip"``, where the loss is read on
the host to decide before ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fitlens.adapters.data import batch_size_of
from fitlens.adapters.evaluation import forward
from fitlens.adapters.losses import LossFn, check_first_batch
from fitlens.adapters.metrics import TrackedMetric, configure_from_outputs
from fitlens.view.lens import Lens


class TrainStep:
    """The training step of one `fit` call.

    Args:
        model, loss_fn, optimizer, metrics: as `fit` resolved them.
        lens: receives the step's values.
        skips: with ``on_nonfinite="skip"``: ``skips(loss)``, called after the backward pass,
            is True when the step must leave no trace (it then also clears the gradients; the
            step puts back the buffers, such as batch-norm statistics, that the forward pass
            updated); None otherwise.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        metrics: Sequence[TrackedMetric],
        lens: Lens,
        skips: Callable[[torch.Tensor], bool] | None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.metrics, self.lens, self.skips = list(metrics), lens, skips
        # The first call checks what only the first batch can show, then swaps in the plain ones.
        self._forward: Callable[[torch.nn.Module, Any], Any] = _first_forward
        self._loss: Callable[[Any, Any], torch.Tensor] = self._first_loss

    def _first_loss(self, outputs: Any, y: Any) -> torch.Tensor:
        value = _first_loss(self.loss_fn, outputs, y)
        configure_from_outputs(self.metrics, outputs)
        self._forward, self._loss = forward, self.loss_fn
        return value

    def _buffers(self) -> list[torch.Tensor]:
        """Copies of the model's buffers under ``on_nonfinite="skip"`` (none otherwise)."""
        if self.skips is None:
            return []
        return [b.detach().clone() for b in self.model.buffers()]

    def run(self, x: Any, y: Any) -> None:
        """One step on the batch ``(x, y)``, already on the device."""
        saved = self._buffers()  # the forward pass updates them before the loss is known
        outputs = self._forward(self.model, x)
        loss_value = self._loss(outputs, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        if self.skips is not None and self.skips(loss_value):  # one host sync per step
            with torch.no_grad():
                for buffer, before in zip(self.model.buffers(), saved, strict=True):
                    buffer.copy_(before)
            self.lens.skip()
            return
        self.optimizer.step()
        detached = outputs.detach() if isinstance(outputs, torch.Tensor) else outputs
        values = [loss_value.detach()] + [m.batch(detached, y) for m in self.metrics]
        self.lens.record(values, batch_size_of(y))


def tensors_to_host(values: list[torch.Tensor]) -> Any:
    """The lens's ``to_host`` for `fit`: 0-d device tensors to float64 numpy, one transfer."""
    return torch.stack(values).to("cpu", torch.float64).numpy()


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"shape {tuple(obj.shape)}, dtype {obj.dtype}"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, tuple | list):
        return "(" + ", ".join(_describe(v) for v in obj) + ")"
    return type(obj).__name__


def _first_forward(model: torch.nn.Module, x: Any) -> Any:
    try:
        return forward(model, x)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(
            f"The model failed on the first batch, with inputs of {_describe(x)}: {e}"
        ) from e


def _first_loss(loss_fn: LossFn, outputs: Any, y: Any) -> torch.Tensor:
    check_first_batch(loss_fn, outputs, y)
    try:
        value = loss_fn(outputs, y)
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"The loss failed on the first batch. Model outputs: {_describe(outputs)}; "
            f"targets: {_describe(y)}. {e}"
        ) from e
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(
            f"Expected the loss to return a scalar tensor (the batch mean). Received: "
            f"{_describe(value)}. Reduce it with .mean()."
        )
    if not value.requires_grad:
        raise ValueError(
            "The loss does not depend on any trainable parameter (it has no gradient). "
            "Check that the model's parameters require grad and the loss uses its outputs."
        )
    return value.reshape(())


__all__ = ["TrainStep", "tensors_to_host"]
