"""DAG for tests/airflow/test_retry_policy.py: a non-retryable and a retryable failure, both with retries.

``untrusted_host_key`` uploads to an SFTP server whose host key is not the pinned one
(``VerificationError``: must fail at once, one try). ``unreachable`` uploads to a closed loopback
port (``TransportError``: retryable, so Airflow tries it ``1 + retries`` times); it shows that this
``airflow dags test`` run does retry, so one try above is the operator's doing.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import dag

from airflow_secure_transfer.operators.upload import SecureUploadOperator

RETRIES = 2


@dag(
    dag_id="retry_policy",
    schedule=None,
    catchup=False,
    default_args={"retries": RETRIES, "retry_delay": datetime.timedelta(seconds=0)},
)
def retry_policy() -> None:
    for task_id in ("untrusted_host_key", "unreachable"):
        SecureUploadOperator(
            task_id=task_id,
            conn_id=f"retry_{task_id}",
            local_path=os.environ.get("RETRY_TEST_SOURCE", "/nonexistent"),
            remote_path="/upload/",
        )


retry_policy()
