"""``SecureFTPSHook``: Airflow connection -> settings -> client; test_connection; convenience methods."""

from __future__ import annotations

import dataclasses
import ftplib
import hashlib
import io
import json
import os
import posixpath
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
from airflow_secure_transfer.security.tls import format_fingerprint
from airflow_secure_transfer.transfer.ftps import FTPSClient
from tests.servers import FTPSServer
from tests.servers.proxy import RecordingProxy

from ._helpers import wait_proxy_idle

MakeConn = Callable[..., str]


def _no_secret_no_traceback(message: str, *secrets: str) -> None:
    assert "Traceback" not in message and 'File "' not in message
    for secret in secrets:
        assert secret not in message


def test_hook_identity_and_no_io_in_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    hook = SecureFTPSHook("nowhere")  # the connection does not exist: nothing is looked up yet
    assert hook.ftps_conn_id == "nowhere"
    assert SecureFTPSHook().ftps_conn_id == "secure_ftps_default"
    assert (SecureFTPSHook.conn_name_attr, SecureFTPSHook.default_conn_name) == ("ftps_conn_id", "secure_ftps_default")
    assert (SecureFTPSHook.conn_type, SecureFTPSHook.hook_name) == ("secure_ftps", "Secure FTPS")


@pytest.mark.slow  # a fresh interpreter importing airflow.sdk: several seconds on a busy machine
def test_importing_the_hook_does_not_import_ftplib() -> None:
    import subprocess

    code = (
        "import sys, airflow_secure_transfer.hooks.ftps as h; "
        "print('ftplib' in sys.modules, 'airflow_secure_transfer.transfer.ftps' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]


def test_settings_come_from_the_connection_and_secrets_are_masked(
    pyftpd_explicit: FTPSServer, airflow_conn: MakeConn
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    client = trustme.CA().issue_cert("client")
    key = client.private_key_pem.bytes().decode()
    conn_id = airflow_conn(
        "ftps_masked", pyftpd_explicit, client_cert=client.cert_chain_pems[0].bytes().decode(), client_key=key
    )
    settings = SecureFTPSHook(conn_id).get_settings()
    assert (settings.host, settings.port, settings.login) == (
        pyftpd_explicit.host,
        pyftpd_explicit.port,
        pyftpd_explicit.login,
    )
    assert settings.ca_bundle == pyftpd_explicit.ca_pem
    key_line = key.splitlines()[1]
    text = redact(f"password={pyftpd_explicit.password} key={key_line}")
    assert pyftpd_explicit.password not in text
    assert key_line not in redact(key)


def test_wrong_connection_type_names_the_accepted_ones(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    hook = SecureFTPSHook(airflow_conn("ftps_wrongtype", pyftpd_explicit, "sftp"))
    with pytest.raises(ConfigurationError, match="accepted types: secure_ftps, ftp"):
        hook.get_settings()
    ok, message = hook.test_connection()
    assert not ok and "accepted types" in message


# --------------------------------------------------------------------------- test_connection


def test_test_connection_success_names_tls_certificate_and_login(
    ftps_server: FTPSServer, airflow_conn: MakeConn
) -> None:
    ok, message = SecureFTPSHook(airflow_conn("ftps_ok", ftps_server)).test_connection()
    assert ok, message
    version = ftps_server.max_tls_version or "TLSv1.3"
    assert message.startswith(
        f"Connected to {ftps_server.host}:{ftps_server.port} as {ftps_server.login} over {version} ("
    )
    assert f"certificate SHA-256 {format_fingerprint(ftps_server.cert_fingerprint)}" in message
    assert "subject CN=localhost" in message
    assert "data channel: PROT P, TLS session resumed" in message
    assert ("server checksums: HASH SHA-256" if ftps_server.with_hash else "server checksums: unavailable") in message
    _no_secret_no_traceback(message, ftps_server.password)


def test_test_connection_with_a_pin(pyftpd_implicit: FTPSServer, airflow_conn: MakeConn) -> None:
    conn_id = airflow_conn(
        "ftps_pinned",
        pyftpd_implicit,
        ca_bundle=None,
        cert_fingerprint=f"sha256:{pyftpd_implicit.cert_fingerprint.upper()}",
    )
    ok, message = SecureFTPSHook(conn_id).test_connection()
    assert ok, message
    assert "trusted by pin" in message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("untrusted", "VerificationError: 127.0.0.1:{port} (connect): untrusted certificate"),
        ("pin", "certificate pin mismatch: the server presented SHA-256 {fp}"),
        ("password", "AuthenticationError: 127.0.0.1:{port}: login as {login}: 530"),
        ("extra", "ConfigurationError: unknown extra(s) 'tls_verify'"),
        ("policy", "SecurityPolicyError: extra 'min_tls_version' = 'TLSv1.1' is refused"),
    ],
)
def test_test_connection_failure_reasons(
    pyftpd_explicit: FTPSServer, airflow_conn: MakeConn, case: str, expected: str
) -> None:
    cases: dict[str, dict[str, object]] = {
        "untrusted": {"ca_bundle": trustme.CA().cert_pem.bytes().decode()},
        "pin": {"ca_bundle": None, "cert_fingerprint": "ab" * 32},
        "password": {},
        "extra": {"tls_verify": "false"},
        "policy": {"min_tls_version": "TLSv1.1"},
    }
    overrides = cases[case]
    fields = {"password": "wrong-password"} if case == "password" else None
    conn_id = airflow_conn(f"ftps_fail_{case}", pyftpd_explicit, fields=fields, **overrides)
    ok, message = SecureFTPSHook(conn_id).test_connection()
    assert not ok
    assert (
        expected.format(
            port=pyftpd_explicit.port,
            fp=format_fingerprint(pyftpd_explicit.cert_fingerprint),
            login=pyftpd_explicit.login,
        )
        in message
    )
    _no_secret_no_traceback(message, pyftpd_explicit.password, "wrong-password")
    if case in ("extra", "policy"):
        assert "AUTH TLS" not in pyftpd_explicit.command_log  # refused before connecting


def test_test_connection_hostname_mismatch(wrong_host_pyftpd: FTPSServer, airflow_conn: MakeConn) -> None:
    ok, message = SecureFTPSHook(airflow_conn("ftps_wronghost", wrong_host_pyftpd)).test_connection()
    assert not ok and "hostname mismatch" in message and "127.0.0.1" in message
    _no_secret_no_traceback(message, wrong_host_pyftpd.password)


def test_test_connection_expired(expired_pyftpd: FTPSServer, airflow_conn: MakeConn) -> None:
    ok, message = SecureFTPSHook(airflow_conn("ftps_expired", expired_pyftpd)).test_connection()
    assert not ok and "certificate has expired" in message


def test_test_connection_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never greets
        conn = {
            "conn_type": "secure_ftps",
            "host": "127.0.0.1",
            "port": silent.getsockname()[1],
            "login": "u",
            "password": "pw-timeout-x",
            "extra": {"conn_timeout": 0.5},
        }
        monkeypatch.setenv("AIRFLOW_CONN_FTPS_SILENT", json.dumps(conn))
        ok, message = SecureFTPSHook("ftps_silent").test_connection()
    assert not ok and message.startswith("TransferTimeout: 127.0.0.1:") and "timed out" in message
    _no_secret_no_traceback(message, "pw-timeout-x")


# --------------------------------------------------------------------------- stock "ftp" connections


def test_stock_ftp_connection_is_upgraded_to_tls(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    with RecordingProxy(pyftpd_explicit.host, pyftpd_explicit.port) as proxy:
        conn_id = airflow_conn("stock_ftp", pyftpd_explicit, "ftp", fields={"port": proxy.port}, passive="true")
        hook = SecureFTPSHook(conn_id)
        assert hook.get_settings().conn_type == "ftp"
        ok, message = hook.test_connection()
        wait_proxy_idle(proxy)
        wire = proxy.client_to_server
    assert ok and " over TLSv1.3 (" in message, message
    assert wire.startswith(b"AUTH TLS\r\n") and b"USER" not in wire and pyftpd_explicit.password.encode() not in wire


def test_stock_ftp_connection_to_a_plain_server_fails_before_credentials(
    plain_ftpd: FTPSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_ftpd.command_log.clear()
    conn = {
        "conn_type": "ftp",
        "host": plain_ftpd.host,
        "port": plain_ftpd.port,
        "login": plain_ftpd.login,
        "password": plain_ftpd.password,
        "extra": {"passive": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PLAIN_FTP", json.dumps(conn))
    hook = SecureFTPSHook("plain_ftp")
    ok, message = hook.test_connection()
    assert not ok and message.startswith("SecurityPolicyError:") and "refused AUTH TLS" in message
    with pytest.raises(SecurityPolicyError):
        hook.get_fs()
    assert plain_ftpd.command_log == ["AUTH TLS", "AUTH TLS"]


def test_port_does_not_leak_into_the_next_connection(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    first = SecureFTPSHook(airflow_conn("ftps_port_a", pyftpd_explicit))
    with first.get_fs() as fs:
        assert fs.ftp.port == pyftpd_explicit.port
        # A second connection without a port gets the default, not the previous connection's port.
        second = SecureFTPSHook(airflow_conn("ftps_port_b", pyftpd_explicit, fields={"port": None}))
        assert second.get_settings().port == 21
        third = SecureFTPSHook(airflow_conn("ftps_port_c", pyftpd_explicit, fields={"port": None}, tls_mode="implicit"))
        assert third.get_settings().port == 990
    assert ftplib.FTP_TLS.port == 21 and ftplib.FTP.port == 21


# --------------------------------------------------------------------------- convenience methods


def test_convenience_methods(ftps_server: FTPSServer, airflow_conn: MakeConn, tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    base = ftps_server.writable_dir
    with SecureFTPSHook(airflow_conn("ftps_conv", ftps_server)) as hook:
        hook.create_directory(posixpath.join(base, "d/e"))
        records = hook.store_file(posixpath.join(base, "d/file.bin"), str(local))
        assert records is not None and records[0].sha256 == hashlib.sha256(data).hexdigest()
        hook.store_file(posixpath.join(base, "d/buf.bin"), io.BytesIO(b"buffer"))
        assert ftps_server.local_path(posixpath.join(base, "d/buf.bin")).read_bytes() == b"buffer"
        assert hook.list_directory(posixpath.join(base, "d")) == ["buf.bin", "e", "file.bin"]  # no .part left
        assert hook.get_size(posixpath.join(base, "d/file.bin")) == len(data)
        assert hook.get_size(posixpath.join(base, "d/none")) is None
        out = tmp_path / "out.bin"
        assert hook.retrieve_file(posixpath.join(base, "d/file.bin"), str(out)) == len(data)
        assert out.read_bytes() == data
        sink = io.BytesIO()
        hook.retrieve_file(posixpath.join(base, "d/buf.bin"), sink)
        assert sink.getvalue() == b"buffer"
        hook.rename(posixpath.join(base, "d/buf.bin"), posixpath.join(base, "d/file.bin"))
        assert ftps_server.local_path(posixpath.join(base, "d/file.bin")).read_bytes() == b"buffer"
        hook.delete_file(posixpath.join(base, "d/file.bin"))
        assert hook.list_directory(posixpath.join(base, "d")) == ["e"]
    assert hook._client is None  # closed by the context manager
    assert not list(tmp_path.glob(".*.part"))


def test_get_conn_reuses_one_client_and_get_fs_opens_new_ones(
    pyftpd_explicit: FTPSServer, airflow_conn: MakeConn
) -> None:
    hook = SecureFTPSHook(airflow_conn("ftps_reuse", pyftpd_explicit))
    try:
        a = hook.get_conn()
        assert hook.get_conn() is a and isinstance(a, FTPSClient)
        with hook.get_fs() as b:
            assert b is not a
    finally:
        hook.close_conn()
    assert not a.usable
    assert pyftpd_explicit.command_log.count("AUTH TLS") == 2


def test_relative_paths_resolve_against_remote_root(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    root = pyftpd_explicit.writable_dir
    with SecureFTPSHook(airflow_conn("ftps_root", pyftpd_explicit, remote_root=root)) as hook:
        hook.store_file("rel.txt", io.BytesIO(b"r"))
        assert pyftpd_explicit.local_path(posixpath.join(root, "rel.txt")).read_bytes() == b"r"
        with pytest.raises(Exception, match="outside remote_root"):
            hook.store_file("../escape.txt", io.BytesIO(b"x"))


def test_settings_object_is_frozen(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    settings = SecureFTPSHook(airflow_conn("ftps_frozen", pyftpd_explicit)).get_settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_the_ui_path_models_connection_test_connection(pyftpd_explicit: FTPSServer, airflow_conn: MakeConn) -> None:
    # What POST /api/v2/connections/test does: Connection(...).test_connection() -> provider hook lookup.
    from airflow.models.connection import Connection

    conn_id = airflow_conn("ftps_ui_path", pyftpd_explicit)
    conn = Connection(
        conn_id=conn_id,
        conn_type="secure_ftps",
        host=pyftpd_explicit.host,
        port=pyftpd_explicit.port,
        login=pyftpd_explicit.login,
        password=pyftpd_explicit.password,
        extra=json.dumps(pyftpd_explicit.extras()),
    )
    ok, message = conn.test_connection()
    assert ok and message.startswith(f"Connected to {pyftpd_explicit.host}:{pyftpd_explicit.port} "), message
