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

import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
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
        ``[...]``, ``**``), or a list of these. A file record with a ``remote_path`` key (an item
        of ``SecureFileSensor``'s XCom) stands for that file, so
        ``.partial(...).expand(remote_path=sensor.output)`` maps one download per matched file,
        and ``remote_path=sensor.output`` fetches them all in one task. Templated.
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
    :param decrypt_with: conn id of a ``secure_pgp`` ("PGP keys") connection whose ``private_key``
        (passphrase: its password) decrypts each file; the local name loses ``.pgp``/``.gpg``/``.asc``.
        The ciphertext is downloaded (atomic, verified, resumable) into a private 0700 staging
        directory, each file decrypted into a hidden partial beside its target and moved into place
        only when decryption (and the signature check) succeeded. ``delete_source`` /
        ``remote_archive_dir`` act after that. Records gain ``decrypted``, ``remote_sha256`` and
        ``remote_size`` (the ciphertext's); ``sha256``/``size`` describe the decrypted file.
        Not with ``overwrite="skip_identical"``. Templated.
    :param verify_signature_with: conn id of a ``secure_pgp`` connection whose ``public_keys`` are the
        accepted signers: a file without a good signature by one of them fails with
        ``VerificationError`` (not retried) and no decrypted byte reaches its final path. Templated.
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

    template_fields: Sequence[str] = (
        "conn_id",
        "remote_path",
        "local_path",
        "remote_archive_dir",
        "manifest",
        "decrypt_with",
        "verify_signature_with",
    )
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        conn_id: str,
        remote_path: str | Mapping[str, object] | Sequence[str | Mapping[str, object]],
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
        decrypt_with: str | None = None,
        verify_signature_with: str | None = None,
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
        for name, value in (("decrypt_with", decrypt_with), ("verify_signature_with", verify_signature_with)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{name} must be a connection id or None, got {value!r}")
        if verify_signature_with and not decrypt_with:
            raise ConfigurationError(
                "verify_signature_with checks the signature inside a decrypted file: set decrypt_with"
            )
        if decrypt_with and overwrite == "skip_identical":
            raise ConfigurationError(
                "overwrite='skip_identical' cannot prove a decrypted file identical to the server's ciphertext; "
                "use 'replace' or 'fail' with decrypt_with"
            )
        self.decrypt_with = decrypt_with
        self.verify_signature_with = verify_signature_with
        self._context: Any = None
        self._records: list[TransferRecord] = []
        self._endpoint: Endpoint | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Like ``BaseOperator.partial``; ``server_pool`` sets the mapped tasks' pool and slots too."""
        _apply_server_pool(kwargs.get("server_pool"), kwargs.get("max_connections"), kwargs)
        return super().partial(**kwargs)

    def _download(self) -> list[TransferRecord]:
        endpoint = self._endpoint = open_endpoint(self, "SecureDownloadOperator")
        if self.decrypt_with:
            return self._download_decrypted(endpoint)
        return self._fetch(endpoint, self.local_path, overwrite=self.overwrite, settle=True)

    def _fetch(self, endpoint: Endpoint, local_path: str, *, overwrite: str, settle: bool) -> list[TransferRecord]:
        """Run the download engine; *settle*: delete or archive the remote files as asked (else the caller does)."""
        from airflow_secure_transfer.transfer.download import download

        return download(
            endpoint.connect,
            self.remote_path,
            local_path,
            overwrite=overwrite,
            create_dirs=True if not settle else self.create_dirs,
            verify=self.verify,
            delete_source=self.delete_source and settle,
            remote_archive_dir=self.remote_archive_dir if settle else None,
            preserve_mtime=self.preserve_mtime,
            max_connections=endpoint.connections,
            remote_root=endpoint.remote_root,
            log=self.log,
            busy_wait=endpoint.busy_wait,
            manifest=self.manifest,
        )

    def _download_decrypted(self, endpoint: Endpoint) -> list[TransferRecord]:
        """Download the ciphertext into the task's private staging, decrypt (and verify) each file into a
        hidden partial beside its target, ``os.replace`` it into place; then settle the remote files."""
        from airflow_secure_transfer.hooks.pgp import pgp_key_store
        from airflow_secure_transfer.operators._common import task_identity
        from airflow_secure_transfer.transfer.encrypted import discard_staging, task_staging_dir

        task_dir = task_staging_dir(task_identity(self, self._context, repr(self.remote_path), self.local_path))
        try:
            # The ciphertext lands (atomic, verified, resumable) in the private staging directory: a
            # retry resumes it; nothing decrypted exists anywhere until it is whole and proven.
            cipher = self._fetch(endpoint, str(task_dir / "cipher") + os.sep, overwrite="replace", settle=False)
            with pgp_key_store(
                decrypt_with=self.decrypt_with, verify_signature_with=self.verify_signature_with
            ) as store:
                records = [self._decrypt_one(store, record, task_dir / "cipher", len(cipher)) for record in cipher]
            records = self._settle(endpoint, records)
        except SecureTransferError as exc:
            if not exc.retryable:
                discard_staging(task_dir)
            raise
        discard_staging(task_dir)
        return records

    def _decrypt_one(self, store: Any, record: TransferRecord, staged: Any, count: int) -> TransferRecord:
        import dataclasses
        import secrets

        from airflow_secure_transfer.exceptions import LocalPathError
        from airflow_secure_transfer.security.pgp import strip_pgp_suffix
        from airflow_secure_transfer.transfer.download import local_target

        rel = os.path.relpath(record.local_path, staged)
        directory, name = os.path.split(rel)
        plain_name = strip_pgp_suffix(name)
        base = os.path.abspath(os.path.expanduser(self.local_path))
        if count == 1 and not self.local_path.endswith(("/", os.sep)) and not os.path.isdir(base):
            target = base  # one file, local_path names it
        else:
            target = local_target(
                base, os.path.join(directory, plain_name).replace(os.sep, "/"), remote=record.remote_path
            )
        if self.overwrite == "fail" and os.path.lexists(target):
            raise LocalPathError(f"local file {target!r} exists and overwrite='fail'; nothing was decrypted", target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        part = os.path.join(os.path.dirname(target), f".{os.path.basename(target)[:200]}.{secrets.token_hex(8)}.part")
        # A compression bomb ends at a bound: a hundred times the ciphertext, at least 1 GiB.
        bound = max(1 << 30, 100 * record.size)
        result = store.decrypt(record.local_path, part, verify=bool(self.verify_signature_with), max_output=bound)
        try:
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            st = os.stat(record.local_path)
            os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))  # the remote time the engine set
            os.replace(part, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        if result.signer:
            self.log.info("%s: good signature by %s", record.remote_path, result.signer)
        return dataclasses.replace(
            record,
            local_path=target,
            sha256=result.plaintext_sha256,
            size=result.plaintext_bytes,
            remote_sha256=record.sha256,
            remote_size=record.size,
            decrypted=True,
        )

    def _settle(self, endpoint: Endpoint, records: list[TransferRecord]) -> list[TransferRecord]:
        """Delete or archive each remote file, now that its decrypted copy is verified and in place."""
        import dataclasses
        import posixpath

        from airflow_secure_transfer.security.paths import resolve_remote

        if not self.delete_source and self.remote_archive_dir is None:
            return records
        out = []
        with endpoint.connect() as fs:
            for record in records:
                if self.remote_archive_dir is None:
                    fs.remove(record.remote_path)
                    out.append(dataclasses.replace(record, source_deleted=True))
                    continue
                archived = resolve_remote(
                    posixpath.join(self.remote_archive_dir, posixpath.basename(record.remote_path)),
                    endpoint.remote_root,
                )
                fs.makedirs(posixpath.dirname(archived))
                fs.rename(record.remote_path, archived)
                out.append(dataclasses.replace(record, source_deleted=True, archived_to=archived))
        return out

    def execute(self, context: Any) -> list[dict[str, object]]:
        """Download; return the records as dicts. Works with ``op.execute(context={})``."""
        self._context = context
        try:
            self._records = self._download()
        except SecureTransferError as exc:
            fail_fast(exc)
        if self.decrypt_with:
            return [record.as_dict() | {"decrypted": record.decrypted} for record in self._records]
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
        from airflow_secure_transfer.lineage import operator_lineage

        inputs, outputs = self.lineage_datasets()
        security = self._endpoint.security if self._endpoint is not None else None
        return operator_lineage(inputs, outputs, self._records, security, receipts_on="inputs")
