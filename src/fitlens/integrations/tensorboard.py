"""`fitlens.TensorBoard`: the figures fitlens shows, written as TensorBoard scalars, as a `fit`
callback.

A thin shell: at ``on_train_begin`` it attaches a `fitlens.view.tensorboard.TensorBoardWriter`
to the run's `Lens` (the one mechanism that ``fit(..., tensorboard=dir)`` and the Keras and
Lightning callbacks' ``tensorboard=`` use too); the tags, their steps and values are described
there. It overrides no batch hook, so `fit` never builds batch logs for it: no host sync. It
closes its event file at ``on_train_end`` and, when training raises, at ``on_exception``.

Needs the ``tensorboard`` package (``pip install 'fitlens[tensorboard]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fitlens.training.callbacks import Callback
from fitlens.view.tensorboard import TensorBoardWriter, param_group_rates


class TensorBoard(Callback):
    """Write each metric's running mean, now estimate and epoch-end values for TensorBoard.

    ``fit(..., tensorboard=log_dir)`` does the same without a callback.

    Args:
        log_dir: the directory for the event files (``tensorboard --logdir LOG_DIR``).
        flush_secs: the longest time between writes to disk, in seconds.

    Raises:
        ImportError: Without the tensorboard package (naming the extra to install).

    Example:
        >>> cb = fitlens.TensorBoard("runs/tb")  # doctest: +SKIP
        >>> fitlens.fit(model, data, ..., callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path, flush_secs: float = 10.0) -> None:
        self.writer = TensorBoardWriter(log_dir, flush_secs)
        self.log_dir = self.writer.log_dir

    def on_train_begin(self, logs: Mapping[str, float]) -> None:
        optimizer = self.run.optimizer
        self.writer.attach(self.run.lens, lambda: param_group_rates(optimizer))

    def on_train_end(self, logs: Mapping[str, float]) -> None:
        self.close()

    def on_exception(self, error: BaseException) -> None:
        self.close()  # what was written up to the error is on disk, the file closed

    def close(self) -> None:
        """Flush and close the event file (also done when training ends, normally or with an
        exception)."""
        self.writer.detach()


__all__ = ["TensorBoard"]
