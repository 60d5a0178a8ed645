"""The one lock of every writer: a trainer's on its run dir, an exporter's on its target.

An flock on a lock file that names its holder. The kernel drops an flock with its process
however it ends (kill -9 included), so there is never a stale lock to judge. Release removes
the file, so nothing is left beside a user's export; a process that opened the file just
before it was removed finds, by its inode, that it holds a lock on a name no longer there and
takes the new file instead.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket


class LockHeld(Exception):
    """The lock is held by another process; `holder` is what its file says ({} if unread)."""

    def __init__(self, path, holder):
        super().__init__(f"{path} is held by {describe(holder)}")
        self.path = path
        self.holder = holder


def describe(holder):
    """A holder ({"pid", "host", "started"}) in words."""
    if not holder:
        return "a process that has not written its name yet"
    return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"


def _read_holder(fd):
    with contextlib.suppress(OSError, ValueError, KeyError):
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode())
        return {key: holder[key] for key in ("pid", "host", "started")}
    return {}


def _same_file(path, fd):
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class FileLock:
    """An exclusive, non-blocking flock on `path` (its directory must exist)."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def acquire(self):
        """Take the lock, or raise LockHeld naming the process that has it."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeld(self.path, holder) from None
            if _same_file(self.path, fd):
                break
            os.close(fd)  # its last holder removed the file after this process opened it
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat("T", "seconds"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        self._fd = fd

    def release(self):
        """Remove the lock file and drop the lock (nothing if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
