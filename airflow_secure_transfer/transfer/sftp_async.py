"""SFTP on the caller's event loop (the triggerer's): an :class:`~airflow_secure_transfer.transfer.watch.AsyncRemote`.

Connects through :func:`~airflow_secure_transfer.transfer.sftp.open_sftp_session`, the code path of
:class:`~airflow_secure_transfer.transfer.sftp.SFTPClient` (host-key trust, algorithm lists, error
mapping), lists through its bounded :func:`~airflow_secure_transfer.transfer.sftp.read_listing` and
translates errors with its :func:`~airflow_secure_transfer.transfer.sftp.translate_error`. Nothing
here blocks the loop: the one CPU-heavy step, decrypting a client key, runs on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncssh

from airflow_secure_transfer.exceptions import SecureTransferError, TransferTimeout, TransportError, scrub_secrets
from airflow_secure_transfer.security.hostkeys import HostKeyTrust
from airflow_secure_transfer.security.paths import check_name
from airflow_secure_transfer.transfer import limits
from airflow_secure_transfer.transfer.base import RemoteEntry
from airflow_secure_transfer.transfer.sftp import (
    OpenedSession,
    SFTPClient,
    _entry,
    _quiet_asyncssh_logger,
    listing_entries,
    open_sftp_session,
    read_listing,
    translate_error,
)

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import SFTPSettings
    from airflow_secure_transfer.transfer.manifest import Manifest

__all__ = ["AsyncSFTPRemote"]

T = TypeVar("T")


class AsyncSFTPRemote:
    """One SFTP session on the running loop; open with :meth:`connect`, close with :meth:`close`.

    :param settings: validated settings (from ``resolve_connection``).
    """

    def __init__(self, settings: SFTPSettings) -> None:
        self._settings = settings
        self._timeout = settings.conn_timeout
        self._where = f"{settings.host}:{settings.port}"
        self._session: OpenedSession | None = None

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        return (self._settings.password, self._settings.private_key_passphrase)

    async def connect(self) -> AsyncSFTPRemote:
        """Connect, verify the host key, log in, start SFTP; return self.

        :raises SecureTransferError: as :func:`~airflow_secure_transfer.transfer.sftp.open_sftp_session`.
        """
        _quiet_asyncssh_logger()
        settings = self._settings
        try:
            trust = HostKeyTrust.from_settings(settings)
            # Decrypting a passphrase-protected key (bcrypt KDF) takes long enough to stall a loop.
            keys = await asyncio.to_thread(SFTPClient._load_client_keys, settings)
            self._session = await open_sftp_session(settings, trust, keys)
        except SecureTransferError as exc:
            scrub_secrets(exc, self._secrets)
            raise
        return self

    async def _op(self, what: str, path: str, fn: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        if self._session is None:
            raise TransportError(f"{self._where}: the SFTP session is closed")
        try:
            return await asyncio.wait_for(fn(self._session.sftp), self._timeout)
        except SecureTransferError as exc:
            scrub_secrets(exc, self._secrets)
            raise
        except TimeoutError:
            raise TransferTimeout(f"{self._where}: no answer to {what} {path} within {self._timeout:g} s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, where=self._where, what=what, path=path, secrets=self._secrets) from exc

    async def home(self) -> str:
        """The login directory (``realpath(".")``)."""
        home = await self._op("realpath", ".", lambda sftp: sftp.realpath("."))
        return home if isinstance(home, str) else home.decode("utf-8", "replace")

    async def listdir(self, path: str) -> list[RemoteEntry]:
        """List *path* within the listing bounds (see :func:`~airflow_secure_transfer.transfer.sftp.read_listing`)."""
        check_name(path)

        async def op(sftp: asyncssh.SFTPClient) -> list[asyncssh.SFTPName]:
            return await read_listing(sftp, path, timeout=self._timeout, where=self._where)

        names = await self._op("list", path, op)
        return listing_entries(names, path, where=self._where)

    async def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at *path* (following symlinks), or ``None``."""
        check_name(path)

        async def op(sftp: asyncssh.SFTPClient) -> asyncssh.SFTPAttrs | None:
            try:
                return await sftp.stat(path)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None

        attrs = await self._op("stat", path, op)
        return None if attrs is None else _entry(path, attrs)

    async def read_manifest(self, path: str) -> Manifest | None:
        """Read the manifest at *path*, at most ``MANIFEST_MAX_BYTES``, and parse it (untrusted)."""
        from airflow_secure_transfer.transfer.manifest import parse_manifest

        check_name(path)
        limit = limits.MANIFEST_MAX_BYTES

        async def op(sftp: asyncssh.SFTPClient) -> bytes | None:
            try:
                async with sftp.open(path, "rb") as f:
                    data = await f.read(limit + 1)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None
            return data if isinstance(data, bytes) else data.encode()

        data = await self._op("read", path, op)
        return None if data is None else parse_manifest(data)

    async def close(self) -> None:
        """Close the session and the connection (bounded: a silent server is aborted)."""
        session, self._session = self._session, None
        if session is None:
            return
        session.sftp.exit()
        session.conn.close()
        try:
            await asyncio.wait_for(session.conn.wait_closed(), 2.0)
        except (TimeoutError, asyncssh.Error, OSError):
            session.conn.abort()
