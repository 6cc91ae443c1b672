"""A local-directory RemoteFS for the engine's unit tests (planning, resume decisions, parallelism).

This is not a server double for protocol behaviour (the contract suite uses real
servers); it lets the engine's own logic be checked deterministically: where
bytes are written, which connection wrote them, what a cut connection leaves.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airflow_secure_transfer.exceptions import RemotePathError, SecureTransferError, TransportError
from airflow_secure_transfer.transfer.base import Checksum, RemoteEntry


@dataclass
class FakeServer:
    """A directory served to any number of LocalDirFS connections, with a log of what happened."""

    root: Path
    checksum_algorithm: str | None = None
    #: Cut every write after this many bytes of one write_from call (TransportError); None: never.
    fail_after: int | None = None
    #: Refuse to open more than this many connections at once (TransportError on connect).
    max_sessions: int | None = None
    #: Make connect() raise this (e.g. AuthenticationError) for every connection after the first *n*.
    connect_error: Exception | None = None
    connect_error_after: int = 0
    #: Called with the attempt number (1, 2...) at the start of every connect().
    before_connect: Callable[[int], None] | None = None
    attempts: int = 0
    #: Set whenever no connection is open.
    idle: threading.Event = field(default_factory=threading.Event)
    #: Called with (path, bytes_written_so_far, source) after every block written.
    on_write: Callable[[str, int, Any], None] | None = None
    #: Keep only this many bytes of each write_from call but report success (an FTP data
    #: connection closed early looks like a completed STOR); None: keep everything.
    truncate_after: int | None = None
    #: Raise this from write_from (after the data), e.g. a storage-full error without a path.
    write_error: Exception | None = None
    #: Corrupt the checksum the server reports.
    wrong_checksum: bool = False
    #: The login directory the clients report (FTP PWD / SFTP realpath(".")).
    home: str = "/"
    #: Connections offer ``put_small`` (the fused small-file upload of the real clients).
    put_small: bool = False
    #: ... and ``put_small_many`` (the SFTP client's batches); implies put_small.
    put_small_many: bool = False
    #: Connections can set modification times (``set_mtime``, ``put_small(mtime=)``).
    settable_mtime: bool = True
    #: Report modification times shifted by this many seconds (a server answering in local time).
    mtime_skew: int = 0
    #: Report no modification times at all (LIST-only servers).
    no_mtime: bool = False
    #: (path, mtime) of every modification time set.
    mtimes_set: list[tuple[str, int]] = field(default_factory=list)
    #: Paths read back with read_to.
    reads: list[str] = field(default_factory=list)
    #: Names that listdir leaves out (a listing that misses files); "*": listdir raises RemotePathError.
    hide_from_listing: set[str] = field(default_factory=set)
    stats: list[str] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)
    put_smalls: list[tuple[str, str, int]] = field(default_factory=list)  # (part, target, len(data))
    batches: list[int] = field(default_factory=list)  # files per put_small_many call
    opened: int = 0
    active: int = 0
    max_active: int = 0
    closed: int = 0
    writes: list[tuple[int, str, int]] = field(default_factory=list)  # (conn id, path, offset)
    renames: list[tuple[str, str, int]] = field(default_factory=list)  # (source, target, size)
    files_per_conn: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def local(self, path: str) -> Path:
        assert path.startswith("/"), path
        return self.root / path.lstrip("/")

    def connect(self) -> LocalDirFS:
        with self.lock:
            self.attempts += 1
            attempt = self.attempts
        if self.before_connect is not None:
            self.before_connect(attempt)
        with self.lock:
            if self.connect_error is not None and self.opened >= self.connect_error_after:
                raise self.connect_error
            if self.max_sessions is not None and self.active >= self.max_sessions:
                raise TransportError("421 too many connections")
            self.opened += 1
            self.active += 1
            self.idle.clear()
            self.max_active = max(self.max_active, self.active)
            conn_id = self.opened
        if self.put_small_many:
            return PutSmallManyFS(self, conn_id)
        return PutSmallFS(self, conn_id) if self.put_small else LocalDirFS(self, conn_id)


class LocalDirFS:
    """One 'connection' to a FakeServer."""

    scheme = "file"

    def __init__(self, server: FakeServer, conn_id: int) -> None:
        self.server = server
        self.conn_id = conn_id
        self.home = server.home
        self._closed = False
        self.mtime_trusted = True
        self.can_set_mtime: bool | None = None if server.settable_mtime else False

    def _check(self) -> None:
        assert not self._closed, "used after close"

    def stat(self, path: str) -> RemoteEntry | None:
        self._check()
        with self.server.lock:
            self.server.stats.append(path)
        return self._stat(path)

    def _stat(self, path: str) -> RemoteEntry | None:
        p = self.server.local(path)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        mtime = None if self.server.no_mtime else st.st_mtime + self.server.mtime_skew
        return RemoteEntry(path, p.is_dir(), None if p.is_dir() else st.st_size, mtime)

    def listdir(self, path: str) -> list[RemoteEntry]:
        self._check()
        with self.server.lock:
            self.server.listings.append(path)
        if "*" in self.server.hide_from_listing:
            raise RemotePathError(f"550 {path}: permission denied", path=path)
        out = []
        for child in sorted(self.server.local(path).iterdir()):
            if child.name in self.server.hide_from_listing:
                continue
            entry = self._stat(f"{path.rstrip('/')}/{child.name}")
            assert entry is not None
            out.append(entry)
        return out

    def makedirs(self, path: str) -> None:
        self._check()
        self.server.local(path).mkdir(parents=True, exist_ok=True)

    def write_from(self, path: str, source: IO[bytes], *, offset: int = 0, progress: Any = None) -> int:
        self._check()
        p = self.server.local(path)
        if not p.parent.is_dir():
            raise RemotePathError(f"550 {path}: no such directory", path=path)
        with self.server.lock:
            self.server.writes.append((self.conn_id, path, offset))
        if offset:
            if p.stat().st_size != offset:
                raise RemotePathError(f"resume at {offset} but {path} has {p.stat().st_size} bytes", path=path)
            f = open(p, "r+b")
            f.seek(offset)
        else:
            f = open(p, "wb")
        written = 0
        with f:
            while True:
                block = source.read(64 * 1024)
                if not block:
                    break
                if self.server.fail_after is not None and written + len(block) > self.server.fail_after:
                    f.write(block[: self.server.fail_after - written])
                    f.flush()
                    self.close()
                    raise TransportError("connection reset by peer (injected)")
                if self.server.truncate_after is not None:
                    block = block[: max(self.server.truncate_after - written, 0)]
                f.write(block)
                written += len(block)
                if self.server.on_write:
                    f.flush()
                    self.server.on_write(path, offset + written, source)
        if self.server.write_error is not None:
            raise self.server.write_error
        return written

    def set_mtime(self, path: str, mtime: int) -> bool:
        self._check()
        if not self.server.settable_mtime:
            return False
        with self.server.lock:
            self.server.mtimes_set.append((path, mtime))
        os.utime(self.server.local(path), (mtime, mtime))
        self.can_set_mtime = True
        return True

    def read_to(
        self, path: str, sink: IO[bytes], *, offset: int = 0, progress: Any = None, size: int | None = None
    ) -> int:
        self._check()
        with self.server.lock:
            self.server.reads.append(path)
        data = self.server.local(path).read_bytes()[offset:]
        sink.write(data)
        return len(data)

    def rename(self, source: str, target: str) -> None:
        self._check()
        src = self.server.local(source)
        with self.server.lock:
            self.server.renames.append((source, target, src.stat().st_size))
            self.server.files_per_conn[self.conn_id] = self.server.files_per_conn.get(self.conn_id, 0) + 1
        try:
            os.replace(src, self.server.local(target))
        except OSError as exc:  # e.g. onto a directory: what a server answers with a 550 / SFTP failure
            raise RemotePathError(f"550 rename {source} -> {target}: {exc.strerror}", path=target) from None

    def remove(self, path: str) -> None:
        self._check()
        try:
            self.server.local(path).unlink()
        except FileNotFoundError:
            raise RemotePathError(f"550 {path}: not found", path=path) from None

    def checksum(self, path: str) -> Checksum | None:
        self._check()
        algo = self.server.checksum_algorithm
        if algo is None:
            return None
        digest = hashlib.new(algo, self.server.local(path).read_bytes()).hexdigest()
        if self.server.wrong_checksum:
            digest = ("0" if digest[0] != "0" else "1") + digest[1:]
        return Checksum(algo, digest)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self.server.lock:
                self.server.active -= 1
                self.server.closed += 1
                if self.server.active == 0:
                    self.server.idle.set()

    def __enter__(self) -> LocalDirFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PutSmallFS(LocalDirFS):
    """A connection with ``put_small``, built from the same steps (so the injected faults apply)."""

    def put_small(self, part: str, target: str, data: bytes, *, mtime: int | None = None) -> int | None:
        self._check()
        with self.server.lock:
            self.server.put_smalls.append((part, target, len(data)))
        self.write_from(part, io.BytesIO(data))
        entry = self._stat(part)
        size = None if entry is None else entry.size
        if size == len(data):
            if mtime is not None:
                self.set_mtime(part, mtime)
            self.rename(part, target)
        return size


class PutSmallManyFS(PutSmallFS):
    """A connection with ``put_small_many``: each file on its own, like the SFTP client's."""

    def put_small_many(
        self, items: Sequence[tuple[str, str, bytes]], *, mtimes: Sequence[int | None] | None = None
    ) -> list[int | SecureTransferError | None]:
        self._check()
        with self.server.lock:
            self.server.batches.append(len(items))
        out: list[int | SecureTransferError | None] = []
        for i, (part, target, data) in enumerate(items):
            try:
                out.append(self.put_small(part, target, data, mtime=None if mtimes is None else mtimes[i]))
            except TransportError:
                raise  # the connection is gone: the whole call fails
            except SecureTransferError as exc:
                out.append(exc)
        return out
