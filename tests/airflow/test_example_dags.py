"""The example DAGs: they parse, and they run with ``airflow dags test`` against the fixture servers.

Each run uses a throwaway ``AIRFLOW_HOME`` (``airflow db migrate`` once per module),
connections as ``AIRFLOW_CONN_*`` that trust exactly the fixture server, and checks
the XCom records in the metadata database and the files on the servers' disks.
The stock ``FTPFileTransmitOperator`` DAG is parsed, never run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.demo import read_return_values
from tests.servers import FTPSServer, SFTPServer

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "example_dags"


def _airflow() -> list[str]:
    script = Path(sys.executable).parent / "airflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow"]


def _base_env(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    return {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd[-3:])} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    _run([*_airflow(), "db", "migrate"], _base_env(home))
    return home


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_example_dags_parse(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "try:\n"
        "    from airflow.dag_processing.dagbag import DagBag\n"  # Airflow 3.2+
        "except ImportError:\n"
        "    from airflow.models.dagbag import DagBag\n"  # Airflow 3.1
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'dags': {d: {t.task_id: type(t).__name__ for t in dag.tasks} for d, dag in bag.dags.items()},\n"
        "  'paused': {d: dag.is_paused_upon_creation for d, dag in bag.dags.items()}}))\n"
    )
    proc = _run([sys.executable, "-c", code], _base_env(tmp_path))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    dags = result["dags"]
    assert dags["secure_upload_example"] == {
        "generate_files": "_PythonDecoratedOperator",
        "generate_outbox": "_PythonDecoratedOperator",
        "upload_ftps": "SecureUploadOperator",
        "upload_sftp": "SecureUploadOperator",
        "move_sftp": "SecureUploadOperator",
        "fetch_back_ftps": "SecureDownloadOperator",
        "fetch_back_sftp": "SecureDownloadOperator",
    }
    assert dags["migrate_from_ftp_operator__before"]["put_report"] == "FTPFileTransmitOperator"
    assert dags["migrate_from_ftp_operator__after"]["put_report"] == "SecureUploadOperator"
    assert result["paused"]["migrate_from_ftp_operator__before"] is True  # the plain-FTP DAG never starts by itself
    assert dags["deliver_with_manifest"] == {"export": "_PythonDecoratedOperator", "deliver": "SecureUploadOperator"}
    assert dags["wait_for_partner_files"] == {
        "wait_for_sales": "SecureFileSensor",
        "fetch": "SecureDownloadOperator",
        "summarise": "_PythonDecoratedOperator",
    }


def _check_records(records: Any, server: FTPSServer | SFTPServer, count: int) -> None:
    assert isinstance(records, list) and len(records) == count
    for record in records:
        assert record["verified"] == "size" and record["skipped"] is False
        assert record["size"] == record["bytes"]
        landed = server.local_path(record["remote_path"])
        assert _sha256(landed) == record["sha256"]
        assert record["bytes"] == landed.stat().st_size
    assert server.password not in json.dumps(records)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ftps_fixture", "sftp_fixture"),
    [
        ("pyftpd_explicit", "asyncssh_server"),
        pytest.param("vsftpd_implicit", "sshd_server", marks=pytest.mark.interop),
    ],
)
def test_secure_upload_example_runs_with_airflow_dags_test(
    request: pytest.FixtureRequest, airflow_home: Path, tmp_path: Path, ftps_fixture: str, sftp_fixture: str
) -> None:
    ftps: FTPSServer = request.getfixturevalue(ftps_fixture)
    sftp: SFTPServer = request.getfixturevalue(sftp_fixture)
    generated = tmp_path / "generated"
    generated.mkdir()
    env = {
        **_base_env(airflow_home),
        "AIRFLOW_CONN_SECURE_FTPS_DEFAULT": ftps.conn_json(),
        "AIRFLOW_CONN_SECURE_SFTP_DEFAULT": sftp.conn_json(),
        "SECURE_UPLOAD_FTPS_DIR": ftps.writable_dir,
        "SECURE_UPLOAD_SFTP_DIR": sftp.writable_dir,
        "TMPDIR": str(generated),
    }
    proc = _run([*_airflow(), "dags", "test", "secure_upload_example"], env)
    assert "upload summary" in proc.stdout + proc.stderr
    values = read_return_values(airflow_home, "secure_upload_example")

    _check_records(values["upload_ftps"], ftps, 8)
    assert all(r["remote_path"].startswith(f"{ftps.writable_dir}/ftps/") for r in values["upload_ftps"])
    _check_records(values["upload_sftp"], sftp, 6)  # the recursive *.csv glob
    assert all(r["remote_path"].endswith(".csv") for r in values["upload_sftp"])
    _check_records(values["move_sftp"], sftp, 8)

    # The downloads fetched exactly what was uploaded (same digests), checksum-verified.
    for fetch, upload_task in (("fetch_back_ftps", "upload_ftps"), ("fetch_back_sftp", "upload_sftp")):
        fetched = values[fetch]
        assert all(r["verified"] == "checksum" for r in fetched)
        assert sorted(r["sha256"] for r in fetched) == sorted(r["sha256"] for r in values[upload_task])
        assert all(Path(r["local_path"]).is_file() for r in fetched)
    outbox = Path(values["generate_outbox"])
    assert [p for p in outbox.rglob("*") if p.is_file()] == []  # moved: deleted after verified upload
    exported = Path(values["generate_files"])
    assert len([p for p in exported.rglob("*") if p.is_file()]) == 8  # plain uploads keep their sources
    for path in (ftps.local_root, sftp.local_root):
        assert list(path.rglob(".*.part")) == []


@pytest.mark.slow
def test_migrated_dag_upgrades_an_ftp_connection_to_tls(
    airflow_home: Path, pyftpd_explicit: FTPSServer, tmp_path: Path
) -> None:
    env = {
        **_base_env(airflow_home),
        # The legacy connection keeps its id and its "ftp" type; only the CA is added.
        "AIRFLOW_CONN_PARTNER_FTP": pyftpd_explicit.conn_json(conn_type="ftp"),
        "MIGRATE_FTP_REMOTE_DIR": f"{pyftpd_explicit.writable_dir}/inbound",
        "TMPDIR": str(tmp_path),
    }
    _run([*_airflow(), "dags", "test", "migrate_from_ftp_operator__after"], env)
    (record,) = read_return_values(airflow_home, "migrate_from_ftp_operator__after")["put_report"]
    assert record["remote_path"] == f"{pyftpd_explicit.writable_dir}/inbound/report.csv"
    landed = pyftpd_explicit.local_path(record["remote_path"])
    assert landed.read_text() == "id,amount\n1,10.00\n2,20.00\n"
    commands = [c.split()[0].upper() for c in pyftpd_explicit.command_log if c.strip()]
    assert commands.index("AUTH") < commands.index("USER")  # TLS before the login, on the same "ftp" connection
    assert "PROT" in commands


@pytest.mark.slow
@pytest.mark.parametrize("server_fixture", ["asyncssh_server", "pyftpd_explicit"])
def test_delivery_with_manifest_then_the_deferred_sensor_picks_it_up(
    request: pytest.FixtureRequest, airflow_home: Path, tmp_path: Path, server_fixture: str
) -> None:
    server: FTPSServer | SFTPServer = request.getfixturevalue(server_fixture)
    env = {
        **_base_env(airflow_home),
        "AIRFLOW_CONN_PARTNER_SFTP": server.conn_json(),
        "DELIVERY_DIR": server.writable_dir,
        "DELIVERY_LOCAL_DIR": str(tmp_path / "received"),
        "TMPDIR": str(tmp_path),
    }
    day = "2026-12-01"
    _run([*_airflow(), "dags", "test", "deliver_with_manifest", day], env)
    delivered = read_return_values(airflow_home, "deliver_with_manifest")["deliver"]
    assert len(delivered) == 2
    manifest = json.loads(server.local_path(f"{server.writable_dir}/{day}/MANIFEST.json").read_bytes())
    assert sorted((f["path"], f["sha256"]) for f in manifest["files"]) == sorted(
        (r["remote_path"].rsplit("/", 1)[1], r["sha256"]) for r in delivered
    )
    assert server.local_path(f"{server.writable_dir}/{day}/_SUCCESS").read_bytes() == b""

    proc = _run([*_airflow(), "dags", "test", "wait_for_partner_files", day], env)
    assert "running trigger in line" in proc.stdout + proc.stderr  # the sensor deferred
    values = read_return_values(airflow_home, "wait_for_partner_files")
    assert sorted(f["remote_path"] for f in values["wait_for_sales"]) == sorted(r["remote_path"] for r in delivered)
    fetched = values["fetch"]  # downloaded, each checked against the producer's manifest
    assert sorted(r["sha256"] for r in fetched) == sorted(r["sha256"] for r in delivered)
    assert all(r["verified"] == "checksum" and Path(r["local_path"]).is_file() for r in fetched)
    summary = values["summarise"]
    assert summary["files"] == 2 and summary["bytes"] == sum(r["size"] for r in delivered) and summary["rows"] > 0
