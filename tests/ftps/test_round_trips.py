"""Round trips on the FTPS control connection (issue #15): counted, not timed.

Over a real distance every request the client waits for costs one round-trip time, so these tests pin how
many turns (the client waiting for an answer before it sends again) each operation takes, through a
:class:`~tests.servers.proxy.CountingProxy` in front of the control port. A change that adds a round trip per
file fails here. Data connections go to the server directly (not counted); their TLS handshake is checked for
a HelloRetryRequest instead.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator

import pytest

from airflow_secure_transfer.security.tls import build_ssl_context
from airflow_secure_transfer.transfer.ftps import FTPSClient, _hrr_group
from tests.contract._support import leftovers, remote, settings_for
from tests.servers import FTPSServer
from tests.servers.proxy import CountingProxy

#: A TLS 1.3 HelloRetryRequest as vsftpd sends it (P-256 only), from the handshake trace of a real session.
_HRR = bytes.fromhex(
    "02000054" "0303" "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
    "20" + "ab" * 32 + "1302" "00" "000c" "002b00020304" "003300020017"
)  # fmt: skip


@pytest.fixture
def counted(ftps_server: FTPSServer) -> Iterator[tuple[FTPSServer, CountingProxy]]:
    with CountingProxy(ftps_server.host, ftps_server.port) as proxy:
        yield ftps_server, proxy


def _client(server: FTPSServer, proxy: CountingProxy, context: ssl.SSLContext | None = None) -> FTPSClient:
    return FTPSClient(settings_for(server, host=proxy.host, port=proxy.port), context=context)


def _items(server: FTPSServer, names: list[str]) -> list[tuple[str, str, bytes]]:
    return [(remote(server, f".{n}.part"), remote(server, n), os.urandom(3000 + i)) for i, n in enumerate(names)]


def test_put_small_many_takes_two_control_round_trips_per_file(counted: tuple[FTPSServer, CountingProxy]) -> None:
    """Per file: [SIZE + next EPSV] and [time + RNFR + RNTO + next STOR]; a batch adds [EPSV], [STOR] and the
    last file's [SIZE] and [rename]: 2 n + 2. One command at a time took 6 per file (EPSV, STOR, SIZE, MDTM,
    RNFR, RNTO)."""
    server, proxy = counted
    with _client(server, proxy) as fs:
        turns = {}
        for n in (1, 3, 7):
            items = _items(server, [f"n{n}-{i}" for i in range(n)])
            before = proxy.turns
            answers = fs.put_small_many(items, mtimes=[1_600_000_000] * n)
            turns[n] = proxy.turns - before
            assert answers == [len(data) for _, _, data in items]
    assert turns == {1: 4, 3: 8, 7: 16}
    for n in (1, 3, 7):
        for i in range(n):
            assert (server.local_root / f"n{n}-{i}").stat().st_size == 3000 + i
    assert leftovers(server.local_root) == []


def test_a_refused_file_in_a_batch_costs_no_extra_round_trip_and_lands_nothing(
    counted: tuple[FTPSServer, CountingProxy],
) -> None:
    server, proxy = counted
    items = _items(server, ["a", "b", "c"])
    items[1] = (remote(server, "nope", ".b.part"), remote(server, "nope", "b"), b"b" * 10)
    with _client(server, proxy) as fs:
        before = proxy.turns
        answers = fs.put_small_many(items)
        spent = proxy.turns - before
        # a: EPSV, STOR, [SIZE+EPSV]; b: [rename a + STOR b] refused; c: EPSV, STOR, [SIZE], [rename].
        assert spent <= 8
        assert answers[0] == 3000 and answers[2] == 3002
        assert isinstance(answers[1], Exception) and "nope" in str(answers[1])
        assert fs.usable
    assert sorted(p.name for p in server.local_root.iterdir()) == ["a", "c"]


def test_a_size_mismatch_is_not_renamed(counted: tuple[FTPSServer, CountingProxy]) -> None:
    """The rename waits for SIZE's answer: a part whose size differs stays where it is."""
    server, proxy = counted
    items = _items(server, ["x", "y"])
    with _client(server, proxy) as fs:
        original = fs._size_reply

        def lying(path: str, reply: object) -> int | None:
            size = original(path, reply)  # type: ignore[arg-type]
            return None if size is None else (size + 1 if path.endswith(".x.part") else size)

        fs._size_reply = lying  # type: ignore[method-assign]
        answers = fs.put_small_many(items)
    assert answers == [3001, 3001]
    assert not (server.local_root / "x").exists()
    assert (server.local_root / ".x.part").stat().st_size == 3000
    assert (server.local_root / "y").stat().st_size == 3001


def test_stat_and_rename_take_one_round_trip_each(counted: tuple[FTPSServer, CountingProxy]) -> None:
    """vsftpd has no MLST: SIZE (+ MDTM), CWD and the CWD back go out together; RNFR + RNTO together."""
    server, proxy = counted
    (server.local_root / "f").write_bytes(b"12345")
    (server.local_root / "d").mkdir()
    with _client(server, proxy) as fs:
        for name, expected in (("f", (False, 5)), ("d", (True, None)), ("missing", None)):
            before = proxy.turns
            entry = fs.stat(remote(server, name))
            assert proxy.turns - before == 1, name
            assert (entry.is_dir, entry.size) == expected if entry is not None else expected is None
        before = proxy.turns
        fs.rename(remote(server, "f"), remote(server, "g"))
        assert proxy.turns - before == 1
        assert fs.stat(remote(server, "g")) is not None
        assert fs.stat(remote(server, "missing")) is None  # the CWD back left the session where it was


def test_session_setup_is_one_round_trip_after_login(counted: tuple[FTPSServer, CountingProxy]) -> None:
    """PBSZ, PROT, TYPE, FEAT, PWD (and OPTS UTF8) in one burst: the session is ready one turn after PASS."""
    server, proxy = counted
    with _client(server, proxy) as fs:
        assert fs.features
        assert fs.home.startswith("/")
        # greeting -> AUTH TLS (explicit), TLS (1-2), USER, PASS, setup: at most 6 turns
        assert proxy.turns <= 6


def _server_hellos(context: ssl.SSLContext) -> list[bytes]:
    hellos: list[bytes] = []

    def trace(_c: object, direction: str, _v: object, kind: int, msg_type: int, data: bytes) -> None:
        if direction == "read" and kind == 22 and msg_type == 2:
            hellos.append(bytes(data))

    setattr(context, "_msg_callback", trace)  # noqa: B010 - CPython's handshake tracer (private)
    return hellos


def test_data_connections_offer_the_group_the_server_asked_for(ftps_server: FTPSServer) -> None:
    """vsftpd accepts P-256 only: after its HelloRetryRequest on the control connection, every later
    handshake on the same context (data connections, a second control connection) is one round trip."""
    context = build_ssl_context(settings_for(ftps_server))
    with FTPSClient(settings_for(ftps_server), context=context) as fs:
        hellos = _server_hellos(context)
        assert fs.put_small(remote(ftps_server, ".p.part"), remote(ftps_server, "p"), b"p" * 100) == 100
        with FTPSClient(settings_for(ftps_server), context=context) as second:
            assert second.usable
    assert hellos, "no TLS handshake was traced"
    assert [h for h in hellos if _hrr_group(h) is not None] == []


def test_hello_retry_request_parsing() -> None:
    assert _hrr_group(_HRR) == 0x0017
    server_hello = _HRR[:6] + b"\x01" * 32 + _HRR[38:]  # any other random: an ordinary ServerHello
    assert _hrr_group(server_hello) is None
    assert _hrr_group(_HRR[:45]) is None  # cut short
    assert _hrr_group(b"") is None
