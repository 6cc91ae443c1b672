"""A TLS server in a thread on ``127.0.0.1:0`` for handshake-level tests (``tests/unit``).

:func:`tls_server` accepts a number of connections, completes each server-side handshake and runs a
``serve(tls, served)`` function on it; what it saw is recorded in :class:`Served`. The default
function sends ``b"hello\\n"`` (a TLS 1.3 client gets its session ticket with it) and records every
application byte the client sends until it closes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Served", "greet_and_record", "tls_server"]


@dataclass
class Served:
    """What the server saw, per connection in order."""

    port: int
    errors: list[str] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    reused: list[bool] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    clean_close: list[bool] = field(default_factory=list)
    sent_all: threading.Event = field(default_factory=threading.Event)


def greet_and_record(tls: ssl.SSLSocket, served: Served) -> None:
    """Send ``b"hello\\n"``, then record what the client sends until it closes (or drops the connection)."""
    with contextlib.suppress(OSError):  # a client that failed its checks just goes away
        tls.sendall(b"hello\n")  # gives TLS 1.3 clients their session ticket
        while chunk := tls.recv(4096):
            served.received += chunk


@contextlib.contextmanager
def tls_server(
    server_ctx: ssl.SSLContext,
    serve: Callable[[ssl.SSLSocket, Served], None] = greet_and_record,
    connections: int = 1,
) -> Iterator[Served]:
    """Accept *connections* TLS connections and run *serve* on each; failures are recorded, not raised."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    served = Served(port=listener.getsockname()[1])

    def run() -> None:
        for _ in range(connections):
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            raw.settimeout(10)
            try:
                tls = server_ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                served.errors.append(str(exc))
                raw.close()
                continue
            served.versions.append(tls.version())
            served.reused.append(bool(tls.session_reused))
            try:
                serve(tls, served)
            except (OSError, ssl.SSLError) as exc:
                served.errors.append(str(exc))
            finally:
                tls.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        thread.join(timeout=10)
        listener.close()
