"""Deliver a day's files to a partner with a manifest and a done marker (the producer's side).

``SecureUploadOperator`` uploads the files (each to a hidden temporary name, size-checked, renamed),
then writes ``MANIFEST.json`` (every file's path, size and SHA-256; itself atomically), then an empty
``_SUCCESS``. A consumer running ``SecureFileSensor(manifest=..., done_marker=...)`` (see
``wait_for_partner_files.py``) starts only when the last byte is in place and can prove it got
exactly these bytes.

Connection: ``DELIVERY_CONN_ID`` (default ``partner_sftp``), any ``secure_sftp``/``secure_ftps``
connection. Remote directory: ``DELIVERY_DIR`` (default ``/inbound``); the day's files go to
``<DELIVERY_DIR>/<ds>/``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.upload import SecureUploadOperator

CONN_ID = os.environ.get("DELIVERY_CONN_ID", "partner_sftp")
REMOTE_DIR = os.environ.get("DELIVERY_DIR", "/inbound").rstrip("/")


@dag(
    dag_id="deliver_with_manifest",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "example"],
    doc_md=__doc__,
)
def deliver_with_manifest() -> None:
    @task
    def export(ds: str | None = None) -> str:
        """Write the day's files to a fresh local directory and return it."""
        root = Path(tempfile.mkdtemp(prefix="delivery-"))
        for region in ("north", "south"):
            rows = [f"{i},{region},{i * 2.5:.2f}" for i in range(1, 100)]
            (root / f"sales-{ds}-{region}.csv").write_text("id,region,amount\n" + "\n".join(rows) + "\n")
        return str(root)

    exported = export()
    deliver = SecureUploadOperator(
        task_id="deliver",
        conn_id=CONN_ID,
        local_path="{{ ti.xcom_pull(task_ids='export') }}/*.csv",
        remote_path=REMOTE_DIR + "/{{ ds }}/",
        manifest=REMOTE_DIR + "/{{ ds }}/MANIFEST.json",  # written once every file is verified and in place
        done_marker=REMOTE_DIR + "/{{ ds }}/_SUCCESS",  # written last
    )
    exported >> deliver


deliver_with_manifest()
