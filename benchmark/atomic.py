"""Atomic file writes: temporary file in the same folder, flush, fsync, ``os.replace``.

A reader (or a rerun after a kill) therefore sees either the old file or the complete new one,
never a half-written file. A write the file system refuses (full disk, read-only folder, no
permission, a file where a folder should be) raises :class:`WriteError` naming the folder, after
removing its temporary file: what was written before stays valid.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from benchmark.errors import BenchError

#: Errors of the file system rather than of the program: bad input to report, not a crash.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                          errno.EEXIST, errno.EFBIG, errno.EISDIR, errno.ENAMETOOLONG})


class WriteError(BenchError):
    """A file could not be written (disk full, read-only folder, permissions); nothing half-written is left."""


def write_problem(exc: OSError) -> str:
    """The file system's reason, in words (``No space left on device``)."""
    return exc.strerror or type(exc).__name__


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(file_object)`` to a temporary name, fsync, then rename into place.

    Raises:
        WriteError: the file system refused the write (see ``WRITE_ERRNOS``).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results and checkpoints are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise WriteError(f"{path.parent}: cannot write {path.name}: {write_problem(exc)}; "
                             f"files written before are intact") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace a UTF-8 text file."""
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))
