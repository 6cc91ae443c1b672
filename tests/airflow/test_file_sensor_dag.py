"""SecureFileSensor deferred in a real Airflow run: ``airflow dags test`` runs its trigger in process.

The sensor defers; only then does the partner (this test, through ``SecureUploadOperator``, as the
other party's upload task would) deliver the file. The run must show the deferral, the trigger
completing, the sensor resuming with the file list, and the downstream task receiving that list.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_secure_transfer.demo import read_return_values
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from tests.servers import FTPSServer, SFTPServer

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAGS = Path(__file__).parent / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_module_import_is_light() -> None:
    code = (
        "import sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_secure_transfer.sensors.file\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in ('paramiko', 'asyncssh', 'ftplib', 'OpenSSL')\n"
        "    or m.startswith(('airflow_secure_transfer.hooks', 'airflow_secure_transfer.transfer.ftps',\n"
        "                     'airflow_secure_transfer.transfer.sftp', 'airflow_secure_transfer.triggers')))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("server_fixture", ["asyncssh_server", "pyftpd_explicit"])
def test_deferred_sensor_resumes_with_the_file_delivered_midway(
    request: pytest.FixtureRequest, airflow_conn: Callable[..., str], tmp_path: Path, server_fixture: str
) -> None:
    server: FTPSServer | SFTPServer = request.getfixturevalue(server_fixture)
    home = tmp_path / "airflow-home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_PARTNER": server.conn_json(),
        "SENSOR_TEST_DIR": server.writable_dir,
        "PYTHONUNBUFFERED": "1",
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240)
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    proc = subprocess.Popen(
        [AIRFLOW, "dags", "test", "secure_file_sensor_deferred"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    delivered = False
    try:
        while True:
            line = lines.get(timeout=240)
            if line is None:
                break
            output.append(line)
            if not delivered and "running trigger in line" in line:
                # The sensor has deferred and its trigger is polling: the partner delivers now.
                assert not any(server.local_root.iterdir())
                source = tmp_path / "sales-2026.csv"
                source.write_text("id,amount\n1,10\n")
                SecureUploadOperator(
                    task_id="partner_upload",
                    conn_id=airflow_conn("partner_upload", server),
                    local_path=str(source),
                    remote_path=f"{server.writable_dir}/",
                ).execute(context={})
                delivered = True
    finally:
        proc.wait(timeout=240)
    text = "".join(output)
    assert proc.returncode == 0, text[-6000:]
    assert delivered, text[-6000:]
    assert "Trigger completed" in text
    values = read_return_values(home, "secure_file_sensor_deferred")
    expected = f"{server.writable_dir}/sales-2026.csv"
    (record,) = values["wait"]
    assert record["remote_path"] == expected and record["size"] == len("id,amount\n1,10\n")
    assert values["process"] == [expected]
    assert server.password not in text
