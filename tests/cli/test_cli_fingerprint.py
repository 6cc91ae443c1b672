"""``fingerprint`` against the real fixture servers: what it shows, that it sends no credential,
and that the extras it prints, used in a connection, make our clients connect."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.cli.fingerprint import WARNING, fetch_ftps, fetch_sftp, parse_target
from airflow_secure_transfer.exceptions import ConfigurationError, SecureTransferError
from airflow_secure_transfer.security.policy import TLSMode, parse_ftps_settings, parse_sftp_settings
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import FTPSServer, SFTPServer

SCRIPT = Path(sys.executable).parent / "airflow-secure-transfer"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def _as_connection(server: FTPSServer | SFTPServer, extras: dict[str, Any]) -> dict[str, Any]:
    """The printed *extras* as a connection to *server* (with its login and password)."""
    return {
        "host": server.host,
        "port": server.port,
        "login": server.login,
        "password": server.password,
        "extras": extras,
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- HOST[:PORT]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("ftps.example.com", ("ftps.example.com", 21)),
        ("ftps.example.com:2121", ("ftps.example.com", 2121)),
        ("127.0.0.1:990", ("127.0.0.1", 990)),
        ("[::1]:2222", ("::1", 2222)),
        ("[::1]", ("::1", 21)),
        ("::1", ("::1", 21)),
    ],
)
def test_parse_target(target: str, expected: tuple[str, int]) -> None:
    assert parse_target(target, 21) == expected


@pytest.mark.parametrize("target", ["", "h:x", "h:0", "h:65536", "ftp://h", "[::1", "[::1]x", ":21", "a:b:c"])
def test_parse_target_rejects(target: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_target(target, 21)


# ---------------------------------------------------------------- FTPS


def _ftps_mode(server: FTPSServer) -> TLSMode:
    return TLSMode(server.tls_mode)


def test_ftps_shows_the_leaf_and_the_pin_connects(ftps_server: FTPSServer) -> None:
    server = ftps_server
    server.command_log.clear()
    report = fetch_ftps(server.host, server.port, _ftps_mode(server), timeout=10)
    leaf = report.chain[0]
    assert leaf.sha256 == server.cert_fingerprint
    assert "DNS:localhost" in leaf.san and "IP:127.0.0.1" in leaf.san
    assert report.tls_version in ("TLSv1.2", "TLSv1.3")
    # The throwaway CA is not in the system store: the verified handshake must fail, and say why.
    assert report.untrusted_reason == "unable to get local issuer certificate"
    assert report.extras() == {"tls_mode": server.tls_mode, "cert_fingerprint": server.cert_fingerprint}
    if server.kind == "pyftpdlib":
        commands = [c.split()[0].upper() for c in server.command_log if c.strip()]
        assert "USER" not in commands and "PASS" not in commands
        if server.tls_mode == "explicit":
            assert "AUTH" in commands

    # The printed extras, as a connection: our client trusts exactly that certificate and logs in.
    settings = parse_ftps_settings(conn_type="secure_ftps", **_as_connection(server, report.extras()))
    with FTPSClient(settings) as client:
        assert client.listdir(server.writable_dir) == []


def test_ftps_cli_text_output(pyftpd_explicit: FTPSServer) -> None:
    server = pyftpd_explicit
    proc = run_cli("fingerprint", f"{server.host}:{server.port}", "--protocol", "ftps", "--timeout", "10")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert WARNING in out and "out of band" in out
    colon = ":".join(server.cert_fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    assert f"SHA-256:   {colon}" in out
    assert "NOT trusted by the system trust store: unable to get local issuer certificate" in out
    pasted = json.loads(out[out.rindex("{") :])
    assert pasted == {"tls_mode": "explicit", "cert_fingerprint": server.cert_fingerprint}


def test_ftps_implicit_cli_json(pyftpd_implicit: FTPSServer) -> None:
    server = pyftpd_implicit
    proc = run_cli("fingerprint", f"{server.host}:{server.port}", "--protocol", "ftps-implicit", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tls_mode"] == "implicit" and doc["port"] == server.port
    assert doc["certificates"][0]["sha256"] == server.cert_fingerprint
    assert doc["trusted_by_system_store"] is False
    assert doc["extras"] == {"tls_mode": "implicit", "cert_fingerprint": server.cert_fingerprint}
    assert "out of band" in proc.stderr  # the warning stays visible when stdout is JSON
    settings = parse_ftps_settings(conn_type="secure_ftps", **_as_connection(server, doc["extras"]))
    with FTPSClient(settings) as client:
        client.makedirs(server.writable_dir + "/pinned")
        assert [e.path.rsplit("/", 1)[-1] for e in client.listdir(server.writable_dir)] == ["pinned"]


def test_ftps_trusted_server_is_reported_trusted(pyftpd_explicit: FTPSServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fixture CA installed as the "system" store, the verified handshake succeeds."""
    server = pyftpd_explicit
    ca = Path(server.local_root).parent / "fingerprint-ca.pem"
    ca.write_text(server.ca_pem, encoding="utf-8")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    report = fetch_ftps("localhost", server.port, TLSMode.EXPLICIT, timeout=10)
    assert report.untrusted_reason is None
    assert report.chain[0].sha256 == server.cert_fingerprint


def test_ftps_against_sftp_server_fails_cleanly(asyncssh_server: SFTPServer) -> None:
    proc = run_cli("fingerprint", f"127.0.0.1:{asyncssh_server.port}", "--protocol", "ftps", "--timeout", "5")
    assert proc.returncode == 1
    assert "not an FTP server" in proc.stderr
    assert proc.stdout == ""


def test_unreachable_server() -> None:
    port = closed_port()
    for protocol in ("ftps", "ftps-implicit", "sftp"):
        proc = run_cli("fingerprint", f"127.0.0.1:{port}", "--protocol", protocol, "--timeout", "5")
        assert proc.returncode == 1, (protocol, proc.stdout, proc.stderr)
        assert "refused" in proc.stderr.lower() or "connect" in proc.stderr.lower()
        assert "Traceback" not in proc.stderr


def test_fingerprint_usage_errors() -> None:
    assert run_cli("fingerprint", "h:x", "--protocol", "ftps").returncode == 2
    assert run_cli("fingerprint", "h", "--protocol", "ftp").returncode == 2
    assert run_cli("fingerprint", "h").returncode == 2
    assert run_cli("fingerprint", "h", "--protocol", "sftp", "--timeout", "0").returncode == 2


# ---------------------------------------------------------------- SFTP


def test_sftp_shows_host_key_and_the_pin_connects(sftp_server: SFTPServer) -> None:
    server = sftp_server
    server.auth_log.clear()
    report = fetch_sftp(server.host, server.port, timeout=10)
    lines = [k.line for k in report.keys]
    assert server.host_key_line in lines
    ed = next(k for k in report.keys if k.line == server.host_key_line)
    assert ed.key_type == "ssh-ed25519" and ed.sha256.startswith("SHA256:") and len(ed.sha256) == 50
    assert server.auth_log == []  # key exchange only: no authentication was attempted
    settings = parse_sftp_settings(conn_type="secure_sftp", **_as_connection(server, report.extras()))
    with SFTPClient(settings) as client:
        assert client.listdir(server.writable_dir) == []


def test_sftp_cli_text_and_json(asyncssh_server: SFTPServer) -> None:
    server = asyncssh_server
    proc = run_cli("fingerprint", f"{server.host}:{server.port}", "--protocol", "sftp")
    assert proc.returncode == 0, proc.stderr
    assert WARNING in proc.stdout
    assert json.loads(proc.stdout[proc.stdout.rindex("{") :]) == {"host_key": server.host_key_line}
    proc = run_cli("fingerprint", f"{server.host}:{server.port}", "--protocol", "sftp", "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["host_keys"][0]["public_key"] == server.host_key_line
    assert doc["extras"] == {"host_key": server.host_key_line}


def test_sftp_against_ftps_server_fails_cleanly(pyftpd_explicit: FTPSServer) -> None:
    with pytest.raises(SecureTransferError):
        fetch_sftp("127.0.0.1", pyftpd_explicit.port, timeout=5)
