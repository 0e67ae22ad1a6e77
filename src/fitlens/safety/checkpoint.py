"""Checkpoint files: atomic, checksummed writes and safe loads.

A checkpoint file is a fixed header followed by a ``torch.save`` payload::

    b"FITLENS-CKPT-v1\\n"  (16 bytes)  magic and format version
    sha256(payload)        (32 bytes)
    len(payload)           (8 bytes, little-endian)
    payload                (torch.save of a dict of tensors, numbers, strings, lists, dicts)

Writes go through `fitlens.core.files.write_atomic`, like every file fitlens writes: a new
temporary file in the same directory (unpredictable name, created exclusively, never through a
link), flushed and fsync'ed, renamed over the final name, then the directory fsync'ed. A reader
sees either the old set of files or the new one, never a half-written checkpoint.

Loads are safe: only regular files are opened (no links, FIFOs or devices), no more bytes are
read than the header announces, the checksum is verified first (a truncated or corrupted file raises
`CorruptCheckpointError`), then the payload is read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers. A payload that carries any other pickled object is
refused with `UnsafeCheckpointError`, and nothing in it is executed.

NumPy arrays (estimator windows, NumPy's RNG state) are stored as tensors and come back as
arrays, so no NumPy global has to be allowed into the unpickler.

`CheckpointStore` keeps the newest ``keep`` checkpoints of a run in one directory; the previous
good checkpoint is only deleted once the new one is complete. `Checkpointing` says when `fit`
writes them.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitlens.core.files import NOFOLLOW, remove_temporaries, write_atomic

MAGIC = b"FITLENS-CKPT-v1\n"
_HEADER = len(MAGIC) + 32 + 8
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
_NDARRAY = "__fitlens_ndarray__"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, damaged, or not a fitlens checkpoint (its checksum does not match)."""


class UnsafeCheckpointError(CheckpointError):
    """The payload holds pickled objects other than tensors and plain containers."""


class NoLoadableCheckpointError(CheckpointError):
    """A run directory holds checkpoints, but none of them can be loaded.

    Attributes:
        failures: ``(path, why)`` for each checkpoint file, newest first.
    """

    def __init__(self, message: str, failures: list[tuple[Path, str]]) -> None:
        super().__init__(message)
        self.failures = failures


def _pack(obj: Any) -> Any:
    """Replace NumPy arrays by tensors (tagged) so that ``weights_only`` loading accepts them."""
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_pack(v) for v in obj)
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY}:
            return obj[_NDARRAY].numpy()
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_unpack(v) for v in obj)
    return obj


def encode(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file holding ``state`` (header, checksum, payload)."""
    buffer = io.BytesIO()
    torch.save(_pack(state), buffer)
    return frame(buffer.getvalue())


def frame(payload: bytes) -> bytes:
    """Prefix raw ``payload`` bytes with the magic, their sha256 and their length."""
    digest = hashlib.sha256(payload).digest()
    return MAGIC + digest + struct.pack("<Q", len(payload)) + payload


def decode(data: bytes | bytearray, source: str = "<bytes>") -> dict[str, Any]:
    """Verify and load checkpoint bytes.

    Raises:
        CorruptCheckpointError: bad magic, wrong length or checksum mismatch.
        UnsafeCheckpointError: the payload holds anything but tensors and plain containers.
    """
    if not data.startswith(MAGIC):
        raise CorruptCheckpointError(
            f"{source} is not a fitlens checkpoint (expected it to start with {MAGIC!r}); "
            "it may be truncated, or written by another tool."
        )
    digest = data[len(MAGIC) : len(MAGIC) + 32]
    (length,) = (
        struct.unpack("<Q", data[len(MAGIC) + 32 : _HEADER]) if len(data) >= _HEADER else (-1,)
    )
    payload = memoryview(data)[_HEADER:]  # no copy of a large payload
    if length != len(payload) or hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpointError(
            f"{source} is truncated or corrupted: its sha256 checksum does not match its "
            f"content ({len(payload)} payload bytes, header says {length})."
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"Refusing to load {source}: it holds pickled objects other than tensors and plain "
            "containers, which could run arbitrary code. Nothing in it was executed. Only load "
            f"checkpoints you wrote with fitlens. Details: {str(e).splitlines()[0]}"
        ) from e
    if not isinstance(state, dict):
        raise CorruptCheckpointError(
            f"{source} holds a {type(state).__name__}, not a fitlens checkpoint dict."
        )
    return _unpack(state)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` as a checksummed checkpoint, atomically.

    Example:
        >>> p = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)})  # doctest: +SKIP
        >>> load_checkpoint(p)["w"]  # doctest: +SKIP
        tensor([1., 1.])
    """
    return write_atomic(path, encode(state))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by `save_checkpoint` (see `decode` for errors).

    Only a regular file is read, and no more of it than its header announces: a symbolic link,
    a FIFO or a device (``/dev/zero``) is refused with `CorruptCheckpointError` before anything
    is read, and a file whose size differs from its header's is refused unread.
    """
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if path.is_symlink():
            raise CorruptCheckpointError(
                f"{path} is a symbolic link; fitlens writes checkpoints as regular files and "
                "does not follow links."
            ) from e
        raise
    with open(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CorruptCheckpointError(f"{path} is not a regular file; not a checkpoint.")
        header = f.read(_HEADER)
        length = struct.unpack("<Q", header[-8:])[0] if len(header) == _HEADER else -1
        if header.startswith(MAGIC) and info.st_size != _HEADER + length:
            raise CorruptCheckpointError(
                f"{path} is truncated or corrupted: {info.st_size} bytes, its header says "
                f"{_HEADER + length}."
            )
        if not header.startswith(MAGIC):
            return decode(header, source=str(path))
        data = bytearray(info.st_size)  # one buffer of the announced size, filled in place
        data[:_HEADER] = header
        f.readinto(memoryview(data)[_HEADER:])
    return decode(data, source=str(path))


class CheckpointStore:
    """The numbered checkpoints of one run: ``ckpt-00000001.pt``, ``ckpt-00000002.pt``, ...

    Args:
        directory: where the checkpoints live (created if missing).
        keep: how many of the newest checkpoints to keep (>= 2, so that a good one remains
            while the next is written and if the newest turns out damaged).
    """

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise ValueError(f"Expected `keep` to be an integer >= 2. Received: {keep!r}.")
        self.directory = Path(directory)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Complete checkpoint files, oldest first (temporary files are not listed)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def remove_temporaries(self) -> None:
        """Delete temporary files left by a write that was killed."""
        if self.directory.is_dir():
            remove_temporaries(self.directory)
            for p in self.directory.glob(".ckpt-*.tmp-*"):  # names written by earlier versions
                p.unlink(missing_ok=True)

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` as the next checkpoint, then delete those beyond ``keep``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.paths()
        number = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        path = save_checkpoint(self.directory / f"ckpt-{number:08d}.pt", state)
        for old in [*existing, path][: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def scan(self) -> tuple[tuple[Path, dict[str, Any]] | None, list[tuple[Path, str]]]:
        """The newest checkpoint that verifies (or None), and why each newer one failed.

        Nothing is changed on disk and nothing is warned. `UnsafeCheckpointError` is raised,
        not skipped: a file that carries code is not an accident to work around.
        """
        failures: list[tuple[Path, str]] = []
        for path in reversed(self.paths()):
            try:
                return (path, load_checkpoint(path)), failures
            except UnsafeCheckpointError:
                raise
            except (CorruptCheckpointError, OSError) as e:
                failures.append((path, str(e)))
        return None, failures

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies, or None when there is none (see `scan`)."""
        return self.scan()[0]

    def resume_from(self, allow_fresh: bool = False) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint a resumed run continues from, or None to start afresh.

        Checkpoint files that cannot be loaded are never deleted: once the run moves past them
        (an older checkpoint is used, or ``allow_fresh``) they are renamed to
        ``<name>.unreadable`` (numbered if taken), where no later save deletes them, and a
        warning names each one and the checkpoint actually used.

        Args:
            allow_fresh: when checkpoint files exist but none loads, start afresh (with a
                warning) instead of raising.

        Raises:
            NoLoadableCheckpointError: checkpoint files exist, none loads, and not
                ``allow_fresh``. The files are left untouched.
            UnsafeCheckpointError: see `scan`.
        """
        found, failures = self.scan()
        if not failures:
            return found
        listing = "".join(f"\n  {path}: {why}" for path, why in failures)
        if found is None and not allow_fresh:
            raise NoLoadableCheckpointError(
                f"Cannot resume from {self.directory}: none of its {len(failures)} checkpoint "
                f"file(s) can be loaded:{listing}\nThe files are left as they are. To start "
                'this run over deliberately, pass resume="allow_fresh" (the unreadable files '
                "are kept, renamed to *.unreadable), or choose a new run_dir.",
                failures,
            )
        kept = "".join(f"\n  {_set_aside(path)}" for path, _ in failures)
        used = f"resuming from {found[0]}" if found else 'starting afresh (resume="allow_fresh")'
        warnings.warn(
            f"{len(failures)} checkpoint file(s) in {self.directory} cannot be loaded; "
            f"{used}.{listing}\nThey are kept, renamed to:{kept}",
            RuntimeWarning,
            stacklevel=2,
        )
        return found


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to a free ``<name>.unreadable[-N]``, which no save lists or deletes."""
    n = 1
    while True:
        aside = path.with_name(f"{path.name}.unreadable" + (f"-{n}" if n > 1 else ""))
        if not aside.exists() and not aside.is_symlink():
            path.rename(aside)
            return aside
        n += 1


@dataclass(frozen=True)
class Checkpointing:
    """When to write checkpoints and what else to put in them.

    Args:
        every_steps: write one every this many training steps (None: not step-based).
        every_minutes: write one when this many minutes have passed since the last (None: not
            time-based). The default, 10 minutes, bounds the loss on a crash to 10 minutes of
            training for any speed of step.
        keep: how many recent checkpoints to keep (>= 2).
        scheduler: an LR scheduler you step yourself (e.g. in a callback's ``on_epoch_end``),
            to save and restore with the checkpoint. A scheduler given to ``fit(scheduler=...)``
            is stepped, saved and restored by ``fit``: do not name it here (the same object is
            accepted, another is refused).
        override_on_resume: optimizer hyper-parameters (keys of its ``param_groups``, e.g.
            ``("lr",)`` or ``("lr", "weight_decay")``) that a resume takes from this call's
            optimizer instead of the checkpoint: a deliberate new learning rate. Everything
            else (weights, the optimizer's moments and step counts, the other
            hyper-parameters, the data position) is restored exactly; each value that changes
            is named in a warning. Without it, a resume whose optimizer settings differ from
            the run's stops with an error. Not with ``"lr"`` and a scheduler (this one or
            ``fit``'s: the restored scheduler would steer the rate from the checkpoint's values).

    A checkpoint is also written at every epoch end and on SIGINT/SIGTERM.

    Example:
        >>> Checkpointing(every_steps=500, every_minutes=None).every_steps
        500
    """

    every_steps: int | None = None
    every_minutes: float | None = 10.0
    keep: int = 2
    scheduler: Any = None
    override_on_resume: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        keys = self.override_on_resume
        if isinstance(keys, str) or not isinstance(keys, tuple | list):
            raise ValueError(
                "Expected `override_on_resume` to be a tuple of optimizer hyper-parameter names, "
                f"e.g. ('lr',). Received: {keys!r}."
            )
        if not all(isinstance(k, str) and k and k != "params" for k in keys):
            raise ValueError(
                "Expected `override_on_resume` to hold hyper-parameter names (str, not "
                f"'params'). Received: {keys!r}."
            )
        object.__setattr__(self, "override_on_resume", tuple(keys))
        if "lr" in keys and self.scheduler is not None:
            raise ValueError(
                "override_on_resume=('lr', ...) cannot be combined with `scheduler`: the restored "
                "scheduler would keep steering the learning rate from the checkpoint's values. "
                "Change the rate through the scheduler instead."
            )
        s = self.every_steps
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(
                f"Expected `every_steps` to be an integer >= 1 or None. Received: {s!r}."
            )
        m = self.every_minutes
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | float) or not m > 0):
            raise ValueError(
                f"Expected `every_minutes` to be a number > 0 or None. Received: {m!r}."
            )
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 2:
            raise ValueError(f"Expected `keep` to be an integer >= 2. Received: {self.keep!r}.")
        if self.scheduler is not None and not hasattr(self.scheduler, "state_dict"):
            raise TypeError(
                "Expected `scheduler` to be a torch LR scheduler (with state_dict). Received: "
                f"{type(self.scheduler).__name__}."
            )
