"""SecureDownloadOperator: argument checks at parse time, execute() over both protocols, error mapping, lineage."""

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
from airflow_secure_transfer.exceptions import ConfigurationError, RemotePathError, TransportError, VerificationError
from airflow_secure_transfer.operators.download import SecureDownloadOperator
from tests.servers import FTPSServer, SFTPServer

AnyServer = FTPSServer | SFTPServer
AirflowFailException = airflow_fail_exception()


def _op(**kwargs: object) -> SecureDownloadOperator:
    args: dict[str, object] = {"task_id": "down", "conn_id": "c", "remote_path": "/out/", "local_path": "/tmp/in/"}
    args.update(kwargs)
    return SecureDownloadOperator(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overwrite": "always"}, "overwrite must be one of"),
        ({"verify": "md5"}, "verify must be one of"),
        ({"max_connections": 0}, "max_connections must be a whole number"),
        ({"delete_source": "yes"}, "delete_source must be True or False"),
        ({"preserve_mtime": 0}, "preserve_mtime must be True or False"),
        ({"conn_id": ""}, "conn_id must be a non-empty string"),
        ({"delete_source": True, "remote_archive_dir": "/archive"}, "exclude each other"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _op(**kwargs)


def test_construction_does_no_io_and_templates_the_contract_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_C", raising=False)
    op = _op(remote_path="/does/not/exist/*.csv")
    assert tuple(op.template_fields) == (
        "conn_id",
        "remote_path",
        "local_path",
        "remote_archive_dir",
        "manifest",
        "decrypt_with",
        "verify_signature_with",
    )
    assert op.overwrite == "replace" and op.verify == "size" and op.preserve_mtime is True


def test_module_import_is_light() -> None:
    code = (
        "import sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_secure_transfer.operators.download\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in ('paramiko', 'asyncssh', 'ftplib', 'ssl', 'OpenSSL')\n"
        "    or m.startswith(('airflow_secure_transfer.hooks', 'airflow_secure_transfer.transfer.ftps',\n"
        "                     'airflow_secure_transfer.transfer.sftp', 'airflow_secure_transfer.transfer.download',\n"
        "                     'airflow_secure_transfer.transfer.runner', 'airflow_secure_transfer.transfer.engine')))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _serve(server: AnyServer) -> dict[str, bytes]:
    files = {"a.csv": b"a,b\n1,2\n", "b.csv": os.urandom(100_000), "sub/c.csv": b"c"}
    owner = server.local_root.stat()
    for rel, data in files.items():
        path = server.local_root / "out" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        for p in (path, path.parent, server.local_root / "out"):
            os.chown(p, owner.st_uid, owner.st_gid)
    return files


@pytest.mark.parametrize("server_fixture", ["pyftpd_explicit", "pyftpd_implicit", "asyncssh_server"])
def test_execute_downloads_and_returns_json_records(
    request: pytest.FixtureRequest, airflow_conn: Callable[..., str], tmp_path: Path, server_fixture: str
) -> None:
    server: AnyServer = request.getfixturevalue(server_fixture)
    files = _serve(server)
    conn_id = airflow_conn("download_source", server)
    op = _op(conn_id=conn_id, remote_path=f"{server.writable_dir}/out", local_path=str(tmp_path / "in"))
    result = op.execute(context={})
    assert json.loads(json.dumps(result)) == result  # XCom-serialisable
    assert sorted(r["local_path"] for r in result) == [str(tmp_path / "in" / rel) for rel in sorted(files)]
    assert {"remote_path", "local_path", "size", "bytes", "sha256", "seconds", "resumed", "skipped", "verified"} <= set(
        result[0]
    )
    assert all(r["verified"] == "size" and not r["resumed"] and not r["skipped"] for r in result)
    assert server.password not in json.dumps(result)
    for rel, data in files.items():
        assert (tmp_path / "in" / rel).read_bytes() == data
    inputs, outputs = op.lineage_datasets()
    scheme = "sftp" if isinstance(server, SFTPServer) else "ftps"
    assert {ns for ns, _ in inputs} == {f"{scheme}://127.0.0.1:{server.port}"}
    assert sorted(name for _, name in inputs) == sorted(f"{server.writable_dir}/out/{rel}" for rel in files)
    assert outputs == [(f"file://{socket.gethostname()}", r["local_path"]) for r in result]
    lineage = op.get_openlineage_facets_on_complete(task_instance=None)
    if lineage is not None:
        assert all("secureTransfer" in d.facets for d in lineage.inputs)
        assert [d.name for d in lineage.outputs] == [r["local_path"] for r in result]


def test_an_untrusted_server_fails_the_task_without_retries(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    conn_id = airflow_conn("bad_pin", asyncssh_server, host_key=other_key)
    with pytest.raises(AirflowFailException, match="VerificationError") as info:
        _op(conn_id=conn_id, local_path=str(tmp_path / "in")).execute(context={})
    assert isinstance(info.value.__cause__, VerificationError)
    assert not (tmp_path / "in").exists()


def test_a_missing_remote_file_fails_without_retries(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    conn_id = airflow_conn("src", asyncssh_server)
    with pytest.raises(AirflowFailException, match="does not exist") as info:
        _op(conn_id=conn_id, remote_path=f"{asyncssh_server.writable_dir}/nope.csv", local_path=str(tmp_path)).execute(
            context={}
        )
    assert isinstance(info.value.__cause__, RemotePathError)


@pytest.mark.slow
def test_a_retried_task_resumes_the_cut_download(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    from tests.contract.cutproxy import CutProxy

    size = 16 * 1024 * 1024
    data = os.urandom(size)
    (asyncssh_server.local_root / "big.bin").write_bytes(data)
    target = tmp_path / "big.bin"
    with CutProxy("127.0.0.1") as proxy:
        port = proxy.add_route(asyncssh_server.port)
        conn_id = airflow_conn("via_proxy", asyncssh_server, fields={"port": port})
        op = _op(conn_id=conn_id, remote_path=f"{asyncssh_server.writable_dir}/big.bin", local_path=str(target))
        proxy.arm(size // 2, from_server=True)
        with pytest.raises(TransportError):  # retryable: raised as is, so Airflow retries the task
            op.execute(context={})
        assert not target.exists()
        proxy.disarm()
        (record,) = op.execute(context={})  # the retry
    assert record["resumed"] is True and 0 < record["bytes"] < size
    assert target.read_bytes() == data


def test_remote_path_takes_the_sensors_file_records() -> None:
    from airflow_secure_transfer.transfer.download import remote_sources

    match = {"remote_path": "/in/a.csv", "size": 3, "mtime": 1.0}
    assert remote_sources(match) == ["/in/a.csv"]
    assert remote_sources([match, "/in/b.csv", {"remote_path": "/in/c.csv"}]) == ["/in/a.csv", "/in/b.csv", "/in/c.csv"]
    with pytest.raises(ConfigurationError, match="needs a 'remote_path' string"):
        remote_sources({"path": "/in/a.csv"})
    with pytest.raises(ConfigurationError, match="needs a 'remote_path' string"):
        remote_sources([{"remote_path": 7}])
    with pytest.raises(ConfigurationError, match="empty list"):
        remote_sources([])
    with pytest.raises(ConfigurationError, match="a path, a file record or a list"):
        remote_sources([b"/in/a.csv"])  # type: ignore[list-item]


def test_execute_with_the_sensors_records_fetches_those_files_only(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path
) -> None:
    files = _serve(asyncssh_server)
    conn_id = airflow_conn("download_source", asyncssh_server)
    base = f"{asyncssh_server.writable_dir}/out"
    # What SecureFileSensor returns; the size and mtime in it are not trusted (read again from the server).
    matched = [{"remote_path": f"{base}/a.csv", "size": 1, "mtime": 0.0}, {"remote_path": f"{base}/sub/c.csv"}]
    result = _op(conn_id=conn_id, remote_path=matched, local_path=str(tmp_path / "in") + "/").execute(context={})
    assert sorted(r["remote_path"] for r in result) == [f"{base}/a.csv", f"{base}/sub/c.csv"]
    assert (tmp_path / "in" / "a.csv").read_bytes() == files["a.csv"]
    assert (tmp_path / "in" / "c.csv").read_bytes() == files["sub/c.csv"]
    assert [r["size"] for r in sorted(result, key=lambda r: r["remote_path"])] == [len(files["a.csv"]), 1]
