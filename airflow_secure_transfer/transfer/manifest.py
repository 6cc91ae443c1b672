"""The delivery manifest: what a producer uploaded, written last, so that a consumer can prove it got it all.

The upload operator (``SecureUploadOperator(manifest=...)``) writes it, atomically, after every file of
the task is verified and renamed into place; the sensor waits for it and the download operator checks
each file against it. Its form (UTF-8 JSON)::

    {
      "files": [{"path": "sales.csv", "size": 1234, "sha256": "<64 hex>"}, ...],
      "created": "2026-12-02T15:50:18Z",
      "producer": "airflow-secure-transfer 0.1.0 dag_id.task_id run_id"
    }

``path`` is relative to the manifest's own directory (``sub/b.csv`` for a file below it), so the
manifest stays true for a consumer whose account sees the same directory under another absolute
path (a different chroot or ``remote_root``). :meth:`Manifest.resolve` turns the entries into
absolute remote paths for a manifest found at a given path.

A manifest read from a server is untrusted input: :func:`parse_manifest` bounds its size
(:data:`~airflow_secure_transfer.transfer.limits.MANIFEST_MAX_BYTES`) and its entries
(:data:`~airflow_secure_transfer.transfer.limits.MANIFEST_MAX_FILES`), accepts exactly the keys
and types above, and holds every path to the rules of
:mod:`airflow_secure_transfer.security.paths`. Errors:

* :class:`~airflow_secure_transfer.exceptions.IntegrityError` (retryable): not UTF-8 JSON of
  that form (also what a manifest still being written by another tool looks like), over a bound;
* :class:`~airflow_secure_transfer.exceptions.RemotePathError` (not retryable): an entry whose
  path breaks the path rules (``..``, an absolute path, a control character, a backslash), or
  resolves outside ``remote_root``.

This module imports no Airflow.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    IntegrityError,
    LimitExceededError,
    RemotePathError,
    SecureTransferError,
)
from airflow_secure_transfer.security.paths import name_problem, resolve_remote
from airflow_secure_transfer.transfer import limits

if TYPE_CHECKING:
    from airflow_secure_transfer.transfer.base import RemoteFS, TransferRecord

__all__ = ["Manifest", "ManifestEntry", "build_manifest", "parse_manifest", "read_manifest"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Longest ``path`` accepted (bytes of UTF-8); PATH_MAX on Linux.
_MAX_PATH_BYTES = 4096
#: Longest ``created`` / ``producer`` accepted (characters).
_MAX_CREATED = 64
_MAX_PRODUCER = 1024
_KEYS = ("files", "created", "producer")
_FILE_KEYS = ("path", "size", "sha256")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file as the producer uploaded it."""

    #: Bytes.
    size: int
    #: Lower-case hex SHA-256 of the file's bytes.
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest.

    :param files: relative path (to the manifest's directory) -> :class:`ManifestEntry`, read-only.
    :param created: when the producer wrote it (ISO 8601, UTC), as written.
    :param producer: who wrote it (free text, no control characters).
    """

    files: Mapping[str, ManifestEntry] = field(repr=False)
    created: str
    producer: str

    def resolve(self, manifest_path: str, remote_root: str | None = None) -> dict[str, ManifestEntry]:
        """Return the entries keyed by absolute remote path, for a manifest found at *manifest_path*.

        :param manifest_path: the manifest's absolute remote path.
        :param remote_root: the connection's ``remote_root``: no entry may resolve outside it.
        :raises RemotePathError: an entry resolves outside *remote_root*.
        """
        base = posixpath.dirname(resolve_remote(manifest_path, remote_root))
        return {resolve_remote(posixpath.join(base, rel), remote_root): entry for rel, entry in self.files.items()}

    def __repr__(self) -> str:
        return f"Manifest({len(self.files)} files, created={self.created!r}, producer={self.producer!r})"


def _relative(remote_path: str, base: str) -> str:
    """*remote_path* relative to directory *base*; refuse one outside it."""
    prefix = base.rstrip("/") + "/"
    if not remote_path.startswith(prefix) or remote_path == prefix:
        raise ConfigurationError(
            f"{remote_path} is not below {base}, the manifest's directory: put the manifest in the directory "
            "the files are uploaded to (or a parent of it)"
        )
    return remote_path[len(prefix) :]


def build_manifest(
    records: Iterable[TransferRecord],
    *,
    manifest_path: str,
    producer: str,
    created: datetime | None = None,
) -> bytes:
    """Return the manifest (UTF-8 JSON) of the uploaded files in *records*.

    :param records: the upload's records (their ``remote_path``, ``size`` and ``sha256``; for an
        encrypted upload ``remote_size`` and ``remote_sha256``: the manifest describes the server's bytes).
    :param manifest_path: the manifest's absolute remote path; every file must lie below its directory.
    :param producer: who produced the files (e.g. the provider version, DAG, task and run ids).
    :param created: the time to record (default: now), converted to UTC.
    :raises ConfigurationError: a file outside the manifest's directory, the same path twice, a
        record without a SHA-256, or a *producer* with control characters.
    """
    base = posixpath.dirname(posixpath.normpath(manifest_path))
    files: dict[str, dict[str, object]] = {}
    for record in records:
        rel = _relative(record.remote_path, base)
        if rel in files:
            raise ConfigurationError(f"{record.remote_path} appears twice among the uploaded files")
        # The bytes on the server: the ciphertext of an encrypted upload, else the file itself.
        digest = record.remote_sha256 or record.sha256
        size = record.remote_size if record.remote_size is not None else record.size
        if not _SHA256.fullmatch(digest):
            raise ConfigurationError(f"{record.remote_path} has no SHA-256 in its record")
        files[rel] = {"path": rel, "size": size, "sha256": digest}
    if _CONTROL.search(producer) or len(producer) > _MAX_PRODUCER:
        raise ConfigurationError(f"producer must be at most {_MAX_PRODUCER} characters without control characters")
    when = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    document = {
        "files": [files[rel] for rel in sorted(files)],
        "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "producer": producer,
    }
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- parsing (untrusted)


def _bad(message: str) -> IntegrityError:
    return IntegrityError(f"manifest refused: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _bad(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _bad(f"{name} is not a JSON number")


def _check_keys(obj: object, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(f"{what} is not an object")
    if set(obj) != set(keys):
        unknown = sorted(set(obj) - set(keys))
        missing = sorted(set(keys) - set(obj))
        detail = "; ".join(
            part
            for part in (
                f"unknown keys {[k[:40] for k in unknown[:5]]}" if unknown else "",
                f"missing keys {missing}" if missing else "",
            )
            if part
        )
        raise _bad(f"{what}: {detail}")
    return obj


def _check_path(path: object, index: int) -> str:
    if not isinstance(path, str) or not path:
        raise _bad(f"files[{index}].path is not a non-empty string")
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        raise _bad(f"files[{index}].path is longer than {_MAX_PATH_BYTES} bytes")
    problem = name_problem(path)
    if problem is None:
        if path.startswith("/"):
            problem = "is absolute (paths are relative to the manifest's directory)"
        elif any(part in ("", ".", "..") for part in path.split("/")):
            problem = "has an empty, '.' or '..' component"
    if problem is not None:
        raise RemotePathError(f"manifest refused: files[{index}].path {path[:80]!r} {problem}", path=path[:200])
    return path


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate a manifest read from a server (untrusted input).

    :param data: the manifest's bytes.
    :raises IntegrityError: over :data:`~airflow_secure_transfer.transfer.limits.MANIFEST_MAX_BYTES`
        or :data:`~airflow_secure_transfer.transfer.limits.MANIFEST_MAX_FILES`, not UTF-8 JSON,
        other keys or types than the manifest's, a malformed digest, a path listed twice.
    :raises RemotePathError: a path that breaks the path rules (see the module docstring).
    """
    if len(data) > limits.MANIFEST_MAX_BYTES:
        raise _bad(f"{len(data)} bytes, more than the {limits.MANIFEST_MAX_BYTES} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except IntegrityError:
        raise
    except (ValueError, RecursionError) as exc:
        raise _bad(f"not JSON ({str(exc)[:120]})") from None
    top = _check_keys(document, _KEYS, "the manifest")
    files_raw, created, producer = top["files"], top["created"], top["producer"]
    if not isinstance(files_raw, list):
        raise _bad("'files' is not a list")
    if len(files_raw) > limits.MANIFEST_MAX_FILES:
        raise _bad(f"{len(files_raw)} files, more than the {limits.MANIFEST_MAX_FILES} allowed")
    if not isinstance(created, str) or len(created) > _MAX_CREATED:
        raise _bad("'created' is not a short string")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise _bad(f"'created' {created[:_MAX_CREATED]!r} is not an ISO 8601 time") from None
    if not isinstance(producer, str) or len(producer) > _MAX_PRODUCER or _CONTROL.search(producer):
        raise _bad(f"'producer' is not a string of at most {_MAX_PRODUCER} characters without control characters")
    files: dict[str, ManifestEntry] = {}
    for index, raw in enumerate(files_raw):
        entry = _check_keys(raw, _FILE_KEYS, f"files[{index}]")
        path = _check_path(entry["path"], index)
        size, digest = entry["size"], entry["sha256"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"files[{index}].size is not a non-negative integer")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad(f"files[{index}].sha256 is not 64 lower-case hex digits")
        if path in files:
            raise _bad(f"{path[:80]!r} is listed twice")
        files[path] = ManifestEntry(size=size, sha256=digest)
    return Manifest(files=MappingProxyType(files), created=created, producer=producer)


class _BoundedSink:
    """A binary sink that refuses more than *limit* bytes."""

    def __init__(self, limit: int, where: str) -> None:
        self.buffer = bytearray()
        self.overflowed = False
        self._limit = limit
        self._where = where

    def write(self, data: bytes | memoryview) -> int:
        if len(self.buffer) + len(data) > self._limit:
            self.overflowed = True
            raise LimitExceededError(
                f"{self._where}: the manifest is larger than {self._limit} bytes (manifest bytes limit)",
                limit="manifest bytes",
            )
        self.buffer += data
        return len(data)


def read_manifest(fs: RemoteFS, path: str) -> Manifest | None:
    """Read and parse the manifest at the absolute remote *path*; ``None`` when there is none.

    The read stops at :data:`~airflow_secure_transfer.transfer.limits.MANIFEST_MAX_BYTES`.

    :raises IntegrityError: see :func:`parse_manifest`; also over the size bound.
    :raises RemotePathError: see :func:`parse_manifest`.
    :raises TransportError: the read failed.
    """
    entry = fs.stat(path)
    if entry is None:
        return None
    if entry.is_dir:
        raise RemotePathError(f"manifest {path} is a directory", path=path)
    limit = limits.MANIFEST_MAX_BYTES
    if entry.size is not None and entry.size > limit:
        raise _bad(f"{path} has {entry.size} bytes, more than the {limit} allowed")
    sink = _BoundedSink(limit, path)
    try:
        fs.read_to(path, sink)  # type: ignore[arg-type]  # a write()-only sink is all read_to uses
    except SecureTransferError as exc:
        if sink.overflowed:  # however the client wrapped the sink's error
            raise _bad(f"{path} is larger than the {limit} bytes allowed") from exc
        raise
    return parse_manifest(bytes(sink.buffer))
