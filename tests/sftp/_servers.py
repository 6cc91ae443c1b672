"""SSH servers for the SFTP negative tests that the shared fixtures do not provide.

* :func:`run_custom_asyncssh` -- an asyncssh SFTP server (own event-loop thread, 127.0.0.1:0)
  whose host key and algorithm lists are chosen by the test (e.g. only CBC / hmac-sha1 /
  SHA-1 key exchange), and which counts TCP connections and authentication attempts, so a
  test can assert "one connection, no retry" and "refused before authentication".
* :func:`silent_listener` -- a socket that accepts TCP connections and never says a word
  (for timeouts).

Keys are generated at run time; nothing is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from tests.servers.sftp_asyncssh import ClientKeys, host_key_line, known_hosts_for

HOST = "127.0.0.1"


@dataclass
class CustomServer:
    """A running custom asyncssh server and what it saw."""

    host: str
    port: int
    login: str
    password: str = field(repr=False)
    host_key: asyncssh.SSHKey = field(repr=False)
    host_key_line: str
    known_hosts_text: str
    root: Path
    #: TCP connections accepted (every attempt the client made).
    connections: int = 0
    #: ``(username, method)`` of every authentication request the server received.
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)

    def extras(self, **overrides: Any) -> dict[str, Any]:
        extras: dict[str, Any] = {"host_key": self.host_key_line}
        extras.update(overrides)
        return {k: v for k, v in extras.items() if v is not None}


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="custom-sshd", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def run_custom_asyncssh(
    root: Path,
    keys: ClientKeys,
    *,
    host_key_type: str = "ssh-ed25519",
    host_key: asyncssh.SSHKey | None = None,
    host_key_algorithms: Sequence[str] | None = None,
    extra_host_keys: Sequence[asyncssh.SSHKey] = (),
    kex_algs: Sequence[str] = (),
    encryption_algs: Sequence[str] = (),
    mac_algs: Sequence[str] = (),
    sftp_factory: Any = None,
) -> Iterator[CustomServer]:
    """Start an asyncssh SFTP server with the given host key and algorithm lists (empty: asyncssh's defaults).

    :param extra_host_keys: more host keys (of other types) the server also holds.
    :param host_key_algorithms: restrict the signature algorithms the host key is offered with
        (e.g. ``["ssh-rsa"]`` for a server that signs only with SHA-1).
    """
    root.mkdir(parents=True, exist_ok=True)
    key = host_key or asyncssh.generate_private_key(host_key_type)
    keypair: Any = key
    if host_key_algorithms is not None:
        keypair = asyncssh.load_keypairs([key])[0]
        keypair.host_key_algorithms = [a.encode("ascii") for a in host_key_algorithms]
    password = secrets.token_urlsafe(12)
    authorized = asyncssh.import_authorized_keys(keys.authorized_keys)
    server_info: dict[str, CustomServer] = {}
    conns: set[asyncssh.SSHServerConnection] = set()

    class _Server(asyncssh.SSHServer):
        _conn: asyncssh.SSHServerConnection

        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn
            conns.add(conn)
            server_info["s"].connections += 1

        def connection_lost(self, exc: Exception | None) -> None:
            conns.discard(self._conn)

        def begin_auth(self, username: str) -> bool:
            server_info["s"].auth_attempts.append((username, "begin"))
            self._conn.set_authorized_keys(authorized)
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, pw: str) -> bool:
            server_info["s"].auth_attempts.append((username, "password"))
            return username == "sftpuser" and secrets.compare_digest(pw.encode(), password.encode())

    def default_sftp(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    lt = _Loop()
    options: dict[str, Any] = {
        "server_host_keys": [keypair, *extra_host_keys],
        "server_factory": _Server,
        "sftp_factory": sftp_factory or default_sftp,
    }
    for name, value in (("kex_algs", kex_algs), ("encryption_algs", encryption_algs), ("mac_algs", mac_algs)):
        if value:
            options[name] = list(value)

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(HOST, 0, **options)

    try:
        acceptor = lt.run(start())
    except BaseException:
        lt.stop()
        raise
    port = int(acceptor.sockets[0].getsockname()[1])
    line = host_key_line(key)
    info = CustomServer(
        host=HOST,
        port=port,
        login="sftpuser",
        password=password,
        host_key=key,
        host_key_line=line,
        known_hosts_text=known_hosts_for(port, line),
        root=root,
    )
    server_info["s"] = info
    try:
        yield info
    finally:

        async def stop() -> None:
            acceptor.close()
            for conn in list(conns):
                conn.abort()
            await acceptor.wait_closed()

        try:
            lt.run(stop())
        finally:
            lt.stop()


@contextlib.contextmanager
def silent_listener() -> Iterator[tuple[str, int]]:
    """A TCP port that completes the handshake (kernel backlog) and never sends a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(8)
    try:
        yield HOST, sock.getsockname()[1]
    finally:
        sock.close()
