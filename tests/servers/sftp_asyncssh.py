"""In-process asyncssh SFTP server (own event loop thread), chrooted to a temp root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from tests.servers import HOST, SFTPServer, wait_listening


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


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


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
    _write_private(key_path, plain_text)
    _write_private(enc_path, enc_text)
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
) -> Iterator[SFTPServer]:
    """Start an asyncssh SFTP server on 127.0.0.1:0 chrooted to ``root``; stop it on exit."""
    t0 = time.monotonic()
    password = password or secrets.token_urlsafe(16)
    expected_pw = password.encode()
    root.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519", comment="sectransfer-test-host")
    authorized = asyncssh.import_authorized_keys(keys.authorized_keys)
    auth_log: list[tuple[str, str]] = []
    conns: set[asyncssh.SSHServerConnection] = set()

    class _Server(asyncssh.SSHServer):
        """One login; either its password or one of the two client keys."""

        _conn: asyncssh.SSHServerConnection
        _pw_ok = False

        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn
            conns.add(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            conns.discard(self._conn)

        def begin_auth(self, username: str) -> bool:
            if username == login:
                self._conn.set_authorized_keys(authorized)
            return True  # authentication is always required

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, pw: str) -> bool:
            self._pw_ok = username == login and secrets.compare_digest(pw.encode(), expected_pw)
            return self._pw_ok

        def auth_completed(self) -> None:
            user = self._conn.get_extra_info("username")
            auth_log.append((user, "password" if self._pw_ok else "publickey"))

    chroot = str(root).encode()

    def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=chroot)

    lt = _LoopThread()

    async def _start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            HOST,
            0,
            server_host_keys=[host_key],
            server_factory=_Server,
            sftp_factory=sftp_factory,
            login_timeout=30,
        )

    try:
        acceptor = lt.run(_start())
    except BaseException:
        lt.stop()
        raise
    try:
        port = int(acceptor.sockets[0].getsockname()[1])
        lt.thread.name = f"asyncssh-server-{port}"
        wait_listening(HOST, port, timeout=5, alive=lt.thread.is_alive)
        key_line = host_key_line(host_key)
        info = SFTPServer(
            kind="asyncssh",
            host=HOST,
            port=port,
            login=login,
            password=password,
            host_key_line=key_line,
            known_hosts_text=known_hosts_for(port, key_line),
            client_key_path=keys.key_path,
            client_key_text=keys.key_text,
            encrypted_key_path=keys.encrypted_key_path,
            encrypted_key_text=keys.encrypted_key_text,
            key_passphrase=keys.passphrase,
            writable_dir="/",
            local_root=root,
            server_root=root,
            start_seconds=time.monotonic() - t0,
            name=name,
            auth_log=auth_log,
        )
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
