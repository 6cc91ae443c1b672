"""Wait for a partner's delivery, download it checked against the producer's manifest, then process it.

``SecureFileSensor`` waits, deferred (in the triggerer, no worker slot held), until the day's
``MANIFEST.json`` and ``_SUCCESS`` exist and every file the manifest lists is present with its
size; it returns the matched files as ``[{remote_path, size, mtime}]``. The manifest and the marker
prove completion here, so ``stable_for=0``; without them, ``stable_for=30`` waits until a file has
stopped changing for 30 s. A ``.``-prefixed name (every temporary upload name of this provider)
never matches.

``SecureDownloadOperator`` then fetches the day's files (``remote_path`` from the sensor's list)
into a local directory, each moved into place only when its size and SHA-256 equal the
manifest's: the consumer proves it got exactly what the producer sent. ``summarise`` processes
the local copies. (To spread a large delivery over many tasks, map the download, one task per
file: ``SecureDownloadOperator.partial(conn_id=..., local_path=...).expand(remote_path=wait.output)``;
each mapped task fetches one file, so leave ``manifest`` to the sensor, which checks that every
listed file is there with its size.)

Local directory: ``DELIVERY_LOCAL_DIR`` (default: a directory under the system's temp dir).

Connection: ``DELIVERY_CONN_ID`` (default ``partner_sftp``). Remote directory: ``DELIVERY_DIR``
(default ``/inbound``), as written by ``deliver_with_manifest.py``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.download import SecureDownloadOperator
from airflow_secure_transfer.sensors.file import SecureFileSensor

CONN_ID = os.environ.get("DELIVERY_CONN_ID", "partner_sftp")
REMOTE_DIR = os.environ.get("DELIVERY_DIR", "/inbound").rstrip("/")
LOCAL_DIR = os.environ.get("DELIVERY_LOCAL_DIR", os.path.join(tempfile.gettempdir(), "partner-deliveries"))


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

    fetch = SecureDownloadOperator(
        task_id="fetch",
        conn_id=CONN_ID,
        # The sensor's matched files ([{remote_path, size, mtime}]), checked against the producer's manifest.
        remote_path=wait.output,
        local_path=LOCAL_DIR + "/{{ ds }}/",
        manifest=REMOTE_DIR + "/{{ ds }}/MANIFEST.json",
        overwrite="skip_identical",
    )

    @task
    def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
        """Process the local copies (here: count their rows and bytes)."""
        rows = 0
        for r in records:
            with open(r["local_path"], "rb") as f:
                rows += sum(1 for _ in f)
            print(f"{r['local_path']}: {r['size']} bytes, sha256 {r['sha256'][:16]}..., verified {r['verified']}")
        return {"files": len(records), "bytes": sum(int(r["size"]) for r in records), "rows": rows}

    summarise(fetch.output)


wait_for_partner_files()
