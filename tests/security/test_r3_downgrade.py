"""R3 No downgrade: a server (or a man in the middle) that offers less than TLS >= 1.2 with a protected
data channel, or SSH with weak algorithms only, is refused, and nothing is sent in clear.

* a real plain-FTP server (no ``AUTH TLS``) and scripted ones (``502``/``500`` to AUTH, a fake ``234``);
* STARTTLS stripping by a man in the middle in front of the *real* FTPS server: it answers ``AUTH TLS``
  with ``500`` itself and removes ``AUTH`` from ``FEAT`` -- a client that carried on would log in, in
  clear, to the real server through the attacker;
* ``PROT P`` refused (the data channel would be clear text): no data connection is ever opened;
* a TLS 1.0/1.1-only server; settings asking for TLS < 1.2 or for no verification;
* SSH servers offering only SHA-1 key exchange, CBC ciphers, SHA-1/MD5 MACs or SHA-1 host-key signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    SecurityPolicyError,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.security.policy import parse_ftps_settings, parse_sftp_settings
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import ftps_settings, run_upload_task, sftp_settings, write_random
from tests.security.tools import (
    Relay,
    ScriptServer,
    issue_pki,
    leaks_in,
    run_custom_sftp,
    secret_needles,
    starttls_stripper,
    tls_server_context,
)
from tests.servers import FTPSServer
from tests.servers.hostile_ftp import run_hostile_ftp, tls11_server_context
from tests.servers.sftp_asyncssh import ClientKeys

PASSWORD = "Downgrade-Victim-Pw-7f3a"


def _hostile_settings(host: str, port: int, *, implicit: bool = False, **extras: Any) -> Any:
    merged: dict[str, Any] = {"conn_timeout": 5, **extras}
    if implicit:
        merged["tls_mode"] = "implicit"
    return parse_ftps_settings(
        conn_type="secure_ftps", host=host, port=port, login="victim", password=PASSWORD, extras=merged
    )


def _no_credentials(clear: bytes) -> None:
    leaked = leaks_in(clear, secret_needles(password=PASSWORD, user=b"USER", pass_=b"PASS"))
    assert not leaked, f"in clear: {leaked}: {clear[:200]!r}"


# ------------------------------------------------------------------------------- FTPS: no TLS offered


def test_real_plain_ftp_server_gets_auth_tls_only(relayed_ftps: Callable[..., tuple[FTPSServer, Relay]]) -> None:
    server, relay = relayed_ftps("explicit", offer_tls=False)
    with pytest.raises(SecurityPolicyError, match="refused AUTH TLS") as err:
        FTPSClient(ftps_settings(server))
    assert not err.value.retryable
    assert relay.captured("control", "c2s") == b"AUTH TLS\r\n"
    assert server.command_log == ["AUTH TLS"]


@pytest.mark.parametrize("behaviour", ["no_auth_tls", "strip_auth"])
def test_scripted_server_without_auth_tls_gets_no_credentials(behaviour: str) -> None:
    with run_hostile_ftp(behaviour) as server:
        with pytest.raises(SecurityPolicyError):
            FTPSClient(_hostile_settings(server.host, server.port))
        _no_credentials(bytes(server.clear_bytes))
        assert server.command_names() == ["AUTH"]


def test_fake_234_that_never_starts_tls_gets_no_credentials() -> None:
    with run_hostile_ftp("fake_auth") as server:
        with pytest.raises((TransportError, SecurityPolicyError, VerificationError)):
            FTPSClient(_hostile_settings(server.host, server.port))
        _no_credentials(bytes(server.clear_bytes))


def test_starttls_stripping_man_in_the_middle(relayed_ftps: Callable[..., tuple[FTPSServer, Relay]]) -> None:
    real, _ = relayed_ftps("explicit")
    with ScriptServer(starttls_stripper((real.host, real.port))) as mitm:
        settings = ftps_settings(real, password=PASSWORD)
        settings = type(settings)(**{**settings.__dict__, "port": mitm.port})
        with pytest.raises(SecurityPolicyError, match="refused AUTH TLS"):
            FTPSClient(settings)
        _no_credentials(mitm.received)
        assert mitm.received == b"AUTH TLS\r\n"
    assert real.command_log == [], "the stripped session reached the real server with commands"


def test_starttls_stripping_fails_the_task_without_retry(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    real, _ = relayed_ftps("explicit")
    with ScriptServer(starttls_stripper((real.host, real.port))) as mitm:
        conn_id = airflow_conn("r3_strip", real, fields={"port": mitm.port})
        with pytest.raises(AirflowFailException):
            run_upload_task(conn_id, write_random(tmp_path / "a.csv", 100), "/a.csv", retries=3)
        assert mitm.connections == 1
        assert b"USER" not in mitm.received and real.password.encode() not in mitm.received


# ------------------------------------------------------------------------------- FTPS: data channel


def test_prot_p_refused_means_no_data_connection(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    server, relay = relayed_ftps("explicit", allow_prot_p=False)
    with pytest.raises(SecurityPolicyError, match="protect the data channel"):
        FTPSClient(ftps_settings(server))
    verbs = [c.split(" ", 1)[0] for c in server.command_log]
    assert "PROT" in verbs
    assert not {"EPSV", "PASV", "STOR", "RETR", "LIST", "MLSD", "NLST"} & set(verbs), verbs
    assert relay.count("data") == 0


def test_prot_p_refused_fails_the_task_without_retry(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    server, relay = relayed_ftps("explicit", allow_prot_p=False)
    conn_id = airflow_conn("r3_prot", server)
    with pytest.raises(AirflowFailException):
        run_upload_task(conn_id, write_random(tmp_path / "a.csv", 100), "/a.csv", retries=3)
    assert relay.count("data") == 0 and relay.count("control") == 1
    assert not any(server.local_root.rglob("*"))


# ------------------------------------------------------------------------------- FTPS: old TLS


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_tls_below_1_2_is_refused(tmp_path: Path, implicit: bool) -> None:
    pki = issue_pki(tmp_path / "pki", "localhost", "127.0.0.1", rsa=True)
    ctx = tls11_server_context()
    ctx.load_cert_chain(pki.cert_path, pki.key_path)
    with run_hostile_ftp("tls11_only", tls_context=ctx, implicit=implicit) as server:
        with pytest.raises(SecurityPolicyError, match=r"TLS 1\.2") as err:
            FTPSClient(_hostile_settings(server.host, server.port, implicit=implicit, ca_bundle=pki.ca_pem))
        _no_credentials(bytes(server.clear_bytes))
        deadline = time.monotonic() + 5
        while not server.handshake_errors and time.monotonic() < deadline:
            time.sleep(0.02)  # the server thread records its side of the failed handshake
        assert server.handshake_errors, "the handshake should have failed on the version"
    assert not err.value.retryable


@pytest.mark.parametrize(
    "extras",
    [
        {"min_tls_version": "TLSv1.1"},
        {"min_tls_version": "TLSv1"},
        {"max_tls_version": "SSLv3"},
        {"tls_mode": "none"},
        {"tls_mode": "plain"},
        {"verify": False},
        {"check_hostname": "false"},
        {"ssl_verify": "no"},
    ],
    ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()),
)
def test_settings_that_weaken_tls_are_refused_before_connecting(extras: dict[str, Any]) -> None:
    with ScriptServer(lambda s: s.hold()) as nobody:
        with pytest.raises(SecurityPolicyError):
            _hostile_settings(nobody.host, nobody.port, **extras)
        assert nobody.connections == 0


def test_tls_1_3_client_minimum_against_a_1_2_server_is_refused(tmp_path: Path, test_pki: Any) -> None:
    """Our own floor holds both ways: min_tls_version TLSv1.3 is not silently lowered to what a server has."""
    ctx = tls_server_context(test_pki)
    ctx.maximum_version = __import__("ssl").TLSVersion.TLSv1_2

    def script(s: Any) -> None:
        s.start_tls()
        s.hold()

    with ScriptServer(script, tls_context=ctx) as server:
        with pytest.raises(SecurityPolicyError):
            FTPSClient(
                _hostile_settings(
                    server.host, server.port, implicit=True, ca_bundle=test_pki.ca_pem, min_tls_version="TLSv1.3"
                )
            )
        _no_credentials(server.received)


# ------------------------------------------------------------------------------- SSH


WEAK_SSH = {
    "sha1_kex": {"kex_algs": ["diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1"]},
    "cbc_ciphers": {"encryption_algs": ["aes128-cbc", "aes256-cbc", "3des-cbc"]},
    "sha1_md5_macs": {"encryption_algs": ["aes128-ctr"], "mac_algs": ["hmac-sha1", "hmac-md5", "hmac-sha1-96"]},
    "arcfour": {"encryption_algs": ["arcfour256", "arcfour"]},
}


@pytest.mark.parametrize("weakness", sorted(WEAK_SSH))
def test_ssh_server_with_only_weak_algorithms_is_refused(
    client_keys: ClientKeys, tmp_path: Path, weakness: str
) -> None:
    with run_custom_sftp(tmp_path / "weak", client_keys, listen_options=WEAK_SSH[weakness]) as server:
        with pytest.raises(SecurityPolicyError, match="no common secure algorithm") as err:
            SFTPClient(sftp_settings(server, conn_timeout=5))
        assert server.auth_attempts == [], "credentials offered over a weak transport"
        assert server.connections == 1
    assert not err.value.retryable


def test_ssh_server_signing_its_rsa_host_key_only_with_sha1_is_refused(client_keys: ClientKeys, tmp_path: Path) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    with run_custom_sftp(tmp_path / "sha1", client_keys, host_key=key, host_key_algorithms=["ssh-rsa"]) as server:
        with pytest.raises((SecurityPolicyError, VerificationError)) as err:
            SFTPClient(sftp_settings(server, conn_timeout=5))
        assert "SHA-1" in str(err.value) or "ssh-rsa" in str(err.value)
        assert server.auth_attempts == []


def test_weak_ssh_server_fails_the_task_without_retry(
    client_keys: ClientKeys, airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    with run_custom_sftp(tmp_path / "weak", client_keys, listen_options=WEAK_SSH["cbc_ciphers"]) as server:
        conn_id = airflow_conn("r3_ssh", server)
        with pytest.raises(AirflowFailException):
            run_upload_task(conn_id, write_random(tmp_path / "a.csv", 100), "/a.csv", retries=3)
        assert server.auth_attempts == [] and server.connections == 1


@pytest.mark.parametrize(
    "extras",
    [
        {"no_host_key_check": True},
        {"no_host_key_check": "true"},
        {"allow_host_key_change": True},
        {"host_key": None},  # nothing pinned, no known_hosts: fail closed
        {"host_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"},
    ],
    ids=["no_host_key_check", "no_host_key_check_str", "allow_host_key_change", "no_trust", "dsa_pin"],
)
def test_ssh_settings_that_weaken_trust_are_refused_before_connecting(
    client_keys: ClientKeys, tmp_path: Path, extras: dict[str, Any]
) -> None:
    with run_custom_sftp(tmp_path / "srv", client_keys) as server:
        merged = {**server.extras(), **extras}
        with pytest.raises((SecurityPolicyError, ConfigurationError)):
            parse_sftp_settings(
                conn_type="secure_sftp",
                host=server.host,
                port=server.port,
                login=server.login,
                password=server.password,
                extras={k: v for k, v in merged.items() if v is not None},
            )
        assert server.connections == 0
