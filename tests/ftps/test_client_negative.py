"""Every FTPS secure default has a negative test: the error class, and proof that nothing left in clear.

"Nothing in clear" is checked on the bytes the server received before TLS (the hostile servers
record them; for real pyftpdlib servers a :class:`RecordingProxy` on the control connection records
the wire, and the server's command log shows what it decrypted).
"""

from __future__ import annotations

import dataclasses
import io
import socket
import ssl
import time
from collections.abc import Callable

import pytest
import trustme

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    ConfigurationError,
    RemotePathError,
    RemoteStorageFullError,
    SecurityPolicyError,
    TransferTimeout,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.security.policy import FTPSSettings, parse_ftps_settings
from airflow_secure_transfer.security.tls import format_fingerprint
from airflow_secure_transfer.transfer.ftps import _FTPTLS, FTPSClient
from tests.servers import FTPSServer
from tests.servers.hostile_ftp import HostileFTPServer, run_hostile_ftp, tls11_server_context
from tests.servers.proxy import RecordingProxy

from ._helpers import VICTIM_PASSWORD, hostile_settings, settings_for, wait_proxy_idle

MakeCtx = Callable[..., ssl.SSLContext]


def assert_nothing_in_clear(server: HostileFTPServer, *, allowed: tuple[str, ...] = ("AUTH",)) -> None:
    server.wait_sessions_done()  # the client has given up; let the server finish recording
    leaked = server.sent_in_clear("USER", "PASS", VICTIM_PASSWORD, "victim")
    assert leaked == [], f"sent in clear: {leaked}; clear bytes: {server.clear_text()!r}"
    assert set(server.command_names(encrypted=False)) <= set(allowed)


def via_proxy(settings: FTPSSettings, proxy: RecordingProxy) -> FTPSSettings:
    return dataclasses.replace(settings, port=proxy.port)


def assert_wire_clean(proxy: RecordingProxy, server: FTPSServer) -> None:
    wait_proxy_idle(proxy)
    wire = proxy.client_to_server
    for needle in (b"USER", b"PASS", server.password.encode(), server.login.encode()):
        assert needle not in wire, f"{needle!r} on the wire: {wire[:200]!r}"


# --------------------------------------------------------------------------- servers without TLS


@pytest.mark.parametrize("behaviour", ["no_auth_tls", "strip_auth"])
def test_server_without_auth_tls_gets_no_credentials(behaviour: str) -> None:
    with run_hostile_ftp(behaviour) as server:
        with pytest.raises(SecurityPolicyError, match="refused AUTH TLS") as info:
            FTPSClient(hostile_settings(server))
        assert_nothing_in_clear(server)
        assert server.command_names() == ["AUTH"]
    assert "no credentials" in str(info.value) and not info.value.retryable


def test_fake_auth_tls_that_never_starts_tls_gets_no_credentials() -> None:
    with run_hostile_ftp("fake_auth") as server:
        with pytest.raises(TransportError):
            FTPSClient(hostile_settings(server))
        assert_nothing_in_clear(server)


def test_real_plain_ftp_server_gets_only_auth_tls(plain_ftpd: FTPSServer) -> None:
    plain_ftpd.command_log.clear()
    settings = parse_ftps_settings(
        conn_type="ftp",
        host=plain_ftpd.host,
        port=plain_ftpd.port,
        login=plain_ftpd.login,
        password=plain_ftpd.password,
        extras={"conn_timeout": 10},
    )
    with RecordingProxy(plain_ftpd.host, plain_ftpd.port) as proxy:
        with pytest.raises(SecurityPolicyError, match="refused AUTH TLS"):
            FTPSClient(via_proxy(settings, proxy))
        assert_wire_clean(proxy, plain_ftpd)
    assert plain_ftpd.command_log == ["AUTH TLS"]


def test_clear_text_guard_refuses_any_command_before_tls(plain_ftpd: FTPSServer) -> None:
    # Defence in depth: even a code path that skipped AUTH TLS could not send USER in clear.
    plain_ftpd.command_log.clear()
    ftp = _FTPTLS(ssl.create_default_context(), timeout=5, encoding="utf-8")
    ftp.sock = socket.create_connection((plain_ftpd.host, plain_ftpd.port), timeout=5)
    ftp.file = ftp.sock.makefile("r", encoding="utf-8")
    ftp.getresp()
    try:
        for call in (lambda: ftp.putcmd("USER x"), lambda: ftp.login("x", "y"), lambda: ftp.sendcmd("PASV")):
            with pytest.raises(SecurityPolicyError):
                call()
        with pytest.raises(SecurityPolicyError):
            ftp.ccc()
        with pytest.raises(SecurityPolicyError):
            ftp.prot_c()
    finally:
        ftp.close()
    assert plain_ftpd.command_log == []


# --------------------------------------------------------------------------- certificates


def test_untrusted_ca_hostile(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    with run_hostile_ftp("tls", tls_context=tls_context_for()) as server:
        with pytest.raises(VerificationError, match="untrusted certificate") as info:
            FTPSClient(hostile_settings(server, trustme.CA()))  # trusts another CA
        assert_nothing_in_clear(server)
        assert server.command_names() == ["AUTH"]
    assert not info.value.retryable


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_untrusted_ca_real_server(pyftpd_explicit: FTPSServer, pyftpd_implicit: FTPSServer, implicit: bool) -> None:
    server = pyftpd_implicit if implicit else pyftpd_explicit
    settings = settings_for(server, ca_bundle=trustme.CA().cert_pem.bytes().decode())
    with RecordingProxy(server.host, server.port) as proxy:
        with pytest.raises(VerificationError, match="untrusted certificate"):
            FTPSClient(via_proxy(settings, proxy))
        assert_wire_clean(proxy, server)
    assert server.command_log == ([] if implicit else ["AUTH TLS"])


def test_system_store_does_not_trust_a_private_ca(pyftpd_explicit: FTPSServer) -> None:
    with pytest.raises(VerificationError, match="untrusted certificate"):
        FTPSClient(settings_for(pyftpd_explicit, ca_bundle=None))
    assert pyftpd_explicit.command_log == ["AUTH TLS"]


def test_wrong_hostname_real_server(wrong_host_pyftpd: FTPSServer) -> None:
    wrong_host_pyftpd.command_log.clear()
    with RecordingProxy(wrong_host_pyftpd.host, wrong_host_pyftpd.port) as proxy:
        with pytest.raises(VerificationError, match="hostname mismatch") as info:
            FTPSClient(via_proxy(settings_for(wrong_host_pyftpd), proxy))
        assert_wire_clean(proxy, wrong_host_pyftpd)
    assert "127.0.0.1" in str(info.value)
    assert wrong_host_pyftpd.command_log == ["AUTH TLS"]


def test_wrong_hostname_hostile(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    with run_hostile_ftp("tls", tls_context=tls_context_for("ftp.elsewhere.example")) as server:
        with pytest.raises(VerificationError, match="hostname mismatch"):
            FTPSClient(hostile_settings(server, hostile_ca))
        assert_nothing_in_clear(server)


def test_expired_certificate(expired_pyftpd: FTPSServer) -> None:
    expired_pyftpd.command_log.clear()
    with RecordingProxy(expired_pyftpd.host, expired_pyftpd.port) as proxy:
        with pytest.raises(VerificationError, match="expired"):
            FTPSClient(via_proxy(settings_for(expired_pyftpd), proxy))
        assert_wire_clean(proxy, expired_pyftpd)
    assert expired_pyftpd.command_log == ["AUTH TLS"]


def test_an_expired_certificate_is_not_rescued_by_its_pin(expired_pyftpd: FTPSServer) -> None:
    # Pin + CA bundle: both must pass, so the chain check (with its dates) still runs.
    with pytest.raises(VerificationError, match="expired"):
        FTPSClient(settings_for(expired_pyftpd, cert_fingerprint=expired_pyftpd.cert_fingerprint))


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_wrong_pin(pyftpd_explicit: FTPSServer, pyftpd_implicit: FTPSServer, implicit: bool) -> None:
    server = pyftpd_implicit if implicit else pyftpd_explicit
    wrong = "ab" * 32
    settings = settings_for(server, ca_bundle=None, cert_fingerprint=wrong)
    with RecordingProxy(server.host, server.port) as proxy:
        with pytest.raises(VerificationError, match="pin mismatch") as info:
            FTPSClient(via_proxy(settings, proxy))
        assert_wire_clean(proxy, server)
    message = str(info.value)
    assert f"presented SHA-256 {format_fingerprint(server.cert_fingerprint)}" in message
    assert f"expected {format_fingerprint(wrong)}" in message
    assert server.command_log == ([] if implicit else ["AUTH TLS"])


def test_pin_against_a_hostile_self_signed_server(tls_context_for: MakeCtx) -> None:
    with run_hostile_ftp("tls", tls_context=tls_context_for()) as server:
        with pytest.raises(VerificationError, match="pin mismatch"):
            FTPSClient(hostile_settings(server, cert_fingerprint="cd" * 32))
        assert_nothing_in_clear(server)
        assert server.command_names() == ["AUTH"]


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_tls11_only_server(tls_context_for: MakeCtx, hostile_ca: trustme.CA, implicit: bool) -> None:
    ctx = tls_context_for(base=tls11_server_context(), rsa=True)
    with run_hostile_ftp("tls11_only", tls_context=ctx, implicit=implicit) as server:
        with pytest.raises(SecurityPolicyError, match=r"TLS 1\.2") as info:
            FTPSClient(hostile_settings(server, hostile_ca))
        assert_nothing_in_clear(server)
        assert server.handshake_errors  # the handshake itself failed
    assert not info.value.retryable


# --------------------------------------------------------------------------- after TLS


def test_server_refusing_prot_p_gets_no_data_command(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    with run_hostile_ftp("refuse_prot_p", tls_context=tls_context_for()) as server:
        with pytest.raises(SecurityPolicyError, match="refused to protect the data channel"):
            FTPSClient(hostile_settings(server, hostile_ca))
        assert_nothing_in_clear(server)
        names = server.command_names(encrypted=True)
        prot = names.index("PROT")
        assert names[prot - 1] == "PBSZ"
        # Sent in the same burst as PBSZ + PROT (one round trip); none of them opens a data connection.
        assert set(names[prot + 1 :]) <= {"TYPE", "FEAT", "PWD", "OPTS"}
        assert not {"EPSV", "PASV", "STOR", "RETR", "LIST", "MLSD", "NLST", "PROT C", "CCC"} & set(names)
        assert server.data_connections == []


def test_pasv_address_from_the_server_is_ignored(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    with run_hostile_ftp("pasv_elsewhere", tls_context=tls_context_for()) as server:
        with FTPSClient(hostile_settings(server, hostile_ca)) as fs:
            entries = fs.listdir("/")
        # EPSV refused -> PASV naming 127.0.0.2; the client connected to the control peer instead.
        assert [e.path for e in entries] == ["/file.txt"]
        assert server.command_names(encrypted=True).count("EPSV") == 1
        assert [peer for peer, _ in server.data_connections] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "a/b",
        "..",
        # Names from the server obey the rules for names sent to it (issue #12, items 9 and 10).
        "evil\rDELE x",
        "esc\x1b[2J\x1b[Hfake.txt",
        "tab\tname",
        "csi\u009b31m",
        "..\\..\\etc\\passwd",
        "C:\\Windows\\win.ini",
        "c:evil.txt",
    ],
)
def test_hostile_listing_names_are_refused(tls_context_for: MakeCtx, hostile_ca: trustme.CA, name: str) -> None:
    listing = ["type=file;size=1; good.txt", f"type=file;size=1; {name}"]
    with run_hostile_ftp("tls", tls_context=tls_context_for(), listing=listing) as server:
        with FTPSClient(hostile_settings(server, hostile_ca)) as fs:
            if name == "..":
                assert [e.path for e in fs.listdir("/in")] == ["/in/good.txt"]  # skipped, like "."
            else:
                with pytest.raises(RemotePathError, match="listing of /in contains"):
                    fs.listdir("/in")


def test_wrong_password(pyftpd_explicit: FTPSServer) -> None:
    settings = dataclasses.replace(settings_for(pyftpd_explicit), password="wrong-password")
    with pytest.raises(AuthenticationError, match="530") as info:
        FTPSClient(settings)
    assert not info.value.retryable
    assert "wrong-password" not in str(info.value)


def test_unknown_extra_fails_before_connecting() -> None:
    with run_hostile_ftp("tls") as server:
        with pytest.raises(ConfigurationError, match="unknown extra"):
            hostile_settings(server, verify_certificates_please=True)
        assert server.connections == 0


def test_timeout_when_the_server_never_greets() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts TCP (backlog) but never answers
    try:
        settings = parse_ftps_settings(
            conn_type="secure_ftps", host="127.0.0.1", port=listener.getsockname()[1], extras={"conn_timeout": 0.5}
        )
        started = time.monotonic()
        with pytest.raises(TransferTimeout, match="timed out") as info:
            FTPSClient(settings)
        assert time.monotonic() - started < 10  # bounded by conn_timeout (generous margin)
    finally:
        listener.close()
    assert info.value.retryable


def test_connection_refused_is_retryable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    settings = parse_ftps_settings(conn_type="secure_ftps", host="127.0.0.1", port=port, extras={"conn_timeout": 5})
    with pytest.raises(TransportError, match="refused") as info:
        FTPSClient(settings)
    assert info.value.retryable


def test_a_cut_control_connection_marks_the_client_broken(pyftpd_explicit: FTPSServer) -> None:
    with RecordingProxy(pyftpd_explicit.host, pyftpd_explicit.port) as proxy:
        fs = FTPSClient(via_proxy(settings_for(pyftpd_explicit), proxy))
        proxy.close()  # the network goes away
        with pytest.raises(TransportError):
            fs.stat(pyftpd_explicit.writable_dir)
        with pytest.raises(TransportError, match="unusable after an earlier error"):
            fs.stat(pyftpd_explicit.writable_dir)
        fs.close()


def test_download_cut_without_close_notify_is_an_error(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    # The server says 226, but the data connection ended without TLS close_notify: the bytes
    # received may be a truncated file (a TCP FIN is easy to forge). It is not accepted.
    with run_hostile_ftp("ragged_eof", tls_context=tls_context_for()) as server:
        with FTPSClient(hostile_settings(server, hostile_ca)) as fs:
            with pytest.raises(TransportError, match="EOF") as info:
                fs.read_to("/file.txt", io.BytesIO())
    assert info.value.retryable


def test_complete_download_from_the_same_server_is_accepted(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    with run_hostile_ftp("tls", tls_context=tls_context_for()) as server:
        with FTPSClient(hostile_settings(server, hostile_ca)) as fs:
            sink = io.BytesIO()
            assert fs.read_to("/file.txt", sink) == 100_000


@pytest.mark.parametrize(("name", "code"), [("full.bin", "552"), ("quota.bin", "452")])
def test_storage_full_is_its_own_retryable_error(quirky_pyftpd: FTPSServer, name: str, code: str) -> None:
    with FTPSClient(settings_for(quirky_pyftpd)) as fs:
        with pytest.raises(RemoteStorageFullError, match=code) as info:
            fs.write_from(f"/{name}", io.BytesIO(b"x" * 1000))
        assert info.value.path == f"/{name}" and info.value.retryable
        fs.write_from("/fine.bin", io.BytesIO(b"ok"))  # the connection is still usable


def test_rename_onto_existing_target_falls_back_to_delete_then_rename(
    quirky_pyftpd: FTPSServer, caplog: pytest.LogCaptureFixture
) -> None:
    with FTPSClient(settings_for(quirky_pyftpd)) as fs:
        fs.write_from("/target.txt", io.BytesIO(b"old"))
        fs.write_from("/.target.part", io.BytesIO(b"new"))
        with caplog.at_level("WARNING", logger="airflow_secure_transfer.transfer.ftps"):
            fs.rename("/.target.part", "/target.txt")
        assert quirky_pyftpd.local_path("/target.txt").read_bytes() == b"new"
        assert fs.stat("/.target.part") is None
    assert "not atomic" in caplog.text
    log = quirky_pyftpd.command_log
    i = log.index("RNTO /target.txt")
    assert log[i + 1 : i + 4] == ["MLST /target.txt", "DELE /target.txt", "RNFR /.target.part"]


def test_rename_of_a_missing_source_is_a_path_error(quirky_pyftpd: FTPSServer) -> None:
    with FTPSClient(settings_for(quirky_pyftpd)) as fs:
        with pytest.raises(RemotePathError) as info:
            fs.rename("/no-such-file", "/x")
    assert info.value.path == "/no-such-file"


@pytest.mark.parametrize("bad", ["/a\r\nDELE /b", "/a\nb", "/a\x00b"])
def test_command_injection_in_names_is_refused_before_sending(pyftpd_explicit: FTPSServer, bad: str) -> None:
    with FTPSClient(settings_for(pyftpd_explicit)) as fs:
        before = list(pyftpd_explicit.command_log)
        for call in (lambda: fs.stat(bad), lambda: fs.remove(bad), lambda: fs.write_from(bad, io.BytesIO(b""))):
            with pytest.raises(RemotePathError):
                call()
        assert pyftpd_explicit.command_log == before


def test_anonymous_login_also_protects_the_data_channel(tls_context_for: MakeCtx, hostile_ca: trustme.CA) -> None:
    # The stock FTPSHook sends PBSZ/PROT in clear when no login is set; here everything but AUTH is in TLS.
    with run_hostile_ftp("tls", tls_context=tls_context_for()) as server:
        settings = parse_ftps_settings(
            conn_type="secure_ftps",
            host=server.host,
            port=server.port,
            extras={"ca_bundle": hostile_ca.cert_pem.bytes().decode(), "conn_timeout": 10},
        )
        with FTPSClient(settings) as fs:
            fs.listdir("/")
        server.wait_sessions_done()
        assert server.command_names(encrypted=False) == ["AUTH"]
        encrypted = server.command_names(encrypted=True)
        assert encrypted[:4] == ["USER", "PASS", "PBSZ", "PROT"]
        assert [c.line for c in server.commands if c.line.startswith("USER")] == ["USER anonymous"]
        assert server.sent_in_clear("USER", "PASS", "PBSZ", "PROT") == []
