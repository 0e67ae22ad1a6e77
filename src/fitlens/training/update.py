"""How a batch's gradients become a parameter update: mixed precision, accumulation, clipping.

`fit`'s ``precision``, ``accumulate``, ``clip_grad_norm`` and ``clip_grad_value`` (and the
``"grad_norm"`` column) are set up here as one `Update`; `TunedStep` is the training step that
uses it. With every option at its default, `fit` keeps the plain `TrainStep`: no branch, no extra
tensor op per step.

* **Precision** (Lightning's names): ``"32"`` (default), ``"bf16-mixed"`` (forward and loss under
  ``torch.autocast(device_type, torch.bfloat16)``), ``"16-mixed"`` (``torch.float16`` autocast
  and a ``torch.amp.GradScaler``). The loss and the metrics are computed and accumulated in
  float32 (the outputs are cast before the metrics see them); validation and ``train_eval``
  passes run in float32. Under ``"16-mixed"`` a step whose
  scaled gradients overflow is skipped by the scaler (the scale is lowered), as PyTorch
  intends: it is counted (`Update.overflows`, on the device, read at epoch end), reported after
  the epoch line and in ``history.params["overflow_skipped_steps"]``, and is not a non-finite
  loss for ``on_nonfinite``. ``GradScaler.step`` reads one flag on the host per optimizer step
  (PyTorch's own sync, unless the optimizer is fused).
* **Accumulation**: ``accumulate=k`` steps the optimizer after every k batches and after the
  epoch's last batch. Each batch's loss is divided by the number of batches in its group (k, or
  fewer for the epoch's last group when the epoch's length is known), so a group of k equal
  batches gives the gradient of one batch k times as large. Steps, ``steps_per_epoch``, the
  display and the ETA count *batches*, as in Keras and Lightning. A checkpoint written in the
  middle of a group carries the group's partial gradients, so a resume continues it exactly.
* **Clipping**: ``clip_grad_norm=x`` (global 2-norm, `torch.nn.utils.clip_grad_norm_`) and/or
  ``clip_grad_value=x`` at each optimizer step, after unscaling under ``"16-mixed"``. The
  pre-clip global norm is a 0-d device tensor, recorded as the ``grad_norm`` column when
  ``"grad_norm"`` is in ``metrics`` (a batch inside an accumulation group has none: NaN, weight 0).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from fitlens.adapters.data import batch_size_of
from fitlens.adapters.losses import weighted_loss
from fitlens.training.step import TrainStep

Precision = Literal["32", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")
GRAD_NORM = "grad_norm"  # the metric name that asks for the pre-clip norm column


def check_update_options(
    precision: Any, accumulate: Any, clip_grad_norm: Any, clip_grad_value: Any, on_nonfinite: Any
) -> None:
    """Refuse invalid update options before anything is built.

    Raises:
        ValueError: an unknown precision, ``accumulate`` not an integer >= 1, a clip threshold
            not a number > 0, or ``accumulate > 1`` with ``on_nonfinite="skip"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"Expected `precision` to be one of {PRECISIONS} (Lightning's names). "
            f"Received: {precision!r}."
        )
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(
            f"Expected `accumulate` to be an integer >= 1 (batches per optimizer step). "
            f"Received: {accumulate!r}."
        )
    for name, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
        ):
            raise ValueError(f"Expected `{name}` to be a number > 0 or None. Received: {value!r}.")
    if accumulate > 1 and on_nonfinite == "skip":
        raise ValueError(
            'on_nonfinite="skip" cannot be combined with accumulate > 1: skipping one batch '
            'would discard the gradients of its whole group. Use on_nonfinite="stop", or '
            "accumulate=1."
        )


def split_grad_norm(metrics: Any) -> tuple[Any, bool]:
    """``metrics`` without the ``"grad_norm"`` entry, and whether it was there (a list only)."""
    if isinstance(metrics, list | tuple) and GRAD_NORM in metrics:
        return [m for m in metrics if not (isinstance(m, str) and m == GRAD_NORM)], True
    return metrics, False


class Update:
    """Mixed precision, accumulation and clipping for one `fit` call.

    Args:
        model, optimizer: as `fit` resolved them; device: where the model trains.
        precision, accumulate, clip_grad_norm, clip_grad_value: `fit`'s options (checked).
        grad_norm: record the pre-clip global gradient norm at each optimizer step.

    Attributes:
        scaler: the ``GradScaler`` under ``"16-mixed"``, else None.
        overflows: optimizer steps the scaler skipped, a 0-d device tensor (None without it).
        after_step: called after each optimizer step (an LR scheduler's per-step interval).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        precision: Precision = "32",
        accumulate: int = 1,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        grad_norm: bool = False,
    ) -> None:
        self.optimizer, self.device = optimizer, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.precision, self.accumulate = precision, accumulate
        self.clip_norm, self.clip_value, self.grad_norm = clip_grad_norm, clip_grad_value, grad_norm
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.overflows = torch.zeros((), device=device) if self.scaler is not None else None
        self.overflows_before = 0  # restored from a checkpoint
        self.after_step: list[Callable[[], None]] = []
        self.pending = 0  # batches whose gradients wait for the optimizer step
        self._nan = torch.full((), math.nan, device=device)

    @property
    def active(self) -> bool:
        """Whether any option is on (else `fit` keeps the plain `TrainStep`)."""
        return bool(
            self.dtype is not None
            or self.accumulate > 1
            or self.clip_norm
            or self.clip_value
            or self.grad_norm
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's context: autocast to the mixed dtype, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def group_size(self, index: int, steps: int | None) -> int:
        """Batches in the accumulation group of 1-based batch ``index`` (``steps``: the epoch's
        length, None when unknown: then k)."""
        k = self.accumulate
        start = (index - 1) // k * k + 1
        return k if steps is None else max(min(k, steps - start + 1), 1)

    def backward(self, loss: torch.Tensor, index: int, steps: int | None) -> None:
        """Backward pass of 1-based batch ``index``; the gradients are cleared at a group's
        first batch and add up over the group."""
        if self.pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
        if self.accumulate > 1:
            loss = loss / self.group_size(index, steps)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()
        self.pending += 1

    def due(self, index: int, steps: int | None) -> bool:
        """Whether the optimizer steps after 1-based batch ``index``."""
        return index % self.accumulate == 0 or (steps is not None and index >= steps)

    def step(self) -> torch.Tensor | None:
        """Unscale, clip and step the optimizer; the pre-clip norm (a 0-d device tensor) when
        it is recorded or clipped by, else None."""
        scaler = self.scaler
        if scaler is not None and (self.clip_norm or self.clip_value or self.grad_norm):
            scaler.unscale_(self.optimizer)
        norm = None
        if self.clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        elif self.grad_norm:
            norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.params if p.grad is not None]
            )
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, self.clip_value)
        if scaler is not None:
            scaler.step(self.optimizer)
            # The flags PyTorch set while unscaling: 1 where the gradients overflowed.
            found = scaler._found_inf_per_device(self.optimizer)
            assert self.overflows is not None
            self.overflows += sum(f.to(self.overflows.device) for f in found.values())
            scaler.update()
        else:
            self.optimizer.step()
        self.pending = 0
        for hook in self.after_step:
            hook()
        return norm

    def finish(self) -> None:
        """Step on gradients still pending at an epoch's end (a length not known in advance,
        or a stop in the middle of a group)."""
        if self.pending:
            self.step()

    def overflow_count(self) -> int:
        """Optimizer steps skipped for fp16 overflow in this run so far (one host read)."""
        if self.overflows is None:
            return 0
        return self.overflows_before + int(self.overflows.item())

    def describe(self, steps: int | None) -> str | None:
        """The run's first line under ``accumulate > 1``: what a step counts (None otherwise)."""
        k = self.accumulate
        if k == 1:
            return None
        updates = f" ({-(-steps // k)} updates per epoch of {steps} batches)" if steps else ""
        return (
            f"accumulate={k}: the optimizer steps every {k} batches and at each epoch's end"
            f"{updates}; steps, the ETA and steps_per_epoch count batches."
        )

    def end_epoch(self, params: dict[str, Any], write: Callable[[str], None]) -> None:
        """Under ``"16-mixed"``: the overflow count into ``params`` and, when it grew, a line."""
        if self.scaler is None:
            return
        skipped = self.overflow_count()  # one host read, at epoch end
        if skipped > params.get("overflow_skipped_steps", 0):
            write(
                f"16-mixed: {skipped} optimizer step(s) skipped so far for fp16 gradient "
                f"overflow (loss scale now {self.scaler.get_scale():g}); the scaler lowers its "
                "scale and retries, the loss is not non-finite."
            )
        params["overflow_skipped_steps"] = skipped

    def norm_value(self, norm: torch.Tensor | None) -> torch.Tensor:
        """The ``grad_norm`` column's value: the norm, or NaN inside an accumulation group."""
        return self._nan if norm is None else norm.detach().float()

    # -- checkpoint ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The scaler, the overflow count and an unfinished group's gradients."""
        grads = None
        if self.pending:  # inside a group: its gradients so far, to continue it on resume
            grads = [p.grad.detach().clone() if p.grad is not None else None for p in self.params]
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "overflows": self.overflow_count(),
            "pending": self.pending,
            "grads": grads,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.overflows_before = int(state.get("overflows", 0))
        if self.overflows is not None:  # the count is the checkpoint's (a stop restores it too)
            self.overflows.zero_()
        self.pending = int(state.get("pending", 0))
        grads = state.get("grads")
        if grads is not None:
            for p, g in zip(self.params, grads, strict=True):
                p.grad = None if g is None else g.to(p.device, p.dtype)


class TunedStep(TrainStep):
    """The training step when an update option or an extra column is on (see `Update`).

    Args:
        update: the `Update`; rate: the ``lr`` column's value for the coming update (a 0-d
            device tensor), None without that column. Others as `TrainStep`.
    """

    def __init__(
        self,
        *args: Any,
        update: Update,
        rate: Callable[[], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.update, self.rate = update, rate

    def run(self, x: Any, y: Any, w: Any = None) -> None:
        """One batch (sample weights ``w`` or None): forward under autocast, backward
        (accumulated), the optimizer step when its group is complete, then the values to the
        lens (the loss, the metrics, then the ``grad_norm`` and ``lr`` columns when on)."""
        update, lens = self.update, self.lens
        index, steps = lens.step + 1, lens.steps
        saved = self._buffers()
        sample_weights = None if w is None and self.weigh is None else self._weights(y, w)
        with update.autocast():
            outputs = self._forward(self.model, x)
            if sample_weights is None:
                loss_value = self._loss(outputs, y)
            else:
                if self._loss == self._first_loss:
                    self._first_loss(outputs, y)  # the first batch's checks
                loss_value = weighted_loss(self.loss_fn, outputs, y, sample_weights)
        spread = self.spread
        update.backward(loss_value if spread is None else spread(loss_value), index, steps)
        if self.skips is not None and self.skips(loss_value):  # one host sync per step
            with torch.no_grad():
                for buffer, before in zip(self.model.buffers(), saved, strict=True):
                    buffer.copy_(before)
            update.pending = 0
            lens.skip()
            return
        rate = [self.rate()] if self.rate is not None else []  # before a per-step schedule moves
        norm = update.step() if update.due(index, steps) else None
        detached = _float32(outputs)
        size = batch_size_of(y)
        values: list[Any] = [loss_value.detach().float()]
        weights: list[Any] | None = None
        if sample_weights is None:
            values += [m.batch(detached, y) for m in self.metrics]
        else:
            pairs = [m.weighted(detached, y, sample_weights, size) for m in self.metrics]
            values += [v for v, _ in pairs]
            weights = [size] + [weight for _, weight in pairs]
        if update.grad_norm or weights is not None:  # the lens takes weights for all or none
            weights = weights or [float(size)] * len(values)
            if update.grad_norm:
                weights.append(float(size) if norm is not None else 0.0)  # no update: no norm
                values.append(update.norm_value(norm))
            weights += [float(size)] * len(rate)
        lens.record([*values, *rate], size, weights=weights)


def compiled(model: torch.nn.Module, options: bool | Mapping[str, Any]) -> torch.nn.Module:
    """``torch.compile(model, **options)`` for the training step (``True``: default options);
    the model itself when ``options`` is False. Checkpoints and validation keep the model.

    Raises:
        TypeError: ``options`` neither a bool nor a mapping of `torch.compile` arguments.
    """
    if options is False:
        return model
    if not (options is True or isinstance(options, Mapping)):
        raise TypeError(
            "Expected `compile` to be True, False or a dict of torch.compile arguments "
            f'(e.g. {{"mode": "reduce-overhead"}}). Received: {options!r}.'
        )
    kwargs = dict(options) if isinstance(options, Mapping) else {}
    return torch.compile(model, **kwargs)  # type: ignore[return-value]


def _float32(outputs: Any) -> Any:
    """Detached outputs, floating tensors cast to float32 (metrics accumulate in float32)."""
    if isinstance(outputs, torch.Tensor):
        out = outputs.detach()
        return out.float() if out.is_floating_point() else out
    if isinstance(outputs, tuple | list):
        return type(outputs)(_float32(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _float32(v) for k, v in outputs.items()}
    return outputs


__all__ = [
    "GRAD_NORM",
    "PRECISIONS",
    "Precision",
    "TunedStep",
    "Update",
    "check_update_options",
    "compiled",
    "split_grad_norm",
]
