"""Wait for a partner's delivery, then process it (the consumer's side).

``SecureFileSensor`` waits, deferred (in the triggerer, no worker slot held), until the day's
``MANIFEST.json`` and ``_SUCCESS`` exist and every file the manifest lists is present with its
size; it returns the matched files as ``[{remote_path, size, mtime}]``. The manifest and the marker
prove completion here, so ``stable_for=0``; without them, ``stable_for=30`` waits until a file has
stopped changing for 30 s. A ``.``-prefixed name (every temporary upload name of this provider)
never matches.

The next task receives the list. In a full pipeline it is a download:
``SecureDownloadOperator.partial(conn_id=...).expand(remote_path=...)``; here it summarises the
delivery.

Connection: ``DELIVERY_CONN_ID`` (default ``partner_sftp``). Remote directory: ``DELIVERY_DIR``
(default ``/inbound``), as written by ``deliver_with_manifest.py``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_secure_transfer.sensors.file import SecureFileSensor

CONN_ID = os.environ.get("DELIVERY_CONN_ID", "partner_sftp")
REMOTE_DIR = os.environ.get("DELIVERY_DIR", "/inbound").rstrip("/")


@dag(
    dag_id="wait_for_partner_files",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "example"],
    doc_md=__doc__,
)
def wait_for_partner_files() -> None:
    wait = SecureFileSensor(
        task_id="wait_for_sales",
        conn_id=CONN_ID,
        path=REMOTE_DIR + "/{{ ds }}/sales-{{ ds }}-*.csv",
        min_files=1,
        stable_for=0,
        done_marker=REMOTE_DIR + "/{{ ds }}/_SUCCESS",
        manifest=REMOTE_DIR + "/{{ ds }}/MANIFEST.json",
        deferrable=True,
        poke_interval=60,
        timeout=6 * 3600,
    )

    @task
    def summarise(files: list[dict[str, Any]]) -> dict[str, Any]:
        """Summarise the delivery (a download and the real processing would go here)."""
        for f in files:
            print(f"{f['remote_path']}: {f['size']} bytes")
        return {"files": len(files), "bytes": sum(int(f["size"]) for f in files)}

    summarise(wait.output)


wait_for_partner_files()
