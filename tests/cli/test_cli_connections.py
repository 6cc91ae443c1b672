"""``audit --connections``: the connection store read the way Airflow reads it.

Each test runs the console script in a fresh ``AIRFLOW_HOME`` with connections in
``AIRFLOW_CONN_*`` variables, a local-filesystem secrets backend, a custom
(non-listable) backend, or the metadata database, and asserts the exact
(connection id, rule) pairs, and that no password or key appears in any output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.cli.connections import ConnectionRecord, audit_connection, conn_ids_in_source

SCRIPT = Path(sys.executable).parent / "airflow-secure-transfer"
AIRFLOW = Path(sys.executable).parent / "airflow"
CORPUS = Path(__file__).parent / "corpus"

PASSWORD = "Pw-9f3b1c7e-NEVER-PRINT"
KEY_MATERIAL = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-NEVER-PRINT"
PIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
FP = "ab" * 32
# PEM-shaped (accepted as text by the parser; never loaded by the audit).
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _env(home: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    return {**base, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **extra}


def run_audit(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "audit", "--connections", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(home, **env),
    )


def conn_pairs(stdout: str) -> set[tuple[str, str]]:
    doc = json.loads(stdout)
    return {(f["connection"], f["rule"]) for f in doc["findings"] if "connection" in f}


def _json_conn(conn_type: str, extra: dict[str, Any] | None = None, **fields: Any) -> str:
    return json.dumps(
        {"conn_type": conn_type, "host": "partner.example", "password": PASSWORD, **fields, "extra": extra or {}}
    )


ENV_CONNECTIONS = {
    "AIRFLOW_CONN_PLAIN_FTP": f"ftp://etl:{PASSWORD}@ftp.partner.example:21",
    "AIRFLOW_CONN_SFTP_OPEN": _json_conn("sftp", {"no_host_key_check": "true"}),
    "AIRFLOW_CONN_SSH_CHANGE": f"ssh://etl:{PASSWORD}@h:22?allow_host_key_change=true&host_key={PIN.replace(' ', '+')}",
    "AIRFLOW_CONN_SFTP_PINNED": _json_conn("sftp", {"host_key": PIN}),
    "AIRFLOW_CONN_SFTP_UNPINNED": _json_conn("sftp", {"key_file": "/keys/id_ed25519"}),
    "AIRFLOW_CONN_FTPS_OK": _json_conn("secure_ftps", {"cert_fingerprint": FP}, port=21),
    "AIRFLOW_CONN_FTPS_VERIFY_OFF": _json_conn("secure_ftps", {"verify": False}),
    "AIRFLOW_CONN_FTPS_OLD_TLS": _json_conn("secure_ftps", {"min_tls_version": "TLSv1"}),
    "AIRFLOW_CONN_SECURE_SFTP_NO_PIN": _json_conn("secure_sftp"),
    "AIRFLOW_CONN_SECURE_SFTP_TYPO": _json_conn("secure_sftp", {"host_key": PIN, "hostkey": PIN}),
    "AIRFLOW_CONN_FTPS_BAD_KEY": _json_conn("secure_ftps", {"client_cert": CERT_PEM, "client_key": KEY_MATERIAL}),
    "AIRFLOW_CONN_BROKEN": '{"conn_type": "ftp", "password": "' + PASSWORD,
    "AIRFLOW_CONN_WEB": f"http://u:{PASSWORD}@web.example",
}

EXPECTED = {
    ("plain_ftp", "STX101"),
    ("sftp_open", "STX102"),
    ("sftp_open", "STX104"),
    ("ssh_change", "STX103"),
    ("sftp_unpinned", "STX104"),
    ("ftps_verify_off", "STX105"),
    ("ftps_old_tls", "STX105"),
    ("secure_sftp_no_pin", "STX105"),
    ("secure_sftp_typo", "STX106"),
    ("ftps_bad_key", "STX106"),
    ("broken", "STX100"),
}


def _no_secret(proc: subprocess.CompletedProcess[str]) -> None:
    for secret in (PASSWORD, KEY_MATERIAL):
        assert secret not in proc.stdout and secret not in proc.stderr


@pytest.mark.airflow
def test_env_connections(tmp_path: Path) -> None:
    proc = run_audit(tmp_path / "home", str(CORPUS / "la_names.py"), "--format", "json", **ENV_CONNECTIONS)
    assert proc.returncode == 1, proc.stderr
    _no_secret(proc)
    assert conn_pairs(proc.stdout) == EXPECTED
    doc = json.loads(proc.stdout)
    assert doc["summary"]["connections"] == len(ENV_CONNECTIONS) - 1  # the broken one is a finding
    sources = {f["connection"]: f["source"] for f in doc["findings"]}
    assert sources["plain_ftp"] == "environment variable AIRFLOW_CONN_PLAIN_FTP"
    messages = {(f["connection"], f["rule"]): f["message"] for f in doc["findings"]}
    assert "'verify' is refused" in messages[("ftps_verify_off", "STX105")]
    assert "TLS below 1.2" in messages[("ftps_old_tls", "STX105")]
    assert "'hostkey'" in messages[("secure_sftp_typo", "STX106")]
    assert "client_key" in messages[("ftps_bad_key", "STX106")]  # named, never repeated (_no_secret above)
    # A fresh AIRFLOW_HOME has no metadata database: said on stderr, and none is created.
    assert "no metadata database" in proc.stderr
    assert not (tmp_path / "home" / "airflow.db").exists()


def test_connection_findings_in_table_and_sarif() -> None:
    from airflow_secure_transfer.cli.output import render_sarif, render_table

    record = ConnectionRecord(conn_id="plain_ftp", conn_type="ftp", source="environment variable X", host="h")
    findings = audit_connection(record)
    table = render_table(findings, files=1, connections=1)
    assert table.startswith("connection 'plain_ftp' (environment variable X): HIGH   STX101 type 'ftp'")
    assert table.endswith("1 finding (1 high, 0 medium, 0 low) in 1 file and 1 connection\n")
    (result,) = json.loads(render_sarif(findings, files=1, connections=1))["runs"][0]["results"]
    (location,) = result["locations"]
    assert location["logicalLocations"] == [
        {"name": "plain_ftp", "fullyQualifiedName": "connection:plain_ftp", "kind": "resource"}
    ]
    assert location["message"]["text"] == "read from environment variable X"


@pytest.mark.airflow
def test_fail_on_high_ignores_low_connection_findings(tmp_path: Path) -> None:
    env = {"AIRFLOW_CONN_SFTP_UNPINNED": ENV_CONNECTIONS["AIRFLOW_CONN_SFTP_UNPINNED"]}
    proc = run_audit(tmp_path, str(CORPUS / "la_names.py"), "--format", "json", "--fail-on", "medium", **env)
    assert proc.returncode == 0 and conn_pairs(proc.stdout) == {("sftp_unpinned", "STX104")}
    proc = run_audit(tmp_path, str(CORPUS / "la_names.py"), "--format", "json", "--fail-on", "low", **env)
    assert proc.returncode == 1


@pytest.mark.airflow
def test_local_filesystem_backend(tmp_path: Path) -> None:
    conns = tmp_path / "connections.json"
    conns.write_text(
        json.dumps(
            {
                "file_ftp": f"ftp://etl:{PASSWORD}@ftp.partner.example",
                "file_sftp": {"conn_type": "sftp", "host": "h", "extra": {"host_key": PIN}},
            }
        ),
        encoding="utf-8",
    )
    proc = run_audit(
        tmp_path / "home",
        str(CORPUS / "la_names.py"),
        "--format",
        "json",
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(conns)}),
    )
    assert proc.returncode == 1, proc.stderr
    _no_secret(proc)
    doc = json.loads(proc.stdout)
    assert [(f["connection"], f["rule"], f["source"]) for f in doc["findings"]] == [
        ("file_ftp", "STX101", f"connections file {conns}")
    ]


@pytest.mark.airflow
def test_custom_backend_is_asked_for_ids_used_in_dags(tmp_path: Path) -> None:
    """A backend that cannot list (like Vault) is asked for the conn ids the DAGs use, and --conn-id ones."""
    (tmp_path / "fake_vault.py").write_text(
        "from airflow.secrets import BaseSecretsBackend\n"
        "ASKED = []\n"
        "class FakeVault(BaseSecretsBackend):\n"
        "    def get_conn_value(self, conn_id, team_name=None):\n"
        f"        return {{'vault_ftp': 'ftp://u:{PASSWORD}@h', 'extra_ftp': 'ftp://h'}}.get(conn_id)\n",
        encoding="utf-8",
    )
    dag = tmp_path / "dags" / "uses_vault.py"
    dag.parent.mkdir()
    dag.write_text('task = make(ftp_conn_id="vault_ftp", sftp_conn_id="{{ var.value.x }}")\n', encoding="utf-8")
    base = {"AIRFLOW__SECRETS__BACKEND": "fake_vault.FakeVault", "PYTHONPATH": str(tmp_path)}
    proc = run_audit(tmp_path / "home", str(dag.parent), "--format", "json", **base)
    assert proc.returncode == 1, proc.stderr
    _no_secret(proc)
    assert conn_pairs(proc.stdout) == {("vault_ftp", "STX101")}
    assert json.loads(proc.stdout)["findings"][0]["source"] == "secrets backend FakeVault"
    proc = run_audit(tmp_path / "home", str(dag.parent), "--format", "json", "--conn-id", "extra_ftp", **base)
    assert conn_pairs(proc.stdout) == {("vault_ftp", "STX101"), ("extra_ftp", "STX101")}


@pytest.mark.airflow
@pytest.mark.slow
def test_metadata_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(
        [str(AIRFLOW), "connections", "add", "db_ftp", "--conn-uri", f"ftp://etl:{PASSWORD}@ftp.partner.example"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            str(AIRFLOW),
            "connections",
            "add",
            "db_ftps",
            "--conn-type",
            "secure_ftps",
            "--conn-host",
            "h",
            "--conn-extra",
            json.dumps({"tls_mode": "none"}),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    proc = run_audit(home, str(CORPUS / "la_names.py"), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    _no_secret(proc)
    doc = json.loads(proc.stdout)
    assert {(f["connection"], f["rule"], f["source"]) for f in doc["findings"]} == {
        ("db_ftp", "STX101", "metadata database"),
        ("db_ftps", "STX105", "metadata database"),
    }


# ---------------------------------------------------------------- unit level


def test_ids_found_in_dag_source() -> None:
    src = (
        'a = Op(ftp_conn_id="x", ssh_conn_id="y", conn_id="z", other="w")\n'
        'b = Op(conn_id="{{ params.c }}", sftp_conn_id=name)\n'
    )
    assert conn_ids_in_source(src) == {"x", "y", "z"}
    assert conn_ids_in_source("def broken(:") == set()


def test_invalid_client_key_is_reported_without_its_value() -> None:
    record = ConnectionRecord(
        conn_id="c",
        conn_type="secure_ftps",
        source="test",
        host="h",
        password=PASSWORD,
        extra=json.dumps({"client_cert": CERT_PEM, "client_key": f"line1\n{KEY_MATERIAL}\n"}),
    )
    (finding,) = audit_connection(record)
    assert finding.rule.id == "STX106"
    assert "client_key" in finding.message
    assert KEY_MATERIAL not in finding.message and PASSWORD not in finding.message


@pytest.mark.parametrize(
    ("conn_type", "extra", "expected"),
    [
        ("FTP", None, ["STX101"]),
        ("sftp", '{"no_host_key_check": false, "host_key": "x"}', []),
        ("sftp", '{"known_hosts": "/etc/ssh/ssh_known_hosts"}', []),
        ("sftp", "not json", ["STX100"]),
        ("ssh", "[1, 2]", ["STX100"]),
        ("http", '{"no_host_key_check": true}', []),
    ],
)
def test_connection_rules(conn_type: str, extra: str | None, expected: list[str]) -> None:
    record = ConnectionRecord(conn_id="c", conn_type=conn_type, source="test", host="h", extra=extra)
    assert [f.rule.id for f in audit_connection(record)] == expected
