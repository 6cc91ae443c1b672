"""The upload engine: plan, then send each file atomically, verified, resumable, in parallel.

Every way of uploading in this package (the operator, the CLI, hook helpers) goes
through :func:`upload`. It imports no Airflow and talks to servers only through
the :class:`~airflow_secure_transfer.transfer.base.RemoteFS` protocol, so the same
code runs over FTPS and SFTP.

One file, step by step (``_FileUpload.run``)::

    stat(target)                      overwrite="fail": exists -> error, nothing sent
                                      overwrite="skip_identical": skipped only on proof: same size
                                      and server checksum, else same size and mtime (to the second,
                                      the time preserve_mtime set; a file modified in the last 2 s
                                      is never skipped on its time); otherwise uploaded
    stat(.name.<id>.part)             smaller than the source: resume from its size
                                      larger / not a file: remove it, start again
    write_from(part, offset)          sha256 computed while reading the local file
    set_mtime(part)                   preserve_mtime: the local file's mtime (SFTP setstat, FTP MFMT/MDTM)
    stat(part)                        size must equal the source's (the mtime read back must be the one set)
    checksum(part)                    verify="checksum" only: the server's digest, else part read back
                                      (SHA-256); must equal the local digest
    rename(part, target)              the final name only ever holds a verified file
    unlink(local)                     delete_source: only when its bytes were proven (upload, checksum)
                                      and its real path lies under the named source's

Fewer round trips, same checks, where the client offers them: a single file's first
stats (target, partial, parent) go out together (``stat_many``; FTPS: one pipelined
burst, with the data connection's ``EPSV`` on vsftpd), and ``set_mtime`` + ``stat(part)``
go with the end of the upload (``write_then_stat``; FTPS: one burst after the ``226``,
or with the last data to vsftpd, whose answers are read after its ``226``).

Many files into one directory (at least ``_LIST_MIN_FILES``): the directory is
listed once, and the listing answers both stats for every file in it (a listed
partial is stat'ed again before it is resumed; with ``overwrite="fail"`` the target
is always stat'ed, so a listing that missed a file can never cause a replacement).
A listing can only make the engine do more work, never skip a check that protects
data: a target missing from it is replaced anyway (``"replace"``) or uploaded again
(``"skip_identical"``), a partial missing from it is sent again from byte 0.

Small files (up to ``_SMALL_FILE``, nothing to resume, ``verify="size"``) are read
into memory, hashed, and sent with the client's ``put_small``: write, size check
and rename in one pipelined exchange (SFTP: OPEN, WRITE+FSTAT+CLOSE, RENAME) with
the same guarantees as the steps above. A client with ``put_small_many`` (SFTP,
FTPS) gets them in batches (up to ``_BATCH_FILES`` files or ``_BATCH_BYTES``; a
client that sends them one after the other names its own ``put_small_batch``
and gets its share of the last files), pipelined on its session; each file
still succeeds or fails on its own. A
worker sends its batch when it is full, when the queue is empty, and before it
reports another file's error (so a failure cannot strand files it had taken).

The temporary name ``.<name>.<sha256(abs path|size|mtime_ns)[:16]>.part`` is
derived from the source's identity, so a retry of the same task finds the
partial that a cut connection left, while a changed source gets a new name and
never continues someone else's bytes.

Parallelism: up to ``max_connections`` worker threads, each owning one connection
for many files (a 1,000-file upload opens at most ``max_connections`` connections).
One large file (``segments.SEGMENT_MIN_FILE``, 64 MiB) to a far SFTP server with
``copy-data`` is split over the worker slots the run does not use: each segment its
own resumable partial, joined server-side, then verified and renamed as above (see
:mod:`~airflow_secure_transfer.transfer.segments`).
The first connection is opened before any worker starts, so a wrong password or
host key fails once, fast, with one clear error.

Failures: a transport error, or a partial shorter than the source after the
upload (an FTP data connection that ended early), keeps the partial for the next
try to resume; any other error removes it. A retryable error fails that file and
the others carry on (the run raises at the end); a non-retryable one (or a full
disk) cancels the run: the other workers stop at their next block, keep their
partials, and every connection is closed. The resumed prefix is trusted by size;
``verify="checksum"`` also checks it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import logging
import math
import os
import posixpath
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn, cast

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    IntegrityError,
    LimitExceededError,
    LocalPathError,
    RemotePathError,
    RemoteStorageFullError,
    SecureTransferError,
    TransportError,
)
from airflow_secure_transfer.security.paths import check_name, resolve_remote
from airflow_secure_transfer.transfer import segments as _segments
from airflow_secure_transfer.transfer.base import (
    RemoteEntry,
    RemoteFS,
    SupportsAssemble,
    SupportsMtimeQuery,
    SupportsPutSmall,
    SupportsPutSmallMany,
    SupportsSetMtime,
    SupportsStatMany,
    SupportsWriteThenStat,
    TransferRecord,
    Verified,
)
from airflow_secure_transfer.transfer.local import (
    LocalFile,
    LocalSource,
    delete_uploaded_source,
    expand_local,
    open_unchanged,
)
from airflow_secure_transfer.transfer.options import OVERWRITE_MODES, VERIFY_MODES, validate_options
from airflow_secure_transfer.transfer.runner import (
    Cancelled,
    Connection,
    Log,
    Progress,
    RunContext,
    Runner,
    fmt_bytes,
    raise_run_errors,
    safe_remove,
    summary_table,
)

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "OVERWRITE_MODES",
    "VERIFY_MODES",
    "Log",
    "PlannedFile",
    "Progress",
    "UploadPlan",
    "partial_name",
    "plan_upload",
    "summary_table",
    "upload",
    "validate_options",
]

logger = logging.getLogger(__name__)


#: Local read size; the transports re-block as their protocol likes.
_CHUNK = 1024 * 1024
#: Files up to this size go through ``put_small`` (whole in memory, fewer round trips) when the client has it.
_SMALL_FILE: Final = 1024 * 1024
#: A target directory that receives at least this many files is listed once, instead of two stats per file.
_LIST_MIN_FILES: Final = 8
#: With ``put_small_many``, a worker sends small files in batches of up to this many files / bytes.
_BATCH_FILES: Final = 16
_BATCH_BYTES: Final = 4 * 1024 * 1024
_MAX_NAME_BYTES = 180  # the temp name adds 1 + 1 + 16 + 5 bytes; most servers allow 255
#: A local file modified less than this long ago is never skipped on size+mtime alone: a file
#: written on the server in the same second would carry the same time ("racily clean", as in git).
_SETTLED_NS: Final = 2_000_000_000


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One local file and the remote path it goes to."""

    local: LocalFile
    remote: str


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """Everything :func:`upload` will send, decided before connecting."""

    files: tuple[PlannedFile, ...]
    #: One plain file to a ``remote_path`` without a trailing ``/``: if that path turns out
    #: to be an existing remote directory, the file goes inside it (like ``cp``).
    target_may_be_dir: bool = False
    remote_root: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(p.local.size for p in self.files)


def _remote_name(relpath: str, local_path: str) -> str:
    """Check a relative remote name derived from a local file name."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        raise RemotePathError(
            f"local file {local_path!r} has a name that is not valid UTF-8; rename it before uploading",
            path=relpath,
        ) from None
    try:
        check_name(relpath)
    except RemotePathError as exc:
        raise RemotePathError(f"local file {local_path!r}: {exc}", path=relpath) from None
    return relpath


def plan_upload(
    local_path: LocalSource,
    remote_path: str,
    *,
    remote_root: str | None = None,
    cwd: str = "/",
    local_files: tuple[list[LocalFile], bool] | None = None,
) -> UploadPlan:
    """Expand *local_path* and pair each file with its normalised remote path.

    :param local_path: a file, a directory (recursive), a glob, or a list of these.
    :param remote_path: the target file when *local_path* is one plain file, else the
        target directory; a trailing ``/`` always means a directory. Relative paths
        start at *remote_root*, else at *cwd*.
    :param remote_root: no remote path may resolve outside this directory.
    :param cwd: the login directory, for relative paths without a *remote_root*.
    :param local_files: the result of :func:`expand_local` when already computed.
    :raises LocalPathError: a source is missing or not a regular file.
    :raises RemotePathError: a remote path escapes *remote_root* or contains NUL/CR/LF.
    """
    if not isinstance(remote_path, str) or not remote_path.strip():
        raise ConfigurationError(f"remote_path must be a non-empty string, got {remote_path!r}")
    base = resolve_remote(remote_path, remote_root, cwd=cwd)
    files, single = local_files if local_files is not None else expand_local(local_path)
    as_dir = remote_path.endswith("/") or not single
    planned: list[PlannedFile] = []
    for f in files:
        if as_dir:
            rel = _remote_name(f.relpath, f.path)
            remote = resolve_remote(posixpath.join(base, rel), remote_root)
            if not remote.startswith(base.rstrip("/") + "/"):
                raise RemotePathError(f"local file {f.path!r} maps outside {base!r} as {remote!r}", path=rel)
        else:
            remote = base
        planned.append(PlannedFile(f, remote))
    return UploadPlan(tuple(planned), target_may_be_dir=single and not as_dir, remote_root=remote_root)


def _truncate_utf8(name: str, limit: int) -> str:
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return name
    return raw[:limit].decode("utf-8", "ignore")


def partial_name(remote: str, local: LocalFile) -> str:
    """Return the hidden temporary path for uploading *local* to *remote*.

    The name is ``.<name>.<16 hex>.part`` in the target's directory, the hex being
    ``sha256(absolute local path | size | mtime_ns)``: stable across retries of the
    same source, different as soon as the source changes.
    """
    identity = f"{local.path}|{local.size}|{local.mtime_ns}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(identity).hexdigest()[:16]
    directory, name = posixpath.split(remote)
    return posixpath.join(directory, f".{_truncate_utf8(name, _MAX_NAME_BYTES)}.{digest}.part")


# --------------------------------------------------------------------------- one file


class _ShortUpload(IntegrityError):
    """The server holds fewer bytes than were sent: a connection ended early.

    In FTP the end of an upload *is* the closing of the data connection, so a
    connection dropped by the network can look like a completed ``STOR`` (``226``).
    The bytes that arrived are the start of the file: the partial stays for a
    resume, exactly as after a transport error.
    """


class _HashingReader(io.RawIOBase):
    """Reads a local file up to a fixed length, hashing and counting as it goes.

    The transports read from this; the digests are therefore of exactly the bytes
    that were sent, computed without a second pass over the file.
    """

    def __init__(
        self,
        raw: io.BufferedReader,
        remaining: int,
        hashers: Sequence[_Hash],
        on_bytes: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._remaining = remaining
        self._hashers = hashers
        self._on_bytes = on_bytes
        self._cancel = cancel
        self.count = 0

    def readable(self) -> bool:
        return True

    def _account(self, data: bytes | memoryview) -> None:
        n = len(data)
        for h in self._hashers:
            h.update(data)
        self._remaining -= n
        self.count += n
        self._on_bytes(n)

    def read(self, size: int | None = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled
        if size is None or size < 0:
            size = self._remaining
        data = self._raw.read(min(size, self._remaining)) if self._remaining > 0 else b""
        self._account(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        if self._cancel.is_set():
            raise Cancelled
        view = memoryview(buffer).cast("B")
        if self._remaining <= 0:
            return 0
        n = self._raw.readinto(view[: min(len(view), self._remaining)])
        self._account(view[:n])
        return n


class _DigestSink:
    """A write-only sink that hashes what a read-back delivers, refusing more than *limit* + 1 bytes."""

    def __init__(self, limit: int, cancel: threading.Event) -> None:
        self._hash = hashlib.sha256()
        self._limit = limit
        self._cancel = cancel
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        if self._cancel.is_set():
            raise Cancelled
        n = len(data)
        self.count += n
        if self.count > self._limit:
            raise IntegrityError(f"the server sent back more than the {self._limit} bytes uploaded")
        self._hash.update(data)
        return n

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(kw_only=True)
class _Shared(RunContext):
    """State shared by the workers of one upload."""

    options: _Options
    made_dirs: set[str] = field(default_factory=set)
    listings: _Listings | None = None
    #: Stats the run made before the workers started (a single file's target), each used by the first
    #: lookup of its path instead of a second stat.
    stat_once: dict[str, RemoteEntry | None] = field(default_factory=dict)
    #: Set once a server reported a modification time other than the one just set: from then
    #: on this run, no time it reports is evidence of identity.
    mtime_untrusted: bool = False
    #: The run's ``max_connections`` (a large file's segment layout depends on it, see ``segments``).
    max_connections: int = 1


@dataclass(frozen=True, slots=True)
class _Options:
    overwrite: str
    create_dirs: bool
    verify: str
    delete_source: bool
    preserve_mtime: bool = True


def _new_hash(algorithm: str) -> _Hash:
    try:
        return hashlib.new(algorithm)
    except ValueError:
        raise ConfigurationError(
            f"the server's checksum algorithm {algorithm!r} is not available locally; use verify='size'"
        ) from None


def _local_digest(path: str, algorithm: str, cancel: threading.Event) -> str:
    h = _new_hash(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if cancel.is_set():
                raise Cancelled
            h.update(chunk)
    return h.hexdigest()


class _BackgroundHash:
    """Hash a local file in order in a thread, while its segments are sent out of order."""

    def __init__(self, local: LocalFile, hashers: Sequence[_Hash], cancel: threading.Event) -> None:
        self._local = local
        self._hashers = hashers
        self._cancel = cancel
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="segment-hash", daemon=True).start()

    def _run(self) -> None:
        try:
            with open(self._local.path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    if self._cancel.is_set() or self._stop.is_set():
                        raise Cancelled
                    for h in self._hashers:
                        h.update(chunk)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        """Wait for the digest; raise what the read met (the verify checks the file's identity after)."""
        while not self._done.wait(1.0):
            pass
        if isinstance(self._error, OSError):
            raise LocalPathError(
                f"cannot read local file {self._local.path!r}: {self._error.strerror}", path=self._local.path
            ) from None
        if self._error is not None:
            raise self._error


class _Unknown:
    """Marker: the listing cannot answer; ask the server."""


_UNKNOWN: Final = _Unknown()


class _Listings:
    """One listing per target directory that receives many files, shared by the workers."""

    def __init__(self, directories: set[str]) -> None:
        self._locks = {d: threading.Lock() for d in directories}
        self._entries: dict[str, dict[str, RemoteEntry] | None] = {}

    def lookup(self, fs: RemoteFS, path: str) -> RemoteEntry | _Unknown | None:
        """The listed entry at *path*, None when the listing does not have it, or ``_UNKNOWN``."""
        directory, name = posixpath.split(path)
        lock = self._locks.get(directory)
        if lock is None:
            return _UNKNOWN
        with lock:  # the first worker to need it lists; the others wait for that one listing
            if directory not in self._entries:
                self._entries[directory] = self._list(fs, directory)
        listing = self._entries[directory]
        return _UNKNOWN if listing is None else listing.get(name)

    @staticmethod
    def _list(fs: RemoteFS, directory: str) -> dict[str, RemoteEntry] | None:
        try:
            entries = fs.listdir(directory)
        except LimitExceededError as exc:
            # Too long or too slow (a hostile or overloaded server): one stat per file instead.
            logger.warning("cannot list %s (%s); checking each file instead", directory, exc)
            return None
        except TransportError:
            raise
        except SecureTransferError as exc:
            # Not listable (a write-only drop box, a hostile name): fall back to one stat per file.
            logger.debug("cannot list %s (%s); checking each file instead", directory, exc)
            return None
        return {posixpath.basename(e.path.rstrip("/")): e for e in entries}


@dataclass(slots=True)
class _Pending:
    """A small file read and hashed, waiting in a worker's batch for ``put_small_many``."""

    item: PlannedFile
    local: LocalFile
    part: str
    data: bytes
    digest: str
    started: float
    #: The modification time to set on the part (None: ``preserve_mtime=False``).
    mtime: int | None = None


class _FileUpload:
    """Upload one planned file over one connection (see the module docstring)."""

    def __init__(self, item: PlannedFile, conn: Connection, shared: _Shared, *, batch: bool = False) -> None:
        self.item = item
        self.conn = conn
        self.shared = shared
        self.opts = shared.options
        #: Return a small file as a :class:`_Pending` for the worker's batch instead of sending it.
        self.batch = batch

    def run(self) -> TransferRecord | _Pending:
        started = time.monotonic()
        local = self.item.local
        target = self.item.remote
        fs = self.conn.get()
        try:
            raw = open(local.path, "rb")  # closed in the finally below
        except OSError as exc:
            raise LocalPathError(f"cannot open local file {local.path!r}: {exc.strerror}", path=local.path) from None
        try:
            st = os.fstat(raw.fileno())
            # The identity is read from the open file, not the plan: the file may have changed since.
            local = LocalFile(local.path, local.relpath, st.st_size, st.st_mtime_ns, local.root)
            if self.opts.create_dirs:
                self._makedirs(fs, posixpath.dirname(target))
            existing = self._lookup(fs, target, certain=self.opts.overwrite == "fail")
            if existing is not None:
                if existing.is_dir:
                    raise RemotePathError(
                        f"remote path {target!r} is a directory; cannot upload a file onto it", target
                    )
                if self.opts.overwrite == "fail":
                    raise RemotePathError(
                        f"remote file {target!r} exists and overwrite='fail'; nothing was sent", path=target
                    )
                if self.opts.overwrite == "skip_identical":
                    record = self._maybe_skip(fs, raw, local, target, existing, started)
                    if record is not None:
                        raw.close()
                        return self._finish(record, local)
                    raw.seek(0)
            outcome = self._send(fs, raw, local, target, started)
        finally:
            raw.close()
        if isinstance(outcome, TransferRecord):
            return self._finish(outcome, local)
        return outcome

    def _finish(self, record: TransferRecord, local: LocalFile) -> TransferRecord:
        """Delete the source when asked and its bytes were proven on the server; say so in the record."""
        if not self.opts.delete_source:
            return record
        if record.verified not in ("checksum", "size"):
            # Same size and time prove that nothing changed since our last upload, not that the
            # server holds these bytes: the source stays.
            self.shared.log.info(
                "kept %s (delete_source=True): skipped on size+mtime, its bytes were not compared with %s",
                local.path,
                record.remote_path,
            )
            return record
        if not self._delete_source(local):
            return record
        return dataclasses.replace(record, source_deleted=True)

    # -- steps

    def _lookup(self, fs: RemoteFS, path: str, *, certain: bool = False, fresh: bool = False) -> RemoteEntry | None:
        """What is at *path*: from the directory's listing when there is one, else a stat.

        :param certain: an absence in the listing is checked with a stat (only a presence is trusted).
        :param fresh: a presence in the listing is checked with a stat (only an absence is trusted).
        """
        with self.shared.lock:
            listed = self.shared.stat_once.pop(path, _UNKNOWN)
        listings = self.shared.listings
        if isinstance(listed, _Unknown) and listings is not None:
            listed = listings.lookup(fs, path)
        if isinstance(listed, _Unknown) or (certain and listed is None) or (fresh and listed is not None):
            return fs.stat(path)
        return listed

    def _makedirs(self, fs: RemoteFS, directory: str) -> None:
        if directory in ("", "/"):
            return
        with self.shared.lock:
            if directory in self.shared.made_dirs:
                return
        fs.makedirs(directory)
        with self.shared.lock:
            self.shared.made_dirs.add(directory)

    def _remote_checksum(self, fs: RemoteFS, path: str) -> tuple[str, str, str] | None:
        """The server's (algorithm, hex digest, method) for *path*, or None."""
        if self.conn.exec_distrusted:
            return None  # exec is a client's last resort: its other ways were refused already
        checksum = fs.checksum(path)
        if checksum is None:
            return None
        algorithm = checksum.algorithm.lower().replace("-", "")
        self.conn.checksum_algorithm = algorithm
        return algorithm, checksum.hexdigest.lower(), checksum.method or "checksum command"

    def _mtime_evidence(self, fs: RemoteFS, local: LocalFile, target: str, entry: RemoteEntry) -> bool:
        """Whether *entry*'s modification time proves that *target* is what we uploaded from *local*."""
        if entry.mtime is None and self.shared.listings is not None:
            # The listing (LIST) carries no usable time; MDTM/MLST does (one command where the client has one).
            if isinstance(fs, SupportsMtimeQuery):
                entry = dataclasses.replace(entry, mtime=fs.mtime(target))
            else:
                entry = fs.stat(target) or entry
        if self.shared.mtime_untrusted or (isinstance(fs, SupportsSetMtime) and not fs.mtime_trusted):
            self.shared.mtime_untrusted = True
            self.shared.say_once(
                "mtime-untrusted",
                "warning",
                "skip_identical: the server's modification times do not round-trip (it reported another time "
                "than the one set); files of the same size are uploaded again",
            )
            return False
        if entry.mtime is None:
            self.shared.say_once(
                "mtime-none",
                "warning",
                "skip_identical: the server offers no checksum and reports no modification time; "
                "files of the same size are uploaded again",
            )
            return False
        if time.time_ns() - local.mtime_ns < _SETTLED_NS:
            self.shared.say_once(
                "mtime-racy",
                "info",
                "skip_identical: a file modified in the last %d s is uploaded even at the same size and time "
                "(a different file written on the server in the same second would look the same)",
                _SETTLED_NS // 1_000_000_000,
            )
            return False
        if math.floor(entry.mtime) != local.mtime_ns // 1_000_000_000:
            self.shared.say_once(
                "mtime-differs",
                "info",
                "skip_identical: the server offers no checksum; a file of the same size is skipped only when its "
                "modification time equals the local file's (set by an upload with preserve_mtime)",
            )
            return False
        return True

    def _maybe_skip(
        self, fs: RemoteFS, raw: io.BufferedReader, local: LocalFile, target: str, entry: RemoteEntry, started: float
    ) -> TransferRecord | None:
        if entry.size != local.size:
            return None
        remote_sum = self._remote_checksum(fs, target)
        if remote_sum is None and not self._mtime_evidence(fs, local, target, entry):
            return None
        hashers = {"sha256": hashlib.sha256()}
        if remote_sum is not None and remote_sum[0] != "sha256":
            hashers[remote_sum[0]] = _new_hash(remote_sum[0])
        while chunk := raw.read(_CHUNK):
            if self.shared.cancel.is_set():
                raise Cancelled
            for h in hashers.values():
                h.update(chunk)
        if remote_sum is not None and hashers[remote_sum[0]].hexdigest() != remote_sum[1]:
            return None  # same size, different content: upload it
        how: Verified = "checksum" if remote_sum is not None else "size+mtime"
        self.shared.progress.accounted(local.size)
        self.shared.log.info("skipped %s: identical to %s (%s)", local.path, target, how)
        return TransferRecord(
            local_path=local.path,
            remote_path=target,
            bytes=0,
            sha256=hashers["sha256"].hexdigest(),
            seconds=time.monotonic() - started,
            resumed=False,
            skipped=True,
            verified=how,
            size=local.size,
        )

    def _wanted_mtime(self, local: LocalFile) -> int | None:
        """The remote modification time to set for *local* (None: ``preserve_mtime=False``)."""
        return local.mtime_ns // 1_000_000_000 if self.opts.preserve_mtime else None

    def _set_mtime(self, fs: RemoteFS, part: str, local: LocalFile) -> int | None:
        """Set *part*'s modification time to *local*'s; return the time set (None: not set)."""
        wanted = self._wanted_mtime(local)
        if wanted is None:
            return None
        if isinstance(fs, SupportsSetMtime) and fs.set_mtime(part, wanted):
            return wanted
        self._cannot_set_mtime()
        return None

    def _distrust_mtimes(self, why: str) -> None:
        self.shared.mtime_untrusted = True
        self.shared.say_once(
            "mtime-roundtrip",
            "warning",
            "preserve_mtime: the server's modification times do not round-trip (%s; local time?); "
            "they are not used as evidence in this run",
            why,
        )

    def _cannot_set_mtime(self) -> None:
        self.shared.say_once(
            "mtime-unset",
            "warning",
            "preserve_mtime: the server cannot set modification times (no MFMT, MDTM or SFTP setstat); "
            "a later skip_identical run can only skip on a server checksum",
        )

    def _send(
        self, fs: RemoteFS, raw: io.BufferedReader, local: LocalFile, target: str, started: float
    ) -> TransferRecord | _Pending:
        part = partial_name(target, local)
        offset = 0
        existing = self._lookup(fs, part, fresh=True)  # a listed partial: resume from its size now
        if existing is not None:
            if not existing.is_dir and existing.size is not None and 0 < existing.size <= local.size:
                offset = existing.size
            elif existing.is_dir:
                raise RemotePathError(f"temporary path {part!r} is a directory; remove it", path=part)
            else:
                # Larger than the source, or of unknown size: it cannot be the start of this file.
                fs.remove(part)
        split = self._segment_plan(fs, local, part, offset)
        if split is not None:
            try:
                return self._send_segmented(fs, local, target, part, *split, started)
            except RemoteStorageFullError as exc:
                # Until the rename a split holds the file twice on the server (its segments and their
                # assembly); both are removed by now. One stream needs the file's size once.
                self.shared.log.warning(
                    "%s: %s; a split needs room for the file twice (segments + assembly): sending it as one stream",
                    target,
                    exc,
                )
        small = offset == 0 and local.size <= _SMALL_FILE and self.opts.verify == "size"
        if small and isinstance(fs, SupportsPutSmall):
            return self._send_small(fs, raw, local, target, part, started)
        hashers: dict[str, _Hash] = {"sha256": hashlib.sha256()}
        algorithm = self.conn.checksum_algorithm
        if self.opts.verify == "checksum" and algorithm and algorithm != "sha256":
            hashers[algorithm] = _new_hash(algorithm)
        if offset:
            # The bytes already on the server are hashed locally (not sent again).
            left = offset
            while left > 0:
                if self.shared.cancel.is_set():
                    raise Cancelled
                chunk = raw.read(min(_CHUNK, left))
                if not chunk:
                    break
                for h in hashers.values():
                    h.update(chunk)
                left -= len(chunk)
            self.shared.progress.accounted(offset)
            self.shared.log.info("resuming %s at byte %d of %d", target, offset, local.size)
        reader = _HashingReader(
            raw, local.size - offset, list(hashers.values()), self.shared.progress.sent, self.shared.cancel
        )
        try:
            if isinstance(fs, SupportsWriteThenStat) and (offset < local.size or offset == 0):
                # The time set and the size check's stat go with the end of the upload (FTPS).
                wanted = self._wanted_mtime(local)
                _, was_set, entry = fs.write_then_stat(part, cast("IO[bytes]", reader), offset=offset, mtime=wanted)
                if wanted is not None and not was_set:
                    self._cannot_set_mtime()
                self._verify(fs, part, local, hashers, wanted if was_set else None, entry=entry)
            else:
                if offset < local.size or offset == 0:
                    fs.write_from(part, cast("IO[bytes]", reader), offset=offset)
                mtime = self._set_mtime(fs, part, local)
                self._verify(fs, part, local, hashers, mtime)
            fs.rename(part, target)
        except (Cancelled, TransportError, _ShortUpload):
            raise  # a cut connection: the partial stays for the next try to resume
        except SecureTransferError:
            # Anything else (a full disk included: the partial would hold the space a retry needs)
            # makes the partial useless or wrong: remove it.
            safe_remove(fs, part)
            raise
        return TransferRecord(
            local_path=local.path,
            remote_path=target,
            bytes=reader.count,
            sha256=hashers["sha256"].hexdigest(),
            seconds=time.monotonic() - started,
            resumed=offset > 0,
            skipped=False,
            verified="checksum" if self.opts.verify == "checksum" else "size",
            size=local.size,
        )

    def _segment_plan(
        self, fs: RemoteFS, local: LocalFile, part: str, offset: int
    ) -> tuple[list[_segments.Segment], list[Connection]] | None:
        """Whether to send *local* in segments over several connections; their layout and lent connections.

        See :mod:`~airflow_secure_transfer.transfer.segments` for the rules (and what a retry finds).
        """
        lender = self.shared.lender
        if (
            offset > 0  # a single stream's partial (segments never write it): continue that one
            or local.size < _segments.SEGMENT_MIN_FILE
            or lender is None
            or not isinstance(fs, SupportsAssemble)
            or not fs.can_assemble
        ):
            return None
        layout = _segments.layout(local.size, self.shared.max_connections, part)
        if not layout:
            return None
        # One stat says whether an earlier try left segments, and how far the server is (its round trip).
        began = time.monotonic()
        earlier = fs.stat(layout[0].path)
        rtt = time.monotonic() - began
        if earlier is None:
            if rtt >= _segments.SEGMENT_MIN_RTT:  # a second look: one slow answer on a busy machine is no link
                began = time.monotonic()
                fs.stat(layout[0].path)
                rtt = min(rtt, time.monotonic() - began)
            if rtt < _segments.SEGMENT_MIN_RTT:
                return None  # a near server: one stream is not window-bound, the split would only cost
        lent = lender.lend(len(layout) - 1)
        if not lent and earlier is None:
            return None  # nobody to share the work with, and nothing from an earlier try: one stream
        self.shared.log.debug("splitting %s: round trip %.1f ms", part, rtt * 1000)
        return layout, lent

    def _send_segmented(
        self,
        fs: RemoteFS,
        local: LocalFile,
        target: str,
        part: str,
        layout: list[_segments.Segment],
        lent: list[Connection],
        started: float,
    ) -> TransferRecord:
        """Send *local* as *layout*'s segments, each copied into the assembly as it is complete; verify, rename.

        See :mod:`~airflow_secure_transfer.transfer.segments`.
        """
        shared = self.shared
        assert shared.lender is not None and isinstance(fs, SupportsAssemble)
        assembly = _segments.assembly_path(part, len(layout))
        hashers: dict[str, _Hash] = {"sha256": hashlib.sha256()}
        algorithm = self.conn.checksum_algorithm
        if self.opts.verify == "checksum" and algorithm and algorithm != "sha256":
            try:
                hashers[algorithm] = _new_hash(algorithm)
            except BaseException:
                shared.lender.give_back(lent)
                raise
        hashing = _BackgroundHash(local, list(hashers.values()), shared.cancel)
        shared.log.info("uploading %s in %d segments over up to %d connections", target, len(layout), 1 + len(lent))
        lender = shared.lender
        try:
            run = _segments.run_segments(
                self.conn,
                lent,
                layout,
                lambda seg_fs, seg: self._send_segment(seg_fs, local, seg, assembly),
                release=lambda conn: lender.give_back([conn]),
                cancel=shared.cancel,
                log=shared.log,
            )
        except BaseException as exc:
            hashing.stop()
            if isinstance(exc, SecureTransferError) and not isinstance(exc, (TransportError, _ShortUpload)):
                # As for one stream: anything but a cut (a full disk: the segments hold the space a
                # retry needs) makes what was sent useless; every connection has stopped writing.
                for path in [_segments.assembly_path(part, len(layout)), *(s.path for s in layout)]:
                    safe_remove(fs, path)
            raise
        paths = [s.path for s in layout]
        try:
            hashing.join()
            mtime = self._set_mtime(fs, assembly, local)
            self._verify(fs, assembly, local, hashers, mtime)
            fs.rename(assembly, target)
        except (Cancelled, TransportError, _ShortUpload):
            raise  # a cut connection: the segments stay for the next try (the assembly is never trusted)
        except SecureTransferError:
            for path in [assembly, *paths]:
                safe_remove(fs, path)
            raise
        finally:
            run.wait_closed()  # the lent connections closed meanwhile
        # Only now: until the final name holds the verified file, the segments are what a retry resumes from.
        for path, error in zip(paths, self._remove_quietly(fs, paths), strict=True):
            if error is not None:
                shared.log.warning("could not remove the segment %s after the upload: %s", path, error)
        sent = run.results
        moved = sum(n for n, _ in sent)
        return TransferRecord(
            local_path=local.path,
            remote_path=target,
            bytes=moved,
            sha256=hashers["sha256"].hexdigest(),
            seconds=time.monotonic() - started,
            resumed=any(resumed for _, resumed in sent),
            skipped=False,
            verified="checksum" if self.opts.verify == "checksum" else "size",
            size=local.size,
        )

    @staticmethod
    def _remove_quietly(fs: SupportsAssemble, paths: list[str]) -> list[SecureTransferError | None]:
        try:
            return fs.remove_many(paths)
        except SecureTransferError as exc:  # the file is in place: a lost connection now costs leftovers only
            return [exc] * len(paths)

    def _send_segment(
        self, fs: RemoteFS, local: LocalFile, segment: _segments.Segment, assembly: str
    ) -> tuple[int, bool]:
        """Send one segment to its own partial (resumed from that partial's size), then copy it into *assembly*.

        :returns: (bytes sent, resumed).
        """
        entry = fs.stat(segment.path)
        offset = 0
        if entry is not None:
            if entry.is_dir:
                raise RemotePathError(f"temporary path {segment.path!r} is a directory; remove it", path=segment.path)
            if entry.size is not None and 0 <= entry.size <= segment.length:
                offset = entry.size
            else:
                fs.remove(segment.path)  # longer than the segment: not ours
        if offset:
            self.shared.progress.accounted(offset)
        count = 0
        try:
            if offset < segment.length:
                count = self._write_segment(fs, local, segment, offset)
            self.shared.log.debug("segment %d of %d: %d bytes sent", segment.index + 1, segment.count, count)
            # Server-side, while the other connections still send theirs (the size is checked first).
            cast("SupportsAssemble", fs).assemble(assembly, [(segment.path, segment.start, segment.length)])
            self.shared.log.debug("segment %d of %d: copied", segment.index + 1, segment.count)
        except (Cancelled, TransportError, _ShortUpload):
            raise
        # Any other error: _send_segmented removes every segment and the assembly once all connections
        # stopped. Not here: a full disk freed by this removal would make the other connections' failures
        # look like something else (statvfs would show room), and hide the full disk.
        return count, offset > 0

    def _write_segment(self, fs: RemoteFS, local: LocalFile, segment: _segments.Segment, offset: int) -> int:
        raw = open_unchanged(local, "not renamed")
        try:
            raw.seek(segment.start + offset)
            reader = _HashingReader(raw, segment.length - offset, [], self.shared.progress.sent, self.shared.cancel)
            fs.write_from(segment.path, cast("IO[bytes]", reader), offset=offset)
        finally:
            raw.close()
        return reader.count

    def _send_small(
        self, fs: SupportsPutSmall, raw: io.BufferedReader, local: LocalFile, target: str, part: str, started: float
    ) -> TransferRecord | _Pending:
        """The whole file in memory: write, size check and rename in one call (see ``put_small``)."""
        if self.shared.cancel.is_set():
            raise Cancelled
        data = raw.read(local.size + 1)
        try:
            now = os.stat(local.path)
        except OSError:
            now = None
        if len(data) != local.size or now is None or now.st_size != local.size or now.st_mtime_ns != local.mtime_ns:
            raise IntegrityError(f"local file {local.path!r} changed while it was being read; nothing was sent")
        mtime = self._wanted_mtime(local)
        pending = _Pending(self.item, local, part, data, hashlib.sha256(data).hexdigest(), started, mtime)
        if self.batch:
            return pending
        try:
            landed: int | SecureTransferError | None = fs.put_small(part, target, data, mtime=mtime)
        except SecureTransferError as exc:
            landed = exc
        return self.complete_small(cast("RemoteFS", fs), pending, landed)

    def complete_small(self, fs: RemoteFS, p: _Pending, landed: int | SecureTransferError | None) -> TransferRecord:
        """Turn ``put_small``'s answer for *p* into its record, or raise its error (see ``_send``)."""
        try:
            if isinstance(landed, SecureTransferError):
                raise landed
            if landed != len(p.data):
                self._size_mismatch(p.part, landed, len(p.data))
        except (TransportError, _ShortUpload):
            raise  # a cut connection: whatever reached the server stays for the next try
        except SecureTransferError:
            safe_remove(fs, p.part)
            raise
        if p.mtime is not None and not (isinstance(fs, SupportsSetMtime) and fs.can_set_mtime is not False):
            self._cannot_set_mtime()
        elif p.mtime is not None and isinstance(fs, SupportsSetMtime) and not fs.mtime_trusted:
            self._distrust_mtimes("it answered the time just set with another one")
        self.shared.progress.sent(len(p.data))
        return TransferRecord(
            local_path=p.local.path,
            remote_path=p.item.remote,
            bytes=len(p.data),
            sha256=p.digest,
            seconds=time.monotonic() - p.started,
            resumed=False,
            skipped=False,
            verified="size",
            size=len(p.data),
        )

    def _verify(
        self,
        fs: RemoteFS,
        part: str,
        local: LocalFile,
        hashers: dict[str, _Hash],
        mtime: int | None = None,
        *,
        entry: RemoteEntry | _Unknown | None = _UNKNOWN,
    ) -> None:
        """Check *part* against *local* before the rename (*entry*: *part*'s stat, taken after the upload)."""
        try:
            now = os.stat(local.path)
        except OSError:
            now = None
        if now is None or now.st_size != local.size or now.st_mtime_ns != local.mtime_ns:
            raise IntegrityError(f"local file {local.path!r} changed while it was being uploaded; not renamed")
        if isinstance(entry, _Unknown):
            entry = fs.stat(part)
        if entry is None or entry.size != local.size:
            self._size_mismatch(part, None if entry is None else entry.size, local.size)
        if mtime is not None and entry.mtime is not None and math.floor(entry.mtime) != mtime:
            # The stat that checks the size reads the time back for free: a server answering in
            # another time zone (or rounding) is found here, and its times prove nothing this run.
            self._distrust_mtimes(f"it reports {entry.mtime:.0f} for {part} after it was set to {mtime}")
        elif mtime is not None and isinstance(fs, SupportsSetMtime) and not fs.mtime_trusted:
            self._distrust_mtimes("it answered the time just set with another one")
        if self.opts.verify != "checksum":
            return
        remote_sum = self._remote_checksum(fs, part)
        if remote_sum is None:
            self._read_back(fs, part, local, hashers["sha256"].hexdigest())
            return
        algorithm, remote_hex, method = remote_sum
        self.shared.say_once(
            "verify-server", "info", "verify='checksum': using the server's %s (%s)", algorithm, method
        )
        if algorithm in hashers:
            local_hex = hashers[algorithm].hexdigest()
        else:
            # First file on this connection with a non-sha256 server digest: one extra local pass.
            local_hex = _local_digest(local.path, algorithm, self.shared.cancel)
        if local_hex == remote_hex:
            return
        if method.startswith("exec"):
            # A shell command sees the shell's file system, which may not be the SFTP view (a chroot,
            # virtual folders): the bytes themselves decide, and the command is not asked again.
            self._read_back(fs, part, local, hashers["sha256"].hexdigest())
            self.conn.exec_distrusted = True
            self.shared.say_once(
                "exec-distrusted",
                "warning",
                "verify='checksum': the server's %s disagreed with the file read back; reading files back instead",
                method,
            )
            return
        raise IntegrityError(
            f"{part}: the server's {algorithm} is {remote_hex}, the local file's is {local_hex}; not renamed"
        )

    def _read_back(self, fs: RemoteFS, part: str, local: LocalFile, expected: str) -> None:
        """Read *part* back over the same connection and compare its SHA-256 with the local file's."""
        self.shared.say_once(
            "verify-read-back",
            "info",
            "verify='checksum': the server offers no checksum; each file is read back over the same "
            "connection and its SHA-256 compared before the rename",
        )
        sink = _DigestSink(local.size, self.shared.cancel)
        fs.read_to(part, cast("IO[bytes]", sink))
        if sink.count != local.size or sink.hexdigest() != expected:
            raise IntegrityError(
                f"{part}: read back {sink.count} bytes with SHA-256 {sink.hexdigest()}, the local file's is "
                f"{expected} ({local.size} bytes); not renamed"
            )

    @staticmethod
    def _size_mismatch(part: str, size: int | None, expected: int) -> NoReturn:
        """Raise for a partial of *size* bytes (None: missing or of unknown size) instead of *expected*."""
        got = "nothing" if size is None else f"{size} bytes"
        message = f"{part}: the server has {got} after the upload, expected {expected} bytes"
        if size is not None and 0 < size < expected:
            raise _ShortUpload(message + "; the partial is kept for a resume")
        raise IntegrityError(message)

    def _delete_source(self, local: LocalFile) -> bool:
        """Delete *local* (its bytes are on the server); see :func:`delete_uploaded_source`."""
        return delete_uploaded_source(local, self.shared.log)


# --------------------------------------------------------------------------- the upload step


class _UploadStep:
    """The upload direction for :class:`~airflow_secure_transfer.transfer.runner.Runner`."""

    def __init__(self, plan: UploadPlan, shared: _Shared, replan: Callable[[str], UploadPlan] | None) -> None:
        self.plan = plan
        self.shared = shared
        self.replan = replan

    def prepare(self, first: Connection) -> list[PlannedFile]:
        fs = first.get()
        plan = self.plan
        home = getattr(fs, "home", "/")
        if self.replan is not None and isinstance(home, str) and home not in ("", "/"):
            plan = self.replan(home)
        if plan.target_may_be_dir:
            plan = _retarget_single(first, plan, self.shared)
        self.plan = plan
        per_dir = collections.Counter(posixpath.dirname(p.remote) for p in plan.files)
        crowded = {d for d, n in per_dir.items() if n >= _LIST_MIN_FILES}
        if crowded:
            self.shared.listings = _Listings(crowded)
        return sorted(plan.files, key=lambda p: -p.local.size)  # largest first balances the workers

    def run(self, item: PlannedFile, conn: Connection, *, batch: bool) -> TransferRecord | _Pending:
        return _FileUpload(item, conn, self.shared, batch=batch).run()

    def batching(self, conn: Connection) -> bool:
        return isinstance(conn.fs, SupportsPutSmallMany)

    def batch_full(self, batch: Sequence[_Pending], conn: Connection, share: int) -> bool:
        files = _BATCH_FILES
        serial = getattr(conn.fs, "put_small_batch", None)
        if isinstance(serial, int):
            # A client that sends a batch's files one after the other (FTPS) names its batch
            # size, and near the end gets its share of what is left, not all of it.
            files = min(serial, share)
        return len(batch) >= files or sum(len(p.data) for p in batch) >= _BATCH_BYTES

    def item_of(self, pending: _Pending) -> PlannedFile:
        return pending.item

    def name(self, item: PlannedFile) -> tuple[str, str]:
        return item.local.path, item.remote

    def flush(self, conn: Connection, batch: Sequence[_Pending]) -> list[TransferRecord | BaseException]:
        """Send a worker's batch of small files with one ``put_small_many`` call."""
        fs = conn.get()
        answers = cast("SupportsPutSmallMany", fs).put_small_many(
            [(p.part, p.item.remote, p.data) for p in batch], mtimes=[p.mtime for p in batch]
        )
        out: list[TransferRecord | BaseException] = []
        for p, answer in zip(batch, answers, strict=True):
            upload = _FileUpload(p.item, conn, self.shared)
            try:
                out.append(upload._finish(upload.complete_small(fs, p, answer), p.local))
            except Exception as exc:
                out.append(exc)
        return out


def _retarget_single(conn: Connection, plan: UploadPlan, shared: _Shared) -> UploadPlan:
    """Put a single file inside ``remote_path`` when that is an existing remote directory.

    What the stat found is kept in *shared*: the file's lookup uses it instead of a second stat, and a
    directory known to exist is not stat'ed again by ``create_dirs`` (one round trip each).
    """
    (item,) = plan.files
    fs = conn.get()
    if isinstance(fs, SupportsStatMany):
        # One round trip for what the upload asks first: the target, the partial a retry would resume,
        # and the parent that create_dirs would check (each used only if the target is not a directory).
        part = partial_name(item.remote, item.local)
        parent = posixpath.dirname(item.remote)
        ask_parent = shared.options.create_dirs and parent not in ("", "/")
        entries = fs.stat_many([item.remote, part] + ([parent] if ask_parent else []), prepare_data=True)
        entry = entries[0]
        if entry is None or not entry.is_dir:
            shared.stat_once[part] = entries[1]
            if ask_parent and entries[2] is not None and entries[2].is_dir:
                shared.made_dirs.add(parent)
    else:
        entry = fs.stat(item.remote)
    if entry is None or not entry.is_dir:
        shared.stat_once[item.remote] = entry
        if entry is not None:
            shared.made_dirs.add(posixpath.dirname(item.remote))
        return plan
    name = _remote_name(posixpath.basename(item.local.path), item.local.path)
    remote = resolve_remote(posixpath.join(item.remote, name), plan.remote_root)
    shared.made_dirs.add(posixpath.dirname(remote))
    return UploadPlan((PlannedFile(item.local, remote),), remote_root=plan.remote_root)


def upload(
    connect: Callable[[], RemoteFS],
    local_path: LocalSource,
    remote_path: str,
    *,
    overwrite: str = "replace",
    create_dirs: bool = True,
    verify: str = "size",
    delete_source: bool = False,
    max_connections: int = 4,
    remote_root: str | None = None,
    preserve_mtime: bool = True,
    log: Log | None = None,
    progress_interval: float = 5.0,
    busy_wait: float = 0.0,
) -> list[TransferRecord]:
    """Upload *local_path* to *remote_path*; return one record per file.

    :param connect: opens a new connected client (called once per connection used).
    :param local_path: a file, a directory (recursive), a glob, or a list of these.
    :param remote_path: the target file for a single file, else the target directory
        (a trailing ``/`` always means a directory).
    :param overwrite: ``"replace"`` (default), ``"skip_identical"`` (skip only on proof:
        same size and server checksum, else same size and modification time) or ``"fail"``.
    :param create_dirs: create missing remote parent directories (default: yes).
    :param verify: ``"size"`` (default, always done) or ``"checksum"`` (also a digest of the
        uploaded bytes: the server's where offered, else the file read back).
    :param delete_source: delete each local file once its bytes are proven on the server
        (this upload, or a checksum match), and only under the named source's real path.
    :param preserve_mtime: set each uploaded file's remote modification time to the local
        file's (default: yes; what lets ``skip_identical`` skip on a server without checksums).
    :param max_connections: most connections used at once; each serves many files.
    :param remote_root: no remote path may resolve outside this directory.
    :param log: logger for progress and the summary (default: this module's).
    :param progress_interval: longest time between progress messages, in seconds.
    :param busy_wait: when the server refuses a session for load (``ServerBusyError``: FTP 421,
        sshd ``MaxStartups``), the most seconds the first connection (and a worker that lost its
        connection) waits in all, with jittered back-off, before the error is raised; extra
        parallel connections do not wait, their files go to the connections that exist.
        The operator passes ``4 * conn_timeout``; 0 (default) raises at once.
    :returns: records in plan order (a file that failed has none).
    :raises SecureTransferError: the first error (non-retryable ones first); files
        already uploaded stay uploaded, an interrupted file's partial stays for resume.
    """
    validate_options(overwrite=overwrite, verify=verify, max_connections=max_connections)
    log = log or logger
    local_files = expand_local(local_path)
    plan = plan_upload(local_path, remote_path, remote_root=remote_root, local_files=local_files)
    replan: Callable[[str], UploadPlan] | None = None
    if not remote_path.startswith("/") and not remote_root:
        # Relative to the login directory, which is known once connected (FTP PWD, SFTP realpath(".")).
        def replan(cwd: str) -> UploadPlan:
            return plan_upload(local_path, remote_path, cwd=cwd, local_files=local_files)

    total = len(plan.files)
    workers = max(1, min(max_connections, total))
    progress = Progress(total, plan.total_bytes, log, interval=progress_interval)
    shared = _Shared(
        options=_Options(overwrite, bool(create_dirs), verify, bool(delete_source), bool(preserve_mtime)),
        progress=progress,
        log=log,
        busy_wait=busy_wait,
        max_connections=max_connections,
    )
    log.info(
        "uploading %d file(s), %s, to %s over up to %d connection(s)",
        total,
        fmt_bytes(plan.total_bytes),
        remote_path,
        workers,
    )
    if not plan.files:
        log.info("nothing to upload: %s contains no files", local_path)
        return []
    step = _UploadStep(plan, shared, replan)
    # The runner starts at most one worker per file; the other slots are lent to a large file's segments.
    run: Runner[PlannedFile, _Pending] = Runner(step, connect, shared, max_connections, verb="uploading")
    started = time.monotonic()
    try:
        run.execute()
    finally:
        order = {p.local.path: i for i, p in enumerate(step.plan.files)}
        run.records.sort(key=lambda r: order.get(r.local_path, math.inf))
        log.info("%s", summary_table(run.records, time.monotonic() - started, failed=len(run.errors)))
    raise_run_errors(run, total, log, lambda item: item.local.path, "uploaded")
    return run.records
