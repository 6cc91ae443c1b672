"""R2 No man in the middle: a server that is not the trusted one gets no credential, and the task fails
for good (``AirflowFailException``: Airflow does not retry what cannot succeed).

FTPS: the impostor is a real pyftpdlib server (behind the recording relay) presenting a certificate from
another CA, for another host name, expired, self-signed, or simply not the pinned one. The capture of the
control connection must end before ``USER``: the client's only clear-text command is ``AUTH TLS``
(explicit) and the server's command log shows no ``USER``/``PASS``.

SFTP: the impostor is an asyncssh server with another host key (unknown to the connection, or replacing
the pinned / known_hosts key). SSH encrypts userauth anyway, so the proof is the server's own record: no
authentication request reached it, over exactly one TCP connection (no retry).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import VerificationError
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import ftps_settings, run_upload_task, sftp_settings, write_random
from tests.security.tools import CustomSFTPServer, Relay, issue_pki, leaks_in, run_custom_sftp, secret_needles
from tests.servers import FTPSServer, SFTPServer
from tests.servers.pki import ServerPKI
from tests.servers.sftp_asyncssh import ClientKeys, known_hosts_for

FTPS_IMPOSTORS = ["untrusted_ca", "wrong_hostname", "expired", "self_signed", "wrong_pin"]


def _impostor_pki(kind: str, directory: Path, trusted: ServerPKI) -> ServerPKI:
    if kind == "untrusted_ca":
        return issue_pki(directory, "localhost", "127.0.0.1")  # a CA of the attacker's
    if kind == "wrong_hostname":
        return issue_pki(directory, "files.example.org", ca=trusted.ca)  # trusted CA, another name
    if kind == "expired":
        return issue_pki(directory, "localhost", "127.0.0.1", ca=trusted.ca, expired=True)
    if kind == "self_signed":
        return issue_pki(directory, "localhost", "127.0.0.1", self_signed=True)
    if kind == "wrong_pin":
        return issue_pki(directory, "localhost", "127.0.0.1", self_signed=True)
    raise ValueError(kind)


def _client_extras(kind: str, trusted: ServerPKI) -> dict[str, Any]:
    if kind == "wrong_pin":
        # Pin the genuine server's certificate; the impostor's self-signed one must not pass.
        return {"ca_bundle": None, "cert_fingerprint": trusted.cert_fingerprint}
    if kind == "self_signed":
        return {"ca_bundle": None}  # the system trust store: a self-signed certificate is nobody's
    return {"ca_bundle": trusted.ca_pem}


def _assert_nothing_sent(server: FTPSServer, relay: Relay, tls_mode: str) -> None:
    clear = relay.captured("control", "c2s")
    leaked = leaks_in(clear, secret_needles(password=server.password, user=b"USER ", pass_=b"PASS "))
    assert not leaked, f"sent before the certificate was verified: {leaked}"
    if tls_mode == "explicit":
        assert clear.startswith(b"AUTH TLS\r\n"), clear[:40]
    verbs = [c.split(" ", 1)[0].upper() for c in server.command_log]
    assert not {"USER", "PASS"} & set(verbs), f"the impostor received {verbs}"
    assert relay.count("data") == 0
    assert relay.count("control") == 1, "the client retried a verification failure"


@pytest.mark.parametrize("tls_mode", ["explicit", "implicit"])
@pytest.mark.parametrize("kind", FTPS_IMPOSTORS)
def test_ftps_impostor_gets_no_credentials(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    test_pki: ServerPKI,
    tmp_path: Path,
    kind: str,
    tls_mode: str,
) -> None:
    server, relay = relayed_ftps(tls_mode, pki=_impostor_pki(kind, tmp_path / "pki", test_pki))
    settings = ftps_settings(server, **_client_extras(kind, test_pki))
    with pytest.raises(VerificationError) as err:
        FTPSClient(settings)
    message = str(err.value)
    assert server.password not in message
    expected = {
        "untrusted_ca": "untrusted certificate",
        "wrong_hostname": "hostname mismatch",
        "expired": "expired",
        "self_signed": "untrusted certificate",
        "wrong_pin": "pin mismatch",
    }[kind]
    assert expected in message, message
    assert not err.value.retryable
    _assert_nothing_sent(server, relay, tls_mode)


@pytest.mark.parametrize("kind", ["untrusted_ca", "wrong_hostname", "expired", "wrong_pin"])
def test_ftps_impostor_fails_the_task_without_retry(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    airflow_conn: Callable[..., str],
    test_pki: ServerPKI,
    tmp_path: Path,
    kind: str,
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    server, relay = relayed_ftps("explicit", pki=_impostor_pki(kind, tmp_path / "pki", test_pki))
    conn_id = airflow_conn("r2_ftps", server, **_client_extras(kind, test_pki))
    src = write_random(tmp_path / "data.csv", 1000)
    with pytest.raises(AirflowFailException) as err:
        run_upload_task(conn_id, src, "/inbox/data.csv", retries=3)
    assert "VerificationError" in repr(err.value.__cause__) or "certificate" in str(err.value).lower()
    _assert_nothing_sent(server, relay, "explicit")
    assert not any(server.local_root.rglob("*")), "the impostor received a file"


# ------------------------------------------------------------------------------- SFTP


def _through_relay(
    server: CustomSFTPServer, relayed_sftp: Callable[..., tuple[SFTPServer, Relay]]
) -> tuple[SFTPServer, Relay]:
    seen, relay = relayed_sftp(server=server)
    return dataclasses.replace(seen, known_hosts_text=known_hosts_for(seen.port, server.host_key_line)), relay


SSH_IMPOSTORS = ["unknown_host_key", "changed_pinned_key", "changed_known_hosts_key"]


def _sftp_trust(kind: str, genuine_key_line: str, seen: SFTPServer) -> dict[str, Any]:
    if kind == "unknown_host_key":
        # known_hosts knows other hosts only (another port is another host for OpenSSH).
        return {"host_key": None, "known_hosts": known_hosts_for(seen.port + 1, seen.host_key_line)}
    if kind == "changed_pinned_key":
        return {"host_key": genuine_key_line}
    if kind == "changed_known_hosts_key":
        return {"host_key": None, "known_hosts": known_hosts_for(seen.port, genuine_key_line)}
    raise ValueError(kind)


@pytest.mark.parametrize("kind", SSH_IMPOSTORS)
def test_sftp_impostor_gets_no_authentication_attempt(
    asyncssh_server: SFTPServer,
    client_keys: ClientKeys,
    relayed_sftp: Callable[..., tuple[SFTPServer, Relay]],
    tmp_path: Path,
    kind: str,
) -> None:
    with run_custom_sftp(tmp_path / "impostor", client_keys, login=asyncssh_server.login) as impostor:
        seen, relay = _through_relay(impostor, relayed_sftp)
        settings = sftp_settings(
            dataclasses.replace(seen, password=asyncssh_server.password),
            **_sftp_trust(kind, asyncssh_server.host_key_line, seen),
        )
        with pytest.raises(VerificationError) as err:
            SFTPClient(settings)
        message = str(err.value)
        # The message names the fingerprint presented (and, when there is one, the expected).
        assert "SHA256:" in message, message
        assert asyncssh_server.password not in message
        assert impostor.auth_attempts == [], "an authentication request reached the impostor"
        assert impostor.connections == 1 and relay.count("ssh") == 1, "the client retried"
        assert not leaks_in(relay.captured(), secret_needles(password=asyncssh_server.password))


def test_sftp_impostor_with_key_auth_gets_no_signature(
    asyncssh_server: SFTPServer, client_keys: ClientKeys, tmp_path: Path
) -> None:
    """Key auth: a signature made for an impostor could be relayed to the real server (SSH binds it to the
    session, but no request must be made at all)."""
    with run_custom_sftp(tmp_path / "impostor", client_keys, login=asyncssh_server.login) as impostor:
        settings = sftp_settings(
            impostor, password=False, host_key=asyncssh_server.host_key_line, key_file=str(client_keys.key_path)
        )
        with pytest.raises(VerificationError):
            SFTPClient(settings)
        assert impostor.auth_attempts == []


@pytest.mark.parametrize("kind", ["changed_pinned_key", "changed_known_hosts_key"])
def test_sftp_impostor_fails_the_task_without_retry(
    asyncssh_server: SFTPServer,
    client_keys: ClientKeys,
    airflow_conn: Callable[..., str],
    tmp_path: Path,
    kind: str,
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    with run_custom_sftp(tmp_path / "impostor", client_keys, login=asyncssh_server.login) as impostor:
        trust = _sftp_trust(kind, asyncssh_server.host_key_line, impostor)
        conn_id = airflow_conn("r2_sftp", dataclasses.replace(impostor, password=asyncssh_server.password), **trust)
        src = write_random(tmp_path / "data.csv", 1000)
        with pytest.raises(AirflowFailException):
            run_upload_task(conn_id, src, "/inbox/data.csv", retries=3)
        assert impostor.auth_attempts == []
        assert impostor.connections == 1
        assert not any(impostor.local_root.rglob("*"))


# ------------------------------------------------------------------------------- FTPS data path only


@pytest.mark.parametrize("trust", ["ca_bundle", "cert_fingerprint"])
def test_ftps_man_in_the_middle_on_the_data_connection_only(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    test_pki: ServerPKI,
    tmp_path: Path,
    trust: str,
) -> None:
    """The control connection is genuine; the attacker takes over the passive port (the data path).

    The client verifies every data connection with the control connection's context (chain + name, or
    the pin), so the impostor's TLS handshake fails and no file byte reaches it.
    """
    import io

    from tests.security.tools import ScriptServer, tls_server_context

    attacker = issue_pki(tmp_path / "attacker", "localhost", "127.0.0.1")

    def impostor(s: Any) -> None:
        s.start_tls()  # the client's verification aborts this handshake
        s.hold()  # record whatever else arrives

    with ScriptServer(impostor, tls_context=tls_server_context(attacker)) as mitm:
        server, relay = relayed_ftps("explicit", data_target=(mitm.host, mitm.port))
        extras: dict[str, Any] = (
            {"ca_bundle": test_pki.ca_pem}
            if trust == "ca_bundle"
            else {"ca_bundle": None, "cert_fingerprint": test_pki.cert_fingerprint}
        )
        payload = write_random(tmp_path / "secret.bin", 200_000).read_bytes()
        client = FTPSClient(ftps_settings(server, **extras))  # the genuine control connection works
        try:
            with pytest.raises(VerificationError):
                client.write_from("/secret.bin", io.BytesIO(payload))
            assert not client.usable, "the client went on using a control connection out of step"
        finally:
            client.close()
        assert mitm.connections >= 1 and relay.count("data") >= 1, "the data connection did not reach the impostor"
        from tests.security.tools import find_content

        assert find_content(mitm.received, payload) is None
    assert not (server.local_root / "secret.bin").exists() or (server.local_root / "secret.bin").stat().st_size == 0


@pytest.mark.parametrize("trust", ["ca_bundle", "cert_fingerprint"])
def test_ftps_man_in_the_middle_on_a_download_data_connection(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    test_pki: ServerPKI,
    tmp_path: Path,
    trust: str,
) -> None:
    """As above for a download, whose data connection is a memory-BIO reader (``transfer/tls_reader.py``).

    The impostor on the passive port fails the reader's handshake (chain + name, or the pin), so not one byte
    it sends reaches the sink, and the client stops using the session.
    """
    import io

    from tests.security.tools import ScriptServer, tls_server_context

    attacker = issue_pki(tmp_path / "attacker", "localhost", "127.0.0.1")
    forged = b"forged file content " * 1000

    def impostor(s: Any) -> None:
        # A chain or name failure aborts this handshake; with a pin, the handshake completes and the
        # client's pin check (its last step) closes the connection before a byte is read.
        if s.start_tls():
            with contextlib.suppress(OSError):
                s.send(forged)  # what it would serve as the file, were it trusted
            s.hold()

    with ScriptServer(impostor, tls_context=tls_server_context(attacker)) as mitm:
        server, relay = relayed_ftps("explicit", data_target=(mitm.host, mitm.port))
        (server.local_root / "report.csv").write_bytes(b"the genuine report\n")
        extras: dict[str, Any] = (
            {"ca_bundle": test_pki.ca_pem}
            if trust == "ca_bundle"
            else {"ca_bundle": None, "cert_fingerprint": test_pki.cert_fingerprint}
        )
        sink = io.BytesIO()
        client = FTPSClient(ftps_settings(server, **extras))  # the genuine control connection works
        try:
            with pytest.raises(VerificationError):
                client.read_to("/report.csv", sink)
            assert not client.usable, "the client went on using a control connection out of step"
        finally:
            client.close()
        assert mitm.connections >= 1 and relay.count("data") >= 1, "the data connection did not reach the impostor"
    assert sink.getvalue() == b""
