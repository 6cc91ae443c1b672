"""SSH servers for the SFTP negative tests that the shared fixtures do not provide.

* :func:`run_custom_asyncssh` -- an asyncssh SFTP server (:func:`tests.servers.sftp_asyncssh.run_asyncssh`)
  whose host key and algorithm lists are chosen by the test (e.g. only CBC / hmac-sha1 /
  SHA-1 key exchange), and which counts TCP connections and authentication attempts, so a
  test can assert "one connection, no retry" and "refused before authentication".
* :func:`silent_listener` -- a socket that accepts TCP connections and never says a word
  (for timeouts).

Keys are generated at run time; nothing is committed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from tests.servers.sftp_asyncssh import AsyncsshServer, ClientKeys, run_asyncssh

HOST = "127.0.0.1"

#: A running custom asyncssh server and what it saw (``connections``, ``auth_attempts``).
CustomServer = AsyncsshServer


def run_custom_asyncssh(
    root: Path,
    keys: ClientKeys,
    *,
    host_key_type: str = "ssh-ed25519",
    host_key: asyncssh.SSHKey | None = None,
    kex_algs: Sequence[str] = (),
    encryption_algs: Sequence[str] = (),
    mac_algs: Sequence[str] = (),
    **options: Any,
) -> contextlib.AbstractContextManager[AsyncsshServer]:
    """Start an asyncssh SFTP server with the given host key and algorithm lists (empty: asyncssh's defaults).

    :param host_key_type: the type of the fresh host key made when *host_key* is None.
    :param options: ``host_key_algorithms``, ``extra_host_keys``, ``sftp_server``... of
        :func:`tests.servers.sftp_asyncssh.run_asyncssh`.
    """
    algs = {"kex_algs": kex_algs, "encryption_algs": encryption_algs, "mac_algs": mac_algs}
    return run_asyncssh(
        root,
        keys,
        host_key=host_key or asyncssh.generate_private_key(host_key_type),
        listen_options={name: list(value) for name, value in algs.items() if value},
        **options,
    )


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
