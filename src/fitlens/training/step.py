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

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fitlens.adapters.data import batch_size_of
from fitlens.adapters.dtypes import input_dtype
from fitlens.adapters.evaluation import forward
from fitlens.adapters.losses import LossFn, check_first_batch, weighted_loss
from fitlens.adapters.metrics import TrackedMetric, configure_from_outputs
from fitlens.adapters.output_kind import output_kind_warning
from fitlens.adapters.weights import BatchWeights
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
        weigh: the per-sample weights from ``class_weight`` (see `fitlens.adapters.weights`);
            None without. A batch with its own weights ``(x, y, w)`` is weighted either way.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        metrics: Sequence[TrackedMetric],
        lens: Lens,
        skips: Callable[[torch.Tensor], bool] | None,
        weigh: BatchWeights | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.weigh = weigh  # class weights; None without (a batch's own weights still count)
        self.dtype = input_dtype(model)
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.metrics, self.lens, self.skips = list(metrics), lens, skips
        # Under DDP with skips: the loss to back-propagate, which carries this rank's
        # non-finite loss to every rank's gradients (`fitlens.training.reduction`).
        self.spread: Callable[[torch.Tensor], torch.Tensor] | None = None
        # The first call checks what only the first batch can show, then swaps in the plain ones.
        self._forward: Callable[[torch.nn.Module, Any], Any] = _first_forward
        self._loss: Callable[[Any, Any], torch.Tensor] = self._first_loss

    def _first_loss(self, outputs: Any, y: Any) -> torch.Tensor:
        value = _first_loss(self.loss_fn, outputs, y)
        warning = output_kind_warning(self.loss_fn, outputs)  # one host sync, first batch only
        if warning is not None:
            warnings.warn(warning, UserWarning, stacklevel=5)
        from_logits = getattr(self.loss_fn, "from_logits", None)
        for note in configure_from_outputs(self.metrics, outputs, from_logits):
            self.lens.progress.write(note)
        self._forward, self._loss = forward, self.loss_fn
        return value

    def _buffers(self) -> list[torch.Tensor]:
        """Copies of the model's buffers under ``on_nonfinite="skip"`` (none otherwise)."""
        if self.skips is None:
            return []
        return [b.detach().clone() for b in self.model.buffers()]

    def run(self, x: Any, y: Any, w: Any = None) -> None:
        """One step on the batch ``(x, y)`` with sample weights ``w`` (or None), already on the
        device."""
        # the forward pass updates the buffers before the loss is known (kept only for skips)
        saved = self._buffers() if self.skips is not None else ()
        outputs = self._forward(self.model, x)
        weights = None if w is None and self.weigh is None else self._weights(y, w)
        if weights is None:
            loss_value = self._loss(outputs, y)
        else:
            if self._loss == self._first_loss:
                self._first_loss(outputs, y)  # the first batch's checks (weights change no shape)
            loss_value = weighted_loss(self.loss_fn, outputs, y, weights)
        self.optimizer.zero_grad(set_to_none=True)
        (loss_value if self.spread is None else self.spread(loss_value)).backward()
        if self.skips is not None and self.skips(loss_value):  # one host sync per step
            with torch.no_grad():
                for buffer, before in zip(self.model.buffers(), saved, strict=True):
                    buffer.copy_(before)
            self.lens.skip()
            return
        self.optimizer.step()
        detached = outputs.detach() if isinstance(outputs, torch.Tensor) else outputs
        if weights is None:
            values = [loss_value.detach()] + [m.batch(detached, y) for m in self.metrics]
            self.lens.record(values, batch_size_of(y))
            return
        n = batch_size_of(y)
        pairs = [m.weighted(detached, y, weights, n) for m in self.metrics]
        values = [loss_value.detach()] + [v for v, _ in pairs]
        self.lens.record(values, n, weights=[n] + [weight for _, weight in pairs])

    def _weights(self, y: Any, w: Any) -> torch.Tensor | None:
        weigh = self.weigh or BatchWeights(None, self.device, self.dtype)
        return weigh(y, w)


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
