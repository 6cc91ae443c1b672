"""The download step: remote files to local ones, atomically, verified, resumable, in parallel.

Every way of downloading in this package (``SecureDownloadOperator``, the hooks'
``retrieve_file``) goes through :func:`download`, which runs on the shared
:class:`~airflow_secure_transfer.transfer.runner.Runner` (workers, connection reuse,
failure policy, progress). It imports no Airflow.

Planning happens on the first connection: each ``remote_path`` item is stat'ed (a
file), listed recursively (a directory) or matched (a glob: ``*``, ``?``, ``[...]``,
``**``, against the listing of its fixed leading directories). Everything the server
lists is untrusted input:

* every listed name passes :func:`~airflow_secure_transfer.security.paths.listed_child`
  (one component; no ``/``, ``\\``, control characters, drive prefixes, ``.``/``..``)
  and, mapped onto ``local_path``, must stay under it (:func:`local_target`);
* a symbolic link is resolved (SFTP ``realpath``; FTP: the target the listing names)
  and refused when it leads outside the directory being downloaded; a link to a
  directory is not followed (its files are reached by their real path, if inside);
* a walk is bounded: :data:`WALK_MAX_FILES` files, :data:`WALK_MAX_DEPTH` levels,
  each listing by :mod:`~airflow_secure_transfer.transfer.limits`.

One file, step by step (``_FileDownload.run``)::

    lstat(target)                     overwrite="fail": exists -> error, nothing read
                                      overwrite="skip_identical": skipped only on proof: same size and
                                      server checksum (compared with the local file's digest), else same
                                      size and mtime (the time an earlier download set; a remote file
                                      modified less than 2 s before the local copy was made is not trusted)
    .<name>.<id>.part                 id = sha256(remote path | size | mtime)[:16]: a partial of the same
                                      remote version is resumed from its size; any other is never continued
    read_to(remote, part, offset)     SHA-256 computed while writing; more bytes than the listed size fail
                                      (the file changed); fsync
    size check                        the partial must hold exactly the listed size
    verify="checksum"                 the server's digest, else the file read again from the server
    utime(part)                       preserve_mtime: the remote modification time
    os.replace(part, target)          the final path only ever holds a whole, verified file; fsync(dir)
    remove / rename remote            delete_source / remote_archive_dir: only after all of the above

Failures: a transport error (a cut connection) keeps the partial for the next try;
any other error removes it. A full local disk raises
:class:`~airflow_secure_transfer.exceptions.LocalStorageFullError` (the partial is
removed: it holds the space a retry needs) and stops the run.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob as glob_module
import hashlib
import logging
import math
import os
import posixpath
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Final, cast

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    IntegrityError,
    LocalPathError,
    LocalStorageFullError,
    RemotePathError,
    SecureTransferError,
    TransportError,
)
from airflow_secure_transfer.security.paths import name_problem, resolve_remote
from airflow_secure_transfer.transfer.base import (
    RemoteEntry,
    RemoteFS,
    SupportsGetSmallMany,
    SupportsMtimeQuery,
    SupportsRealpath,
    TransferRecord,
    Verified,
)
from airflow_secure_transfer.transfer.local import glob_regex
from airflow_secure_transfer.transfer.manifest import ManifestEntry, read_manifest
from airflow_secure_transfer.transfer.options import validate_options
from airflow_secure_transfer.transfer.runner import (
    Cancelled,
    Connection,
    Log,
    Progress,
    RunContext,
    Runner,
    fmt_bytes,
    raise_run_errors,
    summary_table,
)
from airflow_secure_transfer.transfer.writeback import WRITEBACK_MIN_SIZE, EarlyWriteback

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "WALK_MAX_DEPTH",
    "WALK_MAX_FILES",
    "RemoteSource",
    "download",
    "local_partial_name",
    "local_target",
    "remote_sources",
]

logger = logging.getLogger(__name__)

#: What callers may pass as ``remote_path``: a path, a file record with a ``remote_path`` key (the
#: sensor's XCom items, an upload's or a download's records), or a list of these.
RemoteSource = str | Mapping[str, object] | Sequence[str | Mapping[str, object]]

#: Most files one download plans (a remote tree or glob with more is refused, not truncated).
WALK_MAX_FILES = 1_000_000
#: Deepest directory level a remote walk descends to (a deeper tree is a loop or an attack).
WALK_MAX_DEPTH = 64
#: A remote file modified less than this long before the local copy was made is never skipped on
#: size+mtime alone: a change in the same second would keep the time (see the upload's twin).
_SETTLED: Final = 2.0
_CHUNK: Final = 1024 * 1024
_MAX_NAME_BYTES: Final = 255
#: Files up to this size (nothing to resume, ``verify="size"``) are read whole, in batches, where
#: the client has ``get_small_many`` (SFTP): up to ``_BATCH_FILES`` files or ``_BATCH_BYTES`` at once.
_SMALL_FILE: Final = 1024 * 1024
_BATCH_FILES: Final = 16
_BATCH_BYTES: Final = 4 * 1024 * 1024
#: The provider's own temporary names (``.<name>.<16 hex>.part``): never downloaded from a listing.
_PARTIAL_SUFFIX_LEN: Final = len(".0123456789abcdef.part")


def _is_partial_name(name: str) -> bool:
    if not (name.startswith(".") and name.endswith(".part")) or len(name) <= _PARTIAL_SUFFIX_LEN:
        return False
    digest = name[-_PARTIAL_SUFFIX_LEN + 1 : -len(".part")]
    return len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class _RemoteFile:
    """One remote file and the local path it goes to."""

    remote: str
    local: str
    size: int | None
    mtime: float | None
    #: Path relative to the downloaded source (for remote_archive_dir).
    relpath: str


def local_target(base: str, relpath: str, *, remote: str) -> str:
    """Return ``base/relpath`` for a remote file, refusing any name that could leave *base*.

    Each component of *relpath* (POSIX, from a server's listing) must be a plain name on the
    worker's file system: not empty, ``.`` or ``..``, no ``/``, ``\\``, NUL or other control
    character, no drive prefix, at most 255 bytes.

    :raises RemotePathError: naming the remote entry.
    """
    parts = relpath.split("/")
    for part in parts:
        problem = name_problem(part)
        if problem is None and part in ("", ".", ".."):
            problem = "is not a file name"
        if problem is None and len(os.fsencode(part)) > _MAX_NAME_BYTES:
            problem = f"is longer than {_MAX_NAME_BYTES} bytes"
        if problem is not None:
            raise RemotePathError(
                f"remote entry {remote!r}: the name {part[:80]!r} {problem}; refused (nothing is written outside "
                f"{base!r})",
                path=remote,
            )
    target = os.path.normpath(os.path.join(base, *parts))
    if not target.startswith(base.rstrip(os.sep) + os.sep):
        raise RemotePathError(f"remote entry {remote!r} maps outside {base!r} as {target!r}; refused", path=remote)
    return target


def local_partial_name(target: str, remote: str, size: int | None, mtime: float | None) -> str | None:
    """Return the hidden temporary path for downloading *remote* to *target*.

    ``.<name>.<16 hex>.part`` beside the target, the hex being ``sha256(remote | size | mtime)``:
    the same remote version finds the partial a cut connection left; a changed one gets another
    name. ``None`` when the size or time is unknown (nothing proves the version: no resume).
    """
    if size is None or mtime is None:
        return None
    identity = f"{remote}|{size}|{math.floor(mtime)}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(identity).hexdigest()[:16]
    directory, name = os.path.split(target)
    raw = os.fsencode(name)[: _MAX_NAME_BYTES - 1 - _PARTIAL_SUFFIX_LEN]
    short = os.fsdecode(raw)
    return os.path.join(directory, f".{short}.{digest}.part")


class _Walk:
    """A bounded recursive listing of one remote directory, links resolved and checked."""

    def __init__(self, fs: RemoteFS, top: str, log: Log) -> None:
        self.fs = fs
        self.top = top
        self.log = log
        self.count = 0
        self._real_top = self._realpath(top) if isinstance(fs, SupportsRealpath) else top

    def _realpath(self, path: str) -> str:
        return cast("SupportsRealpath", self.fs).realpath(path)

    def files(self, match: Callable[[str], bool] | None = None) -> list[tuple[str, RemoteEntry]]:
        """Return ``(relpath, entry)`` for every file under the top (whose relpath *match*es)."""
        out: list[tuple[str, RemoteEntry]] = []
        self._walk(self.top, "", 0, out, match)
        return out

    def _under_top(self, path: str) -> bool:
        top = self._real_top.rstrip("/")
        return path == top or path.startswith(top + "/")

    def _resolve_link(self, entry: RemoteEntry) -> RemoteEntry | None:
        """What the link *entry* leads to, if inside the top; None for a directory; refuse otherwise."""
        if isinstance(self.fs, SupportsRealpath):
            target = self._realpath(entry.path)
        elif entry.link_target is not None and name_problem(entry.link_target) is None:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link_target))
        else:
            raise RemotePathError(
                f"remote entry {entry.path!r} is a symbolic link whose target the server does not name; refused "
                "(download the file by its real path)",
                path=entry.path,
            )
        if not self._under_top(target):
            raise RemotePathError(
                f"remote entry {entry.path!r} is a symbolic link to {target[:200]!r}, outside {self.top!r}; refused",
                path=entry.path,
            )
        resolved = self.fs.stat(entry.path)
        if resolved is None:
            self.log.warning("skipped %s: a symbolic link to nothing", entry.path)
            return None
        if resolved.is_dir:
            self.log.info("skipped %s: a symbolic link to a directory inside %s (not followed)", entry.path, self.top)
            return None
        return replace(resolved, path=entry.path, is_link=True)

    def _walk(
        self,
        directory: str,
        prefix: str,
        depth: int,
        out: list[tuple[str, RemoteEntry]],
        match: Callable[[str], bool] | None,
    ) -> None:
        if depth > WALK_MAX_DEPTH:
            raise RemotePathError(
                f"remote directory {directory!r} is deeper than {WALK_MAX_DEPTH} levels under {self.top!r}; refused",
                path=directory,
            )
        for entry in self.fs.listdir(directory):
            name = posixpath.basename(entry.path)
            rel = prefix + name
            if entry.is_link:
                resolved = self._resolve_link(entry)
                if resolved is None:
                    continue
                entry = resolved
            if entry.is_dir:
                self._walk(entry.path, rel + "/", depth + 1, out, match)
                continue
            if _is_partial_name(name):
                self.log.debug("skipped %s: a temporary name of an upload in progress", entry.path)
                continue
            if match is not None and not match(rel):
                continue
            self.count += 1
            if self.count > WALK_MAX_FILES:
                raise RemotePathError(
                    f"{self.top!r} holds more than {WALK_MAX_FILES} files; refused (download a narrower path)",
                    path=self.top,
                )
            out.append((rel, entry))


def _glob_split(pattern: str) -> tuple[str, str]:
    """Split an absolute remote glob into its fixed leading directory and the relative pattern."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob_module.has_magic(part):
            break
        fixed.append(part)
    base = "/".join(fixed) or "/"
    return base, "/".join(parts[len(fixed) :])


@dataclass
class _Plan:
    files: list[_RemoteFile]
    #: The remote path named exactly one file and local_path is that file's target (not a directory).
    single: bool = False


def _plan(
    fs: RemoteFS,
    sources: list[str],
    local_path: str,
    *,
    remote_root: str | None,
    log: Log,
) -> _Plan:
    """List what *sources* name on the server and pair each file with its local target."""
    home = getattr(fs, "home", "/")
    cwd = home if isinstance(home, str) and home else "/"
    local_base = os.path.abspath(os.path.expanduser(local_path))
    as_dir = local_path.endswith(("/", os.sep)) or len(sources) > 1 or os.path.isdir(local_base)
    files: list[_RemoteFile] = []
    seen: dict[str, str] = {}

    def add(remote: str, entry: RemoteEntry, rel: str, base: str) -> None:
        target = local_target(base, rel, remote=remote)
        other = seen.get(target)
        if other is not None and other != remote:
            raise ConfigurationError(
                f"remote files {other!r} and {remote!r} would both be written to {target!r}; "
                "download them to different local directories"
            )
        seen[target] = remote
        files.append(_RemoteFile(remote, target, entry.size, entry.mtime, rel))

    for source in sources:
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError(f"remote_path items must be non-empty strings, got {source!r}")
        path = resolve_remote(source, remote_root, cwd=cwd)
        if glob_module.has_magic(source):
            base, pattern = _glob_split(path)
            regex = glob_regex(pattern)
            walk = _Walk(fs, base, log)
            if "/" in pattern or "**" in pattern:
                found = walk.files(functools.partial(_matches_or_under, regex))
            else:
                found = [
                    (posixpath.basename(e.path), e)
                    for e in _flat(fs, base, walk)
                    if regex.fullmatch(posixpath.basename(e.path)) is not None
                ]
            if not found:
                raise RemotePathError(f"remote pattern {source!r} matches no file", path=source)
            for rel, entry in found:
                add(entry.path, entry, rel, local_base)
            as_dir = True
            continue
        named = fs.stat(path)
        if named is None:
            raise RemotePathError(f"remote path {path!r} does not exist", path=path)
        if named.is_dir:
            for rel, child in _Walk(fs, path, log).files():
                add(child.path, child, rel, local_base)
            as_dir = True
            continue
        name = posixpath.basename(path)
        if as_dir:
            add(path, named, name, local_base)
        else:
            parent, leaf = os.path.split(local_base)
            add(path, named, leaf, parent)
    single = len(sources) == 1 and not as_dir and len(files) == 1
    return _Plan(files, single)


def _flat(fs: RemoteFS, base: str, walk: _Walk) -> list[RemoteEntry]:
    """The files directly in *base* (links resolved and checked like a walk's)."""
    out = []
    for entry in fs.listdir(base):
        if entry.is_link:
            resolved = walk._resolve_link(entry)
            if resolved is None:
                continue
            entry = resolved
        if entry.is_dir or _is_partial_name(posixpath.basename(entry.path)):
            continue
        out.append(entry)
    return out


def _matches_or_under(regex: re.Pattern[str], rel: str) -> bool:
    """A recursive glob takes a file it matches, or one inside a directory it matches (like uploads)."""
    if regex.fullmatch(rel) is not None:
        return True
    parts = rel.split("/")
    return any(regex.fullmatch("/".join(parts[:i])) is not None for i in range(1, len(parts)))


# --------------------------------------------------------------------------- one file


class _ShortDownload(IntegrityError):
    """The local partial holds fewer bytes than the server listed: a connection ended early (kept for resume)."""


class _HashingWriter:
    """Writes what a transport reads into the local partial, hashing and counting, refusing excess bytes."""

    def __init__(
        self,
        f: IO[bytes],
        hashers: Sequence[_Hash],
        limit: int | None,
        on_bytes: Callable[[int], None],
        context: RunContext,
        where: str,
        writeback: EarlyWriteback | None = None,
    ) -> None:
        self._f = f
        self._hashers = hashers
        self._limit = limit
        self._on_bytes = on_bytes
        self._context = context
        self._where = where
        self._writeback = writeback
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        if self._context.cancel.is_set():
            raise Cancelled
        n = len(data)
        if self._limit is not None and self.count + n > self._limit:
            raise IntegrityError(
                f"{self._where}: the server sent more bytes than the {self._limit} it listed (the file is "
                "changing?); the partial is removed"
            )
        try:
            self._f.write(data)
        except OSError as exc:
            raise _local_write_error(exc, self._where) from None
        for h in self._hashers:
            h.update(data)
        self.count += n
        self._on_bytes(n)
        if self._writeback is not None:
            self._writeback.wrote(n)
        return n


class _DigestOnly:
    """A sink that hashes a second read of the remote file (``verify="checksum"`` without a server digest)."""

    def __init__(self, limit: int, context: RunContext) -> None:
        self._hash = hashlib.sha256()
        self._limit = limit
        self._context = context
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        if self._context.cancel.is_set():
            raise Cancelled
        self.count += len(data)
        if self.count > self._limit:
            raise IntegrityError(f"the server sent back more than the {self._limit} bytes downloaded")
        self._hash.update(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _local_write_error(exc: OSError, where: str) -> SecureTransferError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LocalStorageFullError(
            f"local disk full while writing {where} ({exc.strerror}); the final path is untouched, free space "
            "and retry",
            path=where,
        )
    return LocalPathError(f"cannot write {where}: {exc.strerror}", path=where)


@dataclass(frozen=True, slots=True)
class _Options:
    overwrite: str
    create_dirs: bool
    verify: str
    delete_source: bool
    archive_dir: str | None
    preserve_mtime: bool


@dataclass(kw_only=True)
class _Shared(RunContext):
    options: _Options
    local_base: str
    made_dirs: set[str] = field(default_factory=set)
    remote_made_dirs: set[str] = field(default_factory=set)
    #: ``download(manifest=...)``: absolute remote path -> what the producer uploaded.
    manifest: dict[str, ManifestEntry] | None = None
    #: One lock per local directory, held while a small file's partial is created or renamed there.
    #: The kernel serialises these on the directory anyway (its i_rwsem); the workers waiting for it
    #: there spin on a CPU (rwsem optimistic spinning) while the holder allocates an inode, which on
    #: ext4 after many deletions scans the recently deleted ones: 15 % of the operator's CPU in a
    #: profile of 500 x 8 KiB on 4 connections. Waiting here, they sleep.
    dir_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def dir_lock(self, directory: str) -> threading.Lock:
        """The lock of the local *directory* (see ``dir_locks``)."""
        with self.lock:
            found = self.dir_locks.get(directory)
            if found is None:
                found = self.dir_locks[directory] = threading.Lock()
            return found

    def check_manifest(self, item: _RemoteFile, size: int, sha256: str) -> bool:
        """Compare a downloaded file with its manifest entry; True when it has one and it matches.

        :raises IntegrityError: the manifest lists other bytes (nothing is moved into place).
        """
        if self.manifest is None:
            return False
        entry = self.manifest.get(item.remote)
        if entry is None:
            return False
        if entry.size != size or entry.sha256 != sha256:
            raise IntegrityError(
                f"{item.remote}: {size} bytes with SHA-256 {sha256}, the manifest lists {entry.size} bytes with "
                f"SHA-256 {entry.sha256}; not moved into place"
            )
        return True


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_local(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True, slots=True)
class _Written:
    """A small file's partial, written (not yet fsynced) and checked."""

    part: str
    size: int
    digest: str
    in_manifest: bool


@dataclass(slots=True)
class _Pending:
    """A small file waiting in a worker's batch for ``get_small_many``, and the partial it will be written to."""

    item: _RemoteFile
    started: float
    part: str


class _FileDownload:
    """Download one planned file over one connection (see the module docstring)."""

    def __init__(self, item: _RemoteFile, conn: Connection, shared: _Shared) -> None:
        self.item = item
        self.conn = conn
        self.shared = shared
        self.opts = shared.options

    def run(self, *, batch: bool = False) -> TransferRecord | _Pending:
        started = time.monotonic()
        fs = self.conn.get()
        if self.item.mtime is None and isinstance(fs, SupportsMtimeQuery):
            # A listing without usable times (FTP LIST): one MDTM gives what resume, skip_identical
            # and preserve_mtime need.
            self.item = replace(self.item, mtime=fs.mtime(self.item.remote))
        item = self.item
        target = item.local
        self._prepare_dir(os.path.dirname(target))
        try:
            existing: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise LocalPathError(f"cannot stat local file {target!r}: {exc.strerror}", path=target) from None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise LocalPathError(f"local path {target!r} is a directory; cannot download a file onto it", target)
            if self.opts.overwrite == "fail":
                raise LocalPathError(
                    f"local file {target!r} exists and overwrite='fail'; nothing was downloaded", path=target
                )
            if self.opts.overwrite == "skip_identical" and stat.S_ISREG(existing.st_mode):
                record = self._maybe_skip(fs, existing, started)
                if record is not None:
                    return self._finish(fs, record)
        if batch:
            part = self._batch_part()
            if part is not None:
                return _Pending(item, started, part)
        return self._finish(fs, self._fetch(fs, started))

    def _batch_part(self) -> str | None:
        """The partial for a file read whole in the worker's batch, or None when it is not for a batch.

        A batch takes a small file with nothing to resume and ``verify="size"``.
        """
        item = self.item
        if item.size is None or item.size > _SMALL_FILE or self.opts.verify != "size":
            return None
        part = local_partial_name(item.local, item.remote, item.size, item.mtime)
        if part is None:
            name = f".{os.path.basename(item.local)[:200]}.{os.getpid()}.part"
            return os.path.join(os.path.dirname(item.local), name)
        return None if os.path.lexists(part) else part

    def write_small(self, pending: _Pending, data: bytes | SecureTransferError) -> _Written:
        """First half of landing a small file read by ``get_small_many``: check it, write its partial.

        Not yet fsynced: a batch writes all its partials, then fsyncs them (on ext4 the first
        fsync's journal commit carries the others' data, so theirs return at once), then lands
        them (:meth:`land_small`). Each is closed here: a batch of every worker held open would
        take up to 16 x ``max_connections`` descriptors.
        """
        if isinstance(data, SecureTransferError):
            raise data
        item = self.item
        if len(data) != item.size:
            raise IntegrityError(
                f"{item.remote}: the server sent {len(data)}{'+' if len(data) > (item.size or 0) else ''} bytes, "
                f"it listed {item.size} (the file is changing?); nothing was written"
            )
        digest = hashlib.sha256(data).hexdigest()
        in_manifest = self.shared.check_manifest(item, len(data), digest)
        part = pending.part
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            with self.shared.dir_lock(os.path.dirname(part)):
                fd = os.open(part, flags, 0o666)
        except OSError as exc:
            raise _local_write_error(exc, part) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except BaseException as exc:
            _remove_local(part)
            if isinstance(exc, OSError):
                raise _local_write_error(exc, part) from None
            raise
        return _Written(part, len(data), digest, in_manifest)

    def land_small(self, fs: RemoteFS, pending: _Pending, written: _Written) -> TransferRecord:
        """Second half: set the partial's time and fsync it, ``os.replace`` it (the caller fsyncs the directory).

        The time is set (through the descriptor) before the fsync, which then makes it durable with the bytes.
        """
        item = self.item
        part = written.part
        try:
            try:
                fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
                try:
                    self._set_local_mtime(part, fd)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _local_write_error(exc, part) from None
            with self.shared.dir_lock(os.path.dirname(item.local)):
                os.replace(part, item.local)
        except BaseException:
            _remove_local(part)
            raise
        self.shared.progress.sent(written.size)
        record = TransferRecord(
            local_path=item.local,
            remote_path=item.remote,
            bytes=written.size,
            sha256=written.digest,
            seconds=time.monotonic() - pending.started,
            resumed=False,
            skipped=False,
            verified="checksum" if written.in_manifest else "size",
            size=written.size,
        )
        return self._finish(fs, record)

    def _set_local_mtime(self, part: str, fd: int | None = None) -> None:
        """Give *part* the remote modification time (through *fd* when given: no path lookup)."""
        if not self.opts.preserve_mtime:
            return
        if self.item.mtime is not None:
            target: int | str = fd if fd is not None and os.utime in os.supports_fd else part
            os.utime(target, (self.item.mtime, self.item.mtime))
            return
        self.shared.say_once(
            "mtime-unknown",
            "warning",
            "preserve_mtime: the server reports no modification time; local files keep the time of the download",
        )

    # -- steps

    def _prepare_dir(self, directory: str) -> None:
        with self.shared.lock:
            if directory in self.shared.made_dirs:
                return
        if self.opts.create_dirs:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _local_write_error(exc, directory) from None
                raise LocalPathError(
                    f"cannot create local directory {directory!r}: {exc.strerror}", directory
                ) from None
        elif not os.path.isdir(directory):
            raise LocalPathError(f"local directory {directory!r} does not exist (create_dirs=False)", path=directory)
        # A directory on the way that is a symlink to elsewhere must not carry a remote name out of local_path.
        real_base = os.path.realpath(self.shared.local_base)
        real = os.path.realpath(directory)
        if real != real_base and not real.startswith(real_base.rstrip(os.sep) + os.sep):
            raise LocalPathError(
                f"local directory {directory!r} leads outside {self.shared.local_base!r} (to {real!r}) through a "
                "symbolic link; refused",
                path=directory,
            )
        with self.shared.lock:
            self.shared.made_dirs.add(directory)

    def _server_digest(self, fs: RemoteFS, path: str) -> tuple[str, str, str] | None:
        if self.conn.exec_distrusted:
            return None
        checksum = fs.checksum(path)
        if checksum is None:
            return None
        algorithm = checksum.algorithm.lower().replace("-", "")
        self.conn.checksum_algorithm = algorithm
        return algorithm, checksum.hexdigest.lower(), checksum.method or "checksum command"

    def _maybe_skip(self, fs: RemoteFS, existing: os.stat_result, started: float) -> TransferRecord | None:
        item = self.item
        if item.size is None or existing.st_size != item.size:
            return None
        remote_sum = self._server_digest(fs, item.remote)
        how: Verified
        if remote_sum is None:
            if item.mtime is None:
                self.shared.say_once(
                    "skip-no-evidence",
                    "warning",
                    "skip_identical: the server offers no checksum and reports no modification time; "
                    "files of the same size are downloaded again",
                )
                return None
            if math.floor(item.mtime) != math.floor(existing.st_mtime):
                return None
            if existing.st_ctime - item.mtime < _SETTLED:
                self.shared.say_once(
                    "skip-racy",
                    "info",
                    "skip_identical: a remote file changed less than %d s before its local copy was made is "
                    "downloaded again even at the same size and time",
                    int(_SETTLED),
                )
                return None
            how = "size+mtime"
        else:
            how = "checksum"
        hashers = {"sha256": hashlib.sha256()}
        if remote_sum is not None and remote_sum[0] != "sha256":
            try:
                hashers[remote_sum[0]] = hashlib.new(remote_sum[0])
            except ValueError:
                return None
        try:
            with open(item.local, "rb") as f:
                while chunk := f.read(_CHUNK):
                    if self.shared.cancel.is_set():
                        raise Cancelled
                    for h in hashers.values():
                        h.update(chunk)
        except OSError as exc:
            raise LocalPathError(f"cannot read local file {item.local!r}: {exc.strerror}", path=item.local) from None
        if remote_sum is not None and hashers[remote_sum[0]].hexdigest() != remote_sum[1]:
            return None
        entry = None if self.shared.manifest is None else self.shared.manifest.get(item.remote)
        if entry is not None and (entry.size != item.size or entry.sha256 != hashers["sha256"].hexdigest()):
            return None  # the local copy is not what the producer listed: fetch it
        self.shared.progress.accounted(item.size)
        self.shared.log.info("skipped %s: identical to %s (%s)", item.remote, item.local, how)
        return TransferRecord(
            local_path=item.local,
            remote_path=item.remote,
            bytes=0,
            sha256=hashers["sha256"].hexdigest(),
            seconds=time.monotonic() - started,
            resumed=False,
            skipped=True,
            verified=how,
            size=item.size,
        )

    def _fetch(self, fs: RemoteFS, started: float) -> TransferRecord:
        item = self.item
        part = local_partial_name(item.local, item.remote, item.size, item.mtime)
        resumable = part is not None
        if part is None:
            # Unknown size or time: nothing would prove a partial is of this version; never resumed.
            part = os.path.join(
                os.path.dirname(item.local), f".{os.path.basename(item.local)[:200]}.{os.getpid()}.part"
            )
        offset = 0
        hashers: dict[str, _Hash] = {"sha256": hashlib.sha256()}
        algorithm = self.conn.checksum_algorithm
        if self.opts.verify == "checksum" and algorithm and algorithm != "sha256":
            with contextlib.suppress(ValueError):
                hashers[algorithm] = hashlib.new(algorithm)
        try:
            st = os.lstat(part)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise LocalPathError(f"cannot stat {part!r}: {exc.strerror}", path=part) from None
        if st is not None:
            if resumable and stat.S_ISREG(st.st_mode) and item.size is not None and 0 < st.st_size <= item.size:
                offset = st.st_size
            elif stat.S_ISDIR(st.st_mode):
                raise LocalPathError(f"temporary path {part!r} is a directory; remove it", path=part)
            else:
                _remove_local(part)  # not the start of this version of the file
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(part, flags | (0 if offset else os.O_TRUNC), 0o666)
        except OSError as exc:
            raise _local_write_error(exc, part) from None
        keep = False
        try:
            with os.fdopen(fd, "r+b" if offset else "wb") as f:
                if offset:
                    left = offset
                    while left > 0:  # the bytes already here are hashed, not fetched again
                        if self.shared.cancel.is_set():
                            raise Cancelled
                        chunk = f.read(min(_CHUNK, left))
                        if not chunk:
                            break
                        for h in hashers.values():
                            h.update(chunk)
                        left -= len(chunk)
                    f.seek(offset)
                    self.shared.progress.accounted(offset)
                    self.shared.log.info("resuming %s at byte %d of %d", item.local, offset, item.size)
                limit = None if item.size is None else item.size - offset
                # A large file's partial is written out to disk while it arrives (the final fsync
                # then has little left); the helper thread ends with this block.
                early = item.size is not None and item.size - offset >= WRITEBACK_MIN_SIZE
                with EarlyWriteback(f.fileno()) if early else contextlib.nullcontext() as writeback:
                    writer = _HashingWriter(
                        f, list(hashers.values()), limit, self.shared.progress.sent, self.shared, part, writeback
                    )
                    if item.size is None or offset < item.size or offset == 0:
                        try:
                            fs.read_to(item.remote, cast("IO[bytes]", writer), offset=offset, size=item.size)
                        except (TransportError, Cancelled):
                            # A cut connection: the partial stays for the next try, unless writing
                            # it out already failed (a retry would trust bytes the disk may not hold).
                            keep = resumable and (writeback is None or writeback.clean())
                            raise
                    try:
                        f.flush()
                        if writeback is not None:
                            writeback.finish()  # an error its early syncs saw is this file's error
                        os.fsync(f.fileno())
                    except OSError as exc:
                        raise _local_write_error(exc, part) from None
                size = os.fstat(f.fileno()).st_size
            self._verify(fs, part, size, hashers)
            in_manifest = self.shared.check_manifest(item, size, hashers["sha256"].hexdigest())
            self._set_local_mtime(part)
            os.replace(part, item.local)
            _fsync_dir(os.path.dirname(item.local))
        except _ShortDownload:
            keep = resumable
            raise
        except BaseException:
            if not keep:
                _remove_local(part)
            raise
        return TransferRecord(
            local_path=item.local,
            remote_path=item.remote,
            bytes=writer.count,
            sha256=hashers["sha256"].hexdigest(),
            seconds=time.monotonic() - started,
            resumed=offset > 0,
            skipped=False,
            verified="checksum" if self.opts.verify == "checksum" or in_manifest else "size",
            size=size,
        )

    def _verify(self, fs: RemoteFS, part: str, size: int, hashers: dict[str, _Hash]) -> None:
        item = self.item
        expected = item.size
        if expected is None:
            entry = fs.stat(item.remote)  # the listing had no size: ask once, after the read
            expected = None if entry is None else entry.size
        if expected is None or size != expected:
            message = f"{item.remote}: {size} bytes arrived, the server listed {expected}"
            if expected is not None and size < expected:
                raise _ShortDownload(message + "; the partial is kept for a resume")
            raise IntegrityError(message + "; not moved into place")
        if self.opts.verify != "checksum":
            return
        local_hex = hashers["sha256"].hexdigest()
        remote_sum = self._server_digest(fs, item.remote)
        if remote_sum is not None:
            algorithm, remote_hex, method = remote_sum
            self.shared.say_once(
                "verify-server", "info", "verify='checksum': using the server's %s (%s)", algorithm, method
            )
            if algorithm in hashers:
                mine = hashers[algorithm].hexdigest()
            else:
                h = hashlib.new(algorithm)
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                mine = h.hexdigest()
            if mine == remote_hex:
                return
            if not method.startswith("exec"):
                raise IntegrityError(
                    f"{item.remote}: the server's {algorithm} is {remote_hex}, the downloaded file's is {mine}; "
                    "not moved into place"
                )
            self.conn.exec_distrusted = True  # a shell's view may not be the SFTP view: the bytes decide
        self.shared.say_once(
            "verify-read-again",
            "info",
            "verify='checksum': the server offers no checksum; each file is read a second time over the same "
            "connection and its SHA-256 compared with the bytes written",
        )
        again = _DigestOnly(size, self.shared)
        fs.read_to(item.remote, cast("IO[bytes]", again))
        if again.count != size or again.hexdigest() != local_hex:
            raise IntegrityError(
                f"{item.remote}: read again {again.count} bytes with SHA-256 {again.hexdigest()}, the downloaded "
                f"file's is {local_hex} ({size} bytes); not moved into place"
            )

    def _finish(self, fs: RemoteFS, record: TransferRecord) -> TransferRecord:
        """Delete or archive the remote file when asked and its bytes were proven here."""
        opts = self.opts
        if not opts.delete_source and opts.archive_dir is None:
            return record
        if record.verified not in ("checksum", "size"):
            self.shared.log.info(
                "kept %s on the server: skipped on size+mtime, its bytes were not compared with %s",
                record.remote_path,
                record.local_path,
            )
            return record
        if opts.archive_dir is not None:
            archived = resolve_remote(posixpath.join(opts.archive_dir, self.item.relpath), None)
            directory = posixpath.dirname(archived)
            with self.shared.lock:
                known = directory in self.shared.remote_made_dirs
            if not known:
                fs.makedirs(directory)
                with self.shared.lock:
                    self.shared.remote_made_dirs.add(directory)
            fs.rename(record.remote_path, archived)
            return replace(record, source_deleted=True, archived_to=archived)
        fs.remove(record.remote_path)
        return replace(record, source_deleted=True)


# --------------------------------------------------------------------------- the download step


class _DownloadStep:
    """The download direction for :class:`~airflow_secure_transfer.transfer.runner.Runner`."""

    def __init__(
        self,
        sources: list[str],
        local_path: str,
        shared: _Shared,
        remote_root: str | None,
        manifest_path: str | None = None,
    ) -> None:
        self.sources = sources
        self.local_path = local_path
        self.shared = shared
        self.remote_root = remote_root
        self.manifest_path = manifest_path
        self.plan = _Plan([])

    def _read_manifest(self, fs: RemoteFS, path: str) -> None:
        """Read the producer's manifest; every file it lists must be among the files to download."""
        home = getattr(fs, "home", "/")
        where = resolve_remote(path, self.remote_root, cwd=home if isinstance(home, str) and home else "/")
        manifest = read_manifest(fs, where)
        if manifest is None:
            raise IntegrityError(f"the manifest {where} does not exist (the delivery is not complete?)")
        entries = manifest.resolve(where, self.remote_root)
        planned = {f.remote for f in self.plan.files}
        missing = sorted(set(entries) - planned)
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise IntegrityError(
                f"the manifest {where} lists {len(missing)} file(s) that remote_path does not hold: {shown}; "
                "nothing was downloaded"
            )
        extra = sorted(r for r in planned if r not in entries and r != where)
        if extra:
            self.shared.log.warning(
                "%d file(s) are not in the manifest %s and are downloaded unchecked by it (e.g. %s)",
                len(extra),
                where,
                extra[0],
            )
        self.shared.manifest = entries
        self.shared.log.info(
            "manifest %s (%s): %d file(s) will be checked against it", where, manifest.producer, len(entries)
        )

    def prepare(self, first: Connection) -> list[_RemoteFile]:
        fs = first.get()
        self.plan = _plan(fs, self.sources, self.local_path, remote_root=self.remote_root, log=self.shared.log)
        if self.manifest_path is not None:
            self._read_manifest(fs, self.manifest_path)
        if self.plan.single:
            self.shared.local_base = os.path.dirname(self.plan.files[0].local)
        progress = self.shared.progress
        progress.files_total = len(self.plan.files)
        progress.bytes_total = sum(f.size or 0 for f in self.plan.files)
        self.shared.log.info(
            "downloading %d file(s), %s, to %s",
            progress.files_total,
            fmt_bytes(progress.bytes_total),
            self.local_path,
        )
        return sorted(self.plan.files, key=lambda f: -(f.size or 0))  # largest first balances the workers

    def run(self, item: _RemoteFile, conn: Connection, *, batch: bool) -> TransferRecord | _Pending:
        return _FileDownload(item, conn, self.shared).run(batch=batch)

    def batching(self, conn: Connection) -> bool:
        return isinstance(conn.fs, SupportsGetSmallMany) and self.shared.options.verify == "size"

    def batch_full(self, batch: Sequence[_Pending], conn: Connection, share: int) -> bool:
        return len(batch) >= _BATCH_FILES or sum(p.item.size or 0 for p in batch) >= _BATCH_BYTES

    def item_of(self, pending: _Pending) -> _RemoteFile:
        return pending.item

    def flush(self, conn: Connection, batch: Sequence[_Pending]) -> list[TransferRecord | BaseException]:
        """Read a worker's batch of small files with one ``get_small_many`` call, then land each."""
        fs = conn.get()
        answers = cast("SupportsGetSmallMany", fs).get_small_many([(p.item.remote, p.item.size or 0) for p in batch])
        steps = [_FileDownload(p.item, conn, self.shared) for p in batch]
        written: list[_Written | BaseException] = []
        out: list[TransferRecord | BaseException] = []
        try:
            for step, p, data in zip(steps, batch, answers, strict=True):
                try:
                    written.append(step.write_small(p, data))
                except Exception as exc:
                    written.append(exc)
            for step, p, w in zip(steps, batch, written, strict=True):
                if isinstance(w, BaseException):
                    out.append(w)
                    continue
                try:
                    out.append(step.land_small(fs, p, w))
                except Exception as exc:
                    out.append(exc)
        except BaseException:
            # Interrupted (KeyboardInterrupt, a task timeout): no partial left behind (a landed one was
            # renamed away, so removing its old name does nothing).
            for w in written:
                if isinstance(w, _Written):
                    _remove_local(w.part)
            raise
        # The renames of the batch made durable: one fsync per directory, before any record is reported.
        for directory in sorted({os.path.dirname(p.item.local) for p in batch}):
            _fsync_dir(directory)
        return out

    def name(self, item: _RemoteFile) -> tuple[str, str]:
        return item.remote, item.local


def remote_sources(remote_path: RemoteSource) -> list[str]:
    """The remote paths *remote_path* names, in order.

    A mapping stands for the file it describes: its ``remote_path`` key (the sensor's
    ``[{remote_path, size, mtime}]`` items, so ``.expand(remote_path=sensor.output)`` maps one
    download per matched file). Only the path is taken from it: sizes and times are read from the
    server again, never trusted from the mapping.

    :raises ConfigurationError: an empty list, or an item that is neither a path nor such a mapping.
    """

    def one(item: object) -> str:
        if isinstance(item, str):
            return item
        if isinstance(item, Mapping):
            path = item.get("remote_path")
            if isinstance(path, str):
                return path
            raise ConfigurationError(
                "a remote_path mapping needs a 'remote_path' string (as the sensor returns), "
                f"got keys {sorted(map(str, item))}"
            )
        raise ConfigurationError(
            f"remote_path must be a path, a file record or a list of these, got {type(item).__name__}"
        )

    if isinstance(remote_path, (str, Mapping)):
        return [one(remote_path)]
    if isinstance(remote_path, Sequence) and not isinstance(remote_path, (bytes, bytearray)):
        sources = [one(item) for item in remote_path]
        if not sources:
            raise ConfigurationError("remote_path is an empty list")
        return sources
    raise ConfigurationError(f"remote_path must be a path or a list of paths, got {type(remote_path).__name__}")


def download(
    connect: Callable[[], RemoteFS],
    remote_path: RemoteSource,
    local_path: str | os.PathLike[str],
    *,
    overwrite: str = "replace",
    create_dirs: bool = True,
    verify: str = "size",
    delete_source: bool = False,
    remote_archive_dir: str | None = None,
    preserve_mtime: bool = True,
    max_connections: int = 4,
    remote_root: str | None = None,
    log: Log | None = None,
    progress_interval: float = 5.0,
    busy_wait: float = 0.0,
    manifest: str | None = None,
) -> list[TransferRecord]:
    """Download *remote_path* to *local_path*; return one record per file.

    :param connect: opens a new connected client (called once per connection used).
    :param remote_path: a file, a directory (recursive), a glob (``*``, ``?``, ``[...]``, ``**``),
        or a list of these. Relative paths start at *remote_root*, else at the login directory.
    :param local_path: the target file for a single remote file (unless it is an existing
        directory or ends with ``/``), else the target directory (created when missing).
    :param overwrite: ``"replace"`` (default), ``"skip_identical"`` (leave a local file alone only
        on proof: same size and the server's checksum, else same size and the modification time an
        earlier download set) or ``"fail"`` (an existing local file is an error).
    :param create_dirs: create missing local directories (default: yes).
    :param verify: ``"size"`` (default, always done) or ``"checksum"`` (also the server's digest,
        else the file read a second time from the server, compared with the bytes written).
    :param delete_source: delete each remote file once its local copy is verified and in place.
    :param remote_archive_dir: instead, move each remote file into this remote directory (keeping its
        path relative to the downloaded source) once its local copy is verified and in place.
    :param preserve_mtime: set each local file's modification time to the remote one (default: yes).
    :param max_connections: most connections used at once; each serves many files.
    :param remote_root: no remote path may resolve outside this directory.
    :param log: logger for progress and the summary (default: this module's).
    :param progress_interval: longest time between progress messages, in seconds.
    :param busy_wait: see :func:`~airflow_secure_transfer.transfer.engine.upload`.
    :param manifest: remote path of the producer's delivery manifest
        (:mod:`~airflow_secure_transfer.transfer.manifest`): every file it lists must be among the
        files to download (else nothing is downloaded), and each is moved into place only when its
        size and SHA-256 equal the manifest's (``verified="checksum"``); else ``IntegrityError``.
    :returns: records in plan order (a file that failed has none).
    :raises SecureTransferError: the first error (non-retryable ones first); files already
        downloaded stay, an interrupted file's partial stays for resume.
    """
    validate_options(overwrite=overwrite, verify=verify, max_connections=max_connections)
    if delete_source and remote_archive_dir is not None:
        raise ConfigurationError("delete_source and remote_archive_dir exclude each other: choose one")
    if remote_archive_dir is not None and (not isinstance(remote_archive_dir, str) or not remote_archive_dir.strip()):
        raise ConfigurationError(f"remote_archive_dir must be a non-empty remote path, got {remote_archive_dir!r}")
    sources = remote_sources(remote_path)
    local = os.fspath(local_path)
    if not isinstance(local, str) or not local:
        raise ConfigurationError(f"local_path must be a non-empty path, got {local_path!r}")
    archive = resolve_remote(remote_archive_dir, remote_root) if remote_archive_dir is not None else None
    log = log or logger
    progress = Progress(0, 0, log, interval=progress_interval, direction="download")
    shared = _Shared(
        options=_Options(overwrite, bool(create_dirs), verify, bool(delete_source), archive, bool(preserve_mtime)),
        progress=progress,
        log=log,
        busy_wait=busy_wait,
        local_base=os.path.abspath(os.path.expanduser(local)),
    )
    if manifest is not None and (not isinstance(manifest, str) or not manifest.strip()):
        raise ConfigurationError(f"manifest must be a non-empty remote path, got {manifest!r}")
    step = _DownloadStep(sources, local, shared, remote_root, manifest)
    run: Runner[_RemoteFile, _Pending] = Runner(step, connect, shared, max_connections, verb="downloading")
    started = time.monotonic()
    try:
        run.execute()
    finally:
        if run.items or run.errors:
            order = {f.remote: i for i, f in enumerate(step.plan.files)}
            run.records.sort(key=lambda r: order.get(r.remote_path, math.inf))
            log.info(
                "%s",
                summary_table(run.records, time.monotonic() - started, failed=len(run.errors), direction="download"),
            )
    raise_run_errors(run, len(step.plan.files), log, lambda item: item.remote, "downloaded")
    return run.records
