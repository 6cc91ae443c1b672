"""In-process asyncssh SFTP server (own event loop thread), chrooted to a temp root.

:func:`run_asyncssh` serves the shared fixtures and the negative tests alike: those choose the SFTP
server class (quota, permission denied, never answering...), the host key and its signature
algorithms, and the SSH algorithm lists; every server counts TCP connections and authentication
requests, so a test can assert "one connection, no retry" and "refused before authentication".
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from tests.servers import HOST, SFTPServer
from tests.servers.pki import write_private


@dataclass
class ClientKeys:
    """Client key pair files for SFTP tests (generated at run time, never committed)."""

    key_path: Path
    key_text: str
    encrypted_key_path: Path
    encrypted_key_text: str
    passphrase: str
    #: authorized_keys text with both public keys
    authorized_keys: str


def make_client_keys(directory: Path) -> ClientKeys:
    """Create an unencrypted and a passphrase-encrypted ed25519 client key (OpenSSH format) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(12)
    plain = asyncssh.generate_private_key("ssh-ed25519", comment="sectransfer-test-client")
    enc = asyncssh.generate_private_key("ssh-ed25519", comment="sectransfer-test-client-encrypted")
    key_path = directory / "id_ed25519"
    enc_path = directory / "id_ed25519_encrypted"
    plain_text = plain.export_private_key("openssh")
    # 16 bcrypt rounds, ssh-keygen's default (asyncssh's is 128): loading the key then costs ~0.15 s, not ~2 s,
    # in every test that uses it.
    enc_text = enc.export_private_key("openssh", passphrase=passphrase, rounds=16, ignore_few_rounds=True)
    write_private(key_path, plain_text)
    write_private(enc_path, enc_text)
    pub1 = plain.export_public_key("openssh")
    pub2 = enc.export_public_key("openssh")
    Path(str(key_path) + ".pub").write_bytes(pub1)
    Path(str(enc_path) + ".pub").write_bytes(pub2)
    return ClientKeys(
        key_path=key_path,
        key_text=plain_text.decode("ascii"),
        encrypted_key_path=enc_path,
        encrypted_key_text=enc_text.decode("ascii"),
        passphrase=passphrase,
        authorized_keys=(pub1 + pub2).decode("ascii"),
    )


def host_key_line(key: asyncssh.SSHKey) -> str:
    """``"ssh-ed25519 AAAA..."`` without the comment."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def known_hosts_for(port: int, key_line: str) -> str:
    return "".join(f"[{h}]:{port} {key_line}\n" for h in ("127.0.0.1", "localhost"))


_S = TypeVar("_S", bound=SFTPServer)


def describe_sftp_server(
    cls: type[_S], *, port: int, key_line: str, keys: ClientKeys, started: float, **fields: Any
) -> _S:
    """An :class:`SFTPServer` (or subclass) on ``HOST:port`` with host key *key_line*, the client *keys*,
    and ``start_seconds`` counted from the :func:`time.monotonic` value *started*."""
    return cls(
        host=HOST,
        port=port,
        host_key_line=key_line,
        known_hosts_text=known_hosts_for(port, key_line),
        client_key_path=keys.key_path,
        client_key_text=keys.key_text,
        encrypted_key_path=keys.encrypted_key_path,
        encrypted_key_text=keys.encrypted_key_text,
        key_passphrase=keys.passphrase,
        start_seconds=time.monotonic() - started,
        **fields,
    )


@dataclass
class AsyncsshServer(SFTPServer):
    """An :class:`SFTPServer` run by :func:`run_asyncssh`, which also counts what reached it."""

    #: The server's (first) host key.
    host_key: asyncssh.SSHKey | None = field(default=None, repr=False)
    #: TCP connections accepted (every attempt a client made).
    connections: int = 0
    #: ``(username, method)`` of every authentication request received (``"begin"`` when userauth started).
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="asyncssh-server", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # drain callbacks scheduled by the shutdown
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            raise RuntimeError("asyncssh server loop did not stop")


@contextlib.contextmanager
def run_asyncssh(
    root: Path,
    keys: ClientKeys,
    *,
    login: str = "sftpuser",
    password: str | None = None,
    name: str = "",
    sftp_server: type[asyncssh.SFTPServer] = asyncssh.SFTPServer,
    host_key: asyncssh.SSHKey | None = None,
    host_key_algorithms: Sequence[str] | None = None,
    extra_host_keys: Sequence[asyncssh.SSHKey] = (),
    listen_options: Mapping[str, Any] | None = None,
) -> Iterator[AsyncsshServer]:
    """Start an asyncssh SFTP server on 127.0.0.1:0 chrooted to ``root``; stop it on exit.

    One login (*login*) that accepts its password or either client key of *keys*.

    :param sftp_server: the SFTP server class (a subclass that fails writes, never answers...),
        instantiated per session with ``chroot=root``.
    :param host_key: the host key (default: a fresh ed25519 key).
    :param host_key_algorithms: restrict the signature algorithms the host key is offered with
        (e.g. ``["ssh-rsa"]`` for a server that signs only with SHA-1).
    :param extra_host_keys: more host keys (of other types) the server also holds.
    :param listen_options: more ``asyncssh.listen`` options (e.g. ``kex_algs``, ``encryption_algs``,
        ``mac_algs``: a server with only weak algorithms).
    """
    t0 = time.monotonic()
    password = password or secrets.token_urlsafe(16)
    expected_pw = password.encode()
    root.mkdir(parents=True, exist_ok=True)
    key = host_key or asyncssh.generate_private_key("ssh-ed25519", comment="sectransfer-test-host")
    keypair: Any = key
    if host_key_algorithms is not None:
        keypair = asyncssh.load_keypairs([key])[0]
        keypair.host_key_algorithms = [a.encode("ascii") for a in host_key_algorithms]
    authorized = asyncssh.import_authorized_keys(keys.authorized_keys)
    holder: list[AsyncsshServer] = []  # the info below, once the port is known
    conns: set[asyncssh.SSHServerConnection] = set()

    class _Server(asyncssh.SSHServer):
        """One login; either its password or one of the two client keys."""

        _conn: asyncssh.SSHServerConnection
        _pw_ok = False

        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn
            conns.add(conn)
            holder[0].connections += 1

        def connection_lost(self, exc: Exception | None) -> None:
            conns.discard(self._conn)

        def begin_auth(self, username: str) -> bool:
            holder[0].auth_attempts.append((username, "begin"))
            if username == login:
                self._conn.set_authorized_keys(authorized)
            return True  # authentication is always required

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, pw: str) -> bool:
            holder[0].auth_attempts.append((username, "password"))
            self._pw_ok = username == login and secrets.compare_digest(pw.encode(), expected_pw)
            return self._pw_ok

        def auth_completed(self) -> None:
            user = self._conn.get_extra_info("username")
            holder[0].auth_log.append((user, "password" if self._pw_ok else "publickey"))

    chroot = str(root).encode()

    def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return sftp_server(chan, chroot=chroot)

    lt = _LoopThread()

    async def _start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            HOST,
            0,
            server_host_keys=[keypair, *extra_host_keys],
            server_factory=_Server,
            sftp_factory=sftp_factory,
            login_timeout=30,
            **(listen_options or {}),
        )

    try:
        acceptor = lt.run(_start())
    except BaseException:
        lt.stop()
        raise
    try:
        # listen() has returned: the socket accepts connections. No probe connection (the server
        # would count it as a client's).
        port = int(acceptor.sockets[0].getsockname()[1])
        lt.thread.name = f"asyncssh-server-{port}"
        info = describe_sftp_server(
            AsyncsshServer,
            port=port,
            key_line=host_key_line(key),
            keys=keys,
            started=t0,
            kind="asyncssh",
            login=login,
            password=password,
            writable_dir="/",
            local_root=root,
            server_root=root,
            name=name,
            host_key=key,
        )
        holder.append(info)
        yield info
    finally:

        async def _stop() -> None:
            acceptor.close()
            for conn in list(conns):
                conn.abort()
            await acceptor.wait_closed()

        try:
            lt.run(_stop())
        finally:
            lt.stop()
