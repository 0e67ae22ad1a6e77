"""The one way fitlens writes a file: atomic, durable, and never through a symbolic link.

`write_atomic` writes the bytes to a new temporary file in the target's directory, created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` under an unpredictable name (so a planted file or link at that
name makes the open fail instead of being followed), fsyncs it, renames it over the target
(``os.replace`` replaces a link at the target itself, never the file it points to) and fsyncs
the directory so that the rename survives a power cut. A reader sees the old file or the new
one, never a half-written one. `open_append` opens a file for appending without following a
link. `TEMPORARY` matches the temporary names, for clean-up after a killed process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, TextIO

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows, where links need privileges
TEMPORARY = ".*.fitlens-tmp"  # glob of the temporary names, in the target's directory


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename) to disk; nothing on Windows, where renames are
    atomic and directories cannot be opened."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(directory: Path, name: str) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = directory / f".{name}.{secrets.token_hex(8)}.fitlens-tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp  # mode 0o666 & ~umask, as open() gives
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a temporary file in {directory} (100 names taken).")


def _write_bytes(f: BinaryIO, data: bytes) -> None:
    f.write(data)  # a seam: the crash tests kill the process half-way through a write here


def _publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)  # a seam: the crash tests kill the process around the rename here
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (new temp file, fsync, rename, fsync
    of the directory); returns ``path``.

    A symbolic link at ``path`` is replaced by the file, not followed. On any error the
    temporary file is removed and ``path`` is left as it was.

    Raises:
        OSError: the directory is missing or not writable, the disk is full, ``path`` is a
            directory, ...
    """
    path = Path(path)
    fd, tmp = _create_temporary(path.parent, path.name)
    try:
        with open(tmp, "wb", opener=lambda _name, _flags: fd) as f:  # f.name: the temp path
            _write_bytes(f, data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def open_append(path: str | Path) -> TextIO:
    """Open a text file for appending (created if missing) without following a link at
    ``path`` (`OSError` instead)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o666)
    return os.fdopen(fd, "a", newline="", encoding="utf-8")


def remove_temporaries(directory: Path) -> None:
    """Delete the temporary files a killed `write_atomic` left in ``directory``."""
    for p in directory.glob(TEMPORARY):
        p.unlink(missing_ok=True)


__all__ = ["fsync_dir", "open_append", "remove_temporaries", "write_atomic"]
