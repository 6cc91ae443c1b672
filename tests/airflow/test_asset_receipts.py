"""Asset events carry delivery receipts (#18): a DAG scheduled on the delivered asset reads them.

A real deployment (scheduler, dag-processor, api-server): ``receipt_producer`` uploads a directory over
SFTP with two outlets (the directory and one file in it); the scheduler then starts ``receipt_consumer``,
scheduled on the directory asset, whose task writes the ``extra`` of its triggering asset events to a file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from airflow_secure_transfer.security.hostkeys import HostKey
from tests.servers import SFTPServer, sha256_file, write_random
from tests.servers.airflow_stack import airflow_stack

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAGS = Path(__file__).resolve().parent / "receipt_dags"


def test_a_dag_scheduled_on_the_asset_reads_the_receipts(asyncssh_server: SFTPServer, tmp_path: Path) -> None:
    src = tmp_path / "out"
    src.mkdir()
    for name, size in (("a.csv", 1200), ("b.csv", 0), ("c.bin", 70_000)):
        write_random(src / name, size)
    endpoint = f"sftp://127.0.0.1:{asyncssh_server.port}"
    remote_dir = f"{asyncssh_server.writable_dir}/receipts"
    result = tmp_path / "received.json"
    env = {
        "AIRFLOW_CONN_RECEIPT_SFTP": asyncssh_server.conn_json(),
        "RECEIPT_ENDPOINT": endpoint,
        "RECEIPT_REMOTE_DIR": remote_dir,
        "RECEIPT_SOURCE": str(src),
        "RECEIPT_RESULT": str(result),
    }
    with airflow_stack(tmp_path / "airflow", dags_folder=DAGS, env=env) as stack:
        stack.wait_for_dag("receipt_producer")
        stack.wait_for_dag("receipt_consumer")
        stack.cli("dags", "unpause", "receipt_consumer")
        run = stack.run_dag("receipt_producer", timeout=300)
        assert run["state"] == "success", stack.task_logs()[-4000:]
        deadline = time.monotonic() + 240
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(2)
        assert result.exists(), f"the consumer did not run:\n{stack.log_tail('scheduler')}"
        logs = stack.task_logs()
    assert asyncssh_server.password not in logs

    # The outlet naming one file got that file's receipt (read from the metadata database).
    with contextlib.closing(sqlite3.connect(tmp_path / "airflow" / "airflow.db")) as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            (f"{endpoint}{remote_dir}/a.csv",),
        ).fetchall()
    (file_extra,) = [json.loads(r[0]) for r in rows]
    assert file_extra["remote_path"] == f"{remote_dir}/a.csv"
    assert file_extra["receipt"]["sha256"] == sha256_file(asyncssh_server.local_path(f"{remote_dir}/a.csv"))

    (received,) = json.loads(result.read_text())
    assert received["asset"] == f"{endpoint}{remote_dir}"  # Airflow drops the trailing slash
    extra = received["extra"]
    identity = HostKey.parse(*asyncssh_server.host_key_line.split()[:2]).describe()
    assert extra["files"] == 3 and extra["truncated"] is False
    assert extra["size"] == extra["bytes_sent"] == 71_200
    assert extra["protocol"] == "sftp" and extra["server_identity"] == identity
    assert extra["ssh_kex"] and extra["ssh_cipher"]
    by_path = {r["remote_path"]: r for r in extra["receipts"]}
    assert set(by_path) == {f"{remote_dir}/{n}" for n in ("a.csv", "b.csv", "c.bin")}
    for path, r in by_path.items():
        landed = asyncssh_server.local_path(path)
        assert r["sha256"] == sha256_file(landed) and r["size"] == landed.stat().st_size
        assert r["verified"] in ("size", "checksum") and r["server_identity"] == identity
    assert asyncssh_server.password not in result.read_text()
