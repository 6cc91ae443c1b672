"""A small threaded loopback TCP proxy that records what passes (and can cut the connection).

Use it in front of a server's *control* connection::

    with RecordingProxy(server.host, server.port) as proxy:
        client.connect(proxy.host, proxy.port)
        ...
    assert b"PASS" not in proxy.client_to_server   # e.g. nothing readable on the wire

FTP passive data connections go directly to the server (the PASV reply names the server's address), so they
are not recorded.

:class:`TCPForwarder` is the plumbing it shares with ``tests.contract.cutproxy.CutProxy`` (listeners,
accepting, one pump thread per connection, closing); each subclass decides what a chunk does and how a
cut ends the connection.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Literal, Self

Direction = Literal["client_to_server", "server_to_client"]
_DIRECTIONS = ("client_to_server", "server_to_client")


class TCPForwarder:
    """Forward each listening socket to its target on loopback: one thread accepts, one thread per
    connection pumps both directions (``select``); an EOF is passed on as a half-close.

    Subclasses decide what a chunk does (:meth:`_chunk`: record it, count it, cut it short) and how a
    cut or a socket error ends the connection (:meth:`_on_cut`, :meth:`_on_error`).

    :param name: prefix of the threads' names.
    """

    #: bytes read at a time
    bufsize = 65536
    #: seconds between two looks for close() while no connection arrives
    accept_poll = 0.1
    #: set TCP_NODELAY on both sockets of each connection
    nodelay = False

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listeners: dict[socket.socket, tuple[tuple[str, int], bool]] = {}  # sock -> (target, counted)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        #: Connections accepted (all listeners).
        self.connections = 0
        #: Connections open now, and the most that were open at once.
        self.open_now = 0
        self.peak = 0
        #: Set when a cut ended a connection.
        self.cut = threading.Event()

    def _listen(
        self, listen: tuple[str, int], target: tuple[str, int], *, counted: bool = True, reuse_addr: bool = False
    ) -> int:
        """Listen on *listen* (port 0: any) and forward each connection to *target*; return the port."""
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(listen)
        sock.listen(16)
        with self._lock:
            self._listeners[sock] = (target, counted)
        if self._accept_thread is None:
            self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{self._name}-accept", daemon=True)
            self._accept_thread.start()
        return int(sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._closed.set()
        with self._lock:
            socks = list(self._listeners) + list(self._conns)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ for subclasses

    def _chunk(self, chunk: bytes, *, from_client: bool, counted: bool) -> tuple[bytes, bool]:
        """Return what of *chunk* to forward, and whether to cut the connection after it."""
        return chunk, False

    def _on_cut(self, client: socket.socket, server: socket.socket) -> None:
        """A cut ends the connection (the sockets are closed afterwards)."""
        self.cut.set()

    def _on_error(self, client: socket.socket, server: socket.socket) -> None:
        """A read or write failed (the sockets are closed afterwards)."""

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                listeners = list(self._listeners)
            try:
                readable, _, _ = select.select(listeners, [], [], self.accept_poll)
            except (OSError, ValueError):
                if self._closed.is_set():
                    return
                continue
            for listener in readable:
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                target, counted = self._listeners[listener]
                try:
                    server = socket.create_connection(target, timeout=10)
                    server.settimeout(None)
                except OSError:
                    client.close()
                    continue
                if self.nodelay:
                    for s in (client, server):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self.connections += 1
                    self.open_now += 1
                    self.peak = max(self.peak, self.open_now)
                    self._conns += [client, server]
                t = threading.Thread(
                    target=self._pump, args=(client, server, counted), name=f"{self._name}-pump", daemon=True
                )
                self._threads.append(t)
                t.start()

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
                        chunk = src.recv(self.bufsize)
                    except OSError:
                        self._on_error(client, server)
                        return
                    if not chunk:
                        # half-close: pass the EOF on, keep the other direction running
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        del peers[src]
                        continue
                    chunk, cut = self._chunk(chunk, from_client=src is client, counted=counted)
                    try:
                        if chunk:
                            dst.sendall(chunk)
                    except OSError:
                        self._on_error(client, server)
                        return
                    if cut:
                        self._on_cut(client, server)
                        return
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self.open_now -= 1


class RecordingProxy(TCPForwarder):
    """Forward 127.0.0.1:<port> to ``target_host:target_port``, recording the bytes in both directions.

    :param target_host: where to forward to (loopback only).
    :param target_port: the target's port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__("proxy")
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._data: dict[str, bytearray] = {d: bytearray() for d in _DIRECTIONS}
        self._limit: tuple[str, int] | None = None
        self.port: int = self._listen((self.host, 0), self.target)

    # ------------------------------------------------------------------ public

    @property
    def client_to_server(self) -> bytes:
        """Every byte the client(s) sent, in order (all connections, concatenated)."""
        with self._lock:
            return bytes(self._data["client_to_server"])

    @property
    def server_to_client(self) -> bytes:
        """Every byte the server sent, in order (all connections, concatenated)."""
        with self._lock:
            return bytes(self._data["server_to_client"])

    def close_after(self, n_bytes: int, direction: Direction = "server_to_client") -> RecordingProxy:
        """Fault injection: forward only ``n_bytes`` (counted over all connections) in ``direction``, then
        close both sides of the connection abruptly. Returns self."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}")
        with self._lock:
            self._limit = (direction, n_bytes)
        return self

    # ------------------------------------------------------------------ internals

    def _chunk(self, chunk: bytes, *, from_client: bool, counted: bool) -> tuple[bytes, bool]:
        direction = "client_to_server" if from_client else "server_to_client"
        cut = False
        with self._lock:
            if self._limit and self._limit[0] == direction:
                room = self._limit[1] - len(self._data[direction])
                if room <= len(chunk):
                    chunk, cut = chunk[: max(room, 0)], True
            self._data[direction] += chunk
        return chunk, cut


class CountingProxy(TCPForwarder):
    """Forward 127.0.0.1:<port> to ``target_host:target_port`` and count connections (``peak``: most at once).

    In front of a server's control port it counts sessions, including ones the server refuses; FTP passive
    data connections go to the server directly and are not counted.
    """

    nodelay = True

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__("counting-proxy")
        self.host = "127.0.0.1"
        self.port: int = self._listen((self.host, 0), (target_host, target_port))
        #: Request/response turns: client->server chunks that came after server->client bytes (the
        #: client waited for an answer before it sent them), over all connections: a round-trip
        #: count where one connection is used at a time (commands pipelined in one write are one).
        self.turns = 0
        self._server_spoke = False

    def _chunk(self, chunk: bytes, *, from_client: bool, counted: bool) -> tuple[bytes, bool]:
        with self._lock:
            if from_client and self._server_spoke:
                self.turns += 1
            self._server_spoke = not from_client
        return chunk, False
