"""One run per campaign directory: an ``flock`` on ``DIR/run.lock``.

``alcsp run`` holds an exclusive lock on the file for as long as it runs. The kernel drops
the lock when the holding process dies, however it dies (``kill -9`` included), so a lock
left by a killed run is never stale: the next run simply takes it. The file itself stays;
what it holds (pid, host, start time of the last holder) is only for messages. Readers
(``alcsp status``, ``report``, ``export``) never take the lock; ``holder`` tells who, if
anyone, holds it.

``flock`` works on local file systems (and on NFS through Linux's emulation with POSIX
locks); the campaign's SQLite database needs a local file system anyway.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "run.lock"
#: How long ``acquire`` retries before refusing: a reader's ``holder`` probe takes a shared
#: lock for a few microseconds, which must not make a run refuse to start.
_PATIENCE_S = 1.0


class LockError(ValueError):
    """The campaign directory cannot be locked (a user error: the CLI prints it as one
    line and exits with status 2)."""


class CampaignBusy(LockError):
    """The campaign directory is being run by another process."""


@dataclass(frozen=True)
class LockHolder:
    """The process holding a campaign directory's lock (pid 0 when it has not written its
    details yet)."""

    pid: int
    host: str
    started: float  # time.time() when it took the lock

    def describe(self) -> str:
        if not self.pid:
            return "another process"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} (since {since})"


class DirectoryLock:
    """The exclusive lock of one campaign directory, held from ``acquire`` to
    ``release`` (or the end of a ``with`` block, or the death of this process)."""

    def __init__(self, directory: Path, fd: int):
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | os.PathLike) -> DirectoryLock:
        """Take the lock of ``directory`` (which must exist), or raise ``CampaignBusy``
        naming the process that holds it."""
        d = Path(directory).absolute()
        # Not inherited by child processes (os.open's default): a worker or job that
        # outlives this process must not keep the directory locked.
        try:
            fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(
                f"cannot open the lock file {d / LOCK_NAME} ({exc.strerror}); "
                "running a campaign needs write access to its directory"
            ) from None
        deadline = time.monotonic() + _PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                who = _read_holder(fd)
                os.close(fd)
                raise CampaignBusy(
                    f"{d} is being run by {who.describe() if who else 'another process'}; "
                    "wait for that run to end (or stop it) before running this campaign"
                ) from None
            except BaseException:
                os.close(fd)
                raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(d, fd)

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays, naming its last holder."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(directory: str | os.PathLike) -> LockHolder | None:
    """Who is running the campaign in ``directory`` now (None: nobody). Safe to call while
    a run holds the lock; needs only read access."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held exclusively: a run is in progress
            for _ in range(5):  # its details are written just after it takes the lock
                who = _read_holder(fd)
                if who is not None:
                    return who
                time.sleep(0.02)
            return LockHolder(0, "", 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def recorded_holder(directory: str | os.PathLike) -> LockHolder | None:
    """The process that last took the lock of ``directory``, as its file records it
    (None: no record), whether or not that process still holds it."""
    try:
        fd = os.open(Path(directory) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> LockHolder | None:
    """The holder details in the lock file (None when empty or being written)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return LockHolder(int(info["pid"]), str(info["host"]), float(info["started"]))
    except (ValueError, TypeError, KeyError):
        return None
