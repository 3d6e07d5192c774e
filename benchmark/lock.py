"""One writer per results folder: an advisory lock held for the whole of a ``bench run`` (or a report).

Two runs on one folder with different settings would otherwise write each other's manifest and
tables. The lock is ``<folder>/.lock`` (``filelock``, an ``flock`` on POSIX, released by the kernel when
the process dies, so a killed run never leaves it stuck); ``<folder>/.lock.holder`` says who holds it
(pid, host, command, since), for the message a second run prints while it waits, or fails with under
``--no-wait``. Cells stay safe to share between folders and runs: they are written atomically under
their fingerprint. A folder the run created and left empty (bad input found before any result) is
removed again. Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from benchmark.atomic import WriteError, atomic_write_text, write_problem
from benchmark.errors import BenchError

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"


class FolderLocked(BenchError):
    """Another process holds the results folder's lock (and the caller asked not to wait)."""


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER_NAME).read_text())
        return (f"pid {info.get('pid')} on {str(info.get('host'))[:80]} since {str(info.get('since'))[:40]}: "
                f"{str(info.get('command'))[:200]}")
    except (OSError, ValueError, AttributeError):
        return "another bench process"


def _prepare(folder: Path) -> list[Path]:
    """Create the folder (and its parents), or say clearly why it cannot be one.

    Returns:
        The folders this call created, deepest first.
    """
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{folder}: is a file, not a results folder; choose another --results-dir or suite name")
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{folder}: cannot create the results folder: {write_problem(exc)}") from None
    return created


def _remove_if_unused(created: list[Path]) -> None:
    """Remove the folders a run created but wrote nothing into (bad input found before any result)."""
    folder = created[0]
    if {p.name for p in folder.iterdir()} <= {LOCK_NAME}:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        for p in created:
            try:
                p.rmdir()
            except OSError:
                return


@contextlib.contextmanager
def folder_lock(folder: Path, *, wait: bool = True, poll: float = 0.5) -> Iterator[None]:
    """Hold ``folder``'s lock for the block.

    Args:
        folder: a results folder (created if absent).
        wait: wait for another holder to finish (printing who holds it); False: fail at once.
        poll: seconds between attempts while waiting.

    Raises:
        FolderLocked: another process holds the lock and ``wait`` is False.
        WriteError: the folder cannot be created or written (a file in its place, read-only, full).
    """
    folder = Path(folder)
    created = _prepare(folder)
    lock = FileLock(str(folder / LOCK_NAME), thread_local=False)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = _holder(folder)
            if not wait:
                raise FolderLocked(f"{folder}: another run is using this results folder ({holder}); "
                                   f"rerun when it has finished, or without --no-wait to wait for it") from None
            print(f"{folder}: another run is using this results folder ({holder}); waiting for it to finish "
                  f"(Ctrl-C to stop, --no-wait to fail instead)", file=sys.stderr, flush=True)
            while True:
                try:
                    lock.acquire(poll_interval=poll)
                    break
                except FileNotFoundError:  # the holder removed the empty folder it had created
                    _prepare(folder)
    except OSError as exc:
        raise WriteError(f"{folder}: cannot create its lock file: {write_problem(exc)}") from None
    try:
        with contextlib.suppress(WriteError):  # the holder note is a courtesy to waiting runs
            atomic_write_text(folder / HOLDER_NAME, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv)[:1000]}))
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_NAME).unlink()
        if created:  # while still holding the lock; filelock refuses a lock on an unlinked file
            with contextlib.suppress(OSError):
                _remove_if_unused(created)
        lock.release()
