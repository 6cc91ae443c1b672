"""A loopback TCP proxy that cuts connections after a number of bytes (fault injection for resume tests).

Unlike ``tests.servers.proxy.RecordingProxy`` it keeps no copy of the traffic (64 MiB
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
import select
import socket
import struct
import threading


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


class CutProxy:
    """Forward ``listen_host:port`` to ``target_host:target_port`` for each route; cut on demand.

    :param target_host: where to forward to (loopback only).
    :param listen_host: where to listen (loopback only).
    """

    def __init__(self, target_host: str, listen_host: str = "127.0.0.1") -> None:
        assert target_host in ("127.0.0.1", "::1", "localhost") and listen_host in ("127.0.0.1", "::1")
        self.target_host = target_host
        self.listen_host = listen_host
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listeners: dict[socket.socket, tuple[int, bool]] = {}  # sock -> (target port, counted)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._limit: int | None = None
        self._counted = 0
        #: Client-to-server bytes forwarded on counted routes since the last arm().
        self.forwarded = 0
        #: Connections accepted (all routes).
        self.connections = 0
        #: Set when a limit cut a connection.
        self.cut = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="cutproxy-accept", daemon=True)
        self._accept_thread.start()

    def add_route(self, target_port: int, listen_port: int = 0, *, counted: bool = True) -> int:
        """Listen on *listen_port* (0: any) and forward to *target_port*; return the port listened on.

        :param counted: whether bytes on this route count towards (and can trigger) the cut.
        """
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, listen_port))
        sock.listen(16)
        with self._lock:
            self._listeners[sock] = (target_port, counted)
        return int(sock.getsockname()[1])

    def arm(self, n_bytes: int) -> None:
        """Cut the connection that carries the *n_bytes*-th client-to-server byte (counted routes)."""
        with self._lock:
            self._limit = n_bytes
            self._counted = 0
            self.forwarded = 0
            self.cut.clear()

    def disarm(self) -> None:
        with self._lock:
            self._limit = None

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            socks = list(self._listeners) + list(self._conns)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        self._accept_thread.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                listeners = list(self._listeners)
            try:
                readable, _, _ = select.select(listeners, [], [], 0.05)
            except (OSError, ValueError):
                if self._closed.is_set():
                    return
                continue
            for listener in readable:
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                target_port, counted = self._listeners[listener]
                try:
                    server = socket.create_connection((self.target_host, target_port), timeout=10)
                    server.settimeout(None)
                except OSError:
                    client.close()
                    continue
                for s in (client, server):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self.connections += 1
                    self._conns += [client, server]
                t = threading.Thread(target=self._pump, args=(client, server, counted), daemon=True)
                self._threads.append(t)
                t.start()

    @staticmethod
    def _reset(*socks: socket.socket) -> None:
        """Close abruptly (RST), like a dropped network path or a killed middlebox."""
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.close()

    def _pump(self, client: socket.socket, server: socket.socket, counted: bool) -> None:
        peers = {client: server, server: client}
        try:
            while not self._closed.is_set() and peers:
                try:
                    readable, _, _ = select.select(list(peers), [], [], 0.1)
                except (OSError, ValueError):
                    return
                for src in readable:
                    dst = peers.get(src)
                    if dst is None:
                        continue
                    try:
                        chunk = src.recv(262144)
                    except OSError:
                        self._reset(client, server)
                        return
                    if not chunk:
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        del peers[src]
                        continue
                    cut = False
                    if src is client and counted:
                        with self._lock:
                            if self._limit is not None:
                                room = self._limit - self._counted
                                if room <= len(chunk):
                                    chunk, cut = chunk[: max(room, 0)], True
                            self._counted += len(chunk)
                            self.forwarded += len(chunk)
                    try:
                        if chunk:
                            dst.sendall(chunk)
                    except OSError:
                        self._reset(client, server)
                        return
                    if cut:
                        self._limit = None
                        self.cut.set()
                        self._reset(client, server)
                        return
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()
