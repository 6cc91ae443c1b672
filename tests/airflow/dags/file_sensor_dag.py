"""DAG for tests/airflow/test_file_sensor_dag.py: a deferred SecureFileSensor, then a task that uses its list.

The partner (the test) uploads the file once the sensor has deferred; ``SENSOR_TEST_DIR`` names the
remote directory, ``partner`` is the connection.
"""

from __future__ import annotations

import os

from airflow.sdk import dag, task

from airflow_secure_transfer.sensors.file import SecureFileSensor


@dag(dag_id="secure_file_sensor_deferred", schedule=None, catchup=False)
def secure_file_sensor_deferred() -> None:
    wait = SecureFileSensor(
        task_id="wait",
        conn_id="partner",
        path=os.environ.get("SENSOR_TEST_DIR", "/inbound") + "/sales-*.csv",
        stable_for=1,
        poke_interval=0.5,
        timeout=240,
        deferrable=True,
    )

    @task
    def process(files: list[dict[str, object]]) -> list[str]:
        return [str(f["remote_path"]) for f in files]

    process(wait.output)


secure_file_sensor_deferred()
