"""The node's data folder and the lock that keeps a second node out of it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType


class DataDirError(Exception):
    """The data folder cannot be used: unwritable, or held by another node."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/taonode.lock``, released when the process exits.

    ``flock`` dies with the process, so a SIGKILLed node never leaves a stale lock behind.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "taonode.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DataDirError(
                f"node.data_dir: cannot create {self.data_dir}: {exc.strerror}"
            ) from None
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise DataDirError(f"node.data_dir: {self.data_dir} is not writable")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(f"node.data_dir: cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"node.data_dir: {self.data_dir} is in use by another taonode (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
