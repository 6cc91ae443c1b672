"""SecureUploadOperator: argument checks at parse time, execute() over both protocols, error mapping, lineage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_secure_transfer.compat import airflow_fail_exception
from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    LocalPathError,
    ServerBusyError,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from tests.servers import FTPSServer, SFTPServer

AnyServer = FTPSServer | SFTPServer
AirflowFailException = airflow_fail_exception()  # the installed minor's class (it moved in 3.2)


def _op(**kwargs: object) -> SecureUploadOperator:
    args: dict[str, object] = {"task_id": "up", "conn_id": "c", "local_path": "/tmp/x", "remote_path": "/in/"}
    args.update(kwargs)
    return SecureUploadOperator(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction (DAG parse time)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overwrite": "always"}, "overwrite must be one of 'replace', 'skip_identical', 'fail'"),
        ({"verify": "md5"}, "verify must be one of 'size', 'checksum'"),
        ({"max_connections": 0}, "max_connections must be a whole number from 1 to 64"),
        ({"max_connections": "4"}, "max_connections"),
        ({"create_dirs": "yes"}, "create_dirs must be True or False"),
        ({"delete_source": 1}, "delete_source must be True or False"),
        ({"preserve_mtime": "no"}, "preserve_mtime must be True or False"),
        ({"conn_id": ""}, "conn_id must be a non-empty string"),
        ({"manifest": ""}, "manifest must be a remote path or None"),
        ({"done_marker": 3}, "done_marker must be a remote path or None"),
    ],
)
def test_bad_arguments_fail_at_construction_with_a_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        _op(**kwargs)
    assert isinstance(info.value, ValueError)


def test_construction_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_C", raising=False)
    op = _op(local_path="/does/not/exist/*.csv")  # nothing is looked up or opened yet
    assert op.template_fields == (
        "conn_id",
        "local_path",
        "remote_path",
        "manifest",
        "done_marker",
        "encrypt_with",
        "sign_with",
    )
    assert op.manifest is None and op.done_marker is None
    assert op.template_fields[:3] == ("conn_id", "local_path", "remote_path")
    assert op.max_connections is None and op.overwrite == "replace" and op.verify == "size"


def test_module_import_is_light() -> None:
    code = (
        "import sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_secure_transfer.operators.upload\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in ('paramiko', 'asyncssh', 'ftplib', 'ssl', 'OpenSSL')\n"
        "    or m.startswith(('airflow_secure_transfer.hooks', 'airflow_secure_transfer.transfer.ftps',\n"
        "                     'airflow_secure_transfer.transfer.sftp', 'airflow_secure_transfer.security',\n"
        "                     'airflow_secure_transfer.transfer.engine', 'airflow_secure_transfer.transfer.local'))\n"
        # The settings types and shared bounds: standard library only (enum, dataclasses).
        "    and m not in ('airflow_secure_transfer.security', 'airflow_secure_transfer.security.settings'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_settings_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import airflow_secure_transfer.security.settings\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith(('airflow', 'paramiko', 'asyncssh',\n"
        "    'cryptography', 'ssl', 'ftplib')) and m not in ('airflow_secure_transfer',\n"
        "    'airflow_secure_transfer.security', 'airflow_secure_transfer.security.settings'))\n"
        "print(new)\n"
        "sys.exit(1 if new else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_policy_module_import_is_light() -> None:
    """Every Airflow process loads the cluster policy (entry point): it imports pluggy and nothing of Airflow."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import airflow_secure_transfer.policy\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in ('airflow', 'paramiko', 'asyncssh', 'ftplib', 'ssl',\n"
        "    'OpenSSL', 'cryptography', 'sqlalchemy')\n"
        "    or m.startswith('airflow_secure_transfer.') and m != 'airflow_secure_transfer.policy')\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- execute


@pytest.fixture
def files(tmp_path: Path) -> Path:
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_bytes(b"a,b\n1,2\n")
    (src / "b.csv").write_bytes(os.urandom(100_000))
    (src / "sub" / "c.csv").write_bytes(b"c")
    return src


@pytest.mark.parametrize("server_fixture", ["pyftpd_explicit", "pyftpd_implicit", "asyncssh_server"])
def test_execute_uploads_and_returns_json_records(
    request: pytest.FixtureRequest, airflow_conn: Callable[..., str], files: Path, server_fixture: str
) -> None:
    server: AnyServer = request.getfixturevalue(server_fixture)
    conn_id = airflow_conn("upload_target", server)
    op = _op(conn_id=conn_id, local_path=str(files), remote_path=f"{server.writable_dir}/in/")
    result = op.execute(context={})
    assert json.loads(json.dumps(result)) == result  # XCom-serialisable
    assert sorted(r["remote_path"] for r in result) == [
        f"{server.writable_dir}/in/{rel}" for rel in ("a.csv", "b.csv", "sub/c.csv")
    ]
    assert set(result[0]) == {
        "local_path",
        "remote_path",
        "bytes",
        "sha256",
        "seconds",
        "resumed",
        "skipped",
        "verified",
        "size",
        "source_deleted",
        "encrypted",
        "remote_sha256",
    }
    assert all(r["verified"] and not r["resumed"] and not r["skipped"] for r in result)
    assert server.password not in json.dumps(result)
    for rel in ("a.csv", "b.csv", "sub/c.csv"):
        assert (server.local_root / "in" / rel).read_bytes() == (files / rel).read_bytes()


@pytest.mark.parametrize(
    ("server_fixture", "conn_type"),
    [("pyftpd_explicit", "ftp"), ("asyncssh_server", "sftp"), ("asyncssh_server", "ssh")],
)
def test_stock_connection_types_are_accepted_under_our_policy(
    request: pytest.FixtureRequest, airflow_conn: Callable[..., str], files: Path, server_fixture: str, conn_type: str
) -> None:
    server: AnyServer = request.getfixturevalue(server_fixture)
    conn_id = airflow_conn("stock_type", server, conn_type=conn_type)
    (record,) = _op(
        conn_id=conn_id, local_path=str(files / "a.csv"), remote_path=f"{server.writable_dir}/a.csv"
    ).execute(context={})
    assert record["verified"] and (server.local_root / "a.csv").exists()


def test_an_unaccepted_connection_type_names_the_accepted_ones(monkeypatch: pytest.MonkeyPatch, files: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WEB", json.dumps({"conn_type": "http", "host": "127.0.0.1"}))
    with pytest.raises(AirflowFailException, match="secure_ftps, ftp, secure_sftp, sftp, ssh") as info:
        _op(conn_id="web", local_path=str(files)).execute(context={})
    assert isinstance(info.value.__cause__, ConfigurationError)


def test_an_untrusted_server_fails_the_task_without_retries(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, pyftpd_explicit: FTPSServer, files: Path
) -> None:
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    conn_id = airflow_conn("bad_pin", asyncssh_server, host_key=other_key)
    with pytest.raises(AirflowFailException, match="VerificationError") as info:
        _op(conn_id=conn_id, local_path=str(files)).execute(context={})
    assert isinstance(info.value.__cause__, VerificationError)
    assert list(asyncssh_server.local_root.iterdir()) == []

    conn_id = airflow_conn("no_ca", pyftpd_explicit, ca_bundle=None)  # the system store does not know the test CA
    with pytest.raises(AirflowFailException) as info:
        _op(conn_id=conn_id, local_path=str(files)).execute(context={})
    assert isinstance(info.value.__cause__, VerificationError)


def test_a_missing_local_file_fails_the_task_without_retries(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    conn_id = airflow_conn("target", asyncssh_server)
    with pytest.raises(AirflowFailException, match="does not exist") as info:
        _op(conn_id=conn_id, local_path=str(tmp_path / "missing.csv")).execute(context={})
    assert isinstance(info.value.__cause__, LocalPathError)


def test_an_unreachable_server_is_a_retryable_error(monkeypatch: pytest.MonkeyPatch, files: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_GONE",
        json.dumps(
            {
                "conn_type": "secure_sftp",
                "host": "127.0.0.1",
                "port": port,
                "login": "u",
                "password": "p",
                "extra": {
                    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
                    "conn_timeout": 0.5,  # a refused connection is waited for up to 4 x conn_timeout (busy server)
                },
            }
        ),
    )
    with pytest.raises(TransportError) as info:
        _op(conn_id="gone", local_path=str(files)).execute(context={})
    assert info.value.retryable and not isinstance(info.value, AirflowFailException)
    assert isinstance(info.value, ServerBusyError) and "still busy after" in str(info.value)


def test_max_connections_is_capped_by_the_connection(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn_id = airflow_conn("capped", asyncssh_server, max_connections=2)
    op = _op(conn_id=conn_id, local_path=str(files), remote_path=f"{asyncssh_server.writable_dir}/", max_connections=8)
    records = op.execute(context={})
    assert len(records) == 3
    text = capsys.readouterr().out  # the task logger (structlog) writes to stdout outside the task runner
    assert "max_connections=8 is above the connection's limit of 2; using 2" in text
    assert "over up to 2 connection(s)" in text
    assert "upload summary" in text


def test_lineage_names_local_and_remote_datasets(
    airflow_conn: Callable[..., str], pyftpd_explicit: FTPSServer, files: Path
) -> None:
    conn_id = airflow_conn("lineage", pyftpd_explicit)
    op = _op(conn_id=conn_id, local_path=str(files / "a.csv"), remote_path=f"{pyftpd_explicit.writable_dir}/a.csv")
    assert op.lineage_datasets() == ([], [])
    op.execute(context={})
    inputs, outputs = op.lineage_datasets()
    assert inputs == [(f"file://{socket.gethostname()}", str(files / "a.csv"))]
    assert outputs == [(f"ftps://127.0.0.1:{pyftpd_explicit.port}", f"{pyftpd_explicit.writable_dir}/a.csv")]
    facets = op.get_openlineage_facets_on_complete(task_instance=None)
    try:
        import airflow.providers.openlineage.extractors  # noqa: F401
    except ImportError:
        assert facets is None  # the OpenLineage provider is not installed: nothing to report to
    else:  # pragma: no cover - depends on the environment
        assert [d.namespace for d in facets.outputs] == [outputs[0][0]]


@pytest.mark.slow
def test_a_retried_task_resumes_the_cut_upload(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    from tests.contract.cutproxy import CutProxy

    size = 16 * 1024 * 1024
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    with CutProxy("127.0.0.1") as proxy:
        port = proxy.add_route(asyncssh_server.port)
        conn_id = airflow_conn("via_proxy", asyncssh_server, fields={"port": port})
        op = _op(conn_id=conn_id, local_path=str(src), remote_path=f"{asyncssh_server.writable_dir}/big.bin")
        proxy.arm(size // 2)
        with pytest.raises(TransportError):  # retryable: raised as is, so Airflow retries the task
            op.execute(context={})
        assert not (asyncssh_server.local_root / "big.bin").exists()
        proxy.disarm()
        (record,) = op.execute(context={})  # the retry
    assert record["resumed"] is True and 0 < record["bytes"] < size
    assert (asyncssh_server.local_root / "big.bin").read_bytes() == src.read_bytes()
