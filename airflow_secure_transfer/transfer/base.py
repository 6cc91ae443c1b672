"""The interface every transport implements, and the records the engine returns.

A transport (``FTPSClient``, ``SFTPClient``) is a *connected* client of one
server. It is used from one thread at a time; the engine opens several for
parallel work. Paths given to it are absolute POSIX paths already checked by
:func:`airflow_secure_transfer.security.paths.resolve_remote`.

Every method is bounded by the connection's ``conn_timeout`` and raises only
:mod:`airflow_secure_transfer.exceptions` classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

    from airflow_secure_transfer.exceptions import SecureTransferError

#: A record's ``verified``: how the remote bytes were proven (see :class:`TransferRecord`).
Verified = Literal["checksum", "size+mtime", "size", False]

#: Called with the number of bytes just moved (not a running total).
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One remote file or directory as reported by the server."""

    path: str
    is_dir: bool
    size: int | None = None
    #: Seconds since the epoch (UTC), only from a source precise to the second (MLSx ``modify=``,
    #: ``MDTM``, SFTP attributes); never from a ``LIST`` line (minutes at best, local time).
    mtime: float | None = None
    #: A symbolic link, as a listing reports it (SFTP ``readdir`` attributes, MLSD ``OS.unix=slink``,
    #: a ``LIST`` line starting with ``l``). What the other fields describe depends on the protocol
    #: (the link itself, or what it points to); a download resolves links before trusting them.
    is_link: bool = False
    #: The link's target as the server reported it (untrusted text), when it did.
    link_target: str | None = None


@dataclass(frozen=True, slots=True)
class Checksum:
    """A digest computed by the server (``HASH``/``XSHA256``, SFTP ``check-file``)."""

    #: hashlib name: ``sha256``, ``sha512``, ``sha1``, ``md5``.
    algorithm: str
    hexdigest: str
    #: How the server was asked (``"HASH"``, ``"XSHA256"``, ``"check-file"``, ``"exec sha256sum"``), for the log.
    method: str = ""


@runtime_checkable
class RemoteFS(Protocol):
    """A connected client of one remote file server."""

    #: URI scheme of the protocol: ``"ftps"`` or ``"sftp"``.
    scheme: str

    def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at *path*, or ``None`` when nothing is there."""

    def listdir(self, path: str) -> list[RemoteEntry]:
        """List the directory *path* (without ``.`` and ``..``)."""

    def makedirs(self, path: str) -> None:
        """Create directory *path* and any missing parents; an existing one is fine."""

    def write_from(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write *source* (read to its end) into *path* starting at byte *offset*.

        ``offset == 0`` creates or truncates the file; a larger offset resumes an
        existing file of exactly that size. Returns the number of bytes written.
        """

    def read_to(
        self,
        path: str,
        sink: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
        size: int | None = None,
    ) -> int:
        """Copy *path* from byte *offset* to its end into *sink*; return the bytes read.

        *size*: the file's size as the caller's listing gave it, a hint only (a client may then skip
        asking the server for it); the end is still the server's end of file, wherever that is.
        """

    def rename(self, source: str, target: str) -> None:
        """Rename *source* to *target*, replacing *target* if it exists."""

    def remove(self, path: str) -> None:
        """Delete the file *path*; a missing file raises ``RemotePathError``."""

    def checksum(self, path: str) -> Checksum | None:
        """Return a server-computed digest of *path*, or ``None`` if the server has none."""

    def close(self) -> None:
        """Close the connection; safe to call twice."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosingClient:
    """``with client:`` closes the client on the way out (the FTPS and SFTP clients' base)."""

    def close(self) -> None:  # pragma: no cover - provided by the client
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class SupportsPutSmall(Protocol):
    """A :class:`RemoteFS` with a fused upload for files small enough to hold in memory.

    ``put_small(part, target, data)`` writes *data* to *part* (created or truncated), asks the
    server how many bytes *part* holds, and only when that is ``len(data)`` renames *part* to
    *target* (replacing it); all in fewer round trips than ``write_from`` + ``stat`` + ``rename``.
    It returns the size the server reported (``None``: *part* is missing), so that the caller
    decides what a mismatch means; *part* is then left where it is. The engine uses it for small
    files when nothing is to be resumed and ``verify="size"``.
    """

    def put_small(self, part: str, target: str, data: bytes, *, mtime: int | None = None) -> int | None: ...


@runtime_checkable
class SupportsStatMany(Protocol):
    """A :class:`RemoteFS` that stats several paths in one round trip (``stat`` of each, in order).

    *prepare_data*: a transfer is likely to follow; the client may get its data connection's
    setup under way with these requests (FTPS to vsftpd: the ``EPSV``).
    """

    def stat_many(self, paths: Sequence[str], *, prepare_data: bool = False) -> list[RemoteEntry | None]: ...


@runtime_checkable
class SupportsWriteThenStat(Protocol):
    """A :class:`RemoteFS` that follows an upload with a time set and a stat in fewer round trips.

    ``write_then_stat(path, source, offset=, mtime=)`` is ``write_from``, then (with *mtime*)
    ``set_mtime``, then ``stat(path)``; it returns (bytes sent, whether the time was set, the entry).
    """

    def write_then_stat(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int = 0,
        mtime: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[int, bool, RemoteEntry | None]: ...


@runtime_checkable
class SupportsSetMtime(Protocol):
    """A :class:`RemoteFS` that can set a file's modification time (``preserve_mtime``).

    ``set_mtime(path, mtime)`` sets *path*'s modification time to *mtime* (whole seconds since
    the epoch, UTC) and returns whether it did; ``False`` when the server cannot (the client
    remembers that and sends nothing more for it on this connection). ``put_small(...,
    mtime=...)`` does the same to the part before its size check and rename.

    ``mtime_trusted`` turns ``False`` once the client saw the server report a time other than
    the one just set (a server that answers in local time): its times then prove nothing.
    """

    mtime_trusted: bool
    #: ``None`` until the first ``set_mtime`` (or ``put_small`` with an ``mtime``) told.
    can_set_mtime: bool | None

    def set_mtime(self, path: str, mtime: int) -> bool: ...


@runtime_checkable
class SupportsMtimeQuery(Protocol):
    """A :class:`RemoteFS` that reads one file's modification time in one command (FTP ``MDTM``).

    For a server whose listing carries no usable time (``LIST``), where :meth:`RemoteFS.stat`
    takes more commands.
    """

    def mtime(self, path: str) -> float | None: ...


@runtime_checkable
class SupportsPutSmallMany(SupportsPutSmall, Protocol):
    """``put_small`` for several files in one call, all in flight together (SFTP).

    ``put_small_many([(part, target, data), ...])`` returns per file what ``put_small`` would
    return, or the :class:`~airflow_secure_transfer.exceptions.SecureTransferError` that file met;
    it raises only when the whole call failed (the connection was lost or stopped answering).
    ``mtimes`` (one per item, or None) are set on the parts as ``put_small``'s ``mtime``.
    """

    def put_small_many(
        self, items: Sequence[tuple[str, str, bytes]], *, mtimes: Sequence[int | None] | None = None
    ) -> list[int | SecureTransferError | None]: ...


@runtime_checkable
class SupportsAssemble(Protocol):
    """A :class:`RemoteFS` that copies files into one on the server (SFTP ``copy-data``).

    ``can_assemble`` says whether the server offers it (OpenSSH 9.0+, asyncssh).
    ``assemble(target, parts)`` copies each ``(path, offset, length)`` part, which must hold
    exactly *length* bytes (else :class:`~airflow_secure_transfer.exceptions.IntegrityError`),
    to *offset* in *target* (created when missing, never truncated), server-side: no file bytes
    cross the network. ``remove_many(paths)`` deletes files in one exchange and returns per path
    its error or None. The engine uses them for the segments of a large upload sent over several
    connections (see :mod:`~airflow_secure_transfer.transfer.segments`).
    """

    can_assemble: bool

    def assemble(self, target: str, parts: Sequence[tuple[str, int, int]]) -> None: ...

    def remove_many(self, paths: Sequence[str]) -> list[SecureTransferError | None]: ...


@runtime_checkable
class SupportsGetSmallMany(Protocol):
    """A :class:`RemoteFS` that reads several small files whole in one overlapped exchange (SFTP).

    ``get_small_many([(path, listed_size), ...])`` returns per file the bytes read (at most
    ``listed_size + 1``: a longer answer means the file grew) or the
    :class:`~airflow_secure_transfer.exceptions.SecureTransferError` that file met; it raises only
    when the whole call failed.
    """

    def get_small_many(self, items: Sequence[tuple[str, int]]) -> list[bytes | SecureTransferError]: ...


@runtime_checkable
class SupportsRealpath(Protocol):
    """A :class:`RemoteFS` that resolves a path to its canonical form, links followed (SFTP ``realpath``)."""

    def realpath(self, path: str) -> str: ...


@runtime_checkable
class SupportsSessionSecurity(Protocol):
    """A :class:`RemoteFS` that says what its session negotiated and whom it verified (delivery receipts).

    ``session_security()`` returns public facts only (safe for logs, lineage and asset events):
    ``protocol`` (``"ftps"``/``"sftp"``); for FTPS ``tls_version`` and ``cipher``, for SFTP
    ``ssh_kex`` and ``ssh_cipher``; and ``server_identity``, the identity that was checked:
    ``"certificate sha256:<hex>"`` (the server's leaf certificate) or ``"<key type> SHA256:<base64>"``
    (the SSH host key, as ``ssh-keygen -l`` prints it).
    """

    def session_security(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """What happened to one file; the operator returns a list of these as dicts (XCom)."""

    local_path: str
    remote_path: str
    #: Bytes sent by this run (0 for a skip; what was missing for a resume).
    bytes: int
    sha256: str
    seconds: float
    resumed: bool
    skipped: bool
    #: How the remote file was proven to hold the local bytes: ``"checksum"`` (server digest or
    #: read back), ``"size+mtime"`` (a skip on same size and the modification time we set),
    #: ``"size"`` (an upload whose size was checked), or ``False``.
    verified: Verified
    #: Size of the local file in bytes.
    size: int = 0
    #: Whether the source was deleted: the local file after an upload (``delete_source=True`` and its
    #: bytes proven on the server), the remote one after a download (``delete_source`` or
    #: ``remote_archive_dir``, once the local copy was verified and in place).
    source_deleted: bool = False
    #: A download with ``remote_archive_dir``: where the remote file was moved.
    archived_to: str | None = None
    #: Whether the file was OpenPGP-encrypted before it was sent (``encrypt_with``).
    encrypted: bool = False
    #: SHA-256 of the bytes on the server when they differ from the local file's (the ciphertext).
    remote_sha256: str | None = None
    #: Size of the bytes on the server when it differs from the local file's (the ciphertext).
    remote_size: int | None = None
    #: A download with ``decrypt_with``: the file was OpenPGP-decrypted (and its signature verified with
    #: ``verify_signature_with``) before it was moved into place.
    decrypted: bool = False

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-serialisable dict (no secrets: paths, sizes and digests only)."""
        return {
            "local_path": self.local_path,
            "remote_path": self.remote_path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
            "skipped": self.skipped,
            "verified": self.verified,
            "size": self.size,
            "source_deleted": self.source_deleted,
            "encrypted": self.encrypted,
            "remote_sha256": self.remote_sha256,
        } | {
            key: value
            for key, value in (
                ("archived_to", self.archived_to),
                ("remote_size", self.remote_size),
                ("decrypted", self.decrypted or None),
            )
            if value is not None
        }
