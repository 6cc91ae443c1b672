"""Start writing a large download's partial to disk while it is still arriving.

A download is durable before its rename: its partial is fsynced, then ``os.replace``d. Done
only at the end, that fsync writes the whole file out while nothing else happens (256 MiB:
~0.08 s on this project's 2-core benchmark VM, ~10 % of the download; OpenSSH ``sftp -f``
pays the same). :class:`EarlyWriteback` moves most of that wait under the transfer: after
every :data:`WRITEBACK_EVERY` bytes written, a helper thread ``fdatasync``\\ s the partial (the
system call sleeps in the kernel, without the GIL, while the transfer goes on), so the final
fsync finds at most the last stretch still dirty.

Nothing is weakened: the final ``fsync`` still runs and still decides. What the helper's
``fdatasync`` reports is not dropped either: since Linux 4.13 a write-back error is reported
once per open file, so an ``EIO`` or ``ENOSPC`` that the helper saw would be gone by the time
of the final fsync. The helper keeps the first such error and :meth:`EarlyWriteback.finish`
raises it, so the caller fails the file exactly as if its own fsync had seen it.

Imports no Airflow.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Final

__all__ = ["WRITEBACK_EVERY", "WRITEBACK_MIN_SIZE", "EarlyWriteback"]

#: Bytes written between two early syncs: big enough that a sync's fixed cost is small, small
#: enough that the final fsync has little left.
WRITEBACK_EVERY: Final = 32 << 20
#: Files smaller than this get no helper thread: their final fsync is short anyway.
WRITEBACK_MIN_SIZE: Final = 2 * WRITEBACK_EVERY

_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class EarlyWriteback:
    """A helper thread that syncs *fd* after every *every* bytes reported by :meth:`wrote`.

    Use as a context manager around the writing; call :meth:`finish` before the final fsync.
    *fd* must stay open until the ``with`` block ends (the thread is joined there, whatever
    happened). :meth:`wrote` only counts and, now and then, sets an event: it never blocks
    the writer.
    """

    def __init__(self, fd: int, *, every: int | None = None) -> None:
        every = WRITEBACK_EVERY if every is None else every
        if every <= 0:
            raise ValueError(f"every must be > 0, got {every}")
        self._fd = fd
        self._every = every
        self._unsynced = 0
        self._wake = threading.Event()
        self._stop = False
        self._error: OSError | None = None
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name="ast-writeback", daemon=True)

    def __enter__(self) -> EarlyWriteback:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._join()

    def wrote(self, n: int) -> None:
        """*n* more bytes were handed to the file (they may still be in a user-space buffer)."""
        self._unsynced += n
        if self._unsynced >= self._every:
            self._unsynced = 0
            self._wake.set()

    def finish(self) -> None:
        """Stop the helper (waiting for a sync it has begun); raise the first error a sync reported.

        :raises OSError: what the helper's ``fdatasync`` reported (``EIO``, ``ENOSPC``, ``EDQUOT``...).
        """
        self._join()
        if self._error is not None:
            raise self._error

    def clean(self) -> bool:
        """Stop the helper; True when no sync reported an error (the bytes so far may be trusted for a resume)."""
        self._join()
        return self._error is None

    def _join(self) -> None:
        if not self._thread.is_alive():
            return
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                _datasync(self._fd)
            except OSError as exc:
                # Kept for finish(): the kernel reports a write-back error once per open file.
                self._error = self._error or exc
                return
            self.syncs += 1
