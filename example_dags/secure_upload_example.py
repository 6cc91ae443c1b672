"""Upload a generated file set over FTPS and over SFTP, "move" a second set (delete after upload), and
fetch the uploads back (downloads, checksum-verified).

Connections (ids overridable through the environment):

* ``SECURE_UPLOAD_FTPS_CONN_ID`` (default ``secure_ftps_default``): a ``secure_ftps``
  connection; trust a private server with the ``ca_bundle`` or ``cert_fingerprint`` extra.
* ``SECURE_UPLOAD_SFTP_CONN_ID`` (default ``secure_sftp_default``): a ``secure_sftp``
  connection with the server's ``host_key`` pinned (or ``known_hosts``).

Remote directories: ``SECURE_UPLOAD_FTPS_DIR`` and ``SECURE_UPLOAD_SFTP_DIR``
(default ``/upload/secure_upload_example``).

Every transfer task returns its records (XCom): local and remote path, bytes moved,
sha256, seconds, and whether the file was resumed, skipped and verified.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.download import SecureDownloadOperator
from airflow_secure_transfer.operators.upload import SecureUploadOperator

FTPS_CONN_ID = os.environ.get("SECURE_UPLOAD_FTPS_CONN_ID", "secure_ftps_default")
SFTP_CONN_ID = os.environ.get("SECURE_UPLOAD_SFTP_CONN_ID", "secure_sftp_default")
FTPS_DIR = os.environ.get("SECURE_UPLOAD_FTPS_DIR", "/upload/secure_upload_example").rstrip("/")
SFTP_DIR = os.environ.get("SECURE_UPLOAD_SFTP_DIR", "/upload/secure_upload_example").rstrip("/")


def _make_file_set(root: Path, prefix: str) -> None:
    """A small but realistic set: CSVs in a tree, a binary blob, an empty marker file."""
    (root / "daily" / "regions").mkdir(parents=True)
    for day in range(1, 4):
        lines = ["id,amount,currency"] + [f"{i},{i * day * 1.25:.2f},EUR" for i in range(1, 200)]
        (root / "daily" / f"{prefix}-sales-2026-11-0{day}.csv").write_text("\n".join(lines) + "\n")
    for region in ("north", "south", "east"):
        (root / "daily" / "regions" / f"{prefix}-{region}.csv").write_text(
            f"region,total\n{region},{len(region) * 1000}\n"
        )
    (root / f"{prefix}-archive.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / f"{prefix}-_SUCCESS").write_bytes(b"")


@dag(
    dag_id="secure_upload_example",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "example"],
    doc_md=__doc__,
)
def secure_upload_example() -> None:
    @task
    def generate_files() -> str:
        """Write the file set to a fresh local directory and return its path."""
        root = Path(tempfile.mkdtemp(prefix="secure-upload-example-"))
        _make_file_set(root, "export")
        return str(root)

    @task
    def generate_outbox() -> str:
        """Write the files that the "move" task deletes once each is uploaded and verified."""
        root = Path(tempfile.mkdtemp(prefix="secure-upload-outbox-"))
        _make_file_set(root, "outbox")
        return str(root)

    files = generate_files()
    outbox = generate_outbox()

    upload_ftps = SecureUploadOperator(
        task_id="upload_ftps",
        conn_id=FTPS_CONN_ID,
        local_path="{{ ti.xcom_pull(task_ids='generate_files') }}",
        remote_path=f"{FTPS_DIR}/ftps/",
        overwrite="replace",
        verify="size",
    )
    upload_sftp = SecureUploadOperator(
        task_id="upload_sftp",
        conn_id=SFTP_CONN_ID,
        # Only the CSVs, wherever they are in the tree (a recursive glob).
        local_path="{{ ti.xcom_pull(task_ids='generate_files') }}/**/*.csv",
        remote_path=f"{SFTP_DIR}/sftp/",
        overwrite="skip_identical",
    )
    move_sftp = SecureUploadOperator(
        task_id="move_sftp",
        conn_id=SFTP_CONN_ID,
        local_path="{{ ti.xcom_pull(task_ids='generate_outbox') }}",
        remote_path=f"{SFTP_DIR}/moved/",
        delete_source=True,
    )

    # The other direction: fetch what was uploaded into a fresh local directory; each file lands
    # under its final name only whole and verified (here: the server's checksum, else a second read).
    fetch_ftps = SecureDownloadOperator(
        task_id="fetch_back_ftps",
        conn_id=FTPS_CONN_ID,
        remote_path=f"{FTPS_DIR}/ftps",
        local_path="{{ ti.xcom_pull(task_ids='generate_files') }}-fetched/ftps/",
        verify="checksum",
    )
    fetch_sftp = SecureDownloadOperator(
        task_id="fetch_back_sftp",
        conn_id=SFTP_CONN_ID,
        remote_path=f"{SFTP_DIR}/sftp/**/*.csv",
        local_path="{{ ti.xcom_pull(task_ids='generate_files') }}-fetched/sftp/",
        verify="checksum",
    )

    files >> [upload_ftps, upload_sftp]
    upload_ftps >> fetch_ftps
    upload_sftp >> fetch_sftp
    outbox >> move_sftp


secure_upload_example()
