"""``SecureUploadOperator``: upload files over FTPS or SFTP, atomically and verified.

The operator only resolves the connection and calls the upload engine
(:func:`airflow_secure_transfer.transfer.engine.upload`), which does the work:
temporary name, size (and checksum) verification, rename, resume, parallel
connections, progress. The protocol follows from the connection's type.

Importing this module is light: hooks, clients, ``ftplib``, ``ssl`` (beyond what
Airflow itself loads), paramiko and asyncssh are imported in :meth:`execute`.
The constructor checks its arguments and does no I/O, so a typo fails the DAG
at parse time with a clear message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_secure_transfer.exceptions import ConfigurationError, SecureTransferError
from airflow_secure_transfer.transfer.options import validate_options

if TYPE_CHECKING:
    from airflow_secure_transfer.transfer.base import RemoteFS, TransferRecord

__all__ = ["SecureUploadOperator"]


class SecureUploadOperator(BaseOperator):
    """Upload local files to an FTPS or SFTP server; return one record per file (XCom).

    Each file is written to a hidden temporary name in the target directory, its
    size verified (and its checksum with ``verify="checksum"``), then renamed onto
    the final name, so the final path never holds a partial file. A retry of the
    task resumes a file that a cut connection left half-sent.

    :param conn_id: an Airflow connection of type ``secure_ftps`` or ``ftp`` (always
        TLS), or ``secure_sftp``, ``sftp`` or ``ssh`` (host key pinned). Templated.
    :param local_path: a file, a directory (sent recursively), a glob (``*``, ``**``),
        or a list of these. Templated.
    :param remote_path: the target file when *local_path* is one file, else the target
        directory; a trailing ``/`` always means a directory. Templated.
    :param overwrite: ``"replace"`` (default), ``"skip_identical"`` (leave a target of
        the same size, and checksum where the server has one) or ``"fail"`` (an existing
        target is an error, before any byte is sent).
    :param create_dirs: create missing remote directories (default ``True``).
    :param verify: ``"size"`` (default; always done) or ``"checksum"`` (also compare a
        server-computed digest; fails when the server offers none).
    :param delete_source: delete each local file after its verified upload ("move").
    :param max_connections: most connections used at once; default and upper bound:
        the connection's ``max_connections`` extra (4 unless set).
    :returns: ``[{local_path, remote_path, bytes, sha256, seconds, resumed, skipped,
        verified}, ...]``; ``bytes`` counts the bytes sent by this run.
    :raises AirflowFailException: for errors that a retry cannot fix (trust,
        login, configuration, missing local file); transport and integrity errors
        are raised as they are, so Airflow's retries apply.
    """

    template_fields: Sequence[str] = ("conn_id", "local_path", "remote_path")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        conn_id: str,
        local_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        remote_path: str,
        overwrite: str = "replace",
        create_dirs: bool = True,
        verify: str = "size",
        delete_source: bool = False,
        max_connections: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_options(overwrite=overwrite, verify=verify, max_connections=max_connections)
        for name, value in (("create_dirs", create_dirs), ("delete_source", delete_source)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        if not isinstance(conn_id, str) or not conn_id:
            raise ConfigurationError(f"conn_id must be a non-empty string, got {conn_id!r}")
        self.conn_id = conn_id
        self.local_path = local_path
        self.remote_path = remote_path
        self.overwrite = overwrite
        self.create_dirs = create_dirs
        self.verify = verify
        self.delete_source = delete_source
        self.max_connections = max_connections
        self._records: list[TransferRecord] = []
        self._endpoint: tuple[str, str, int] | None = None

    # ------------------------------------------------------------------ execution

    def _client_factory(self) -> tuple[Callable[[], RemoteFS], str | None, int]:
        """Resolve the connection into a client factory, its remote_root and its connection cap."""
        from airflow.sdk import BaseHook

        from airflow_secure_transfer.security.policy import FTPS_CONN_TYPES, SFTP_CONN_TYPES

        conn = BaseHook.get_connection(self.conn_id)
        conn_type = (conn.conn_type or "").strip().lower()
        if conn_type in FTPS_CONN_TYPES:
            from airflow_secure_transfer.hooks.ftps import SecureFTPSHook

            ftps_settings = SecureFTPSHook(ftps_conn_id=self.conn_id).get_settings()
            self._endpoint = ("ftps", ftps_settings.host, ftps_settings.port)

            def ftps_client() -> RemoteFS:
                from airflow_secure_transfer.transfer.ftps import FTPSClient

                return FTPSClient(ftps_settings)

            return ftps_client, ftps_settings.remote_root, ftps_settings.max_connections
        if conn_type in SFTP_CONN_TYPES:
            from airflow_secure_transfer.hooks.sftp import SecureSFTPHook

            sftp_settings = SecureSFTPHook(sftp_conn_id=self.conn_id).get_settings()
            self._endpoint = ("sftp", sftp_settings.host, sftp_settings.port)

            def sftp_client() -> RemoteFS:
                from airflow_secure_transfer.transfer.sftp import SFTPClient

                return SFTPClient(sftp_settings)

            return sftp_client, sftp_settings.remote_root, sftp_settings.max_connections
        raise ConfigurationError(
            f"connection {self.conn_id!r} has type {conn.conn_type!r}, which SecureUploadOperator does not accept; "
            f"accepted types: {', '.join(FTPS_CONN_TYPES + SFTP_CONN_TYPES)} "
            "(ftp connections are always upgraded to TLS)"
        )

    def _upload(self) -> list[TransferRecord]:
        from airflow_secure_transfer.transfer.engine import upload

        connect, remote_root, cap = self._client_factory()
        connections = cap if self.max_connections is None else min(self.max_connections, cap)
        if self.max_connections is not None and self.max_connections > cap:
            self.log.info(
                "max_connections=%d is above the connection's limit of %d; using %d",
                self.max_connections,
                cap,
                connections,
            )
        return upload(
            connect,
            self.local_path,
            self.remote_path,
            overwrite=self.overwrite,
            create_dirs=self.create_dirs,
            verify=self.verify,
            delete_source=self.delete_source,
            max_connections=connections,
            remote_root=remote_root,
            log=self.log,
        )

    def execute(self, context: Any) -> list[dict[str, object]]:
        """Upload; return the records as dicts. Works with ``op.execute(context={})``."""
        try:
            self._records = self._upload()
        except SecureTransferError as exc:
            if exc.retryable:
                raise
            from airflow_secure_transfer.compat import airflow_fail_exception

            # Not retryable (a wrong host key stays wrong): fail now, without Airflow retries.
            raise airflow_fail_exception()(f"{type(exc).__name__}: {exc}") from exc
        return [record.as_dict() for record in self._records]

    # ------------------------------------------------------------------ lineage

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Return ``(inputs, outputs)`` of the last run as ``(namespace, name)`` pairs.

        Inputs are ``file://<this host>`` + the local path, outputs ``sftp://host:port``
        or ``ftps://host:port`` + the remote path (the same names the ``ftps`` asset
        handler and the stock ``sftp`` one produce).
        """
        if self._endpoint is None or not self._records:
            return [], []
        scheme, host, port = self._endpoint
        local_ns = f"file://{socket.gethostname()}"
        remote_host = f"[{host}]" if ":" in host else host
        remote_ns = f"{scheme}://{remote_host}:{port}"
        inputs = [(local_ns, r.local_path) for r in self._records]
        outputs = [(remote_ns, r.remote_path) for r in self._records]
        return inputs, outputs

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return OpenLineage inputs/outputs, or ``None`` when the OpenLineage provider is not installed."""
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        inputs, outputs = self.lineage_datasets()
        return OperatorLineage(
            inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
            outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
        )
