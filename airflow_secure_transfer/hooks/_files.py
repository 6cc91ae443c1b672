"""The file methods both hooks offer (the stock FTPHook/SFTPHook names), written once.

Each works over the hook's own connection (``get_conn()``), except ``store_file``
from a path, which goes through the upload engine like the operator does.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from airflow_secure_transfer.exceptions import IntegrityError, LocalPathError, RemotePathError, SecureTransferError
from airflow_secure_transfer.security.paths import resolve_remote

if TYPE_CHECKING:
    from typing import Self

    from airflow_secure_transfer.transfer.base import RemoteFS, TransferRecord


def put_buffer(client: RemoteFS, remote: str, buffer: IO[bytes]) -> int:
    """Write *buffer* (read to its end) to the absolute *remote* path atomically; return the bytes written.

    The bytes go to a hidden temporary name beside *remote* (``.<name>.<12 hex>.part``), the size
    the server then reports must equal what was sent, and only then is it renamed onto *remote*
    (replacing it). On an error the temporary file is removed and the error raised.

    :raises IntegrityError: the server holds another size than was sent.
    """
    name = f".{posixpath.basename(remote)}.{uuid.uuid4().hex[:12]}.part"
    partial = posixpath.join(posixpath.dirname(remote), name)
    try:
        written = client.write_from(partial, buffer)
        entry = client.stat(partial)
        landed = None if entry is None else entry.size
        if landed != written:
            raise IntegrityError(f"{partial}: the server has {landed} bytes, {written} were sent")
        client.rename(partial, remote)
    except SecureTransferError:
        with contextlib.suppress(SecureTransferError):
            client.remove(partial)
        raise
    return written


class _Settings(Protocol):
    @property
    def remote_root(self) -> str | None: ...


class _Lent:
    """The hook's own client lent to the engine: the engine's ``close`` leaves it open for the hook."""

    def __init__(self, client: RemoteFS) -> None:
        self._client = client

    def close(self) -> None:
        """Keep the hook's connection (the hook closes it in ``close_conn``)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RemoteFileMethods:
    """Mixin for a hook that provides ``get_conn()``, ``get_fs()`` and ``get_settings()``.

    The hook keeps its own client in ``_client`` (opened by ``get_conn``); closing it and the
    context-manager protocol are written here once.
    """

    _client: RemoteFS | None

    def get_conn(self) -> RemoteFS:  # pragma: no cover - provided by the hook
        raise NotImplementedError

    def get_fs(self) -> RemoteFS:  # pragma: no cover - provided by the hook
        raise NotImplementedError

    def get_settings(self) -> _Settings:  # pragma: no cover - provided by the hook
        raise NotImplementedError

    def close_conn(self) -> None:
        """Close the hook's own client, if open."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_conn()

    def _remote_root(self) -> str | None:
        return self.get_settings().remote_root

    def _remote(self, path: str) -> str:
        root = self._remote_root()
        if path.startswith("/") or root:
            return resolve_remote(path, root)
        return resolve_remote(path, None, cwd=getattr(self.get_conn(), "home", "/"))

    def store_file(
        self,
        remote_full_path: str,
        local_full_path_or_buffer: str | os.PathLike[str] | IO[bytes],
        *,
        overwrite: str = "replace",
    ) -> list[TransferRecord] | None:
        """Upload a local file (or a binary buffer) to *remote_full_path*, atomically.

        A path goes through the upload engine (temporary name, size check, rename; a new
        connection). A buffer is written to a temporary name on the hook's connection, its
        landed size checked, then renamed into place.
        """
        remote = self._remote(remote_full_path)
        if isinstance(local_full_path_or_buffer, (str, os.PathLike)):
            from airflow_secure_transfer.transfer.engine import upload

            local = os.fspath(local_full_path_or_buffer)
            if not Path(local).is_file():
                raise LocalPathError(f"{local} is not a file", path=local)
            return upload(
                self.get_fs,
                local,
                remote,
                overwrite=overwrite,
                max_connections=1,
                remote_root=self._remote_root(),
            )
        put_buffer(self.get_conn(), remote, local_full_path_or_buffer)
        return None

    def retrieve_file(
        self,
        remote_full_path: str,
        local_full_path_or_buffer: str | os.PathLike[str] | IO[bytes],
    ) -> int:
        """Download *remote_full_path* into a local file or a binary buffer; return the file's size in bytes.

        A path goes through the download engine over the hook's own connection (no new session per
        call): a hidden partial beside the target, size check, fsync, ``os.replace``; a partial left
        by a cut connection is resumed when the remote file is unchanged. A buffer is filled over the
        hook's own connection too.
        """
        remote = self._remote(remote_full_path)
        if not isinstance(local_full_path_or_buffer, (str, os.PathLike)):
            return self.get_conn().read_to(remote, local_full_path_or_buffer)
        from airflow_secure_transfer.transfer.download import download

        records = download(
            lambda: _Lent(self.get_conn()),
            remote,
            os.fspath(local_full_path_or_buffer),
            max_connections=1,
            remote_root=self._remote_root(),
        )
        if len(records) != 1:
            raise RemotePathError(f"{remote} is a directory or a pattern, not one file; use the operator", remote)
        return records[0].size

    def list_directory(self, path: str) -> list[str]:
        """Return the names in the remote directory *path* (without ``.``/``..``), sorted."""
        return sorted(posixpath.basename(e.path) for e in self.get_conn().listdir(self._remote(path)))

    def create_directory(self, path: str) -> None:
        """Create *path* and its missing parents (an existing directory is fine)."""
        self.get_conn().makedirs(self._remote(path))

    def delete_file(self, path: str) -> None:
        """Delete the remote file *path*."""
        self.get_conn().remove(self._remote(path))

    def rename(self, from_name: str, to_name: str) -> None:
        """Rename a remote file, replacing the target (atomically where the server allows)."""
        self.get_conn().rename(self._remote(from_name), self._remote(to_name))

    def path_exists(self, path: str) -> bool:
        """Return whether anything exists at the remote *path*."""
        return self.get_conn().stat(self._remote(path)) is not None

    def get_size(self, path: str) -> int | None:
        """Return the size of the remote file *path*, or None if it does not exist."""
        entry = self.get_conn().stat(self._remote(path))
        return None if entry is None else entry.size
