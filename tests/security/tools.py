"""Attack tools for the security tier: a recording/fault relay, relayed and quota FTPS servers,
hostile scripted FTP/SSH servers, custom SFTP servers, and leak detectors.

Everything listens on loopback only (``127.0.0.1``/``127.0.0.2``), on ports chosen at run time.

:class:`Relay`
    A TCP relay with several routes (``kind`` = ``"control"``, ``"data"`` or ``"ssh"``) that records
    every byte in both directions of every connection, and can inject one :class:`Fault` (close,
    stall or half-close a connection when the client has sent N bytes on the transfer connections).

:func:`run_relayed_pyftpd`
    How the data connections of FTPS are captured although the passive port is announced inside TLS
    (a proxy cannot rewrite the ``229``/``227`` reply): the pyftpdlib server runs on ``127.0.0.2``
    with a fixed set of passive ports ``P1..Pn``; the relay listens on ``127.0.0.1:<control>`` and on
    ``127.0.0.1:P1..Pn`` and forwards each to ``127.0.0.2``. The client connects to ``127.0.0.1``
    (the certificate's SAN) and opens its data connections to *the control connection's peer address*
    (it ignores the address in a ``227`` reply) at the announced port: that is the relay. Nothing in
    the client is patched. Optional server faults: a storage quota that answers ``552``/``452``
    (like proftpd's quota module / a full disk), read-only permissions (``550``).

:class:`ScriptServer`
    A tiny threaded TCP server that runs a *script* per connection: silent, drip one byte at a time,
    endless replies, garbage, TLS then misbehaving... (FTP and SSH flavours below).

:func:`run_custom_sftp`
    An asyncssh SFTP server (own event loop thread) with a chosen ``sftp_factory`` (quota, permission
    denied, never answering) and algorithm lists, which records connections and authentication attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import secrets
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import asyncssh

from tests.servers import HOST, FTPSServer
from tests.servers.hostile_ftp import read_line
from tests.servers.pki import ServerPKI, make_pki, write_private
from tests.servers.sftp_asyncssh import AsyncsshServer, ClientKeys, run_asyncssh

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.exceptions import _FileReadWriteError
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers.ftp.data import DTPHandler
    from pyftpdlib.log import logger as ftpd_logger

    from tests.servers.pyftpd import ReuseRequiredDTPHandler, run_pyftpd

SERVER_HOST = "127.0.0.2"  # where relayed servers really listen (the relay takes 127.0.0.1)

# =============================================================================== relay


@dataclass(frozen=True)
class Fault:
    """One fault to inject.

    :param at: fire when the client has sent this many bytes (counted from :meth:`Relay.arm`) on the
        connections of kind *trigger*.
    :param target: the kind of connection hit (``"data"``, ``"control"``, ``"ssh"``); every open one.
    :param action: ``"close"`` (both sockets shut at once, mid-stream), ``"stall"`` (stop reading and
        forwarding *direction*, keep the sockets open: a black hole, the sender's buffers fill up and the
        receiver hears nothing more), ``"half_close"`` (send a FIN to the receiver of *direction*, read
        nothing more in that direction; once the receiver closes too, the connection is reset).
    :param direction: ``"c2s"`` or ``"s2c"`` (for stall / half_close; a close cuts both).
    :param trigger: kind whose client->server bytes count (default: ``"data"`` for FTPS, ``"ssh"``).
    """

    at: int
    target: str
    action: str = "close"
    direction: str = "c2s"
    trigger: str = "data"

    def describe(self) -> str:
        what = self.action if self.action == "close" else f"{self.action} {self.direction}"
        return f"{what} {self.target} at {self.at} B ({self.trigger} c2s)"


class RelayConn:
    """One relayed TCP connection and what passed through it."""

    def __init__(self, kind: str, index: int, client: socket.socket, server: socket.socket, record: bool) -> None:
        self.kind = kind
        self.index = index
        self.client = client
        self.server = server
        #: bytes read from each side (what the sender sent, whether forwarded or dropped)
        self.received = {"c2s": 0, "s2c": 0}
        self.data: dict[str, bytearray] | None = {"c2s": bytearray(), "s2c": bytearray()} if record else None
        #: half-closed directions: still read, dropped (the peer got a FIN)
        self.blocked: set[str] = set()
        #: stalled directions: no longer read at all (a black hole: the sender's buffers fill up)
        self.stalled: set[str] = set()
        self.killed = threading.Event()
        self.pumps_left = 2

    @property
    def closed(self) -> bool:
        return self.killed.is_set()

    def kill(self) -> None:
        self.killed.set()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class Relay:
    """A recording, fault-injecting TCP relay; see the module docstring.

    :param record: keep every byte (False for large transfers: counters only).
    """

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self.lock = threading.Lock()
        self.conns: list[RelayConn] = []
        self.fault: Fault | None = None
        self.fired = threading.Event()
        self._trigger_count = 0
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ----------------------------------------------------------------- setup

    def add_route(self, kind: str, target: tuple[str, int], listen: tuple[str, int] = (HOST, 0)) -> int:
        """Listen on *listen* and forward each connection to *target*; return the listening port.

        A *target* port of 0 means the listening port (a relay that keeps port numbers, as FTP's
        passive ports need).
        """
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(listen)
        lst.listen(32)
        if target[1] == 0:
            target = (target[0], int(lst.getsockname()[1]))
        self._listeners.append(lst)
        t = threading.Thread(target=self._accept, args=(lst, kind, target), name=f"relay-accept-{kind}", daemon=True)
        self._threads.append(t)
        t.start()
        return int(lst.getsockname()[1])

    def arm(self, fault: Fault | None) -> None:
        """Inject *fault* (None: none) from now on; the byte count starts at zero."""
        with self.lock:
            self.fault = fault
            self._trigger_count = 0
            self.fired.clear()

    def kill_connections(self) -> None:
        """Close every relayed connection on both sides (the listeners stay open)."""
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.kill()

    def close(self) -> None:
        self._stopping.set()
        for lst in self._listeners:
            with contextlib.suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                lst.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.kill()
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- results

    def captured(self, kind: str | None = None, direction: str | None = None) -> bytes:
        """Every recorded byte of connections of *kind* (all: None) in *direction* (both: None)."""
        out = bytearray()
        with self.lock:
            for c in self.conns:
                if c.data is None or (kind is not None and c.kind != kind):
                    continue
                for d in ("c2s", "s2c"):
                    if direction is None or d == direction:
                        out += c.data[d]
        return bytes(out)

    def received(self, kind: str | None = None, direction: str = "c2s") -> int:
        """Bytes read from the sender in *direction* on connections of *kind*, since the start."""
        with self.lock:
            return sum(c.received[direction] for c in self.conns if kind is None or c.kind == kind)

    def count(self, kind: str | None = None) -> int:
        with self.lock:
            return sum(1 for c in self.conns if kind is None or c.kind == kind)

    # ----------------------------------------------------------------- internals

    def _accept(self, lst: socket.socket, kind: str, target: tuple[str, int]) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = lst.accept()
            except OSError:
                return
            self._connect_pair(client, kind, target)

    def _connect_pair(self, client: socket.socket, kind: str, target: tuple[str, int]) -> None:
        """Connect *client*'s relayed connection to *target* and start pumping both directions."""
        try:
            server = socket.create_connection(target, timeout=5)
            server.settimeout(None)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            conn = RelayConn(kind, len(self.conns), client, server, self.record)
            self.conns.append(conn)
        for src, dst, d in ((client, server, "c2s"), (server, client, "s2c")):
            t = threading.Thread(target=self._pump, args=(conn, src, dst, d), name=f"relay-{kind}-{d}", daemon=True)
            self._threads.append(t)
            t.start()

    def _fire(self, fault: Fault) -> None:
        with self.lock:
            targets = [c for c in self.conns if c.kind == fault.target and not c.closed]
            for c in targets:
                if fault.action == "stall":
                    c.stalled.add(fault.direction)
                elif fault.action == "half_close":
                    # A forged FIN: the receiver sees the stream end; what the sender sends after it is
                    # not acknowledged (not read: back-pressure), until the receiver closes and the
                    # connection is reset.
                    c.blocked.add(fault.direction)
                    c.stalled.add(fault.direction)
        for c in targets:
            if fault.action == "close":
                c.kill()
            elif fault.action == "half_close":
                receiver = c.server if fault.direction == "c2s" else c.client
                with contextlib.suppress(OSError):
                    receiver.shutdown(socket.SHUT_WR)
        self.fired.set()

    def _pump(self, conn: RelayConn, src: socket.socket, dst: socket.socket, d: str) -> None:
        other = "s2c" if d == "c2s" else "c2s"
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                if d in conn.stalled:
                    conn.killed.wait()  # a black hole: read nothing more, until the connection dies
                    return
                try:
                    n = src.recv_into(buf)
                except OSError:
                    return
                if n == 0:
                    # EOF: pass it on. When the other direction is half-closed or stalled as well, the
                    # connection is dead both ways (a real peer would answer further data with a reset).
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    if other in conn.blocked or other in conn.stalled:
                        conn.kill()
                    return
                head = n
                fire: Fault | None = None
                with self.lock:
                    conn.received[d] += n
                    if conn.data is not None:
                        conn.data[d] += view[:n]
                    f = self.fault
                    if f is not None and not self.fired.is_set() and d == "c2s" and conn.kind == f.trigger:
                        room = f.at - self._trigger_count
                        self._trigger_count += n
                        if room <= n:
                            head, fire = max(room, 0), f
                    blocked = d in conn.blocked or d in conn.stalled or conn.closed
                try:
                    if fire is None:
                        if not blocked:
                            dst.sendall(view[:n])
                        continue
                    if head and not blocked:
                        dst.sendall(view[:head])
                    self._fire(fire)
                    with self.lock:
                        blocked = d in conn.blocked or d in conn.stalled or conn.closed
                    if not blocked and head < n:
                        dst.sendall(view[head:n])
                except OSError:
                    conn.kill()
                    return
        finally:
            with self.lock:
                conn.pumps_left -= 1
                done = conn.pumps_left == 0
            if done:
                conn.kill()


# =============================================================================== FTPS servers


class QuotaFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
    """A filesystem whose writes fail with ``errno_`` once ``limit`` bytes were written in total.

    Like a real full disk, the write that crosses the limit stores what fits, then fails.
    """

    limit: ClassVar[int | None] = None
    errno_: ClassVar[int] = errno.ENOSPC
    used: ClassVar[list[int]]

    def open(self, filename: str, mode: str) -> Any:
        f = super().open(filename, mode)
        if "w" in mode or "a" in mode or "+" in mode:
            return _QuotaFile(f, type(self))
        return f


class _QuotaFile:
    def __init__(self, f: Any, fs: type[QuotaFS]) -> None:
        self._f = f
        self._fs = fs

    def write(self, data: bytes) -> int:
        limit = self._fs.limit
        used = self._fs.used
        if limit is not None and used[0] + len(data) > limit:
            room = max(limit - used[0], 0)
            if room:
                self._f.write(data[:room])
                self._f.flush()
                used[0] += room
            raise OSError(self._fs.errno_, os.strerror(self._fs.errno_))
        used[0] += len(data)
        return int(self._f.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class StorageErrorDTPHandler(ReuseRequiredDTPHandler):
    """Answer a failed file write with the reply a quota module / full disk gives (not pyftpdlib's 426)."""

    #: errno -> reply
    replies: ClassVar[dict[int, str]] = {
        errno.EDQUOT: "552 Requested file action aborted: exceeded storage allocation (quota).",
        errno.ENOSPC: "452 Requested action not taken: insufficient storage space.",
    }

    def handle_error(self) -> None:
        try:
            raise
        except _FileReadWriteError as err:
            # pyftpdlib wraps the OSError: _FileReadWriteError(err) has no errno of its own.
            cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
            code = cause.errno or errno.EIO
            reply = self.replies.get(code, f"451 {os.strerror(code)}.")
            self._resp = (reply, ftpd_logger.info)
            DTPHandler.close(self)  # not the TLS shutdown dance: the file write failed, the reply matters
        except Exception:
            super().handle_error()


def _relay_passive_ports(relay: Relay, count: int, data_target: tuple[str, int] | None) -> list[int]:
    """Open *count* relay listeners on ``127.0.0.1`` whose ports are also free on :data:`SERVER_HOST`.

    Each listener is bound (and kept) before its port is handed to the server, so no other socket
    can take the port in between (a probe-then-bind left that window open: ``EADDRINUSE`` under load).
    A listener whose port turns out to be taken on the server's address stays open, unused.
    """
    ports: list[int] = []
    for _ in range(count * 20):
        port = relay.add_route("data", data_target or (SERVER_HOST, 0))  # port 0: the listener's own port
        probe = socket.socket()
        try:
            probe.bind((SERVER_HOST, port))
        except OSError:
            continue
        finally:
            probe.close()
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("could not find free passive ports on both loopback addresses")


@contextlib.contextmanager
def run_relayed_pyftpd(
    root: Path,
    pki: ServerPKI,
    *,
    tls_mode: str = "explicit",
    relay: Relay | None = None,
    perm: str = "elradfmwMT",
    quota: int | None = None,
    quota_errno: int = errno.EDQUOT,
    allow_prot_p: bool = True,
    offer_tls: bool = True,
    passive_count: int = 6,
    login: str = "ftpuser",
    password: str | None = None,
    data_target: tuple[str, int] | None = None,
) -> Iterator[tuple[FTPSServer, Relay]]:
    """Start pyftpdlib on ``127.0.0.2`` behind a :class:`Relay` that also carries every data connection.

    :returns: the server as the client sees it (``host``/``port`` are the relay's) and the relay.
    :param quota: total bytes the server stores before writes fail with *quota_errno* (reply ``552`` for
        ``EDQUOT``, ``452`` for ``ENOSPC``).
    :param perm: pyftpdlib permissions of the user (``"elr"``: read-only, STOR -> ``550``).
    :param data_target: send the data connections there instead of to the server (a man in the middle
        on the data path only: the control connection stays genuine).
    """
    own_relay = relay is None
    relay = relay or Relay()
    try:
        ports = _relay_passive_ports(relay, passive_count, data_target)
    except BaseException:
        if own_relay:
            relay.close()
        raise
    fs_class = type("QuotaFS_", (QuotaFS,), {"limit": quota, "errno_": quota_errno, "used": [0]})
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            run_pyftpd(
                root,
                pki,
                tls_mode=tls_mode,
                offer_tls=offer_tls,
                allow_prot_p=allow_prot_p,
                login=login,
                password=password,
                host=SERVER_HOST,
                perm=perm,
                passive_ports=ports,
                handler_attrs={
                    "banner": f"relayed pyftpdlib {tls_mode} ready",
                    "abstracted_fs": fs_class,
                    "dtp_handler": StorageErrorDTPHandler,
                    "timeout": 60,
                },
            )
        )
        if own_relay:
            stack.callback(relay.close)  # before the server stops
        cport = relay.add_route("control", (SERVER_HOST, server.port))
        yield dataclasses.replace(server, host=HOST, port=cport, name=f"relayed_pyftpd_{tls_mode}"), relay


# =============================================================================== SFTP servers


#: What :func:`run_custom_sftp` yields: an :class:`SFTPServer` that also counts TCP connections and every
#: authentication request.
CustomSFTPServer = AsyncsshServer


def run_custom_sftp(root: Path, keys: ClientKeys, **options: Any) -> contextlib.AbstractContextManager[AsyncsshServer]:
    """Start an asyncssh SFTP server (chroot *root*) with a custom SFTP server class and SSH options
    (``sftp_server``, ``host_key``, ``host_key_algorithms``, ``listen_options``, ``login``: see
    :func:`tests.servers.sftp_asyncssh.run_asyncssh`)."""
    return run_asyncssh(root, keys, name="custom_sftp", **options)


class QuotaSFTPServer(asyncssh.SFTPServer):
    """Writes fail once ``limit`` bytes were stored in total: ``FX_FAILURE`` like OpenSSH on ENOSPC
    (SFTP v3 has no "disk full" status); ``statvfs`` then reports no free blocks, as a full disk does."""

    limit: ClassVar[int] = 1 << 20
    used: ClassVar[list[int]] = [0]

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if self.used[0] + len(data) > self.limit:
            room = max(self.limit - self.used[0], 0)
            if room:
                super().write(file_obj, offset, data[:room])
                self.used[0] += room
            raise asyncssh.SFTPFailure("No space left on device")
        self.used[0] += len(data)
        return int(super().write(file_obj, offset, data))

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        return asyncssh.SFTPVFSAttrs(
            bsize=4096,
            frsize=4096,
            blocks=256,
            bfree=0,
            bavail=0,
            files=100,
            ffree=90,
            favail=90,
            fsid=1,
            flags=0,
            namemax=255,
        )


def quota_sftp_server(limit: int) -> type[QuotaSFTPServer]:
    """A :class:`QuotaSFTPServer` class with its own byte counter."""
    return type("QuotaSFTP", (QuotaSFTPServer,), {"limit": limit, "used": [0]})


class DiskQuotaSFTPServer(asyncssh.SFTPServer):
    """Writes fail with ``FX_FAILURE`` ("No space left on device") once the files under ``root`` would hold
    more than ``limit`` bytes: unlike :class:`QuotaSFTPServer`, a removed file frees its room, as on a disk."""

    limit: ClassVar[int] = 1 << 20
    root: ClassVar[Path]

    def _used(self) -> int:
        # Blocks, not sizes: a copy-data into a file at a far offset leaves a hole that holds no room.
        return sum(p.stat().st_blocks * 512 for p in self.root.rglob("*") if p.is_file())

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        room = self.limit - self._used()
        if len(data) > room:
            # As a disk does: what fits is written, then ENOSPC (OpenSSH answers a bare "Failure").
            if room > 0:
                super().write(file_obj, offset, data[:room])
            raise asyncssh.SFTPFailure("No space left on device")
        return int(super().write(file_obj, offset, data))

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        free = max(self.limit - self._used(), 0) // 4096
        return asyncssh.SFTPVFSAttrs(
            bsize=4096, frsize=4096, blocks=self.limit // 4096, bfree=free, bavail=free,
            files=100, ffree=90, favail=90, fsid=1, flags=0, namemax=255,
        )


def disk_quota_sftp_server(limit: int, root: Path) -> type[DiskQuotaSFTPServer]:
    """A :class:`DiskQuotaSFTPServer` class for the server rooted at *root*."""
    return type("DiskQuotaSFTP", (DiskQuotaSFTPServer,), {"limit": limit, "root": root})


class ReadOnlySFTPServer(asyncssh.SFTPServer):
    """Opening a file for writing is refused with ``FX_PERMISSION_DENIED`` (as for a read-only directory;
    the test server runs as root, so a chmod would not stop it)."""

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_APPEND):
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        return super().open(path, pflags, attrs)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("Permission denied")


class SilentSFTPServer(asyncssh.SFTPServer):
    """The SFTP session starts, then no request on a file is ever answered (a hung server)."""

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# =============================================================================== scripted hostile servers


class Session:
    """One connection to a :class:`ScriptServer`; helpers for scripts."""

    def __init__(self, server: ScriptServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.stop = server.stopping
        self.received = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, text: str) -> None:
        self.send(text.encode() + b"\r\n")

    def readline(self) -> str | None:
        return read_line(self.sock, limit=65536, record=self.received.extend)

    def start_tls(self) -> bool:
        assert self.server.tls_context is not None
        try:
            self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
        except (OSError, ssl.SSLError):
            return False
        return True

    def drip(self, data: Iterable[int], interval: float) -> None:
        """Send one byte every *interval* seconds until the client leaves or the server stops."""
        for b in data:
            if self.stop.wait(interval):
                return
            try:
                self.sock.sendall(bytes([b]))
            except OSError:
                return

    def flood(self, make: Callable[[int], bytes]) -> None:
        """Send ``make(i)`` for i = 0, 1, ... as fast as the client reads, until it leaves or we stop."""
        i = 0
        while not self.stop.is_set():
            try:
                self.sock.sendall(make(i))
            except OSError:
                return
            i += 1

    def hold(self) -> None:
        """Say nothing until the client leaves or the server stops (draining what it sends)."""
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                return
            if not chunk:
                return
            self.received += chunk


class ScriptServer:
    """Run ``script(session)`` for each connection on ``127.0.0.1:0``; stop cleanly on exit.

    :param tls_context: server context for scripts that call :meth:`Session.start_tls`.
    """

    def __init__(self, script: Callable[[Session], None], *, tls_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls_context = tls_context
        self.stopping = threading.Event()
        self.listener = socket.create_server((HOST, 0))
        self.host = HOST
        self.port = int(self.listener.getsockname()[1])
        self.sessions: list[Session] = []
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._serve, name="script-server", daemon=True)
        self._accept_thread.start()
        #: extra sockets (data listeners) to close at stop
        self.extra: list[socket.socket] = []

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(bytes(s.received) for s in self.sessions)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            session = Session(self, sock)
            with self._lock:
                self.sessions.append(session)
                self.connections += 1
            t = threading.Thread(target=self._run, args=(session,), name="script-session", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, session: Session) -> None:
        try:
            self.script(session)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                session.sock.close()

    def close(self) -> None:
        self.stopping.set()
        with self._lock:
            socks = [self.listener, *(s.sock for s in self.sessions), *self.extra]
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._accept_thread.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> ScriptServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_server_context(pki: ServerPKI) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.cert_path, pki.key_path)
    return ctx


#: How a scripted FTP server misbehaves when it reaches its trigger.
FTP_MISBEHAVIOURS = ("silent", "drip", "endless", "garbage", "overlong", "binary", "bad_code")


def ftp_script(
    *,
    implicit: bool = False,
    at: str = "greeting",
    how: str = "silent",
    drip_interval: float = 0.3,
    echo_password: bool = False,
) -> Callable[[Session], None]:
    """An FTPS server that behaves until it receives command *at* (or the greeting), then misbehaves *how*.

    ``at="greeting"``: the misbehaviour replaces the 220 greeting (after the TLS handshake when implicit).
    The replies before it are those of a sane FTPS server (AUTH TLS 234, login, PBSZ/PROT, EPSV...).
    With *echo_password*, a wrong-password reply echoes the PASS argument (a server bug that must not
    reach our messages).
    """
    if how not in FTP_MISBEHAVIOURS:
        raise ValueError(how)

    def misbehave(s: Session, code: str) -> None:
        if how == "silent":
            s.hold()
        elif how == "drip":
            # Each byte arrives well within any per-read timeout; the reply line never ends.
            s.drip(_repeat(f"{code} slowly".encode() + b"." * 60), drip_interval)
        elif how == "endless":
            s.send(f"{code}-here is a reply that never ends\r\n".encode())
            s.flood(lambda i: f"{code}-line {i} of an endless reply\r\n".encode())
        elif how == "garbage":
            s.send(b"hello, I am not an FTP server\r\n")
            s.hold()
        elif how == "overlong":
            s.send(code.encode() + b" " + b"A" * 100_000 + b"\r\n")
            s.hold()
        elif how == "binary":
            s.send(bytes(range(256)) * 4 + b"\r\n")
            s.hold()
        elif how == "bad_code":
            s.send(b"999 what\r\n")
            s.hold()

    def script(s: Session) -> None:
        if implicit and not s.start_tls():
            return
        if at == "greeting":
            misbehave(s, "220")
            return
        s.line("220 hostile but correct so far")
        data_lst: socket.socket | None = None
        while True:
            line = s.readline()
            if line is None:
                return
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == at:
                misbehave(s, {"EPSV": "229", "PASV": "227", "STOR": "150", "RETR": "150"}.get(verb, "200"))
                return
            if verb == "AUTH":
                s.line("234 AUTH TLS ok")
                if not s.start_tls():
                    return
            elif verb == "USER":
                s.line("331 Password required")
            elif verb == "PASS":
                if echo_password:
                    s.line(f"530 Login incorrect: user rejected with password {arg}")
                else:
                    s.line("230 Logged in")
            elif verb in ("PBSZ", "PROT", "TYPE", "OPTS", "NOOP"):
                s.line("200 OK")
            elif verb == "FEAT":
                s.send(b"211-Features:\r\n EPSV\r\n UTF8\r\n PBSZ\r\n PROT\r\n211 End\r\n")
            elif verb == "PWD":
                s.line('257 "/" is the current directory')
            elif verb == "EPSV":
                if data_lst is None:
                    data_lst = socket.create_server((HOST, 0))
                    s.server.extra.append(data_lst)
                s.line(f"229 Entering Extended Passive Mode (|||{data_lst.getsockname()[1]}|)")
            elif verb == "QUIT":
                s.line("221 bye")
                return
            else:
                s.line("550 No such file")

    return script


def _repeat(b: bytes) -> Iterator[int]:
    while True:
        yield from b


#: How a scripted SSH server misbehaves.
SSH_MISBEHAVIOURS = (
    "silent",
    "drip_banner",
    "garbage_banner",
    "endless_prebanner",
    "garbage_after_banner",
    "huge_packet",
)


def ssh_script(how: str, *, drip_interval: float = 0.3) -> Callable[[Session], None]:
    """A hostile SSH server."""
    if how not in SSH_MISBEHAVIOURS:
        raise ValueError(how)

    def script(s: Session) -> None:
        if how == "silent":
            s.hold()
        elif how == "drip_banner":
            s.drip(_repeat(b"SSH-2.0-drip" + b"x" * 200), drip_interval)
        elif how == "garbage_banner":
            s.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        elif how == "endless_prebanner":
            s.flood(lambda i: f"pre-banner line {i}\r\n".encode())
        elif how == "garbage_after_banner":
            s.send(b"SSH-2.0-hostile_1.0\r\n" + secrets.token_bytes(4096))
            s.hold()
        elif how == "huge_packet":
            s.send(b"SSH-2.0-hostile_1.0\r\n" + b"\xff\xff\xff\xf0" + b"\x04" + b"\x00" * 64)
            s.hold()

    return script


# =============================================================================== leak detection


def find_content(capture: bytes, content: bytes, width: int = 64) -> int | None:
    """Return an offset of *capture* where *width* consecutive bytes of *content* start, or None.

    Every offset of the capture and every offset of the content is covered: any *width*-byte run of
    the content (width >= 15) contains one of its 8-byte words at an offset divisible by 8; the capture
    is read as 8-byte words at each of the 8 residues (an ``array``, tested against the words in C),
    and each candidate is extended byte by byte to see whether the common run reaches *width*.
    """
    import array

    if width < 15:
        raise ValueError("width must be at least 15")
    whole = len(content) // 8 * 8
    cwords = array.array("Q")
    cwords.frombytes(content[:whole])
    words: dict[int, int] = {}
    for i, w in enumerate(cwords):
        words.setdefault(w, i * 8)
    keys = words.keys()
    for r in range(8):
        usable = (len(capture) - r) // 8 * 8
        if usable <= 0:
            continue
        buf = array.array("Q")
        buf.frombytes(capture[r : r + usable])
        if keys.isdisjoint(buf):
            continue
        for idx, w in enumerate(buf):
            p = words.get(w)
            if p is None:
                continue
            ci = r + idx * 8
            back = 0
            while ci - back > 0 and p - back > 0 and capture[ci - back - 1] == content[p - back - 1]:
                back += 1
            fwd = 8
            while ci + fwd < len(capture) and p + fwd < len(content) and capture[ci + fwd] == content[p + fwd]:
                fwd += 1
            if back + fwd >= width:
                return ci - back
    return None


def secret_needles(**secrets_: str | bytes | None) -> dict[str, bytes]:
    """Byte strings to look for: each secret, and each line (>= 16 chars) of multi-line ones (PEM bodies)."""
    needles: dict[str, bytes] = {}
    for name, value in secrets_.items():
        if not value:
            continue
        raw = value.encode() if isinstance(value, str) else value
        needles[name] = raw
        if b"\n" in raw:
            for i, ln in enumerate(raw.splitlines()):
                ln = ln.strip()
                if len(ln) >= 16 and not ln.startswith(b"-----"):
                    needles[f"{name}[line {i}]"] = ln
    return needles


def private_key_material(key_text: str, passphrase: str | None = None) -> bytes:
    """The raw private scalar of an OpenSSH private key (what would leak if a client sent it decoded)."""
    from cryptography.hazmat.primitives import serialization

    key = asyncssh.import_private_key(key_text, passphrase)
    pyca = key.pyca_key
    try:
        return bytes(
            pyca.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        )
    except ValueError:  # not an ed25519/x25519 key: the DER encoding contains the scalar
        return bytes(
            pyca.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def leaks_in(haystack: bytes | str, needles: dict[str, bytes]) -> list[str]:
    """Names of the *needles* found in *haystack*."""
    hay = haystack.encode("utf-8", "surrogateescape") if isinstance(haystack, str) else haystack
    return [name for name, n in needles.items() if n in hay]


# =============================================================================== threads and timing


def thread_snapshot() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def leftover_threads(before: set[int], *, grace: float = 3.0, ignore: Sequence[threading.Thread] = ()) -> list[str]:
    """Threads alive now that were not in *before*, after waiting up to *grace* s for them to end."""
    ignored = {t.ident for t in ignore}
    deadline = time.monotonic() + grace
    while True:
        new = [t for t in threading.enumerate() if t.ident not in before and t.ident not in ignored and t.is_alive()]
        if not new or time.monotonic() > deadline:
            return [t.name for t in new]
        # Polling for threads that are finishing on their own (a loop thread joining), bounded by the grace.
        time.sleep(0.05)


@dataclass
class Bounded:
    """Outcome of :func:`run_bounded`."""

    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    hung: bool = False
    thread: threading.Thread | None = None


def run_bounded(fn: Callable[[], Any], limit: float) -> Bounded:
    """Run *fn* in a thread; wait at most *limit* s. A call still running then is reported ``hung``
    (the test fails; the hostile server's shutdown unblocks the thread afterwards)."""
    out = Bounded()
    done = threading.Event()

    def target() -> None:
        t0 = time.monotonic()
        try:
            out.result = fn()
        except BaseException as exc:
            out.error = exc
        finally:
            out.seconds = time.monotonic() - t0
            done.set()

    t = threading.Thread(target=target, name="bounded-call", daemon=True)
    out.thread = t
    started = time.monotonic()
    t.start()
    if not done.wait(limit):
        out.hung = True
        out.seconds = time.monotonic() - started
    else:
        t.join(5)
    return out


# =============================================================================== certificates


def issue_pki(
    directory: Path,
    *identities: str,
    ca: Any = None,
    expired: bool = False,
    self_signed: bool = False,
    rsa: bool = False,
) -> ServerPKI:
    """A server certificate for *identities* as a :class:`ServerPKI`.

    :param ca: the ``trustme.CA`` to issue from (e.g. the session's, so only the *name* or the *date*
        is wrong); default: a fresh CA nobody trusts.
    :param expired: valid from 30 days ago until yesterday.
    :param self_signed: no CA at all: the leaf signs itself (``ca_pem`` is the leaf).
    """
    if not self_signed:
        return make_pki(
            directory, identities=identities, ca=ca, organization="sectransfer attacker CA", expired=expired, rsa=rsa
        )
    import datetime
    import hashlib
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "server.key"
    cert_path = directory / "server.pem"
    ca_path = directory / "ca.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identities[0])])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for ident in identities:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ident)))
        except ValueError:
            sans.append(x509.DNSName(ident))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    ca_path.write_bytes(pem)
    write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    no_ca: Any = None  # nobody issued the leaf
    return ServerPKI(
        ca=no_ca,
        ca_pem=pem.decode(),
        ca_path=ca_path,
        cert_path=cert_path,
        key_path=key_path,
        cert_fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def starttls_stripper(target: tuple[str, int]) -> Callable[[Session], None]:
    """A man in the middle that removes ``AUTH TLS``: it answers it ``500`` itself and strips ``AUTH``
    from ``FEAT``, relaying every other line to the real server *target* (so a client that carried on
    would log in, in clear, to the real server through the attacker)."""

    def script(s: Session) -> None:
        up = socket.create_connection(target, timeout=10)
        s.server.extra.append(up)
        upf = up.makefile("rb")

        def relay_reply(strip_auth: bool = False) -> bool:
            while True:
                raw = upf.readline(65536)
                if not raw:
                    return False
                if strip_auth and b"AUTH" in raw.upper() and raw[:1] == b" ":
                    continue
                s.send(raw)
                if len(raw) >= 4 and raw[:3].isdigit() and raw[3:4] == b" ":
                    return True

        try:
            if not relay_reply():
                return
            while True:
                line = s.readline()
                if line is None:
                    return
                verb = line.split(" ", 1)[0].upper()
                if verb == "AUTH":
                    s.line("500 'AUTH TLS': command not understood.")
                    continue
                up.sendall(line.encode() + b"\r\n")
                if not relay_reply(strip_auth=verb == "FEAT"):
                    return
        finally:
            upf.close()
            up.close()

    return script


def can_mount_tmpfs(where: Path, size: str = "1m") -> bool:
    """Mount a tmpfs of *size* at *where* (a real, tiny file system that fills up); False without root/mount."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0
