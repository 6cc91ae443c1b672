"""``SecureFileTrigger``: the deferred ``SecureFileSensor``, polling from the triggerer without blocking its loop.

SFTP runs on the triggerer's own event loop through asyncssh
(:class:`~airflow_secure_transfer.transfer.sftp_async.AsyncSFTPRemote`, connected by the same
function as ``SFTPClient``: same host-key trust and algorithms); FTPS runs the package's
``FTPSClient`` on worker threads (``asyncio.to_thread``), with the same TLS context code as the
hooks. The rules (match, stability, done marker, manifest) are those of
:class:`~airflow_secure_transfer.transfer.watch.Watcher`, shared with the sensor's poke.

Events (JSON): ``{"status": "success", "files": [{remote_path, size, mtime}]}`` or, for an error a
retry cannot fix (host key, certificate, policy, login, a hostile listing or manifest path),
``{"status": "error", "error_class": "VerificationError", "message": ...}``. Transient errors are
logged and retried at the next poll until the task's deferral timeout.

The serialized form holds the connection id and plain arguments only, never a secret: the
connection is resolved in the triggerer (``resolve_connection``) when the trigger runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_secure_transfer.exceptions import SecureTransferError
from airflow_secure_transfer.transfer.watch import CheckResult, Watcher, file_records, watcher_for

if TYPE_CHECKING:
    from airflow_secure_transfer.hooks.resolve import ResolvedConnection
    from airflow_secure_transfer.transfer.watch import AsyncRemote

__all__ = ["SecureFileTrigger"]

#: The client module each protocol needs in the triggerer (imported on a worker thread).
_CLIENT_MODULES = {
    "sftp": "airflow_secure_transfer.transfer.sftp_async",
    "ftps": "airflow_secure_transfer.transfer.ftps",
}


class SecureFileTrigger(BaseTrigger):
    """Poll an FTPS or SFTP server until files matching *path* are complete; fire once.

    :param conn_id: the Airflow connection (resolved in the triggerer).
    :param path: a remote file or a pattern in its last component.
    :param min_files: files that must be counted.
    :param stable_for: seconds a file's size and mtime must stay unchanged.
    :param done_marker: a remote path (``"{path}"`` stands for each matched file's path), or None.
    :param manifest: a remote manifest whose files must all be present with their sizes, or None.
    :param poke_interval: seconds between polls (a file about to become stable is looked at sooner).
    """

    def __init__(
        self,
        *,
        conn_id: str,
        path: str,
        min_files: int = 1,
        stable_for: float = 30.0,
        done_marker: str | None = None,
        manifest: str | None = None,
        poke_interval: float = 60.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        self.conn_id = conn_id
        self.path = path
        self.min_files = min_files
        self.stable_for = stable_for
        self.done_marker = done_marker
        self.manifest = manifest
        self.poke_interval = float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the keyword arguments (connection id and plain values only)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "path": self.path,
                "min_files": self.min_files,
                "stable_for": self.stable_for,
                "done_marker": self.done_marker,
                "manifest": self.manifest,
                "poke_interval": self.poke_interval,
            },
        )

    async def _open(self, resolved: ResolvedConnection) -> AsyncRemote:
        if resolved.scheme == "sftp":
            from airflow_secure_transfer.security.policy import SFTPSettings
            from airflow_secure_transfer.transfer.sftp_async import AsyncSFTPRemote

            assert isinstance(resolved.settings, SFTPSettings)
            return await AsyncSFTPRemote(resolved.settings).connect()
        from airflow_secure_transfer.transfer.watch import BlockingRemote

        fs = await asyncio.to_thread(resolved.connect)  # FTPSClient: blocking, so on a worker thread
        return BlockingRemote(fs, offload=True)

    async def _check(self, resolved: ResolvedConnection, watcher: Watcher) -> CheckResult:
        remote = await self._open(resolved)
        try:
            return await watcher.check(remote, time.monotonic())
        finally:
            with contextlib.suppress(SecureTransferError, OSError):
                await remote.close()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until done (one success event) or a non-retryable error (one error event)."""
        try:
            # On a worker thread: the connection lookup (the triggerer answers it from its loop; a sync
            # call made on the loop would need greenback's portal) and the first imports of the policy,
            # ssl/ftplib or asyncssh/cryptography (measured: 0.33 s of a blocked loop when made on it).
            # asgiref's sync_to_async, not asyncio.to_thread: a connection lookup made on its thread reaches
            # the supervisor through the triggerer's own loop (Airflow 3.1's comms channel is not safe to use
            # from another loop: "Response read out of order").
            from asgiref.sync import sync_to_async

            resolved = await sync_to_async(_resolve, thread_sensitive=False)(self.conn_id)
            watcher = watcher_for(self, resolved.remote_root)
        except SecureTransferError as exc:
            yield _error_event(exc)
            return
        while True:
            result: CheckResult | None = None
            try:
                result = await self._check(resolved, watcher)
            except SecureTransferError as exc:
                if not exc.retryable:
                    yield _error_event(exc)
                    return
                self.log.warning("%s: %s: %s; trying again", self.path, type(exc).__name__, exc)
            if result is not None and result.done:
                self.log.info("%s: %d file(s) ready", self.path, len(result.files))
                yield TriggerEvent({"status": "success", "files": file_records(result.files)})  # type: ignore[no-untyped-call]
                return
            delay = self.poke_interval
            if result is not None:
                self.log.info("%s: waiting for %s", self.path, result.waiting_for)
                if result.stable_in is not None:
                    delay = min(delay, result.stable_in + 0.05)
            await asyncio.sleep(delay)


def _resolve(conn_id: str) -> ResolvedConnection:
    """Resolve *conn_id* and import its protocol's client module (blocking: call on a worker thread)."""
    from airflow_secure_transfer.hooks.resolve import resolve_connection

    resolved = resolve_connection(conn_id, consumer="SecureFileTrigger")
    importlib.import_module(_CLIENT_MODULES[resolved.scheme])
    return resolved


def _error_event(exc: SecureTransferError) -> TriggerEvent:
    event = {"status": "error", "error_class": type(exc).__name__, "message": str(exc)}
    return TriggerEvent(event)  # type: ignore[no-untyped-call]  # untyped in Airflow
