"""Round trips on the FTPS control connection (issue #15): counted, not timed.

Over a real distance every request the client waits for costs one round-trip time, so these tests pin how
many turns (the client waiting for an answer before it sends again) each operation takes, through a
:class:`~tests.servers.proxy.CountingProxy` in front of the control port. A change that adds a round trip per
file fails here. Data connections go to the server directly (not counted); their TLS handshake is checked for
a HelloRetryRequest instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import AuthenticationError, RemotePathError, SecureTransferError
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.security.settings import FTPSSettings
from airflow_secure_transfer.security.tls import build_ssl_context
from airflow_secure_transfer.transfer import ftps
from airflow_secure_transfer.transfer.engine import upload
from airflow_secure_transfer.transfer.ftps import FTPSClient, _hrr_group
from tests.contract._support import leftovers, remote, settings_for
from tests.security.tools import ScriptServer, Session, ftp_script, tls_server_context
from tests.servers import FTPSServer
from tests.servers.pki import ServerPKI
from tests.servers.proxy import CountingProxy
from tests.servers.pyftpd import run_pyftpd

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
        # AUTH TLS (explicit), the TLS handshake (2 turns, 3 with vsftpd's HelloRetryRequest; USER goes with
        # the client's Finished or, when the server's session tickets came in between, one turn later), PASS,
        # then the setup: at most 7. One command at a time the setup alone took 6 (PBSZ ... OPTS).
        assert proxy.turns <= 7


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


def _script_settings(server: ScriptServer, pki: ServerPKI, *, conn_timeout: int = 20) -> FTPSSettings:
    return parse_ftps_settings(
        conn_type="secure_ftps",
        host=server.host,
        port=server.port,
        login="u",
        password="p",
        extras={"conn_timeout": conn_timeout, "ca_bundle": pki.ca_pem},
    )


def _one_command_at_a_time(script: Callable[[Session], None]) -> Callable[[Session], None]:
    """*script*, on a server that drops whatever it received after the command it is answering."""

    def run(s: Session) -> None:
        read = s.readline

        def readline() -> str | None:
            line = read()
            sock = s.sock
            if isinstance(sock, ssl.SSLSocket):
                while sock.pending():  # the rest of the TLS record: the pipelined commands, dropped
                    sock.recv(sock.pending())
            return line

        s.readline = readline  # type: ignore[method-assign]
        script(s)

    return run


def test_a_server_that_drops_pipelined_commands_gets_them_one_at_a_time(
    test_pki: ServerPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's first burst finds out (PBSZ answered, PROT never): that session is dropped, the next one
    (and every later one to that server in this process) sends one command at a time."""
    monkeypatch.setattr(ftps, "_NO_PIPELINING", set())
    monkeypatch.setattr(ftps, "_PIPELINE_PROBE_S", 0.5)
    script = _one_command_at_a_time(ftp_script(at="never"))  # otherwise a sane server
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        settings = _script_settings(server, test_pki, conn_timeout=10)
        with FTPSClient(settings) as fs:
            assert "UTF8" in fs.features  # FEAT was answered
            assert fs.stat("/missing") is None  # SIZE, CWD, CWD back: one at a time, each answered
            with pytest.raises(RemotePathError):
                fs.rename("/a", "/b")
            assert fs.usable
            assert fs.stat("/missing") is None  # the replies are still in step
        assert server.connections == 2
        with FTPSClient(settings) as again:
            assert again.stat("/missing") is None
        assert server.connections == 3  # remembered: no probe, no second session


def _store_checks_hello_first(
    seen: dict[str, object],
    *,
    banner: str | None = None,
    size: bool = False,
    hold_226: float = 0.0,
    answers_during_transfers: bool = False,
) -> Callable[[Session], None]:
    """A sane FTPS server whose ``STOR`` accepts the data connection and, before its ``150``, waits up to 10 s
    for the client's first bytes there (*seen*: ``hello_before_150``); then TLS and the data; after the client's
    close_notify it waits up to 10 s for the client's FIN before it sends its own close_notify
    (``fin_before_servers_close_notify``), as vsftpd does before its ``226``.

    *banner*: its greeting. *size*: it offers ``SIZE`` (the size of what it received) and renames. *hold_226*:
    before its ``226`` it waits this long for a command to arrive (``command_before_226``); with
    *answers_during_transfers* it answers that command first, as a server that reads commands while a transfer
    ends would (vsftpd does not: it reads them after the ``226``).
    """
    script = ftp_script(at="never")
    sizes: dict[str, int] = {}

    def run(s: Session) -> None:
        read, say = s.readline, s.line

        def line(text: str) -> None:
            if banner is not None and text.startswith("220 "):
                text = banner
            say(text)

        def answer(command: str) -> bool:
            verb, _, arg = command.partition(" ")
            verb = verb.upper()
            if verb == "FEAT" and size:
                s.send(b"211-Features:\r\n EPSV\r\n SIZE\r\n UTF8\r\n PBSZ\r\n PROT\r\n211 End\r\n")
            elif verb == "SIZE" and size and arg in sizes:
                say(f"213 {sizes[arg]}")
            elif verb == "RNFR" and size and arg in sizes:
                say("350 Ready for RNTO.")
            elif verb == "RNTO" and size:
                say("250 Rename successful.")
            else:
                return False
            return True

        def readline() -> str | None:
            while True:
                command = read()
                if command is None:
                    return None
                if answer(command):
                    continue
                if not command.upper().startswith("STOR "):
                    return command
                data_lst = s.server.extra[-1]
                data_lst.settimeout(10)
                conn, _ = data_lst.accept()
                with conn:
                    ready, _, _ = select.select([conn], [], [], 10)
                    seen["hello_before_150"] = bool(ready) and conn.recv(1, socket.MSG_PEEK) == b"\x16"
                    say("150 Ok to send data.")
                    assert s.server.tls_context is not None
                    tls = s.server.tls_context.wrap_socket(conn, server_side=True)
                    received = bytearray()
                    while chunk := tls.recv(65536):  # ends at the client's close_notify
                        received += chunk
                    seen["data"] = bytes(received)
                    sizes[command[5:]] = len(received)
                    # Before this server sends its own close_notify: does the client's FIN come anyway?
                    ready, _, _ = select.select([tls], [], [], 10)
                    seen["fin_before_servers_close_notify"] = bool(ready) and socket.socket.recv(tls, 1) == b""
                    with contextlib.suppress(OSError, ssl.SSLError):
                        tls.unwrap()
                if hold_226:
                    control = s.sock
                    assert isinstance(control, ssl.SSLSocket)
                    waiting = control.pending() > 0 or bool(select.select([control], [], [], hold_226)[0])
                    seen["command_before_226"] = waiting
                    seen.setdefault("each_command_before_226", []).append(waiting)  # type: ignore[union-attr]
                    if waiting and answers_during_transfers:
                        early = read()
                        assert early is not None and answer(early)
                say("226 Transfer complete.")

        s.readline = readline  # type: ignore[method-assign]
        s.line = line  # type: ignore[method-assign]
        script(s)

    return run


@pytest.mark.parametrize("how", ["write_from", "put_small"])
def test_an_upload_neither_waits_for_the_150_to_start_tls_nor_for_the_servers_close_notify_to_end(
    test_pki: ServerPKI, how: str
) -> None:
    """Two round trips per data connection that decide nothing:

    * the ClientHello goes out before the 1xx is read, so the server's answer travels with the 150 instead of
      one round trip after it (the server here sends its 150 only once it has seen the ClientHello; a client
      that waits for the 150 first stalls it for 10 s and fails the check);
    * after the data: the client's close_notify, then its FIN at once, not after the server's close_notify
      (vsftpd sends its 226 only after that FIN). The 226 and the size check decide, as before.
    """
    seen: dict[str, object] = {}
    with ScriptServer(_store_checks_hello_first(seen), tls_context=tls_server_context(test_pki)) as server:
        with FTPSClient(_script_settings(server, test_pki)) as fs:
            if how == "write_from":
                assert fs.write_from("/early", io.BytesIO(b"early bytes")) == 11
            else:
                # This server has no SIZE: no size, so no rename (put_small's contract).
                assert fs.put_small("/.early.part", "/early", b"early bytes") is None
            assert fs.ftp.lingering == []  # the data connection is closed once the 226 was read
            fs.noop()
            assert fs.usable
    assert seen == {"hello_before_150": True, "data": b"early bytes", "fin_before_servers_close_notify": True}


def test_a_refused_transfer_after_an_early_client_hello_leaves_the_session_in_step(test_pki: ServerPKI) -> None:
    """The server refuses the command (550) and never starts TLS on the data connection: the handshake begun
    early is dropped, the refusal is the error, and the control connection stays usable."""
    with ScriptServer(ftp_script(at="never"), tls_context=tls_server_context(test_pki)) as server:
        with FTPSClient(_script_settings(server, test_pki)) as fs:
            with pytest.raises(SecureTransferError, match="550"):
                fs.put_small("/.x.part", "/x", b"refused")
            assert fs.usable
            fs.noop()
            assert fs.stat("/missing") is None


@pytest.mark.parametrize("vsftpd", [True, False], ids=["vsftpd-banner", "other-banner"])
def test_size_and_the_next_epsv_wait_for_the_226_except_on_a_server_that_reads_only_between_transfers(
    test_pki: ServerPKI, monkeypatch: pytest.MonkeyPatch, vsftpd: bool
) -> None:
    """vsftpd reads the control connection only between transfers: the upload's SIZE and the next file's EPSV
    go out with the end of the data and are read after its 226 (one round trip less per small file). Any other
    server gets them only after the 226 (this one waits 0.5 s for a command before its 226: none comes)."""
    monkeypatch.setattr(ftps, "_ANSWERS_DURING_TRANSFERS", set())
    seen: dict[str, object] = {}
    banner = "220 (vsFTPd 3.0.3)" if vsftpd else "220 Some FTP server ready"
    script = _store_checks_hello_first(seen, banner=banner, size=True, hold_226=10 if vsftpd else 0.5)
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        with FTPSClient(_script_settings(server, test_pki)) as fs:
            assert fs.ftp.reads_between_transfers is vsftpd
            answers = fs.put_small_many([("/.a.part", "/a", b"a" * 10), ("/.b.part", "/b", b"b" * 20)])
            assert answers == [10, 20]
            assert fs.usable
    assert seen["command_before_226"] is vsftpd
    assert seen["data"] == b"b" * 20


def test_a_server_that_answers_during_a_transfer_is_found_and_then_waited_for(
    test_pki: ServerPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with vsftpd's greeting that is not vsftpd: it answers the SIZE sent with the end of the data
    before the 226. That answer may describe half a file, so nothing is renamed on it: the session is given
    up, a new one sends the file again and waits for the 226 first, as does every later session to that
    server in this process."""
    monkeypatch.setattr(ftps, "_ANSWERS_DURING_TRANSFERS", set())
    seen: dict[str, object] = {}
    script = _store_checks_hello_first(
        seen, banner="220 (vsFTPd 3.0.3)", size=True, hold_226=3, answers_during_transfers=True
    )
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        settings = _script_settings(server, test_pki)
        with FTPSClient(settings) as fs:
            assert fs.ftp.reads_between_transfers
            assert fs.put_small_many([("/.a.part", "/a", b"a" * 10), ("/.b.part", "/b", b"b" * 5)]) == [10, 5]
            assert fs.usable
            assert fs.ftp.reads_between_transfers is False
        assert server.connections == 2
        # the first session: answered early; the second sends both files again, each SIZE after the 226
        assert seen["each_command_before_226"] == [True, False, False]
        assert ftps._ANSWERS_DURING_TRANSFERS == {(server.host, server.port)}
        with FTPSClient(settings) as again:
            assert again.ftp.reads_between_transfers is False


def test_a_concurrent_server_behind_vsftpds_greeting_still_gets_every_file_whole(
    tmp_path: Path, test_pki: ServerPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyftpdlib reads commands while a transfer ends (an EPSV then even closes the data connection), here
    behind vsftpd's greeting: whatever the order in which it handles the early SIZE and EPSV, every file
    arrives whole and verified, nothing is left behind (a file it answered out of order is sent again)."""
    monkeypatch.setattr(ftps, "_ANSWERS_DURING_TRANSFERS", set())
    src = tmp_path / "src"
    src.mkdir()
    payload = {f"f{i:03d}.bin": os.urandom(1000 + 97 * i) for i in range(60)}
    for name, data in payload.items():
        (src / name).write_bytes(data)
    with run_pyftpd(tmp_path / "root", test_pki, handler_attrs={"banner": "(vsFTPd 3.0.3)"}) as server:
        settings = settings_for(server)
        with FTPSClient(settings) as probe:
            assert probe.ftp.reads_between_transfers  # taken for vsftpd by its greeting
        records = upload(lambda: FTPSClient(settings), str(src), remote(server, "in") + "/", max_connections=2)
        assert sorted(Path(r.local_path).name for r in records) == sorted(payload)
        assert all(r.verified for r in records)
        for name, data in payload.items():
            assert (server.local_root / "in" / name).read_bytes() == data
        assert leftovers(server.local_root) == []


def _vsftpd_greeting_login(seen: dict[str, object], *, no_password: bool = False) -> Callable[[Session], None]:
    """A sane FTPS server that greets as vsftpd does; on ``USER`` it records whether more commands are already
    there (``pass_with_user``: waits up to 10 s for them before it answers). With *no_password* it logs the user
    in on ``USER`` alone (``230``) and refuses the ``PASS`` after it (``503``)."""
    script = ftp_script(at="never")

    def run(s: Session) -> None:
        read, say = s.readline, s.line
        state = {"user": False}

        def line(text: str) -> None:
            if text.startswith("220 "):
                text = "220 (vsFTPd 3.0.3)"
            elif no_password and text.startswith("331 "):
                text = "230 Logged in without a password"
            elif no_password and state["user"] and text.startswith("230 "):
                text = "503 Already logged in"
            say(text)

        def readline() -> str | None:
            command = read()
            if command is not None and command.upper().startswith("USER "):
                control = s.sock
                assert isinstance(control, ssl.SSLSocket)
                seen["pass_with_user"] = control.pending() > 0 or bool(select.select([control], [], [], 10)[0])
            elif command is not None and command.upper().startswith("PASS "):
                state["user"] = True
            return command

        s.readline = readline  # type: ignore[method-assign]
        s.line = line  # type: ignore[method-assign]
        script(s)

    return run


@pytest.mark.parametrize("no_password", [False, True], ids=["password", "user-alone"])
def test_login_and_session_setup_go_out_together_to_a_server_that_reads_a_stream(
    test_pki: ServerPKI, no_password: bool
) -> None:
    """To vsftpd (it peeks each command line) USER, PASS and the setup (PBSZ, PROT, TYPE, FEAT, PWD) are one
    burst: the login costs one round trip, not three. The server here answers USER only after it has seen more
    (a client that waits for the 331 stalls it for 10 s and fails the check). A server that needs no password
    answers the PASS with 503; that reply is read and the session is in step."""
    seen: dict[str, object] = {}
    with ScriptServer(
        _vsftpd_greeting_login(seen, no_password=no_password), tls_context=tls_server_context(test_pki)
    ) as server:
        with FTPSClient(_script_settings(server, test_pki)) as fs:
            assert fs.ftp.data_protected
            assert "UTF8" in fs.features
            assert fs.home == "/"
            assert fs.stat("/missing") is None
            assert fs.usable
    assert seen == {"pass_with_user": True}


def test_a_refused_pipelined_login_is_an_authentication_error(test_pki: ServerPKI) -> None:
    """The setup lines behind a refused PASS are never read: the login's refusal is the error."""

    def script(s: Session) -> None:
        say = s.line
        s.line = lambda text: say("220 (vsFTPd 3.0.3)" if text.startswith("220 ") else text)  # type: ignore[method-assign]
        ftp_script(at="never", echo_password=True)(s)

    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        with pytest.raises(AuthenticationError):
            FTPSClient(_script_settings(server, test_pki))
        assert server.connections == 1


def _settled(proxy: CountingProxy) -> int:
    """The proxy's turns once it has relayed everything (the client's last QUIT is not waited for)."""
    seen, since = proxy.turns, time.monotonic()
    while time.monotonic() - since < 0.3:
        time.sleep(0.02)
        if proxy.turns != seen:
            seen, since = proxy.turns, time.monotonic()
    return seen


@pytest.mark.parametrize("new_dir", [False, True], ids=["existing-dir", "new-dir"])
def test_one_large_file_costs_four_round_trips_after_the_session_on_vsftpd_and_five_elsewhere(
    counted: tuple[FTPSServer, CountingProxy], tmp_path: Path, new_dir: bool
) -> None:
    """After the session's setup: [stat target + partial + parent (+ EPSV on vsftpd)], [STOR], [the time set
    and the partial's stat, sent with the end of the data on vsftpd, after the 226 elsewhere], [RNFR + RNTO]
    (elsewhere one more: the EPSV); into a new directory one more: its MKD (the stat found it missing). Before
    (one stat at a time, the time and the stat after the 226) this was 8 on every server, 9 into a new
    directory."""
    server, proxy = counted
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    os.utime(src, (1_600_000_000, 1_600_000_000))
    settings = settings_for(server, host=proxy.host, port=proxy.port)
    if not new_dir:
        with FTPSClient(settings) as fs:
            fs.makedirs(remote(server, "in"))
    ready: list[int] = []

    def connect() -> FTPSClient:
        fs = FTPSClient(settings)
        ready.append(proxy.turns)  # the session is set up
        return fs

    (record,) = upload(connect, str(src), remote(server, "in", "big.bin"), max_connections=1)
    spent = _settled(proxy) - ready[0] - 1  # the QUIT at the end
    vsftpd = server.kind == "vsftpd"
    assert spent == (4 if vsftpd else 5) + new_dir
    assert record.verified == "size" and record.size == src.stat().st_size
    landed = server.local_root / "in" / "big.bin"
    assert landed.read_bytes() == src.read_bytes()
    assert int(landed.stat().st_mtime) == 1_600_000_000  # the time set with the end of the data
    assert leftovers(server.local_root) == []


def test_a_server_that_answers_during_a_large_upload_is_found_and_the_partial_checked_again(
    test_pki: ServerPKI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The stat sent with the end of a large upload is answered before the 226 (not vsftpd, though it greets
    like it): that session is given up, a new one asks for the partial's size again (whole: nothing is sent
    again) and renames it only after that answer."""
    monkeypatch.setattr(ftps, "_ANSWERS_DURING_TRANSFERS", set())
    seen: dict[str, object] = {}
    script = _store_checks_hello_first(
        seen, banner="220 (vsFTPd 3.0.3)", size=True, hold_226=3, answers_during_transfers=True
    )
    payload = os.urandom(1536 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        settings = _script_settings(server, test_pki)
        (record,) = upload(lambda: FTPSClient(settings), str(src), "/big.bin", max_connections=1)
        assert server.connections == 2
        assert ftps._ANSWERS_DURING_TRANSFERS == {(server.host, server.port)}
    assert record.verified == "size" and record.bytes == len(payload)
    assert seen["data"] == payload
    assert seen["each_command_before_226"] == [True]
