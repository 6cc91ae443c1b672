"""The benchmarks' WAN emulator (``bench/delay_proxy.py``): delay per direction, order, rate cap, window,
round-trip counters, and that it stops by itself.

Timing assertions are lower bounds set by the emulated physics (a byte cannot arrive before its delay),
never limits on how fast our code is.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bench.delay_proxy import FRONT_HOST, DelayRelay, netem_available

D = 0.03  # one-way delay used by the tests (s)


class Peer:
    """A one-connection loopback server on 127.0.0.1 running *handler(conn, log)* in a thread.

    ``log`` receives (event, monotonic time) pairs; the handler's socket has a timeout, so it ends by itself.
    """

    def __init__(self, handler: Callable[[socket.socket, list[tuple[str, float]]], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.log: list[tuple[str, float]] = []
        #: when the client started connecting (set by relayed())
        self.connect_started = 0.0
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._run, args=(handler,), daemon=True)
        self.thread.start()

    def _run(self, handler: Callable[[socket.socket, list[tuple[str, float]]], None]) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            conn.settimeout(10)
            with conn:
                handler(conn, self.log)
        self.sock.close()


def echo(conn: socket.socket, log: list[tuple[str, float]]) -> None:
    while True:
        data = conn.recv(65536)
        log.append(("recv", time.monotonic()))
        if not data:
            return
        log.append(("send", time.monotonic()))
        conn.sendall(data)


def sink(conn: socket.socket, log: list[tuple[str, float]]) -> None:
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            log.append((f"total {total}", time.monotonic()))
            conn.sendall(b"ok")
            return
        if total == 0:
            log.append(("first", time.monotonic()))
        total += len(data)


@contextlib.contextmanager
def relayed(handler: Callable[[socket.socket, list[tuple[str, float]]], None], delay: float = D,
            **kw: object) -> Iterator[tuple[DelayRelay, Peer, socket.socket]]:  # fmt: skip
    peer = Peer(handler)
    with DelayRelay(delay, **kw) as relay:  # type: ignore[arg-type]
        port = relay.add_route("t", ("127.0.0.1", peer.port), listen=(FRONT_HOST, 0))
        peer.connect_started = time.monotonic()
        client = socket.create_connection((FRONT_HOST, port), timeout=10)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with client:
            yield relay, peer, client
        peer.thread.join(10)


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"got {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def test_each_direction_is_delayed_and_the_handshake_costs_a_round_trip() -> None:
    with relayed(echo) as (_relay, peer, client):
        t_open = peer.connect_started
        client.sendall(b"a")
        recv_exact(client, 1)
        # the first byte reaches the server no earlier than a real connect (2d) plus its own trip (d)
        first_recv = next(t for e, t in peer.log if e == "recv")
        assert first_recv - t_open >= 3 * D
        for _ in range(3):
            n0 = len(peer.log)
            t0 = time.monotonic()
            client.sendall(b"ping")
            assert recv_exact(client, 4) == b"ping"
            t1 = time.monotonic()
            server_recv = next(t for e, t in peer.log[n0:] if e == "recv")
            server_send = next(t for e, t in peer.log[n0:] if e == "send")
            assert server_recv - t0 >= D  # client -> server held for the one-way delay
            assert t1 - server_send >= D  # server -> client too
            assert t1 - t0 >= 2 * D
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""  # the EOF travels through too


def greet(conn: socket.socket, log: list[tuple[str, float]]) -> None:
    log.append(("accepted", time.monotonic()))
    conn.sendall(b"220 hello\r\n")
    conn.recv(10)


def test_the_server_accepts_when_the_clients_ack_would_arrive() -> None:
    """SYN at d, SYN-ACK back at 2d, ACK at 3d: a server learns of the connection at 3d, so what it sends on
    accept (a greeting, an FTP 150 once it accepted a passive data connection) arrives at 4d, not earlier."""
    with relayed(greet) as (_relay, peer, client):
        assert recv_exact(client, 11) == b"220 hello\r\n"
        arrived = time.monotonic()
        client.sendall(b"x")
    accepted = next(t for e, t in peer.log if e == "accepted")
    assert accepted - peer.connect_started >= 3 * D
    assert arrived - peer.connect_started >= 4 * D


def first_bytes(conn: socket.socket, log: list[tuple[str, float]]) -> None:
    log.append(("accepted", time.monotonic()))
    data = conn.recv(10)
    log.append(("recv", time.monotonic()))
    conn.sendall(data)


def test_bytes_the_client_sends_at_once_arrive_with_the_handshakes_ack() -> None:
    """A ClientHello sent as soon as connect() returns rides with the ACK: the server reads it when it accepts
    (3d), not one more delay later (the relay reads it late, but dates it from when the client sent it)."""
    d = 0.2
    with relayed(first_bytes, delay=d) as (_relay, peer, client):
        client.sendall(b"hello")
        assert recv_exact(client, 5) == b"hello"
    accepted = next(t for e, t in peer.log if e == "accepted")
    received = next(t for e, t in peer.log if e == "recv")
    assert accepted - peer.connect_started >= 3 * d
    assert received - accepted < d / 2  # the emulated physics: due at 3d; one more d would be >= 0.2 s


def test_order_is_kept_under_a_rate_cap_and_a_delay_change() -> None:
    blob = os.urandom(300_000)
    with relayed(echo, rate_bps=40e6) as (relay, _peer, client):
        got = bytearray()

        def read() -> None:
            while len(got) < len(blob):
                chunk = client.recv(65536)
                if not chunk:
                    return
                got.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        i = k = 0
        while i < len(blob):
            size = 1 + (k * 7919) % 9000  # chunks of assorted sizes
            client.sendall(blob[i : i + size])
            i, k = i + size, k + 1
            if k == 30:
                relay.set_link(D / 3, 40e6)  # a shorter delay must not let later chunks overtake
        reader.join(20)
        assert bytes(got) == blob


def test_rate_cap_limits_throughput() -> None:
    n, rate = 200_000, 4e6  # 0.4 s of serialisation at 4 Mbit/s
    with relayed(sink, rate_bps=rate) as (_relay, peer, client):
        t0 = time.monotonic()
        client.sendall(os.urandom(n))
        client.shutdown(socket.SHUT_WR)
        assert recv_exact(client, 2) == b"ok"
        done = next(t for e, t in peer.log if e.startswith("total"))
        assert peer.log[-1][0] == f"total {n}"
        assert done - t0 >= n * 8 / rate + D


def test_window_limits_bytes_in_flight() -> None:
    n, window = 256 * 1024, 32 * 1024  # 8 windows: at least 7 round trips before the last one leaves
    with relayed(sink, window=window) as (_relay, peer, client):
        t0 = time.monotonic()
        client.sendall(os.urandom(n))
        client.shutdown(socket.SHUT_WR)
        assert recv_exact(client, 2) == b"ok"
        done = next(t for e, t in peer.log if e.startswith("total"))
        assert done - t0 >= (n // window - 1) * 2 * D


def test_round_trips_counted() -> None:
    with relayed(echo) as (relay, _peer, client):
        for _ in range(4):  # sequential: the client waits for each answer
            client.sendall(b"req")
            recv_exact(client, 3)
        client.sendall(b"r1r2r3")  # pipelined: one burst each way
        recv_exact(client, 6)
        stats = relay.snapshot()["t"]
    assert stats["conns"] == 1
    assert stats["turns"] == 5
    assert stats["waits"] == 4  # the first request leaves with the connection: the handshake's round trip
    assert stats["c2s"] == stats["s2c"] == 18
    assert DelayRelay.delta(relay.snapshot(), {"t": {"conns": 1, "turns": 5, "waits": 4, "c2s": 18, "s2c": 18}}) == {}


def test_it_stops_by_itself() -> None:
    before = {t.ident for t in threading.enumerate()}
    with relayed(echo) as (relay, peer, client):
        port = client.getpeername()[1]
        client.sendall(b"x" * 1000)  # still queued in the relay when it closes
    # the client closed: the connection's threads end without help; close() joined the rest
    relay.close()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []
    with pytest.raises(OSError):
        socket.create_connection((FRONT_HOST, port), timeout=1)
    assert not peer.thread.is_alive()


def test_netem_detection_answers() -> None:
    ok, why = netem_available()
    assert isinstance(ok, bool) and why


def blob_then_sink(conn: socket.socket, log: list[tuple[str, float]]) -> None:
    """Send 2 MB the client never reads, then count what the client sent."""
    with contextlib.suppress(OSError):
        conn.sendall(b"z" * 2_000_000)
    total = 0
    with contextlib.suppress(OSError):
        while data := conn.recv(65536):
            total += len(data)
    log.append((f"total {total}", time.monotonic()))


def test_a_client_that_closes_early_still_delivers_its_last_bytes() -> None:
    """The client sends, closes, and never reads: the server's bytes meet a closed socket (the client's kernel
    answers with a reset) before the client's bytes are due at the server. Those must still arrive, in order,
    as on a network (curl -T to vsftpd got "426 Failure reading network stream" through the first version)."""
    n = 100_000
    with relayed(blob_then_sink) as (_relay, peer, client):
        client.sendall(os.urandom(n))
        client.close()
        peer.thread.join(10)
    assert peer.log == [(f"total {n}", peer.log[0][1])]
