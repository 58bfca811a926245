"""The lock of a results folder: one run at a time writes into ``<out>/<suite>/``.

A run holds an exclusive OS lock (``fcntl.flock``) on ``<out>/<suite>/.lock`` from before it
touches the folder until it has written its outputs. The operating system releases the lock
when the process dies, however it dies (SIGKILL included), so a killed run never leaves a
folder locked: the next run takes the lock over and rewrites the file. The file holds who
holds the lock (process id, host, start time, command line), for the message of a second run,
which stops at once (:class:`FolderInUse`) instead of computing the same cells again. The
file is removed when the lock is released. Within one process the lock is re-entrant: the
command line takes it before its progress display starts, and the runner's own acquisition
inside it is a no-op.

Commands that only read a folder (``report``, ``leaderboard``, ``compare``) take no lock.
Where ``fcntl`` does not exist (Windows) the run goes on unlocked with a warning.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import MoebenchError
from .store import check_writable, refuse_links

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

#: The folders this process holds the lock of (resolved path -> the lock that holds it).
_HELD: dict[Path, FolderLock] = {}


class FolderInUse(MoebenchError):
    """Another run holds the lock of the results folder."""


def lock_holder(path: Path) -> dict[str, Any]:
    """What a lock file says about the run that holds it (``{}`` when it says nothing)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 123 on host, started 2025-01-01T10:00:00+00:00: moebench run s.yaml``."""
    if not holder.get("pid"):
        return "a run that has not said who it is yet"
    text = f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    command = holder.get("command")
    if isinstance(command, list) and command:
        text += ": " + " ".join([Path(str(command[0])).name, *map(str, command[1:])])
    return text


class FolderLock:
    """The exclusive lock of one results folder, held from :meth:`acquire` to :meth:`release`
    (also a context manager).

    Parameters
    ----------
    directory
        ``<out>/<suite>``; created if needed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None
        self._nested = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now (itself, or inside another of this
        process)."""
        return self._fd is not None or self._nested

    def acquire(self) -> FolderLock:
        """Take the lock, or stop at once when another run holds it.

        Raises
        ------
        FolderInUse
            Another process holds the lock: the message says which (pid, host, start time,
            command line).
        MoebenchError
            The folder cannot be written, or ``.lock`` or a file a run writes there is a
            symbolic link (:func:`moebench.execution.store.refuse_links`).
        """
        if fcntl is None:
            warnings.warn(f"results folders cannot be locked on this platform: do not start a "
                          f"second run into {self.directory} before this one ends", stacklevel=2)
            return self
        check_writable(self.directory)
        refuse_links(self.directory)  # before anything shows that a run started
        outer = _HELD.get(self.directory.resolve())
        if outer is not None and outer.held:
            self._nested = True
            return self
        while self._fd is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FolderInUse(
                        f"{self.directory} is in use by another moebench run "
                        f"({describe_holder(lock_holder(self.path))}); wait for it to end or "
                        "stop it: two runs into one folder would compute the same cells "
                        "twice") from None
                warnings.warn(f"{self.path} cannot be locked ({exc.strerror}): do not start a "
                              "second run into this folder before this one ends", stacklevel=2)
                return self
            if self._is_current(fd):
                self._fd = fd
            else:  # released and removed by its holder between our open and flock: again
                os.close(fd)
        self._write_holder()
        _HELD[self.directory.resolve()] = self
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                           | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MoebenchError(f"{self.path} is a symbolic link: moebench does not write "
                                    "through links in a results folder; remove it") from None
            raise MoebenchError(f"cannot lock {self.directory}: {self.path}: "
                                f"{exc.strerror or exc}") from None

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at :attr:`path` (not one its holder removed)."""
        try:
            return os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            return False

    def _write_holder(self) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(UTC).isoformat(timespec="seconds"),
                  "command": sys.argv}
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(holder, default=str) + "\n").encode(), 0)

    def release(self) -> None:
        """Give the lock back and remove the lock file (nothing when not held, or held
        inside another lock of this process)."""
        self._nested = False
        if self._fd is None:
            return
        if _HELD.get(self.directory.resolve()) is self:
            del _HELD[self.directory.resolve()]
        if self._is_current(self._fd):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # a run that failed before it could release the lock
        if self._fd is not None:
            os.close(self._fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
