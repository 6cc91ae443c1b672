"""A loopback TCP proxy that cuts connections after a number of bytes (fault injection for resume tests).

It shares its plumbing with ``tests.servers.proxy.RecordingProxy`` (:class:`~tests.servers.proxy.TCPForwarder`);
unlike that one it keeps no copy of the traffic (64 MiB
uploads pass through it), can listen on several ports at once (FTP passive data
ports), and can be re-armed and disarmed between two runs of the same upload.

FTPS and the data connection: the client connects its data connections to the
control connection's peer address and the port from the ``EPSV`` reply, and the
control channel is encrypted, so the proxy cannot rewrite that reply. Instead the
test server listens on ``[::1]`` with a fixed passive port range and the proxy
listens on ``127.0.0.1`` on the *same* port numbers: the client talks to
``127.0.0.1`` (the name in the server's certificate) and every data connection
passes through the proxy.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct

from tests.servers.proxy import TCPForwarder


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_range(size: int, hosts: tuple[str, ...] = ("127.0.0.1", "::1")) -> range:
    """Return *size* consecutive ports (below the ephemeral range) free on every host in *hosts*."""
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(20000, 32000 - size)
        ports = range(start, start + size)
        if all(_bindable(h, p) for p in ports for h in hosts):
            return ports
    raise RuntimeError("no free port range found")


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class CutProxy(TCPForwarder):
    """Forward ``listen_host:port`` to ``target_host:target_port`` for each route; cut on demand.

    A cut, or a failed read or write, resets both sides (RST), like a dropped network path or a
    killed middlebox.

    :param target_host: where to forward to (loopback only).
    :param listen_host: where to listen (loopback only).
    """

    bufsize = 262144
    accept_poll = 0.05
    nodelay = True

    def __init__(self, target_host: str, listen_host: str = "127.0.0.1") -> None:
        assert target_host in ("127.0.0.1", "::1", "localhost") and listen_host in ("127.0.0.1", "::1")
        super().__init__("cutproxy")
        self.target_host = target_host
        self.listen_host = listen_host
        self._limit: int | None = None
        self._counted = 0
        self._from_server = False
        #: Bytes forwarded in the armed direction on counted routes since the last arm().
        self.forwarded = 0

    def add_route(self, target_port: int, listen_port: int = 0, *, counted: bool = True) -> int:
        """Listen on *listen_port* (0: any) and forward to *target_port*; return the port listened on.

        :param counted: whether bytes on this route count towards (and can trigger) the cut.
        """
        return self._listen(
            (self.listen_host, listen_port), (self.target_host, target_port), counted=counted, reuse_addr=True
        )

    def arm(self, n_bytes: int, *, from_server: bool = False) -> None:
        """Cut the connection that carries the *n_bytes*-th client-to-server byte (counted routes).

        :param from_server: count server-to-client bytes instead (a download).
        """
        with self._lock:
            self._limit = n_bytes
            self._counted = 0
            self.forwarded = 0
            self._from_server = from_server
            self.cut.clear()

    def disarm(self) -> None:
        with self._lock:
            self._limit = None

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _reset(*socks: socket.socket) -> None:
        """Close abruptly (RST), like a dropped network path or a killed middlebox."""
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.close()

    def _chunk(self, chunk: bytes, *, from_client: bool, counted: bool) -> tuple[bytes, bool]:
        cut = False
        if from_client != self._from_server and counted:
            with self._lock:
                if self._limit is not None:
                    room = self._limit - self._counted
                    if room <= len(chunk):
                        chunk, cut = chunk[: max(room, 0)], True
                self._counted += len(chunk)
                self.forwarded += len(chunk)
        return chunk, cut

    def _on_cut(self, client: socket.socket, server: socket.socket) -> None:
        self._limit = None
        self.cut.set()
        self._reset(client, server)

    def _on_error(self, client: socket.socket, server: socket.socket) -> None:
        self._reset(client, server)
