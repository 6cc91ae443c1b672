"""``SecureSFTPHook``: Airflow connection -> settings -> client; test_connection; convenience methods."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, RemotePathError, SecurityPolicyError
from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import SFTPServer
from tests.sftp.conftest import auth_extras

pytestmark = pytest.mark.timeout(120)

MakeConn = Callable[..., str]


def _no_secret_no_traceback(message: str, *secrets: str) -> None:
    assert "Traceback" not in message and 'File "' not in message
    for secret in secrets:
        assert secret not in message


def _fingerprint(line: str) -> str:
    from airflow_secure_transfer.security.hostkeys import HostKey

    key_type, b64 = line.split()[:2]
    return HostKey.parse(key_type, b64).fingerprint


def test_hook_identity_and_no_io_in_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    hook = SecureSFTPHook("nowhere")  # the connection does not exist: nothing is looked up yet
    assert hook.sftp_conn_id == "nowhere"
    assert SecureSFTPHook().sftp_conn_id == "secure_sftp_default"
    assert (SecureSFTPHook.conn_name_attr, SecureSFTPHook.default_conn_name) == ("sftp_conn_id", "secure_sftp_default")
    assert (SecureSFTPHook.conn_type, SecureSFTPHook.hook_name) == ("secure_sftp", "Secure SFTP")
    ok, message = hook.test_connection()
    assert not ok and "nowhere" in message


@pytest.mark.slow  # a fresh interpreter importing airflow.sdk: several seconds on a busy machine
def test_importing_the_hook_does_not_import_ssh_libraries() -> None:
    import subprocess

    code = (
        "import sys, airflow_secure_transfer.hooks.sftp as h; "
        "print('asyncssh' in sys.modules, 'paramiko' in sys.modules, "
        "'airflow_secure_transfer.transfer.sftp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False", "False"]


def test_settings_come_from_the_connection_and_secrets_are_masked(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    conn_id = airflow_conn(
        "sftp_masked",
        asyncssh_server,
        private_key=asyncssh_server.encrypted_key_text,
        private_key_passphrase=asyncssh_server.key_passphrase,
    )
    settings = SecureSFTPHook(conn_id).get_settings()
    assert (settings.host, settings.port, settings.login) == (
        asyncssh_server.host,
        asyncssh_server.port,
        asyncssh_server.login,
    )
    assert settings.host_keys == (asyncssh_server.host_key_line,)
    key_line = asyncssh_server.encrypted_key_text.splitlines()[1]
    text = redact(f"pw={asyncssh_server.password} pp={asyncssh_server.key_passphrase} key={key_line}")
    assert asyncssh_server.password not in text
    assert asyncssh_server.key_passphrase not in text
    assert key_line not in redact(asyncssh_server.encrypted_key_text)


@pytest.mark.parametrize("conn_type", ["secure_sftp", "sftp", "ssh"])
def test_stock_connection_types_are_accepted(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn, conn_type: str
) -> None:
    conn_id = airflow_conn(f"sftp_type_{conn_type}", asyncssh_server, conn_type, no_host_key_check="false")
    with SecureSFTPHook(conn_id) as hook:
        assert hook.get_settings().conn_type == conn_type
        assert hook.list_directory(asyncssh_server.writable_dir) == []


def test_wrong_connection_type_names_the_accepted_ones(asyncssh_server: SFTPServer, airflow_conn: MakeConn) -> None:
    hook = SecureSFTPHook(airflow_conn("sftp_wrongtype", asyncssh_server, "ftp"))
    with pytest.raises(ConfigurationError, match="accepted types: secure_sftp, sftp, ssh"):
        hook.get_settings()


# --------------------------------------------------------------------------- test_connection


@pytest.mark.parametrize("auth", ["password", "key_file_passphrase"])
def test_test_connection_success_names_host_key_kex_cipher_login(
    sftp_server: SFTPServer, airflow_conn: MakeConn, auth: str
) -> None:
    password, extras = auth_extras(sftp_server, auth)
    conn_id = airflow_conn("sftp_ok", sftp_server, fields={"password": password}, **extras)
    ok, message = SecureSFTPHook(conn_id).test_connection()
    assert ok, message
    assert message.startswith(f"Connected to {sftp_server.host}:{sftp_server.port} as {sftp_server.login}; ")
    assert f"host key ssh-ed25519 {_fingerprint(sftp_server.host_key_line)} (trusted by host_key pin)" in message
    assert "; kex " in message and "sha1" not in message
    assert "cipher aes128-gcm@openssh.com" in message
    assert "atomic rename: yes" in message
    _no_secret_no_traceback(message, sftp_server.password, sftp_server.key_passphrase)


def test_test_connection_with_known_hosts(sftp_server: SFTPServer, airflow_conn: MakeConn) -> None:
    conn_id = airflow_conn("sftp_kh", sftp_server, host_key=None, known_hosts=sftp_server.known_hosts_text)
    ok, message = SecureSFTPHook(conn_id).test_connection()
    assert ok, message
    assert "(trusted by known_hosts)" in message


def test_test_connection_changed_host_key(sftp_server: SFTPServer, airflow_conn: MakeConn) -> None:
    other = " ".join(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[:2])
    ok, message = SecureSFTPHook(airflow_conn("sftp_changed", sftp_server, host_key=other)).test_connection()
    assert not ok
    assert message.startswith("VerificationError: ")
    assert _fingerprint(sftp_server.host_key_line) in message and _fingerprint(other) in message
    _no_secret_no_traceback(message, sftp_server.password)


def test_test_connection_wrong_password(sftp_server: SFTPServer, airflow_conn: MakeConn) -> None:
    conn_id = airflow_conn("sftp_badpw", sftp_server, fields={"password": "nope-" + sftp_server.password})
    ok, message = SecureSFTPHook(conn_id).test_connection()
    assert not ok
    assert message.startswith("AuthenticationError: ") and sftp_server.login in message
    _no_secret_no_traceback(message, sftp_server.password, "nope-" + sftp_server.password)


@pytest.mark.parametrize(
    ("extras", "error", "match"),
    [
        ({"no_host_key_check": True}, "SecurityPolicyError", "no_host_key_check"),
        ({"allow_host_key_change": "true"}, "SecurityPolicyError", "allow_host_key_change"),
        ({"host_key": None}, "SecurityPolicyError", "cannot be verified"),
        ({"banner_timeout": 5}, "ConfigurationError", "unknown extra"),
    ],
)
def test_test_connection_policy_failures(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn, extras: dict[str, object], error: str, match: str
) -> None:
    ok, message = SecureSFTPHook(airflow_conn("sftp_policy", asyncssh_server, **extras)).test_connection()
    assert not ok
    assert message.startswith(f"{error}: ") and match in message
    assert asyncssh_server.auth_log == []


# --------------------------------------------------------------------------- convenience methods


def test_convenience_methods_round_trip(sftp_server: SFTPServer, airflow_conn: MakeConn, tmp_path: Path) -> None:
    d = sftp_server.writable_dir
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1_500_000))
    with SecureSFTPHook(airflow_conn("sftp_conv", sftp_server)) as hook:
        hook.create_directory(f"{d}/x/y")
        records = hook.store_file(f"{d}/x/y/data.bin", src)
        assert records is not None and len(records) == 1
        assert records[0].sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
        assert hook.store_file(f"{d}/x/buffer.txt", io.BytesIO(b"from a buffer")) is None
        assert hook.list_directory(f"{d}/x") == ["buffer.txt", "y"]
        assert hook.path_exists(f"{d}/x/y/data.bin") and not hook.path_exists(f"{d}/x/nope")
        assert hook.get_size(f"{d}/x/y/data.bin") == 1_500_000 and hook.get_size(f"{d}/nope") is None
        out = tmp_path / "out.bin"
        assert hook.retrieve_file(f"{d}/x/y/data.bin", out) == 1_500_000
        assert out.read_bytes() == src.read_bytes()
        sink = io.BytesIO()
        hook.retrieve_file(f"{d}/x/buffer.txt", sink)
        assert sink.getvalue() == b"from a buffer"
        hook.rename(f"{d}/x/buffer.txt", f"{d}/x/renamed.txt")
        hook.delete_file(f"{d}/x/renamed.txt")
        assert hook.list_directory(f"{d}/x") == ["y"]
        with pytest.raises(RemotePathError):
            hook.delete_file(f"{d}/x/renamed.txt")
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]
    assert sftp_server.local_path(f"{d}/x/y/data.bin").read_bytes() == src.read_bytes()


def test_remote_root_confines_relative_and_absolute_paths(sftp_server: SFTPServer, airflow_conn: MakeConn) -> None:
    conn_id = airflow_conn("sftp_root", sftp_server, remote_root=sftp_server.writable_dir)
    with SecureSFTPHook(conn_id) as hook:
        hook.store_file("inside.txt", io.BytesIO(b"ok"))
        assert hook.list_directory(".") == ["inside.txt"]
        with pytest.raises(RemotePathError, match="outside remote_root"):
            hook.store_file("../escape.txt", io.BytesIO(b"no"))
        with pytest.raises(RemotePathError, match="outside remote_root"):
            hook.list_directory("/")
    assert sftp_server.local_path(f"{sftp_server.writable_dir}/inside.txt").read_bytes() == b"ok"


def test_hook_reuses_one_connection_for_its_convenience_methods(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn
) -> None:
    d = asyncssh_server.writable_dir
    with SecureSFTPHook(airflow_conn("sftp_reuse", asyncssh_server)) as hook:
        for i in range(20):
            hook.store_file(f"{d}/f{i}", io.BytesIO(b"%d" % i))
        assert len(hook.list_directory(d)) == 20
        assert isinstance(hook.get_conn(), SFTPClient)
    assert len(asyncssh_server.auth_log) == 1


def test_no_secret_in_any_log_record(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn, caplog: pytest.LogCaptureFixture
) -> None:
    """Even with every logger (asyncssh's included) at DEBUG, no password, key or passphrase is logged."""
    secrets = [asyncssh_server.password, asyncssh_server.key_passphrase]
    secrets += [ln for ln in asyncssh_server.encrypted_key_text.splitlines() if "-----" not in ln]
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    ok_pw = airflow_conn("sftp_log_pw", asyncssh_server)
    ok_key = airflow_conn(
        "sftp_log_key",
        asyncssh_server,
        fields={"password": None},
        private_key=asyncssh_server.encrypted_key_text,
        private_key_passphrase=asyncssh_server.key_passphrase,
    )
    bad = airflow_conn("sftp_log_bad", asyncssh_server, fields={"password": asyncssh_server.password + "x"})
    for conn_id in (ok_pw, ok_key):
        with SecureSFTPHook(conn_id) as hook:
            hook.store_file(f"{asyncssh_server.writable_dir}/{conn_id}", io.BytesIO(b"data"))
    assert not SecureSFTPHook(bad).test_connection()[0]
    assert caplog.records, "expected some log records at DEBUG"
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in text


def test_policy_errors_are_raised_before_connecting(asyncssh_server: SFTPServer, airflow_conn: MakeConn) -> None:
    hook = SecureSFTPHook(airflow_conn("sftp_nocheck", asyncssh_server, no_host_key_check=True))
    with pytest.raises(SecurityPolicyError, match=r"'no_host_key_check' = true is refused.*pin the server"):
        hook.get_conn()
    assert asyncssh_server.auth_log == []


def test_retrieve_file_in_a_loop_reuses_the_hooks_connection(
    asyncssh_server: SFTPServer, airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    """Ten files, one SSH connection: retrieve_file lends the hook's client to the engine (no session per file)."""
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(10)}
    for name, data in files.items():
        (asyncssh_server.local_root / name).write_bytes(data)
    before = len(asyncssh_server.auth_attempts)  # one ("sftpuser", "begin") + one method per login
    with SecureSFTPHook(airflow_conn("sftp_loop", asyncssh_server)) as hook:
        for name in files:
            hook.retrieve_file(f"{asyncssh_server.writable_dir}/{name}", tmp_path / name)
        assert hook.get_size(f"{asyncssh_server.writable_dir}/f0.bin") == 1000  # the client is still open
    logins = asyncssh_server.auth_attempts[before:]
    assert [a for a in logins if a[1] == "begin"] == [(asyncssh_server.login, "begin")]
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
