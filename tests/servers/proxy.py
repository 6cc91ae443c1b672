"""A small threaded loopback TCP proxy that records what passes (and can cut the connection).

Use it in front of a server's *control* connection::

    with RecordingProxy(server.host, server.port) as proxy:
        client.connect(proxy.host, proxy.port)
        ...
    assert b"PASS" not in proxy.client_to_server   # e.g. nothing readable on the wire

FTP passive data connections go directly to the server (the PASV reply names the server's address), so they
are not recorded.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Literal

Direction = Literal["client_to_server", "server_to_client"]
_DIRECTIONS = ("client_to_server", "server_to_client")


class RecordingProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port``, recording the bytes in both directions.

    :param target_host: where to forward to (loopback only).
    :param target_port: the target's port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._data: dict[str, bytearray] = {d: bytearray() for d in _DIRECTIONS}
        self._limit: tuple[str, int] | None = None
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        #: number of client connections accepted so far
        self.connections = 0
        #: set when a close_after() limit cut a connection
        self.cut = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._accept_thread.start()

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

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        self._accept_thread.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                r, _, _ = select.select([self._listener], [], [], 0.1)
                if not r:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._socks += [client, server]
            t = threading.Thread(target=self._pump, args=(client, server), name="proxy-pump", daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: (server, "client_to_server"), server: (client, "server_to_client")}
        try:
            while not self._closed.is_set():
                try:
                    readable, _, _ = select.select(list(peers), [], [], 0.1)
                except (OSError, ValueError):
                    return
                for src in readable:
                    dst, direction = peers[src]
                    try:
                        chunk = src.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        # half-close: pass the EOF on, keep the other direction running
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        del peers[src]
                        if not peers:
                            return
                        continue
                    cut = False
                    with self._lock:
                        if self._limit and self._limit[0] == direction:
                            room = self._limit[1] - len(self._data[direction])
                            if room <= len(chunk):
                                chunk, cut = chunk[: max(room, 0)], True
                        self._data[direction] += chunk
                    try:
                        if chunk:
                            dst.sendall(chunk)
                    except OSError:
                        return
                    if cut:
                        self.cut.set()
                        return
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()
