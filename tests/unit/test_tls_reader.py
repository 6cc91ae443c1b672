"""``transfer/tls_reader.py``: a TLS connection read through memory BIOs, with a socket's checks.

Real handshakes against an ``ssl`` server in a thread on 127.0.0.1:0 (a throwaway ``trustme`` CA);
nothing is mocked. What is checked: the payload arrives whole; 0 means the server's close_notify and
nothing else; a cut stream is an error; the pin, the chain and the host name are enforced and a
failed handshake closes the socket; a session is resumed; the socket is read in large pieces.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from airflow_secure_transfer.exceptions import VerificationError
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.security.tls import build_ssl_context, sha256_fingerprint
from airflow_secure_transfer.transfer.tls_reader import TLSStreamReader
from tests.servers.tls_thread import Served, tls_server

RECORD = 16 * 1024


def _client_ctx(ca: trustme.CA, **extras: Any) -> ssl.SSLContext:
    settings = parse_ftps_settings(
        conn_type="secure_ftps", host="localhost", extras={"ca_bundle": ca.cert_pem.bytes().decode(), **extras}
    )
    return build_ssl_context(settings)


def _server_ctx(leaf: trustme.LeafCert, *, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _send_then_close_notify(payload: bytes) -> Callable[[ssl.SSLSocket, Served], None]:
    def serve(tls: ssl.SSLSocket, served: Served) -> None:
        tls.sendall(payload)
        served.sent_all.set()
        # unwrap() sends our close_notify and returns once the client's has arrived.
        try:
            tls.unwrap()
            served.clean_close.append(True)
        except (OSError, ssl.SSLError):
            served.clean_close.append(False)

    return serve


class _CountingSocket(socket.socket):
    """A TCP socket that counts ``recv_into`` calls (the reader's only way in)."""

    recv_calls = 0

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.recv_calls += 1
        return super().recv_into(buffer, nbytes, flags)


def _raw(port: int, *, counting: bool = False) -> socket.socket:
    cls = _CountingSocket if counting else socket.socket
    sock = cls(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _open(ctx: ssl.SSLContext, raw: socket.socket, session: ssl.SSLSession | None = None) -> TLSStreamReader:
    reader = TLSStreamReader(raw, ctx, server_hostname="localhost", session=session)
    reader.start_handshake()
    reader.do_handshake()
    return reader


def _read_all(reader: TLSStreamReader, block: int = 256 * 1024) -> bytes:
    out = bytearray()
    buf = bytearray(block)
    view = memoryview(buf)
    while n := reader.readinto(view):
        out += view[:n]
    return bytes(out)


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_reads_the_whole_stream_and_zero_only_after_close_notify(
    ca: trustme.CA, leaf: trustme.LeafCert, tls12: bool
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # many records, a short last one
    with tls_server(_server_ctx(leaf, tls12=tls12), _send_then_close_notify(payload)) as served:
        reader = _open(_client_ctx(ca), _raw(served.port))
        assert reader.version() == ("TLSv1.2" if tls12 else "TLSv1.3")
        got = _read_all(reader, block=100_000)  # not a multiple of the record size
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert reader.readinto(bytearray(10)) == 0  # stays at the end
        reader.unwrap()
        reader.close()
    assert served.errors == []
    assert served.clean_close == [True]  # the server received our close_notify


def test_a_stream_cut_without_close_notify_is_an_error(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    def cut(tls: ssl.SSLSocket, served: Served) -> None:
        tls.sendall(os.urandom(200_000))
        # Close TCP without the TLS close_notify (what a truncating attacker or a crash does).
        socket.socket.shutdown(tls, socket.SHUT_RDWR)

    with tls_server(_server_ctx(leaf), cut) as served:
        reader = _open(_client_ctx(ca), _raw(served.port))
        got = 0
        buf = bytearray(65536)
        with pytest.raises(ssl.SSLEOFError):
            while True:
                n = reader.readinto(buf)
                assert n > 0, "a cut stream must never look like a complete one"
                got += n
        assert got <= 200_000
        reader.close()


def test_a_pin_mismatch_fails_the_handshake_and_closes_the_socket(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    other = ca.issue_cert("localhost", common_name="localhost")
    wrong_pin = sha256_fingerprint(ssl.PEM_cert_to_DER_cert(other.cert_chain_pems[0].bytes().decode()))
    ctx = _client_ctx(ca, cert_fingerprint=wrong_pin)

    def serve(tls: ssl.SSLSocket, served: Served) -> None:
        tls.sendall(b"x")  # gives a TLS 1.3 client the server's Finished and a ticket
        while chunk := tls.recv(4096):
            served.received += chunk

    with tls_server(_server_ctx(leaf), serve) as served:
        raw = _raw(served.port)
        reader = TLSStreamReader(raw, ctx, server_hostname="localhost", session=None)
        reader.start_handshake()
        with pytest.raises(VerificationError, match="pin mismatch"):
            reader.do_handshake()
        assert raw.fileno() == -1  # closed: nothing more can reach the unpinned peer
    assert bytes(served.received) == b""


def test_the_right_pin_is_accepted(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    pin = sha256_fingerprint(ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode()))
    with tls_server(_server_ctx(leaf), _send_then_close_notify(b"pinned")) as served:
        reader = _open(_client_ctx(ca, cert_fingerprint=pin), _raw(served.port))
        assert _read_all(reader) == b"pinned"
        reader.close()


def test_a_certificate_for_another_name_is_refused(ca: trustme.CA) -> None:
    stranger = ca.issue_cert("elsewhere.example", common_name="elsewhere.example")
    with tls_server(_server_ctx(stranger), _send_then_close_notify(b"no")) as served:
        raw = _raw(served.port)
        reader = TLSStreamReader(raw, _client_ctx(ca), server_hostname="localhost", session=None)
        reader.start_handshake()
        with pytest.raises(ssl.SSLCertVerificationError):
            reader.do_handshake()
        assert raw.fileno() == -1


def test_an_untrusted_ca_is_refused(leaf: trustme.LeafCert) -> None:
    with tls_server(_server_ctx(leaf), _send_then_close_notify(b"no")) as served:
        raw = _raw(served.port)
        reader = TLSStreamReader(raw, _client_ctx(trustme.CA()), server_hostname="localhost", session=None)
        reader.start_handshake()
        with pytest.raises(ssl.SSLCertVerificationError):
            reader.do_handshake()
        assert raw.fileno() == -1


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_the_offered_session_is_resumed(ca: trustme.CA, leaf: trustme.LeafCert, tls12: bool) -> None:
    ctx = _client_ctx(ca)
    with tls_server(_server_ctx(leaf, tls12=tls12), _send_then_close_notify(b"hello"), connections=2) as served:
        first = ctx.wrap_socket(_raw(served.port), server_hostname="localhost")
        assert first.recv(5) == b"hello"  # a TLS 1.3 ticket arrives with the first data
        session = first.session
        first.close()
        reader = _open(ctx, _raw(served.port), session=session)
        assert reader.session_reused
        assert _read_all(reader) == b"hello"
        reader.close()
    assert served.reused == [False, True]


def test_the_socket_is_read_in_large_pieces(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    # An SSLSocket makes two recv calls per TLS record (header, then body): 2 x 4 = 8 here at least.
    # The reader takes what is queued in one call once the server has sent it all.
    payload = os.urandom(4 * RECORD)
    with tls_server(_server_ctx(leaf), _send_then_close_notify(payload)) as served:
        raw = _raw(served.port, counting=True)
        reader = _open(_client_ctx(ca), raw)
        assert served.sent_all.wait(10)
        assert isinstance(raw, _CountingSocket)
        before = raw.recv_calls
        assert _read_all(reader) == payload
        reader.close()
    assert raw.recv_calls - before <= 3  # the 4 records (+ close_notify) in one or two reads


def test_misuse_is_refused(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    with tls_server(_server_ctx(leaf), _send_then_close_notify(b"abc")) as served:
        reader = TLSStreamReader(_raw(served.port), _client_ctx(ca), server_hostname="localhost", session=None)
        with pytest.raises(ValueError, match="before the TLS handshake"):
            reader.readinto(bytearray(10))
        reader.start_handshake()
        reader.do_handshake()
        with pytest.raises(ValueError, match="non-empty"):
            reader.readinto(bytearray())
        assert _read_all(reader) == b"abc"
        reader.close()


def test_a_silent_server_times_out(ca: trustme.CA) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        reader = TLSStreamReader(raw, _client_ctx(ca), server_hostname="localhost", session=None)
        reader.settimeout(0.2)
        reader.start_handshake()
        with pytest.raises(TimeoutError):
            reader.do_handshake()  # the server never answers the ClientHello
        assert raw.fileno() == -1
    finally:
        listener.close()


def test_one_small_buffer_serves_successive_connections(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    # Smaller than one TLS record: every record takes several recv calls into it.
    shared = bytearray(1000)
    payloads = [os.urandom(300_000), os.urandom(70_001)]
    ctx = _client_ctx(ca)
    for payload in payloads:
        with tls_server(_server_ctx(leaf), _send_then_close_notify(payload)) as served:
            raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            reader = TLSStreamReader(raw, ctx, server_hostname="localhost", session=None, buffer=shared)
            reader.start_handshake()
            reader.do_handshake()
            assert _read_all(reader) == payload
            reader.unwrap()
            reader.close()
        assert served.clean_close == [True]


def test_an_empty_buffer_is_refused_and_the_socket_closed(ca: trustme.CA) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with pytest.raises(ValueError, match="must not be empty"):
            TLSStreamReader(raw, _client_ctx(ca), server_hostname="localhost", session=None, buffer=bytearray())
        assert raw.fileno() == -1
    finally:
        listener.close()
