"""``security/tls.py``: the one SSLContext factory, pinning, descriptions and error classification.

The handshakes here are real (an ``ssl`` server in a thread on 127.0.0.1:0, certificates from a
throwaway ``trustme`` CA); nothing is mocked.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import socket
import ssl
import tempfile
from typing import Any

import pytest
import trustme

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    SecurityPolicyError,
    TransferTimeout,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.security.policy import FTPSSettings, TLSVersion, parse_ftps_settings
from airflow_secure_transfer.security.tls import (
    PinnedSSLSocket,
    PinningSSLContext,
    build_ssl_context,
    classify_ssl_error,
    describe_tls,
    format_fingerprint,
    sha256_fingerprint,
)
from tests.servers.hostile_ftp import tls11_server_context
from tests.servers.tls_thread import tls_server


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def _settings(**extras: Any) -> FTPSSettings:
    return parse_ftps_settings(conn_type="secure_ftps", host="localhost", extras=extras)


def _server_ctx(leaf: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    return ctx


def _connect(ctx: ssl.SSLContext, port: int, host: str = "localhost", **kw: Any) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=host, **kw)


# --------------------------------------------------------------------------- defaults


def test_default_context_verifies_chain_and_hostname_from_tls12() -> None:
    ctx = build_ssl_context(_settings())
    assert type(ctx) is ssl.SSLContext  # no pinning subclass without pins
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version is ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.keylog_filename is None


def test_sslkeylogfile_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    assert build_ssl_context(_settings()).keylog_filename is None


def test_tls_version_bounds_follow_settings() -> None:
    ctx = build_ssl_context(_settings(min_tls_version="TLSv1.3"))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    ctx = build_ssl_context(_settings(max_tls_version="TLSv1.2"))
    assert (ctx.minimum_version, ctx.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)


def test_ca_bundle_replaces_the_system_store(ca: trustme.CA) -> None:
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


def test_malformed_ca_bundle_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="ca_bundle"):
        build_ssl_context(_settings(ca_bundle="-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"))


def test_pin_alone_replaces_chain_check_and_only_then(leaf: trustme.LeafCert) -> None:
    pin = sha256_fingerprint(_der(leaf))
    ctx = build_ssl_context(_settings(cert_fingerprint=pin))
    assert isinstance(ctx, PinningSSLContext)
    assert ctx.pins == (pin,)
    assert ctx.verify_mode is ssl.CERT_NONE and ctx.check_hostname is False
    assert ctx.sslsocket_class is PinnedSSLSocket


def test_pin_with_ca_bundle_checks_both(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    ctx = build_ssl_context(
        _settings(cert_fingerprint=sha256_fingerprint(_der(leaf)), ca_bundle=ca.cert_pem.bytes().decode())
    )
    assert isinstance(ctx, PinningSSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname is True


def test_pinning_context_without_pins_refuses_everything(leaf: trustme.LeafCert) -> None:
    ctx = PinningSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(VerificationError, match="no pins"):
        ctx.check_pin(_der(leaf), "h")


# --------------------------------------------------------------------------- pinning on the wire


def test_matching_pin_connects_to_a_self_signed_server_without_ca() -> None:
    self_signed = trustme.CA().issue_cert("localhost")  # the client has no CA for it at all
    pin = format_fingerprint(sha256_fingerprint(_der(self_signed))).upper()  # colons + upper case accepted
    ctx = build_ssl_context(_settings(cert_fingerprint=f"sha256:{pin}"))
    with tls_server(_server_ctx(self_signed)) as served:
        sock = _connect(ctx, served.port, host="any-name-the-pin-replaces-hostname")
        assert sock.recv(16) == b"hello\n"  # read it: closing with unread data would reset the connection
        sock.sendall(b"after the pin")
        sock.close()
    assert bytes(served.received) == b"after the pin"


def test_wrong_pin_fails_in_the_handshake_before_any_byte_is_sent(leaf: trustme.LeafCert) -> None:
    wrong = hashlib.sha256(b"another certificate").hexdigest()
    ctx = build_ssl_context(_settings(cert_fingerprint=wrong))
    with tls_server(_server_ctx(leaf)) as served:
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        with pytest.raises(VerificationError) as info:
            ctx.wrap_socket(raw, server_hostname="localhost")
        assert raw.fileno() == -1  # detached into the SSLSocket, which was closed
    message = str(info.value)
    assert "pin mismatch" in message
    assert format_fingerprint(sha256_fingerprint(_der(leaf))) in message  # presented
    assert format_fingerprint(wrong) in message  # expected
    assert served.received == bytearray()  # the server got no application data


def test_one_of_several_pins_is_enough(leaf: trustme.LeafCert) -> None:
    pins = f"{hashlib.sha256(b'old').hexdigest()}, {sha256_fingerprint(_der(leaf))}"
    ctx = build_ssl_context(_settings(cert_fingerprint=pins))
    with tls_server(_server_ctx(leaf)) as served:
        _connect(ctx, served.port).close()
    assert served.errors == []


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_pin_is_checked_on_resumed_sessions_too(leaf: trustme.LeafCert, version: TLSVersion) -> None:
    # FTPS data connections resume the control connection's session: the peer certificate must
    # still be available there so that the pin check runs (and passes) on them.
    ctx = build_ssl_context(_settings(cert_fingerprint=sha256_fingerprint(_der(leaf)), max_tls_version=version.value))
    server_ctx = _server_ctx(leaf)
    with tls_server(server_ctx, connections=2) as served:
        first = _connect(ctx, served.port)
        first.recv(16)  # read the greeting: the TLS 1.3 ticket arrives with it
        session = first.session
        first.close()
        second = _connect(ctx, served.port, session=session)
        assert second.session_reused
        assert isinstance(second, PinnedSSLSocket)
        assert second.getpeercert(binary_form=True) == _der(leaf)
        second.close()
    assert served.reused == [False, True]


def test_pinned_memory_bio_objects_are_checked_too(leaf: trustme.LeafCert) -> None:
    ctx = build_ssl_context(_settings(cert_fingerprint=hashlib.sha256(b"x").hexdigest()))
    server_ctx = _server_ctx(leaf)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with pytest.raises(VerificationError, match="pin mismatch"):
        for _ in range(10):
            for obj in (client, server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
            s_in.write(c_out.read())
            c_in.write(s_out.read())


# --------------------------------------------------------------------------- verification failures


def _handshake_error(ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str = "localhost") -> BaseException:
    with tls_server(server_ctx) as served:
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        try:
            ctx.wrap_socket(raw, server_hostname=host).close()
        except Exception as exc:
            return exc
        finally:
            raw.close()
    raise AssertionError("the handshake succeeded")


def test_untrusted_ca_is_a_verification_error_with_a_hint(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    ctx = build_ssl_context(_settings(ca_bundle=trustme.CA().cert_pem.bytes().decode()))
    err = classify_ssl_error(_handshake_error(ctx, _server_ctx(leaf)), "localhost:21")
    assert isinstance(err, VerificationError) and not err.retryable
    assert "untrusted certificate" in str(err) and "cert_fingerprint" in str(err)


def test_hostname_mismatch_is_named(ca: trustme.CA) -> None:
    other = ca.issue_cert("other.example")
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    err = classify_ssl_error(_handshake_error(ctx, _server_ctx(other)), "localhost:21")
    assert isinstance(err, VerificationError)
    assert "hostname mismatch" in str(err) and "localhost" in str(err)


def test_expired_certificate_is_named(ca: trustme.CA) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        "localhost", not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    err = classify_ssl_error(_handshake_error(ctx, _server_ctx(expired)), "localhost:21")
    assert isinstance(err, VerificationError) and "expired" in str(err)


def test_tls11_only_server_is_a_policy_error(ca: trustme.CA) -> None:
    rsa_leaf = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    server_ctx = tls11_server_context()
    rsa_leaf.configure_cert(server_ctx)
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    err = classify_ssl_error(_handshake_error(ctx, server_ctx), "localhost:21")
    assert isinstance(err, SecurityPolicyError)
    assert "TLS 1.2" in str(err)


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        (TimeoutError("timed out"), TransferTimeout, "timed out"),
        (ConnectionRefusedError(111, "Connection refused"), TransportError, "connection refused"),
        (ConnectionResetError(104, "Connection reset by peer"), TransportError, "reset"),
        (EOFError(), TransportError, "closed the connection"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), TransportError, "TLS error"),
    ],
)
def test_network_errors_are_classified(exc: BaseException, cls: type[Exception], text: str) -> None:
    err = classify_ssl_error(exc, "h:21")
    assert type(err) is cls
    assert text in str(err) and str(err).startswith("h:21")
    assert err.retryable


# --------------------------------------------------------------------------- client certificates (mTLS)


def _mtls_server(ca: trustme.CA, leaf: trustme.LeafCert) -> ssl.SSLContext:
    ctx = _server_ctx(leaf)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    return ctx


def test_client_certificate_is_presented(
    ca: trustme.CA, leaf: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ca.issue_cert("client@example")

    def no_temp_files(*a: Any, **k: Any) -> Any:
        raise AssertionError("the key went through a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_temp_files)  # on Linux the key stays in memory (memfd)
    ctx = build_ssl_context(
        _settings(
            ca_bundle=ca.cert_pem.bytes().decode(),
            client_cert=client.cert_chain_pems[0].bytes().decode(),
            client_key=client.private_key_pem.bytes().decode(),
        )
    )
    with tls_server(_mtls_server(ca, leaf)) as served:
        sock = _connect(ctx, served.port)
        sock.recv(16)
        sock.close()
    assert served.errors == [] and served.versions


def test_without_client_certificate_the_mtls_server_refusal_is_named(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    # TLS 1.3: the client's handshake completes; the server's "certificate required" alert
    # arrives with the first read.
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    with tls_server(_mtls_server(ca, leaf)) as served:
        sock = _connect(ctx, served.port)
        with pytest.raises(ssl.SSLError) as info:
            sock.recv(16)
        sock.close()
    err = classify_ssl_error(info.value, "localhost:21")
    assert isinstance(err, VerificationError) and "client_cert" in str(err)


def test_mismatched_client_key_is_a_configuration_error_without_key_text(ca: trustme.CA) -> None:
    cert = ca.issue_cert("a").cert_chain_pems[0].bytes().decode()
    key = ca.issue_cert("b").private_key_pem.bytes().decode()
    with pytest.raises(ConfigurationError, match="client_cert") as info:
        build_ssl_context(_settings(client_cert=cert, client_key=key))
    body = key.split("-----")[2].strip().splitlines()[0]
    assert body not in str(info.value)


def test_encrypted_client_key_fails_instead_of_prompting(ca: trustme.CA) -> None:
    from cryptography.hazmat.primitives import serialization

    client = ca.issue_cert("c")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()
    with pytest.raises(ConfigurationError, match="encrypted"):
        build_ssl_context(_settings(client_cert=client.cert_chain_pems[0].bytes().decode(), client_key=encrypted))


# --------------------------------------------------------------------------- describe


def test_describe_names_version_cipher_fingerprint_and_subject(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    ctx = build_ssl_context(_settings(ca_bundle=ca.cert_pem.bytes().decode()))
    with tls_server(_server_ctx(leaf)) as served:
        sock = _connect(ctx, served.port)
        info = describe_tls(sock)
        sock.close()
    assert info.version == "TLSv1.3" and info.cipher and info.cipher.startswith("TLS_")
    assert info.cert_sha256 == sha256_fingerprint(_der(leaf))
    assert info.subject and "CN=localhost" in info.subject
    text = info.describe()
    assert text.startswith(f"TLSv1.3 ({info.cipher}); certificate SHA-256 {format_fingerprint(info.cert_sha256)}")
    assert "subject CN=localhost" in text


def test_fingerprint_formatting() -> None:
    digest = sha256_fingerprint(b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert format_fingerprint("abcdef") == "ab:cd:ef"
    assert format_fingerprint(digest).replace(":", "") == digest
