"""DAG for tests/airflow/test_lineage.py: a deferred SecureFileSensor whose output maps one download per file.

``MAPPED_TEST_DIR`` names the remote directory (the test puts the files there first), ``MAPPED_LOCAL_DIR``
the local one; ``partner`` is the connection.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.download import SecureDownloadOperator
from airflow_secure_transfer.sensors.file import SecureFileSensor


@dag(dag_id="secure_mapped_download", schedule=None, catchup=False)
def secure_mapped_download() -> None:
    wait = SecureFileSensor(
        task_id="wait",
        conn_id="partner",
        path=os.environ.get("MAPPED_TEST_DIR", "/inbound") + "/part-*.csv",
        min_files=3,
        stable_for=0,
        poke_interval=0.5,
        timeout=240,
        deferrable=True,
    )
    # One mapped task per matched file: the sensor's items ({remote_path, size, mtime}) are remote paths.
    fetch = SecureDownloadOperator.partial(
        task_id="fetch",
        conn_id="partner",
        local_path=os.environ.get("MAPPED_LOCAL_DIR", "/tmp/mapped") + "/",
        verify="checksum",
    ).expand(remote_path=wait.output)

    @task
    def collect(records: Any) -> list[dict[str, Any]]:
        return [r for task_records in records for r in task_records]

    collect(fetch.output)


secure_mapped_download()
