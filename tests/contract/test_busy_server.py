"""Busy servers (#17): a session refused for load is a ``ServerBusyError``, and the engine waits for it.

Real servers with real limits: pyftpdlib ``max_cons_per_ip`` (421), vsftpd ``max_per_ip`` (421), OpenSSH
``MaxStartups`` (connection dropped before the key exchange), and a closed port (ECONNREFUSED).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import ServerBusyError, VerificationError
from airflow_secure_transfer.transfer.backoff import connect_with_backoff
from airflow_secure_transfer.transfer.engine import upload
from tests.servers import FTPSServer, SFTPServer, free_port, sha256_file, write_random
from tests.servers.pki import ServerPKI

from ._support import AnyServer, CountingFactory, client_for, leftovers, remote, settings_for


class SignallingLog:
    """A task log that lets the test act when the engine says it is waiting for a busy server."""

    def __init__(self) -> None:
        self.busy = threading.Event()
        self.warnings: list[str] = []

    def debug(self, msg: str, /, *args: Any) -> None:
        pass

    info = error = debug

    def warning(self, msg: str, /, *args: Any) -> None:
        self.warnings.append(msg % args)
        if "is busy" in msg % args:
            self.busy.set()


@pytest.fixture
def busy_pyftpd(pyftpd_factory: Callable[..., FTPSServer]) -> FTPSServer:
    """pyftpdlib allowing one session per IP (the second is answered ``421 Too many connections...``).

    Explicit FTPS only: pyftpdlib in implicit mode writes its 421 in clear where the client expects a TLS
    handshake; that is a TLS error (retried by Airflow's retries), never read as a reply.
    """
    return pyftpd_factory(server_attrs={"max_cons_per_ip": 1})


def patient_client(settings: Any) -> Any:
    """A client that waits (the engine's own back-off) while the server still counts an earlier session."""
    return connect_with_backoff(lambda: client_for(settings), budget=30, log=SignallingLog())


@contextlib.contextmanager
def hold_startup_slot(host: str, port: int) -> Iterator[socket.socket]:
    """Hold an sshd start-up slot: a connection that got the version line and then says nothing."""
    for _ in range(50):
        sock = socket.create_connection((host, port), timeout=10)
        if sock.recv(256).startswith(b"SSH-"):
            break
        sock.close()  # dropped: an earlier connection still held the slot; try again
        threading.Event().wait(0.1)
    else:
        raise AssertionError("sshd never gave a start-up slot")
    with sock:
        yield sock


@contextlib.contextmanager
def interop_server(
    kind: str, base: Path, pki: ServerPKI, keys: Any, user: tuple[str, str], **options: str
) -> Iterator[Any]:
    from tests.servers.interop import run_sshd, run_vsftpd

    if kind == "vsftpd":
        with run_vsftpd(base, pki, login=user[0], password=user[1], name="vsftpd_busy", options=options) as (s, _):
            yield s.for_test("t")
    else:
        with run_sshd(base, keys, login=user[0], password=user[1], name="sshd_busy", options=options) as (s, _):
            yield s.for_test("t")


def test_pyftpdlib_421_is_server_busy_and_clears(busy_pyftpd: FTPSServer) -> None:
    settings = settings_for(busy_pyftpd)
    with patient_client(settings):
        with pytest.raises(ServerBusyError, match="421") as err:
            client_for(settings)
        assert err.value.retryable
    with patient_client(settings) as fs:  # the holder left: accepted again
        assert fs.stat(remote(busy_pyftpd)) is not None


@pytest.mark.interop
def test_vsftpd_max_per_ip_is_server_busy(
    _interop_base: Path, test_pki: ServerPKI, client_keys: Any, _interop_user: tuple[str, str]
) -> None:
    with interop_server("vsftpd", _interop_base, test_pki, client_keys, _interop_user, max_per_ip="1") as server:
        settings = settings_for(server)
        # vsftpd counts a session until its process is gone: the start-up probe's may linger a moment.
        with patient_client(settings):
            with pytest.raises(ServerBusyError, match="421"):
                client_for(settings)


@pytest.mark.interop
def test_sshd_maxstartups_drop_is_server_busy(
    _interop_base: Path, test_pki: ServerPKI, client_keys: Any, _interop_user: tuple[str, str]
) -> None:
    """sshd drops a connection beyond MaxStartups before its key exchange: busy, not a trust failure."""
    with interop_server("sshd", _interop_base, test_pki, client_keys, _interop_user, MaxStartups="1") as server:
        settings = settings_for(server)
        # An unauthenticated connection that says nothing holds sshd's only start-up slot.
        with hold_startup_slot(server.host, server.port):
            with pytest.raises(ServerBusyError, match="before the key exchange"):
                client_for(settings)
        with patient_client(settings) as fs:  # slot free again once sshd has reaped the holder
            assert fs.stat(remote(server)) is not None


@pytest.mark.parametrize("kind", ["ftps", "sftp"])
def test_connection_refused_is_server_busy(kind: str, pyftpd_explicit: FTPSServer, asyncssh_server: SFTPServer) -> None:
    server: AnyServer = pyftpd_explicit if kind == "ftps" else asyncssh_server
    with pytest.raises(ServerBusyError, match="refused"):
        client_for(settings_for(server, port=free_port()))


def test_a_wrong_host_key_is_not_busy(asyncssh_server: SFTPServer, asyncssh_factory: Callable[..., SFTPServer]) -> None:
    """The back-off only ever sees ServerBusyError: a trust failure stays a VerificationError."""
    other = asyncssh_factory()
    with pytest.raises(VerificationError):
        client_for(settings_for(asyncssh_server, host_key=other.extras()["host_key"]))


def test_engine_waits_for_a_busy_server_and_delivers(busy_pyftpd: FTPSServer, tmp_path: Path) -> None:
    """The only session is taken by someone else; the upload waits (logging why), then delivers."""
    src = write_random(tmp_path / "report.csv", 200_000)
    settings = settings_for(busy_pyftpd)
    log = SignallingLog()
    holder = patient_client(settings)
    released = threading.Event()

    def release_when_waiting() -> None:
        if log.busy.wait(60):
            holder.close()
            released.set()

    threading.Thread(target=release_when_waiting, daemon=True).start()
    try:
        records = upload(CountingFactory(settings), str(src), remote(busy_pyftpd, "report.csv"), busy_wait=80, log=log)
    finally:
        holder.close()
    assert released.is_set()
    assert [r.remote_path for r in records] == [remote(busy_pyftpd, "report.csv")]
    assert sha256_file(busy_pyftpd.local_root / "report.csv") == sha256_file(src)
    assert any("is busy (" in w and "421" in w for w in log.warnings)


def test_engine_without_busy_wait_fails_retryably(busy_pyftpd: FTPSServer, tmp_path: Path) -> None:
    src = write_random(tmp_path / "a.bin", 1000)
    settings = settings_for(busy_pyftpd)
    with patient_client(settings), pytest.raises(ServerBusyError) as err:
        upload(CountingFactory(settings), str(src), remote(busy_pyftpd, "a.bin"), log=SignallingLog())
    assert err.value.retryable
    assert not (busy_pyftpd.local_root / "a.bin").exists()


def test_parallel_upload_within_the_servers_session_limit(
    pyftpd_factory: Callable[..., FTPSServer], tmp_path: Path
) -> None:
    """Asked for 6 connections, the server takes 2: the extra ones give their files back; all arrive."""
    server = pyftpd_factory(server_attrs={"max_cons_per_ip": 2})
    src = tmp_path / "many"
    src.mkdir()
    files = [write_random(src / f"f{i:02d}.dat", 3000 + i) for i in range(30)]
    factory = CountingFactory(settings_for(server))
    records = upload(
        factory, str(src), remote(server, "many") + "/", max_connections=6, busy_wait=40, log=SignallingLog()
    )
    assert len(records) == 30
    assert factory.max_open <= 2
    for f in files:
        assert sha256_file(server.local_root / "many" / f.name) == sha256_file(f)
    assert leftovers(server.local_root) == []
