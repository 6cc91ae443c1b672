"""SecureFileSensor deferred in a real deployment: ``airflow triggerer`` and ``airflow scheduler`` as processes.

The DAG (``sensor_dags/sensor_stack_dag.py``) runs the sensor and the partner's upload task in parallel;
the upload task waits until the sensor is deferred, then delivers. The sensor's trigger, running in
the triggerer process, must fire; the sensor resumes on a worker and hands its list to ``process``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.servers import SFTPServer
from tests.servers.airflow_stack import airflow_stack

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAGS = Path(__file__).resolve().parent / "sensor_dags"


def test_the_triggerer_fires_the_deferred_sensor(asyncssh_server: SFTPServer, tmp_path: Path) -> None:
    env = {"AIRFLOW_CONN_PARTNER": asyncssh_server.conn_json(), "SENSOR_TEST_DIR": asyncssh_server.writable_dir}
    with airflow_stack(tmp_path / "airflow", dags_folder=DAGS, env=env, triggerer=True) as stack:
        stack.wait_for_dag("secure_file_sensor_stack")
        run = stack.run_dag("secure_file_sensor_stack", timeout=420)
        logs = stack.task_logs()
        triggerer_log = stack.log_tail("triggerer", 400)
        assert run["state"] == "success", logs[-6000:] + triggerer_log[-3000:]
    expected = f"{asyncssh_server.writable_dir}/sales-1.csv"
    with contextlib.closing(sqlite3.connect(tmp_path / "airflow" / "airflow.db")) as db:
        values = dict(
            db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = 'secure_file_sensor_stack' AND key = 'return_value'"
            ).fetchall()
        )
    decoded = {task_id: json.loads(raw) if isinstance(raw, (str, bytes)) else raw for task_id, raw in values.items()}
    (record,) = decoded["wait"]
    assert record["remote_path"] == expected and record["size"] == len("id,amount\n1,10\n")
    assert decoded["process"] == [expected]
    assert decoded["deliver"] == expected
    # The trigger's own lines land in the task's log (Airflow routes them there from the triggerer).
    assert "Pausing task as DEFERRED" in logs
    assert "Trigger fired event" in logs and f"{asyncssh_server.writable_dir}/sales-*.csv: 1 file(s) ready" in logs
    assert f"1 file(s) ready: {expected}" in logs  # the sensor resumed from the event (execute_complete)
    assert asyncssh_server.password not in logs + triggerer_log
