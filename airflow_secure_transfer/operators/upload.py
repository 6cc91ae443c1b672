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
    from airflow_secure_transfer.operators._common import Endpoint
    from airflow_secure_transfer.transfer.base import TransferRecord

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
    :param overwrite: ``"replace"`` (default), ``"skip_identical"`` (leave a target alone
        only on proof that it holds the same bytes: same size and server checksum, else same
        size and the modification time an earlier upload set; otherwise upload it) or
        ``"fail"`` (an existing target is an error, before any byte is sent).
    :param create_dirs: create missing remote directories (default ``True``).
    :param verify: ``"size"`` (default; always done) or ``"checksum"`` (also compare a
        digest of the uploaded bytes before the rename: the server's where it offers one,
        else the temporary file read back over the same secure channel).
    :param delete_source: delete each local file after its bytes were proven on the server
        (by this upload or a checksum match) ("move"); only files whose real path lies under
        the real path of the named source are deleted (not through directory symlinks).
    :param preserve_mtime: set each uploaded file's remote modification time to the local
        file's (default ``True``); this is what lets a later ``skip_identical`` run skip an
        unchanged file on a server without a checksum command.
    :param max_connections: most connections used at once; default and upper bound:
        the connection's ``max_connections`` extra (4 unless set).
    :param server_pool: an Airflow pool that stands for the partner's server (its size = the
        sessions the server allows us). The task runs in that pool and takes ``pool_slots``
        equal to its connection count (*max_connections*, else 4), and never opens more
        connections than the slots it holds, so tasks sharing the pool never open more
        connections to that server together than the pool's size. Works with
        ``.partial(...).expand(...)``. Default ``None``: no pool is set by this operator.
    :param manifest: remote path of a delivery manifest to write once every file of the task is
        verified and in place: JSON ``{"files": [{"path", "size", "sha256"}], "created", "producer"}``
        (paths relative to the manifest's directory, which must hold the uploaded files), itself
        written atomically (temporary name, size check, rename). A consumer's ``SecureFileSensor``
        and ``SecureDownloadOperator`` check the delivery against it. Templated. Default ``None``.
    :param done_marker: remote path of an empty file written after everything else (after the
        manifest, if any), e.g. ``"/inbound/{{ ds }}/_SUCCESS"``. Templated. Default ``None``.
    :param encrypt_with: conn id of a ``secure_pgp`` ("PGP keys") connection: each file is
        OpenPGP-encrypted to all its ``public_keys`` before it leaves the worker, and the remote name
        gets ``.pgp`` (``.asc`` with ``armor=True``) unless ``remote_path`` names the file. The
        ciphertext is made once per task try set (kept in a private 0700 directory until the upload
        succeeds), so a retry resumes the same ciphertext. Templated. Default ``None``: sent as is.
    :param sign_with: conn id of a ``secure_pgp`` connection whose ``private_key`` (passphrase: its
        password) signs each file inside the encrypted message. Needs ``encrypt_with``. Templated.
    :param armor: ASCII-armoured ciphertext (``.asc``) instead of binary (``.pgp``); default ``False``.
    :returns: ``[{local_path, remote_path, bytes, sha256, seconds, resumed, skipped,
        verified, size, source_deleted, encrypted, remote_sha256}, ...]``; ``bytes`` counts the
        bytes sent by this run, ``size`` is the file's size; with ``encrypt_with``, ``sha256`` and
        ``size`` describe the local (plain) file and ``remote_sha256`` the ciphertext on the server.
    :raises AirflowFailException: for errors that a retry cannot fix (trust,
        login, configuration, missing local file); transport and integrity errors
        are raised as they are, so Airflow's retries apply.
    """

    template_fields: Sequence[str] = (
        "conn_id",
        "local_path",
        "remote_path",
        "manifest",
        "done_marker",
        "encrypt_with",
        "sign_with",
    )
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
        preserve_mtime: bool = True,
        server_pool: str | None = None,
        manifest: str | None = None,
        done_marker: str | None = None,
        encrypt_with: str | None = None,
        sign_with: str | None = None,
        armor: bool = False,
        **kwargs: Any,
    ) -> None:
        _apply_server_pool(server_pool, max_connections, kwargs)
        super().__init__(**kwargs)
        validate_options(overwrite=overwrite, verify=verify, max_connections=max_connections)
        for name, value in (
            ("create_dirs", create_dirs),
            ("delete_source", delete_source),
            ("preserve_mtime", preserve_mtime),
        ):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        if not isinstance(conn_id, str) or not conn_id:
            raise ConfigurationError(f"conn_id must be a non-empty string, got {conn_id!r}")
        for name, path in (("manifest", manifest), ("done_marker", done_marker)):
            if path is not None and (not isinstance(path, str) or not path.strip()):
                raise ConfigurationError(f"{name} must be a remote path or None, got {path!r}")
        self.manifest = manifest
        self.done_marker = done_marker
        _check_pgp_arguments(encrypt_with, sign_with, armor)
        self.encrypt_with = encrypt_with
        self.sign_with = sign_with
        self.armor = armor
        self.conn_id = conn_id
        self.local_path = local_path
        self.remote_path = remote_path
        self.overwrite = overwrite
        self.create_dirs = create_dirs
        self.verify = verify
        self.delete_source = delete_source
        self.preserve_mtime = preserve_mtime
        self.max_connections = max_connections
        self.server_pool = server_pool
        self._records: list[TransferRecord] = []
        self._endpoint: tuple[str, str, int] | None = None
        self._conn_endpoint: Endpoint | None = None
        self._context: Any = None

    # ------------------------------------------------------------------ execution

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Like ``BaseOperator.partial``; ``server_pool`` sets the mapped tasks' pool and slots too.

        The scheduler reads a mapped task's pool from its partial arguments, before any
        ``__init__`` runs, so the pool has to be set here as well.
        """
        _apply_server_pool(kwargs.get("server_pool"), kwargs.get("max_connections"), kwargs)
        return super().partial(**kwargs)

    def _open_endpoint(self) -> Endpoint:
        """Resolve the connection once: a recording client factory, remote_root and the connection count."""
        from airflow_secure_transfer.operators._common import open_endpoint

        if self._conn_endpoint is None:
            endpoint = self._conn_endpoint = open_endpoint(self, "SecureUploadOperator")
            self._endpoint = (endpoint.scheme, endpoint.host, endpoint.port)
        return self._conn_endpoint

    @property
    def _security(self) -> dict[str, str] | None:
        """The first connection's ``session_security()``: negotiated algorithms and the verified identity."""
        return None if self._conn_endpoint is None else self._conn_endpoint.security

    def _upload(self) -> list[TransferRecord]:
        from airflow_secure_transfer.transfer.engine import upload

        endpoint = self._open_endpoint()
        connections = endpoint.connections

        def send(local_path: Any, delete_source: bool) -> list[TransferRecord]:
            return upload(
                endpoint.connect,
                local_path,
                self.remote_path,
                overwrite=self.overwrite,
                create_dirs=self.create_dirs,
                verify=self.verify,
                delete_source=delete_source,
                preserve_mtime=self.preserve_mtime,
                max_connections=connections,
                remote_root=endpoint.remote_root,
                log=self.log,
                busy_wait=endpoint.busy_wait,
            )

        if self.encrypt_with:
            return self._upload_encrypted(send, connections)
        return send(self.local_path, self.delete_source)

    def _task_identity(self) -> str:
        """What makes this task's encrypted staging unique and stable across its retries."""
        from airflow_secure_transfer.operators._common import task_identity

        return task_identity(self, self._context, str(self.remote_path), repr(self.local_path))

    def _upload_encrypted(
        self, send: Callable[[Any, bool], list[TransferRecord]], workers: int
    ) -> list[TransferRecord]:
        """Encrypt each file into the task's private staging directory, upload the ciphertext, map the records."""
        import dataclasses

        from airflow_secure_transfer.hooks.pgp import pgp_key_store
        from airflow_secure_transfer.transfer.encrypted import discard_staging, stage_encrypted, task_staging_dir
        from airflow_secure_transfer.transfer.local import delete_uploaded_source

        task_dir = task_staging_dir(self._task_identity())
        try:
            with pgp_key_store(encrypt_with=self.encrypt_with, sign_with=self.sign_with) as store:
                for key in store.recipient_keys:
                    self.log.info("encrypting to %s", key.describe())
                if self.sign_with:
                    self.log.info("signing with %s", store.secret_keys[0].describe())
                staged = stage_encrypted(
                    self.local_path,
                    store,
                    task_dir,
                    sign=bool(self.sign_with),
                    armor=self.armor,
                    workers=workers,
                    log=self.log.info,
                )
            if staged.reused:
                self.log.info("reusing the ciphertext of %d file(s) made by an earlier try", staged.reused)
            # The engine deletes the ciphertext (delete_source); the sources are deleted below, on the same proof.
            records = send(staged.local_path, self.delete_source)
        except SecureTransferError as exc:
            if not exc.retryable:
                discard_staging(task_dir)
            raise
        mapped: list[TransferRecord] = []
        for record in records:
            item = staged.files.get(os.path.normpath(record.local_path))
            if item is None:  # pragma: no cover - the engine only uploads what was staged
                raise ConfigurationError(f"uploaded {record.local_path!r}, which was not staged")
            deleted = False
            if record.source_deleted:
                deleted = delete_uploaded_source(item.source, self.log)
            mapped.append(
                dataclasses.replace(
                    record,
                    local_path=item.source.path,
                    sha256=item.plaintext_sha256,
                    size=item.source.size,
                    source_deleted=deleted,
                    encrypted=True,
                    remote_sha256=item.ciphertext_sha256,
                    remote_size=record.size,  # the engine sent the staged ciphertext
                )
            )
        discard_staging(task_dir)
        return mapped

    def execute(self, context: Any) -> list[dict[str, object]]:
        """Upload; return the records as dicts. Works with ``op.execute(context={})``."""
        self._context = context
        try:
            self._records = self._upload()
            if self.manifest is not None or self.done_marker is not None:
                self._complete(context)
        except SecureTransferError as exc:
            from airflow_secure_transfer.operators._common import fail_fast

            fail_fast(exc)  # not retryable (a wrong host key stays wrong): no Airflow retries
        self._receipts_to_asset_events(context)
        return [record.as_dict() for record in self._records]

    def _complete(self, context: Any) -> None:
        """Write the manifest, then the done marker (each atomically), after every file is in place."""
        import io
        import posixpath

        from airflow_secure_transfer import __version__
        from airflow_secure_transfer.hooks._files import put_buffer
        from airflow_secure_transfer.security.paths import resolve_remote
        from airflow_secure_transfer.transfer.manifest import build_manifest

        endpoint = self._open_endpoint()
        remote_root = endpoint.remote_root
        with endpoint.connect() as fs:
            cwd = "/" if remote_root else getattr(fs, "home", "/")

            def where(path: str) -> str:
                return resolve_remote(path, remote_root, cwd=cwd)

            manifest = None if self.manifest is None else where(self.manifest)
            marker = None if self.done_marker is None else where(self.done_marker)
            uploaded = {record.remote_path for record in self._records}
            for name, path in (("manifest", manifest), ("done_marker", marker)):
                if path is not None and path in uploaded:
                    raise ConfigurationError(f"{name} {path} is also one of the uploaded files; choose another path")
            if manifest is not None and manifest == marker:
                raise ConfigurationError(f"manifest and done_marker are the same path ({manifest})")
            if manifest is not None:
                run_id = context.get("run_id") if isinstance(context, dict) else None
                producer = f"airflow-secure-transfer {__version__} {self.dag_id}.{self.task_id}"
                data = build_manifest(
                    self._records,
                    manifest_path=manifest,
                    producer=f"{producer} {run_id}" if run_id else producer,
                )
                put_buffer(fs, manifest, io.BytesIO(data))
                self.log.info("wrote the manifest %s (%d file(s), %d bytes)", manifest, len(self._records), len(data))
            if marker is not None:
                if self.create_dirs:
                    fs.makedirs(posixpath.dirname(marker))
                put_buffer(fs, marker, io.BytesIO(b""))
                self.log.info("wrote the done marker %s", marker)

    # ------------------------------------------------------------------ lineage

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Return ``(inputs, outputs)`` of the last run as ``(namespace, name)`` pairs.

        Inputs are ``file://<this host>`` + the local path, outputs ``sftp://host:port``
        or ``ftps://host:port`` + the remote path (the same names the ``ftps`` asset
        handler and the stock ``sftp`` one produce).
        """
        remote_ns = self._remote_endpoint()
        if remote_ns is None or not self._records:
            return [], []
        local_ns = f"file://{socket.gethostname()}"
        inputs = [(local_ns, r.local_path) for r in self._records]
        outputs = [(remote_ns, r.remote_path) for r in self._records]
        return inputs, outputs

    def _remote_endpoint(self) -> str | None:
        """``scheme://host:port`` of the server of the last run (the namespace of its datasets)."""
        if self._endpoint is None:
            return None
        scheme, host, port = self._endpoint
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def _receipts_to_asset_events(self, context: Any) -> None:
        """Put the delivery receipt(s) into the asset event of each ``sftp://``/``ftps://`` outlet it concerns."""
        endpoint = self._remote_endpoint()
        outlet_events = context.get("outlet_events") if isinstance(context, dict) else None
        if endpoint is None or self._security is None or outlet_events is None or not self._records:
            return
        from airflow_secure_transfer.lineage import asset_event_extra

        for outlet in self.outlets or ():
            uri = getattr(outlet, "uri", None)
            if not isinstance(uri, str) or not uri.startswith(("sftp://", "ftps://")):
                continue
            extra = asset_event_extra(uri, endpoint, self._records, self._security)
            if extra is not None:
                outlet_events[outlet].extra.update(extra)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return OpenLineage inputs/outputs, each output with its ``secureTransfer`` delivery receipt.

        ``None`` when the OpenLineage provider is not installed.
        """
        from airflow_secure_transfer.lineage import operator_lineage

        inputs, outputs = self.lineage_datasets()
        return operator_lineage(inputs, outputs, self._records, self._security, receipts_on="outputs")


def _check_pgp_arguments(encrypt_with: object, sign_with: object, armor: object) -> None:
    """Refuse malformed ``encrypt_with`` / ``sign_with`` / ``armor`` at DAG parse time."""
    for name, value in (("encrypt_with", encrypt_with), ("sign_with", sign_with)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{name} must be the conn id of a PGP keys connection, got {value!r}")
    if not isinstance(armor, bool):
        raise ConfigurationError(f"armor must be True or False, got {armor!r}")
    if sign_with and not encrypt_with:
        raise ConfigurationError(
            "sign_with signs inside the encrypted message: it needs encrypt_with (the recipients' keys)"
        )
    if armor and not encrypt_with:
        raise ConfigurationError("armor=True only applies to encrypted files: set encrypt_with too")


def _apply_server_pool(server_pool: str | None, max_connections: int | None, kwargs: dict[str, Any]) -> None:
    """Set ``pool`` and ``pool_slots`` in *kwargs* from *server_pool* (see ``SecureUploadOperator``)."""
    if server_pool is None:
        return
    if not isinstance(server_pool, str) or not server_pool:
        raise ConfigurationError(f"server_pool must be a non-empty pool name, got {server_pool!r}")
    pool = kwargs.get("pool")
    if pool is not None and pool != server_pool:
        raise ConfigurationError(
            f"server_pool={server_pool!r} and pool={pool!r} disagree: server_pool sets the pool; drop one of them"
        )
    kwargs["pool"] = server_pool
    from airflow_secure_transfer.security.settings import DEFAULT_MAX_CONNECTIONS

    slots = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
    if kwargs.get("pool_slots") not in (None, slots):
        raise ConfigurationError(
            f"server_pool sets pool_slots to the task's connection count ({slots}); "
            f"pool_slots={kwargs['pool_slots']!r} disagrees: set max_connections instead"
        )
    kwargs["pool_slots"] = slots
