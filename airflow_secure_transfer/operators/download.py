"""``SecureDownloadOperator``: download files over FTPS or SFTP, atomically and verified.

The operator only resolves the connection and calls the download engine
(:func:`airflow_secure_transfer.transfer.download.download`), which does the work:
hidden partial beside the target, size (and checksum) verification, fsync, rename,
resume, parallel connections, progress, and refusing remote names that would leave
``local_path``. The protocol follows from the connection's type.

Importing this module is light: hooks, clients, ``ftplib``, ``ssl``, asyncssh are
imported in :meth:`execute`; the constructor checks its arguments and does no I/O.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_secure_transfer.exceptions import ConfigurationError, SecureTransferError
from airflow_secure_transfer.operators._common import check_flags, fail_fast, open_endpoint
from airflow_secure_transfer.operators.upload import _apply_server_pool
from airflow_secure_transfer.transfer.options import validate_options

if TYPE_CHECKING:
    from airflow_secure_transfer.operators._common import Endpoint
    from airflow_secure_transfer.transfer.base import TransferRecord

__all__ = ["SecureDownloadOperator"]


class SecureDownloadOperator(BaseOperator):
    """Download files from an FTPS or SFTP server; return one record per file (XCom).

    Each file is written to a hidden temporary name in its target directory, flushed and
    fsynced, its size verified (and its checksum with ``verify="checksum"``), then renamed
    onto the final name with ``os.replace``: the final path never holds a partial file, and
    an existing file is untouched until its replacement is complete. A retry of the task
    resumes a file that a cut connection left half-read, when the remote file's size and
    modification time are unchanged.

    Remote names are untrusted: a listed name that would leave ``local_path`` (``..``,
    ``/``, NUL/CR/LF, ``\\``, drive prefixes), or a remote symbolic link leading outside the
    downloaded directory, is refused with an error naming the entry.

    :param conn_id: an Airflow connection of type ``secure_ftps`` or ``ftp`` (always TLS), or
        ``secure_sftp``, ``sftp`` or ``ssh`` (host key pinned). Templated.
    :param remote_path: a file, a directory (downloaded recursively), a glob (``*``, ``?``,
        ``[...]``, ``**``), or a list of these. Templated.
    :param local_path: the target file for a single remote file (unless it is an existing
        directory or ends with ``/``), else the target directory. Templated.
    :param overwrite: ``"replace"`` (default), ``"skip_identical"`` (leave a local file alone
        only on proof that it holds the same bytes: same size and the server's checksum, else
        same size and the modification time an earlier download set) or ``"fail"``.
    :param create_dirs: create missing local directories (default ``True``).
    :param verify: ``"size"`` (default; always done) or ``"checksum"`` (also the server's digest
        where it offers one, else the SHA-256 computed while writing compared with a second read
        of the remote file).
    :param delete_source: delete each remote file after its local copy is verified and in place.
    :param remote_archive_dir: instead, move each remote file into this remote directory (its
        path relative to the downloaded source kept) after its verified download. Templated.
    :param preserve_mtime: set each local file's modification time to the remote one (default
        ``True``; what lets a later ``skip_identical`` run skip on a server without checksums).
    :param max_connections: most connections used at once; default and upper bound: the
        connection's ``max_connections`` extra (4 unless set).
    :param server_pool: an Airflow pool standing for the partner's server, as for
        :class:`~airflow_secure_transfer.operators.upload.SecureUploadOperator`.
    :param manifest: remote path of the producer's delivery manifest (as
        ``SecureUploadOperator(manifest=...)`` writes it), e.g. ``"/outbox/{{ ds }}/MANIFEST.json"``.
        Every file it lists must be among the files *remote_path* names, and each is moved into
        place only when its size and SHA-256 equal the manifest's; any difference or missing file
        fails with ``IntegrityError``. Templated. Default ``None``.
    :returns: ``[{remote_path, local_path, size, bytes, sha256, seconds, resumed, skipped,
        verified, source_deleted[, archived_to]}, ...]``; ``bytes`` counts the bytes read by
        this run, ``size`` is the file's size.
    :raises AirflowFailException: for errors that a retry cannot fix (trust, login,
        configuration, a refused remote name); transport and integrity errors are raised as
        they are, so Airflow's retries apply.
    """

    template_fields: Sequence[str] = ("conn_id", "remote_path", "local_path", "remote_archive_dir", "manifest")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        conn_id: str,
        remote_path: str | Sequence[str],
        local_path: str,
        overwrite: str = "replace",
        create_dirs: bool = True,
        verify: str = "size",
        delete_source: bool = False,
        remote_archive_dir: str | None = None,
        preserve_mtime: bool = True,
        max_connections: int | None = None,
        server_pool: str | None = None,
        manifest: str | None = None,
        **kwargs: Any,
    ) -> None:
        _apply_server_pool(server_pool, max_connections, kwargs)
        super().__init__(**kwargs)
        validate_options(overwrite=overwrite, verify=verify, max_connections=max_connections)
        check_flags(create_dirs=create_dirs, delete_source=delete_source, preserve_mtime=preserve_mtime)
        if not isinstance(conn_id, str) or not conn_id:
            raise ConfigurationError(f"conn_id must be a non-empty string, got {conn_id!r}")
        if delete_source and remote_archive_dir is not None:
            raise ConfigurationError("delete_source and remote_archive_dir exclude each other: choose one")
        self.conn_id = conn_id
        self.remote_path = remote_path
        self.local_path = local_path
        self.overwrite = overwrite
        self.create_dirs = create_dirs
        self.verify = verify
        self.delete_source = delete_source
        self.remote_archive_dir = remote_archive_dir
        self.preserve_mtime = preserve_mtime
        self.max_connections = max_connections
        self.server_pool = server_pool
        if manifest is not None and (not isinstance(manifest, str) or not manifest):
            raise ConfigurationError(f"manifest must be a non-empty remote path, got {manifest!r}")
        self.manifest = manifest
        self._records: list[TransferRecord] = []
        self._endpoint: Endpoint | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Like ``BaseOperator.partial``; ``server_pool`` sets the mapped tasks' pool and slots too."""
        _apply_server_pool(kwargs.get("server_pool"), kwargs.get("max_connections"), kwargs)
        return super().partial(**kwargs)

    def _download(self) -> list[TransferRecord]:
        from airflow_secure_transfer.transfer.download import download

        endpoint = self._endpoint = open_endpoint(self, "SecureDownloadOperator")
        return download(
            endpoint.connect,
            self.remote_path,
            self.local_path,
            overwrite=self.overwrite,
            create_dirs=self.create_dirs,
            verify=self.verify,
            delete_source=self.delete_source,
            remote_archive_dir=self.remote_archive_dir,
            preserve_mtime=self.preserve_mtime,
            max_connections=endpoint.connections,
            remote_root=endpoint.remote_root,
            log=self.log,
            busy_wait=endpoint.busy_wait,
            manifest=self.manifest,
        )

    def execute(self, context: Any) -> list[dict[str, object]]:
        """Download; return the records as dicts. Works with ``op.execute(context={})``."""
        try:
            self._records = self._download()
        except SecureTransferError as exc:
            raise fail_fast(exc) from exc
        return [record.as_dict() for record in self._records]

    # ------------------------------------------------------------------ lineage

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Return ``(inputs, outputs)`` of the last run as ``(namespace, name)`` pairs.

        Inputs are the remote files (``sftp://host:port`` or ``ftps://host:port`` + the remote
        path), outputs ``file://<this host>`` + the local path.
        """
        if self._endpoint is None or not self._records:
            return [], []
        remote_ns = self._endpoint.namespace
        local_ns = f"file://{socket.gethostname()}"
        inputs = [(remote_ns, r.remote_path) for r in self._records]
        outputs = [(local_ns, r.local_path) for r in self._records]
        return inputs, outputs

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return OpenLineage inputs/outputs; each input carries its ``secureTransfer`` receipt.

        ``None`` when the OpenLineage provider is not installed.
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        from airflow_secure_transfer.lineage import FACET_NAME, openlineage_facet, receipt

        inputs, outputs = self.lineage_datasets()
        security = self._endpoint.security if self._endpoint is not None else None
        return OperatorLineage(
            inputs=[
                Dataset(
                    namespace=ns,
                    name=name,
                    facets={FACET_NAME: openlineage_facet(receipt(record, security))} if security else {},
                )
                for (ns, name), record in zip(inputs, self._records, strict=True)
            ],
            outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
        )
