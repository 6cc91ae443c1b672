"""DAG for tests/airflow/test_file_sensor_stack.py: a deferred sensor and the partner's upload task, in parallel.

``deliver`` waits until ``wait`` is deferred (the task SDK's ``get_task_states``), then uploads the file
the sensor waits for; ``process`` receives the sensor's list. ``SENSOR_TEST_DIR`` is the remote
directory, ``partner`` the connection.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from airflow_secure_transfer.sensors.file import SecureFileSensor

REMOTE_DIR = os.environ.get("SENSOR_TEST_DIR", "/inbound")


@dag(dag_id="secure_file_sensor_stack", schedule=None, catchup=False)
def secure_file_sensor_stack() -> None:
    wait = SecureFileSensor(
        task_id="wait",
        conn_id="partner",
        path=REMOTE_DIR + "/sales-*.csv",
        stable_for=1,
        poke_interval=1,
        timeout=300,
        deferrable=True,
    )

    @task
    def deliver(**context: Any) -> str:
        from airflow_secure_transfer.hooks.resolve import resolve_connection
        from airflow_secure_transfer.transfer.engine import upload

        ti = context["ti"]
        deadline = time.monotonic() + 240
        while (
            ti.get_task_states(dag_id=ti.dag_id, task_ids=["wait"], run_ids=[ti.run_id]).get(ti.run_id, {}).get("wait")
            != "deferred"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the sensor did not defer")
            time.sleep(1)
        source = Path(tempfile.mkdtemp()) / "sales-1.csv"
        source.write_text("id,amount\n1,10\n")
        (record,) = upload(resolve_connection("partner").connect, str(source), REMOTE_DIR + "/")
        return record.remote_path

    @task
    def process(files: list[dict[str, Any]]) -> list[str]:
        return [str(f["remote_path"]) for f in files]

    process(wait.output)
    deliver()


secure_file_sensor_stack()
