"""An exclusive lock on a local file that says who holds it.

Two things in Thaw must never happen twice at once: a local run on one output
directory (one SQLite metadata store, one pipeline root) and a push into one
serving directory (the next version number, the rename into place). Both take
an ``flock`` on a file beside what they guard. The kernel drops an flock when
its holder exits, however it exits, so a killed run leaves no stale lock behind;
the holder writes its pid, host, start time and command into the file so whoever
finds it taken can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from typing import Callable, Iterator


class LockBusy(RuntimeError):
    """The lock is held by another process (named in the message)."""

    def __init__(self, path: str, what: str, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{what} is already in progress: {describe(holder)} holds {path}")


def describe(holder: dict) -> str:
    """'pid 123 on host h since 2026-11-30 02:10:00 UTC (thaw run ...)', or what is known of it."""
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since} "
            f"({holder.get('command', '?')})")


def read_holder(path: str) -> dict:
    """What the holder wrote into the lock file; empty when unreadable or not yet written."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def exclusive(path: str, what: str, wait: float | None = 0,
              on_wait: Callable[[dict], None] | None = None) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` for the ``with`` block.

    ``wait=0`` refuses at once with :class:`LockBusy` when another process holds
    it; ``wait=None`` waits as long as it takes; a number waits that many
    seconds, then refuses. ``on_wait(holder)`` is called once, when waiting starts.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, what, wait, on_wait)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]) or "python"}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a finished holder leaves no name behind
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: str, what: str, wait: float | None,
             on_wait: Callable[[dict], None] | None) -> None:
    deadline = None if wait is None else time.monotonic() + wait
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            raise LockBusy(path, what, read_holder(path))
        if on_wait and not waiting:
            on_wait(read_holder(path))
        waiting = True
        time.sleep(0.2)
