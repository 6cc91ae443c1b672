"""Lineage with delivery receipts (#18), from Airflow's real OpenLineage listener.

The example DAG runs with ``airflow dags test`` and the OpenLineage provider's **file transport**; the test
reads the events the listener wrote: inputs ``file://<host>/<path>``, outputs ``ftps://host:port`` /
``sftp://host:port`` with the remote path, and on each output the ``secureTransfer`` facet, validated
against the JSON schema shipped in the package and checked against the files on the servers' disks.
No event may contain the connection's password, private key or passphrase.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import socket
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.demo import read_return_values
from airflow_secure_transfer.lineage import FACET_NAME, PRODUCER, SCHEMA_URL, facet_schema
from tests.airflow.test_example_dags import _airflow, _base_env, _run
from tests.servers import FTPSServer, SFTPServer, sha256_file

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

openlineage = pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider (test extra)")


@pytest.fixture(scope="module")
def lineage_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home-lineage")
    _run([*_airflow(), "db", "migrate"], _base_env(home))
    return home


def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = facet_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_schema_accepts_receipts_and_refuses_what_is_not_one() -> None:
    validator = _validator()
    good = {
        "_producer": PRODUCER,
        "_schemaURL": SCHEMA_URL,
        "size": 3,
        "sha256": "0" * 64,
        "verified": "checksum",
        "protocol": "ftps",
        "tls_version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "server_identity": "certificate sha256:" + "a" * 64,
        "resumed": False,
        "skipped": False,
        "bytes_sent": 3,
    }
    assert list(validator.iter_errors({FACET_NAME: good})) == []
    for bad in (
        {**good, "password": "x"},  # nothing but the receipt's fields
        {**good, "sha256": "xyz"},
        {**good, "verified": True},
        {k: v for k, v in good.items() if k != "tls_version"},  # FTPS names its TLS version
        {**good, "protocol": "ftp"},
    ):
        assert list(validator.iter_errors({FACET_NAME: bad})), bad


@pytest.mark.parametrize(
    ("ftps_fixture", "sftp_fixture"),
    [
        ("pyftpd_explicit", "asyncssh_server"),
        pytest.param("vsftpd_explicit", "sshd_server", marks=pytest.mark.interop),
    ],
)
def test_openlineage_events_carry_a_delivery_receipt_per_file(
    request: pytest.FixtureRequest, lineage_home: Path, tmp_path: Path, ftps_fixture: str, sftp_fixture: str
) -> None:
    ftps: FTPSServer = request.getfixturevalue(ftps_fixture)
    sftp: SFTPServer = request.getfixturevalue(sftp_fixture)
    events_file = tmp_path / "openlineage.jsonl"
    generated = tmp_path / "generated"
    generated.mkdir()
    env = {
        **_base_env(lineage_home),
        "AIRFLOW_CONN_SECURE_FTPS_DEFAULT": ftps.conn_json(),
        # Key login, the key encrypted: the key and its passphrase are secrets the events must not carry.
        "AIRFLOW_CONN_SECURE_SFTP_DEFAULT": sftp.conn_json(
            fields={"password": None}, private_key=sftp.encrypted_key_text, private_key_passphrase=sftp.key_passphrase
        ),
        "SECURE_UPLOAD_FTPS_DIR": ftps.writable_dir,
        "SECURE_UPLOAD_SFTP_DIR": sftp.writable_dir,
        "TMPDIR": str(generated),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "secure-transfer-tests",
    }
    _run([*_airflow(), "dags", "test", "secure_upload_example"], env)
    events = _events(events_file)
    text = events_file.read_text()
    key_lines = [line for line in sftp.encrypted_key_text.splitlines() if "PRIVATE KEY" not in line and line]
    for secret in (ftps.password, sftp.key_passphrase, *key_lines):
        assert secret not in text

    validator = _validator()
    completes = {
        e["job"]["name"].rsplit(".", 1)[-1]: e
        for e in events
        if e.get("eventType") == "COMPLETE" and e["job"]["name"].startswith("secure_upload_example.")
    }
    assert {"upload_ftps", "upload_sftp", "move_sftp"} <= set(completes)
    host_ns = f"file://{socket.gethostname()}"
    for task_id, server, scheme, count in (
        ("upload_ftps", ftps, "ftps", 8),
        ("upload_sftp", sftp, "sftp", 6),
        ("move_sftp", sftp, "sftp", 8),
    ):
        event = completes[task_id]
        inputs, outputs = event["inputs"], event["outputs"]
        assert len(inputs) == len(outputs) == count, task_id
        assert {i["namespace"] for i in inputs} == {host_ns}
        assert {o["namespace"] for o in outputs} == {f"{scheme}://127.0.0.1:{server.port}"}
        for out in outputs:
            facet = out["facets"][FACET_NAME]
            assert list(validator.iter_errors({FACET_NAME: facet})) == [], (task_id, facet)
            assert facet["_schemaURL"] == SCHEMA_URL and facet["_producer"] == PRODUCER
            landed = server.local_path(out["name"])
            assert facet["sha256"] == sha256_file(landed)
            assert facet["size"] == landed.stat().st_size
            assert facet["protocol"] == scheme and facet["verified"] in ("size", "checksum")
            assert facet["bytes_sent"] == facet["size"] and not facet["resumed"] and not facet["skipped"]
            if scheme == "ftps":
                assert facet["server_identity"] == f"certificate sha256:{ftps.cert_fingerprint}"
                assert facet["tls_version"] in ("TLSv1.2", "TLSv1.3")
            else:
                assert facet["server_identity"] == _host_key_fingerprint(sftp)
                assert facet["ssh_kex"] and facet["ssh_cipher"]


def _host_key_fingerprint(server: SFTPServer) -> str:
    from airflow_secure_transfer.security.hostkeys import HostKey

    key_type, b64 = server.host_key_line.split()[:2]
    return HostKey.parse(key_type, b64).describe()


@pytest.mark.parametrize("server_fixture", ["asyncssh_server", "pyftpd_explicit"])
def test_sensor_inputs_and_mapped_downloads_in_openlineage_events(
    request: pytest.FixtureRequest, lineage_home: Path, tmp_path: Path, server_fixture: str
) -> None:
    """The sensor's output maps one download per file (``expand(remote_path=wait.output)``); the sensor's
    event names the matched files as inputs, each mapped download its remote file (with the receipt) as input
    and the local copy as output."""
    server: FTPSServer | SFTPServer = request.getfixturevalue(server_fixture)
    scheme = "ftps" if server_fixture.startswith("pyftpd") else "sftp"
    remote_dir = f"{server.writable_dir}/mapped-{scheme}"
    server.local_path(remote_dir).mkdir(parents=True)
    contents = {f"part-{i}.csv": f"id,value\n{i},{'x' * (100 * i + 1)}\n".encode() for i in range(3)}
    for name, data in contents.items():
        server.local_path(f"{remote_dir}/{name}").write_bytes(data)
    server.local_path(f"{remote_dir}/other.txt").write_bytes(b"not matched")
    events_file = tmp_path / "openlineage.jsonl"
    local_dir = tmp_path / "received"
    env = {
        **_base_env(lineage_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).parent / "dags"),
        "AIRFLOW_CONN_PARTNER": server.conn_json(),
        "MAPPED_TEST_DIR": remote_dir,
        "MAPPED_LOCAL_DIR": str(local_dir),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "secure-transfer-tests",
    }
    _run([*_airflow(), "dags", "test", "secure_mapped_download"], env)

    values = read_return_values(lineage_home, "secure_mapped_download")
    records = values["collect"]
    assert sorted(Path(r["local_path"]).name for r in records) == sorted(contents)
    for r in records:
        assert Path(r["local_path"]).read_bytes() == contents[Path(r["local_path"]).name]
        assert r["verified"] == "checksum"

    text = events_file.read_text()
    assert server.password not in text
    completes = [
        e
        for e in _events(events_file)
        if e.get("eventType") == "COMPLETE" and e["job"]["name"].startswith("secure_mapped_download.")
    ]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for e in completes:
        by_task.setdefault(e["job"]["name"].rsplit(".", 1)[-1], []).append(e)
    remote_ns = f"{scheme}://127.0.0.1:{server.port}"
    (sensor,) = by_task["wait"]
    assert sorted((i["namespace"], i["name"]) for i in sensor["inputs"]) == sorted(
        (remote_ns, f"{remote_dir}/{name}") for name in contents
    )
    assert sensor["outputs"] == []
    fetches = by_task["fetch"]
    assert len(fetches) == len(contents)  # one event per mapped task
    validator = _validator()
    host_ns = f"file://{socket.gethostname()}"
    seen = set()
    for event in fetches:
        (inp,), (out,) = event["inputs"], event["outputs"]
        assert inp["namespace"] == remote_ns and out["namespace"] == host_ns
        name = posixpath.basename(inp["name"])
        assert out["name"] == str(local_dir / name)
        facet = inp["facets"][FACET_NAME]
        assert list(validator.iter_errors({FACET_NAME: facet})) == []
        assert facet["sha256"] == hashlib.sha256(contents[name]).hexdigest()
        assert facet["size"] == len(contents[name]) and facet["protocol"] == scheme
        seen.add(name)
    assert seen == set(contents)
