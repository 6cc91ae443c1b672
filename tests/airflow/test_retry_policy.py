"""A VerificationError fails the task without retries under ``airflow dags test``, on every supported minor.

Runs ``tests/airflow/dags/retry_policy_dag.py`` (``retries=2``) in a throwaway ``AIRFLOW_HOME`` and reads the
task instances from its metadata database. On Airflow 3.1 the operator once imported
``AirflowFailException`` from where 3.2 keeps it: the ImportError made the task retryable.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from tests.servers import SFTPServer

pytestmark = pytest.mark.airflow

DAGS = Path(__file__).parent / "dags"


def test_a_verification_error_fails_the_task_once_and_a_transport_error_is_retried(
    asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    home = tmp_path / "airflow-home"
    home.mkdir()
    source = tmp_path / "data.csv"
    source.write_text("id\n1\n")
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    wrong_pin = " ".join(other_key.export_public_key("openssh").decode().split()[:2])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # closed again: nothing listens there
    # conn_timeout 0.5: a refused connection is waited for (busy-server back-off) up to 4 x conn_timeout per try
    unreachable = json.loads(asyncssh_server.conn_json(fields={"port": closed_port}, conn_timeout=0.5))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RETRY_TEST_SOURCE": str(source),
        "AIRFLOW_CONN_RETRY_UNTRUSTED_HOST_KEY": asyncssh_server.conn_json(host_key=wrong_pin),
        "AIRFLOW_CONN_RETRY_UNREACHABLE": json.dumps(unreachable),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run(
        [airflow, "dags", "test", "retry_policy"], env=env, capture_output=True, text=True, timeout=280
    )
    output = run.stdout + run.stderr

    db = sqlite3.connect(home / "airflow.db")
    try:
        rows = db.execute("SELECT task_id, state, try_number FROM task_instance WHERE dag_id='retry_policy'")
        instances = {task_id: (state, tries) for task_id, state, tries in rows.fetchall()}
    finally:
        db.close()
    assert instances.get("untrusted_host_key") == ("failed", 1), (instances, output[-4000:])
    assert instances.get("unreachable") == ("failed", 3), (instances, output[-4000:])  # 1 + retries
    assert "VerificationError" in output and "ImportError" not in output, output[-4000:]
    assert list(asyncssh_server.local_root.iterdir()) == []
