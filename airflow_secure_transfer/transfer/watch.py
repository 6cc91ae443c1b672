"""Waiting for files: what ``SecureFileSensor`` and ``SecureFileTrigger`` decide, written once.

One :class:`Watcher` holds the rules; it talks to the server through an :class:`AsyncRemote`, of
which there are two kinds:

* :class:`BlockingRemote` over a connected :class:`~airflow_secure_transfer.transfer.base.RemoteFS`:
  run inline by the sensor in a worker (:func:`run_inline`), or on worker threads by the trigger
  for FTPS (``offload=True``: ``asyncio.to_thread``, so the triggerer's loop never blocks);
* :class:`~airflow_secure_transfer.transfer.sftp_async.AsyncSFTPRemote`: asyncssh on the
  triggerer's own loop, connected through the same code as ``SFTPClient``.

One check (:meth:`Watcher.check`)::

    list the directory of `path`        a missing directory is "nothing yet"
    match its last component            fnmatch, case-sensitive; never a directory, a name starting
                                        with "." (this provider's temporary names all do), the
                                        manifest or a done marker
    stable?                             size and mtime unchanged for `stable_for` seconds, as seen by
                                        this watcher (the first sighting starts the clock)
    done_marker                         "{path}" in it: each file counts once its own marker exists;
                                        else one marker for all
    min_files                           at least this many files counted
    manifest                            read (bounded, strict); every file it lists present with its size

Security failures (``retryable = False``: host key, certificate, policy, login, a hostile listing or
manifest path) propagate; the callers fail at once on them and retry the rest until their timeout.

Imports no Airflow.
"""

from __future__ import annotations

import asyncio
import fnmatch
import posixpath
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_secure_transfer.exceptions import ConfigurationError, RemotePathError, TransportError
from airflow_secure_transfer.security.paths import check_name, resolve_remote

if TYPE_CHECKING:
    from airflow_secure_transfer.transfer.base import RemoteEntry, RemoteFS
    from airflow_secure_transfer.transfer.manifest import Manifest

__all__ = [
    "AsyncRemote",
    "BlockingRemote",
    "CheckResult",
    "WatchSpec",
    "Watcher",
    "file_records",
    "run_inline",
    "validate_watch_arguments",
    "watcher_for",
]

T = TypeVar("T")

#: Characters that make the last component of ``path`` a pattern.
_GLOB = frozenset("*?[")
#: Most done markers outside the listed directory stat'ed in one check (one per matched file).
_MAX_MARKER_STATS = 1000


class AsyncRemote(Protocol):
    """The little a watcher needs from a server; every method raises only this package's errors."""

    async def home(self) -> str:
        """The login directory (relative paths without ``remote_root`` start there)."""

    async def listdir(self, path: str) -> list[RemoteEntry]:
        """List directory *path*, bounded like ``RemoteFS.listdir``."""

    async def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at *path*, or ``None``."""

    async def read_manifest(self, path: str) -> Manifest | None:
        """Read and parse the manifest at *path* (bounded), or ``None`` when there is none."""

    async def close(self) -> None:
        """Close the connection."""


class BlockingRemote:
    """An :class:`AsyncRemote` over a connected blocking client.

    :param fs: the connected client; closed by :meth:`close`.
    :param offload: run each call on a worker thread (``asyncio.to_thread``), for an event loop that
        must not block (the triggerer's); ``False``: call inline (the sensor, see :func:`run_inline`).
    """

    def __init__(self, fs: RemoteFS, *, offload: bool) -> None:
        self.fs = fs
        self._offload = offload

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def home(self) -> str:
        """The client's ``home`` (FTP ``PWD``, SFTP ``realpath(".")``)."""
        return await self._call(lambda: str(getattr(self.fs, "home", "/")))

    async def listdir(self, path: str) -> list[RemoteEntry]:
        """See :meth:`RemoteFS.listdir`."""
        return await self._call(self.fs.listdir, path)

    async def stat(self, path: str) -> RemoteEntry | None:
        """See :meth:`RemoteFS.stat`."""
        return await self._call(self.fs.stat, path)

    async def read_manifest(self, path: str) -> Manifest | None:
        """See :func:`~airflow_secure_transfer.transfer.manifest.read_manifest`."""
        from airflow_secure_transfer.transfer.manifest import read_manifest

        return await self._call(read_manifest, self.fs, path)

    async def close(self) -> None:
        """Close the client."""
        await self._call(self.fs.close)


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (one over a ``BlockingRemote(offload=False)``) to its end.

    No event loop is needed (the sensor may run where one is already running).

    :raises RuntimeError: the coroutine suspended (it awaited real I/O).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("run_inline: the coroutine suspended; use an event loop")


def validate_watch_arguments(
    *, path: object, min_files: object, stable_for: object, done_marker: object, manifest: object
) -> None:
    """Check the sensor's arguments (types and ranges; templated ones may still hold Jinja).

    :raises ConfigurationError: naming the argument and what is wrong.
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"path must be a non-empty remote path or pattern, got {path!r}")
    if not isinstance(min_files, int) or isinstance(min_files, bool) or min_files < 1:
        raise ConfigurationError(f"min_files must be a whole number of at least 1, got {min_files!r}")
    if not isinstance(stable_for, (int, float)) or isinstance(stable_for, bool) or not 0 <= stable_for < 86_400:
        raise ConfigurationError(f"stable_for must be seconds from 0 to 86400, got {stable_for!r}")
    for name, value in (("done_marker", done_marker), ("manifest", manifest)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError(f"{name} must be a remote path or None, got {value!r}")


@dataclass(frozen=True)
class WatchSpec:
    """What to wait for (the sensor's arguments after templating).

    :param path: a remote file or a pattern in its last component (fnmatch, case-sensitive).
    :param min_files: files that must be counted.
    :param stable_for: seconds a file's size and mtime must stay unchanged.
    :param done_marker: a remote path; ``"{path}"`` in it stands for each matched file's path.
    :param manifest: the remote path of a manifest whose files must all be present with their sizes.
    :param remote_root: the connection's ``remote_root``.
    """

    path: str
    min_files: int = 1
    stable_for: float = 30.0
    done_marker: str | None = None
    manifest: str | None = None
    remote_root: str | None = None

    def __post_init__(self) -> None:
        validate_watch_arguments(
            path=self.path,
            min_files=self.min_files,
            stable_for=self.stable_for,
            done_marker=self.done_marker,
            manifest=self.manifest,
        )
        directory = posixpath.dirname(self.path)
        if _GLOB & set(directory):
            raise ConfigurationError(
                f"path {self.path!r}: only its last component may be a pattern ({directory!r} has * ? or [)"
            )
        check_name(self.path)
        if self.done_marker is not None:
            check_name(self.done_marker.replace("{path}", "/x"))
        if self.manifest is not None:
            check_name(self.manifest)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: done (with the files), or what is still missing."""

    done: bool
    files: list[RemoteEntry] = field(default_factory=list)
    #: Why not done yet, for the log.
    waiting_for: str = ""
    #: Seconds until a file seen now becomes stable if it does not change (None: none pending).
    stable_in: float | None = None


def file_records(files: list[RemoteEntry]) -> list[dict[str, object]]:
    """The sensor's XCom: ``[{remote_path, size, mtime}]`` (JSON-serialisable)."""
    return [{"remote_path": e.path, "size": e.size, "mtime": e.mtime} for e in files]


class WatchArguments(Protocol):
    """What the sensor and its trigger both carry: their arguments after templating."""

    path: str
    min_files: int
    stable_for: float
    done_marker: str | None
    manifest: str | None


def watcher_for(arguments: WatchArguments, remote_root: str | None) -> Watcher:
    """A :class:`Watcher` for the sensor's or the trigger's arguments, confined to *remote_root*.

    :raises ConfigurationError: see :class:`WatchSpec`.
    """
    spec = WatchSpec(
        path=arguments.path,
        min_files=arguments.min_files,
        stable_for=arguments.stable_for,
        done_marker=arguments.done_marker,
        manifest=arguments.manifest,
        remote_root=remote_root,
    )
    return Watcher(spec)


class Watcher:
    """Applies a :class:`WatchSpec` to what a server shows, remembering sizes and times between checks.

    :param spec: what to wait for.
    """

    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        #: path -> ((size, mtime), first seen with these, monotonic seconds)
        self._seen: dict[str, tuple[tuple[int | None, float | None], float]] = {}
        self._home: str | None = None

    def _resolve(self, path: str) -> str:
        assert self._home is not None
        return resolve_remote(path, self.spec.remote_root, cwd=self._home)

    def _marker(self, matched: str) -> str | None:
        template = self.spec.done_marker
        return None if template is None else self._resolve(template.replace("{path}", matched))

    async def _list(self, remote: AsyncRemote, directory: str) -> list[RemoteEntry]:
        try:
            return await remote.listdir(directory)
        except (RemotePathError, TransportError):  # some FTP servers answer a missing directory with 501
            if await remote.stat(directory) is None:
                return []  # the directory is not there yet
            raise

    async def check(self, remote: AsyncRemote, now: float) -> CheckResult:
        """Look once; return whether the wait is over and with which files.

        :param remote: a connected server.
        :param now: ``time.monotonic()``.
        :raises SecureTransferError: what the server or the manifest caused (see the module docstring).
        """
        spec = self.spec
        if self._home is None:
            self._home = "/" if spec.remote_root or spec.path.startswith("/") else await remote.home()
        target = self._resolve(spec.path)
        directory, pattern = posixpath.split(target)
        manifest_path = None if spec.manifest is None else self._resolve(spec.manifest)
        entries = await self._list(remote, directory)
        names = {e.path for e in entries}
        fixed_marker = self._marker("") if spec.done_marker and "{path}" not in spec.done_marker else None
        excluded = {manifest_path, fixed_marker}
        if spec.done_marker and "{path}" in spec.done_marker:
            excluded |= {self._marker(e.path) for e in entries}
        matched = [
            e
            for e in entries
            if not e.is_dir
            and not posixpath.basename(e.path).startswith(".")
            and fnmatch.fnmatchcase(posixpath.basename(e.path), pattern)
            and e.path not in excluded
        ]
        stable, pending = self._stability(matched, now)
        stable_in = min(pending) if pending else None
        if len(stable) < spec.min_files:
            waiting = f"{len(stable)} of {spec.min_files} file(s) matching {target}"
            if pending:
                waiting += f" ({len(pending)} more seen, not yet unchanged for {spec.stable_for:g} s)"
            return CheckResult(False, waiting_for=waiting, stable_in=stable_in)
        counted = await self._marked(remote, stable, names, directory)
        if len(counted) < spec.min_files:
            return CheckResult(
                False,
                waiting_for=f"done marker(s) {spec.done_marker}: {len(counted)} of {spec.min_files} file(s) marked",
                stable_in=stable_in,
            )
        if manifest_path is not None:
            missing = await self._manifest_missing(remote, manifest_path, entries, directory)
            if missing:
                return CheckResult(False, waiting_for=missing, stable_in=stable_in)
        return CheckResult(True, files=sorted(counted, key=lambda e: e.path))

    def _stability(self, matched: list[RemoteEntry], now: float) -> tuple[list[RemoteEntry], list[float]]:
        seen: dict[str, tuple[tuple[int | None, float | None], float]] = {}
        stable: list[RemoteEntry] = []
        pending: list[float] = []
        for entry in matched:
            key = (entry.size, entry.mtime)
            previous = self._seen.get(entry.path)
            since = previous[1] if previous is not None and previous[0] == key else now
            seen[entry.path] = (key, since)
            left = self.spec.stable_for - (now - since)
            if left <= 0:
                stable.append(entry)
            else:
                pending.append(left)
        self._seen = seen  # forget files that went away
        return stable, pending

    async def _marked(
        self, remote: AsyncRemote, files: list[RemoteEntry], names: set[str], directory: str
    ) -> list[RemoteEntry]:
        template = self.spec.done_marker
        if template is None:
            return files
        per_file = "{path}" in template
        found: dict[str, bool] = {}
        stats = 0
        counted = []
        for entry in files:
            marker = self._marker(entry.path if per_file else "")
            assert marker is not None
            if marker not in found:
                if posixpath.dirname(marker) == directory:
                    found[marker] = marker in names
                else:
                    stats += 1
                    if stats > _MAX_MARKER_STATS:
                        break
                    hit = await remote.stat(marker)
                    found[marker] = hit is not None and not hit.is_dir
            if found[marker]:
                counted.append(entry)
            if not per_file and not found[marker]:
                return []
        return counted

    async def _manifest_missing(
        self, remote: AsyncRemote, manifest_path: str, entries: list[RemoteEntry], directory: str
    ) -> str:
        manifest = await remote.read_manifest(manifest_path)
        if manifest is None:
            return f"manifest {manifest_path}"
        wanted = manifest.resolve(manifest_path, self.spec.remote_root)
        listings: dict[str, dict[str, RemoteEntry]] = {directory: {e.path: e for e in entries}}
        missing: list[str] = []
        for path, expected in sorted(wanted.items()):
            parent = posixpath.dirname(path)
            if parent not in listings:
                listings[parent] = {e.path: e for e in await self._list(remote, parent)}
            entry = listings[parent].get(path)
            if entry is None or entry.is_dir or entry.size != expected.size:
                have = "missing" if entry is None else f"{entry.size} bytes"
                missing.append(f"{path} ({have}, {expected.size} expected)")
        if not missing:
            return ""
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"{len(missing)} of {len(wanted)} file(s) of manifest {manifest_path}: {', '.join(missing[:3])}{more}"
