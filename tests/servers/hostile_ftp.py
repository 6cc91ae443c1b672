"""Hostile and broken FTP servers for negative tests; each records every byte it receives.

These are deliberately small scripted servers (a thread per connection, on
``127.0.0.1:0``), not real FTP daemons: each one misbehaves in exactly one way
that a client must survive without leaking anything. What they received is kept
so a test can prove that no ``USER``/``PASS`` (or password) left the client in
clear text:

* :attr:`HostileFTPServer.clear_bytes` — every byte received *before* TLS was
  established on the control connection (raw, as seen on the wire);
* :attr:`HostileFTPServer.commands` — every command line received, in clear or
  (after a successful handshake) decrypted, tagged with which it was;
* :attr:`HostileFTPServer.data_connections` — connections to its passive port.

Behaviours (``behaviour=``):

``"no_auth_tls"``
    A plain FTP server: ``AUTH`` is answered ``502 Command not implemented``;
    ``USER``/``PASS`` would be accepted (bait).
``"strip_auth"``
    A man in the middle that strips TLS: ``AUTH TLS`` gets ``500 AUTH not
    understood``, ``FEAT`` lists no ``AUTH``; bait as above.
``"fake_auth"``
    Answers ``AUTH TLS`` with ``234`` but never starts TLS (replies in clear):
    the client's handshake must fail before it sends anything else.
``"tls"``
    A TLS server with whatever certificate it is given (untrusted CA, wrong
    host name, expired, not pinned...): ``AUTH TLS`` -> ``234`` -> handshake
    (or TLS at once when ``implicit``); after it, ``USER``/``PASS``/``PBSZ``/
    ``PROT`` are accepted.
``"tls11_only"``
    As ``"tls"``, but the server context allows TLS 1.0-1.1 only (OpenSSL 3 needs
    ``@SECLEVEL=0`` for that).
``"refuse_prot_p"``
    As ``"tls"``, but ``PROT P`` is answered ``536 Requested PROT level not
    supported``; a passive port is offered (and records connections) so a client
    that carried on regardless would be caught.
``"pasv_elsewhere"``
    As ``"tls"``, with ``EPSV`` refused and ``PASV`` naming ``127.0.0.2`` (a
    loopback address it does not listen on) and the port of a TLS data listener
    on ``127.0.0.1``; ``LIST`` sends one ``ls -l`` line over TLS. A client that
    trusts the address in the ``227`` reply fails to connect.

``"ragged_eof"``
    As ``"tls"``, but ``RETR`` sends its data and then closes the TCP connection
    *without* a TLS ``close_notify`` (what a truncation attack looks like), and
    still answers ``226``. A client must not accept the file as complete.

With ``listing=[...]`` (TLS behaviours), ``FEAT`` advertises ``MLST`` and ``MLSD``
sends exactly those lines (for hostile listings: ``../x``, ``a/b``).

With ``listing_how=`` (TLS behaviours; ``FEAT`` advertises ``MLST``), ``MLSD`` misbehaves on the data
connection, then answers ``426`` once the client has closed it (``226`` if it read everything):

``"drip"``
    An endless listing, one byte every ``drip_interval`` seconds (each read is quick; the whole never ends).
``"flood_bytes"``
    Lines with 4,000-character names as fast as the client reads, up to ``flood_total`` bytes.
``"flood_entries"``
    Short lines (``type=file;size=1; fN``) as fast as the client reads, up to ``flood_total`` bytes.

:attr:`HostileFTPServer.listing_sent` counts the listing bytes the server managed to send.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["BEHAVIOURS", "HostileFTPServer", "RecordedCommand", "read_line", "run_hostile_ftp", "tls11_server_context"]

HOST = "127.0.0.1"
BEHAVIOURS = (
    "no_auth_tls",
    "strip_auth",
    "fake_auth",
    "tls",
    "tls11_only",
    "refuse_prot_p",
    "pasv_elsewhere",
    "ragged_eof",
)
_IO_TIMEOUT = 10.0


def read_line(sock: socket.socket, *, limit: int, record: Callable[[bytes], None]) -> str | None:
    """Read one line a byte at a time (nothing after it is consumed: a TLS handshake may follow), passing
    each byte to *record*; None at EOF, on an error, or past *limit* bytes."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        try:
            chunk = sock.recv(1)
        except (OSError, ssl.SSLError):
            return None
        if not chunk:
            return None
        record(chunk)
        buf += chunk
        if len(buf) > limit:
            return None
    return buf.decode("utf-8", "replace").rstrip("\r\n")


@dataclass(frozen=True)
class RecordedCommand:
    """One command line as received; ``encrypted`` says whether it arrived inside TLS."""

    line: str
    encrypted: bool


def tls11_server_context() -> ssl.SSLContext:
    """A server context that negotiates TLS 1.0/1.1 only (needs ``@SECLEVEL=0`` on OpenSSL 3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated (that is the point)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


@dataclass
class HostileFTPServer:
    """A running hostile server; see the module docstring."""

    behaviour: str
    host: str
    port: int
    implicit: bool
    clear_bytes: bytearray = field(default_factory=bytearray)
    commands: list[RecordedCommand] = field(default_factory=list)
    data_connections: list[tuple[str, int]] = field(default_factory=list)
    #: TLS handshake errors seen by the server (the client's alert, e.g. "unknown ca").
    handshake_errors: list[str] = field(default_factory=list)
    #: Number of control connections accepted.
    connections: int = 0
    #: MLSD lines to send (None: no MLST/MLSD offered).
    listing: list[str] | None = None
    #: How MLSD misbehaves (see the module docstring), with its parameters.
    listing_how: str | None = None
    drip_interval: float = 0.2
    flood_total: int = 16 * 1024 * 1024
    #: The reply after a hostile listing the client abandoned: ``"426"`` (default) or ``"226"`` (a server
    #: that had handed the whole listing to its socket before the client closed).
    listing_final: str = "426"
    #: Listing bytes sent so far (all MLSD transfers).
    listing_sent: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _active: int = field(default=0, repr=False)

    def wait_sessions_done(self, timeout: float = 10.0) -> None:
        """Block until every control connection accepted so far has ended (its recording is complete).

        Call it after the client has closed or failed, before asserting on what was recorded.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: self._active == 0, timeout=timeout):
                raise TimeoutError(f"hostile server still has {self._active} session(s) after {timeout} s")

    def clear_text(self) -> str:
        """What arrived in clear, decoded leniently (for messages)."""
        return self.clear_bytes.decode("latin-1")

    def sent_in_clear(self, *needles: str) -> list[str]:
        """Return which of *needles* (``"USER"``, ``"PASS"``, a password...) appear in the clear bytes."""
        clear = bytes(self.clear_bytes)
        return [n for n in needles if n.encode() in clear]

    def command_names(self, *, encrypted: bool | None = None) -> list[str]:
        """Command verbs received (optionally only those in clear / only those inside TLS)."""
        return [c.line.split(" ", 1)[0].upper() for c in self.commands if encrypted is None or c.encrypted is encrypted]


class _Session:
    """One control connection."""

    def __init__(self, server: _Runner, sock: socket.socket) -> None:
        self.server = server
        self.info = server.info
        self.sock: socket.socket = sock
        self.encrypted = False
        self.prot_p = False

    # -- I/O ---------------------------------------------------------------

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def readline(self) -> str | None:
        line = read_line(self.sock, limit=8192, record=self._record_clear)
        if line is not None:
            with self.server.lock:
                self.info.commands.append(RecordedCommand(line, self.encrypted))
        return line

    def _record_clear(self, chunk: bytes) -> None:
        if not self.encrypted:
            with self.server.lock:
                self.info.clear_bytes += chunk

    def start_tls(self) -> bool:
        try:
            self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            with self.server.lock:
                self.info.handshake_errors.append(str(exc))
            return False
        self.encrypted = True
        return True

    def drain_clear(self) -> None:
        """After a failed handshake, keep recording whatever else arrives in clear."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(2.0)
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return
                with self.server.lock:
                    self.info.clear_bytes += chunk

    # -- protocol ------------------------------------------------------------

    def run(self) -> None:
        behaviour = self.info.behaviour
        tls_behaviours = ("tls", "tls11_only", "refuse_prot_p", "pasv_elsewhere", "ragged_eof")
        if self.info.implicit:
            # Record what the client sends before the handshake (only a ClientHello is fine).
            if not self.start_tls():
                self.drain_clear()
                return
        self.send(f"220 hostile server ({behaviour}) ready")
        while True:
            line = self.readline()
            if line is None:
                return
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "AUTH":
                if behaviour == "no_auth_tls":
                    self.send("502 Command not implemented.")
                elif behaviour == "strip_auth":
                    self.send("500 AUTH not understood.")
                elif behaviour == "fake_auth":
                    self.send("234 AUTH TLS successful.")
                    # ...and carry on in clear: the client's ClientHello is answered with an FTP reply.
                    self.send("500 Unknown command.")
                    self.drain_clear()
                    return
                elif behaviour in tls_behaviours and not self.encrypted:
                    self.send("234 AUTH TLS successful.")
                    if not self.start_tls():
                        self.drain_clear()
                        return
                else:
                    self.send("503 Already using TLS.")
            elif verb == "FEAT":
                feats = [] if behaviour in ("no_auth_tls", "strip_auth") else [" AUTH TLS", " PBSZ", " PROT"]
                if self.info.listing is not None or self.info.listing_how is not None:
                    feats.append(" MLST type*;size*;")
                self.send("211-Features:")
                for feat in [*feats, " EPSV", " PASV", " UTF8"]:
                    self.send(feat)
                self.send("211 End")
            elif verb == "USER":
                self.send("331 Password required.")
            elif verb == "PASS":
                self.send("230 Login successful.")
            elif verb == "PBSZ":
                self.send("200 PBSZ=0")
            elif verb == "PROT":
                if behaviour == "refuse_prot_p":
                    self.send("536 Requested PROT level not supported by mechanism.")
                else:
                    self.prot_p = arg.strip().upper() == "P"
                    self.send("200 PROT now Private." if self.prot_p else "200 PROT now Clear.")
            elif verb == "SIZE":
                self.send("213 1")
            elif verb in ("TYPE", "OPTS", "NOOP"):
                self.send("200 OK.")
            elif verb == "PWD":
                self.send('257 "/" is the current directory.')
            elif verb == "EPSV" and behaviour != "pasv_elsewhere":
                self.send(f"229 Entering Extended Passive Mode (|||{self.server.data_port}|)")
            elif verb == "PASV":
                port = self.server.data_port
                host = "127,0,0,2" if behaviour == "pasv_elsewhere" else "127,0,0,1"
                self.send(f"227 Entering Passive Mode ({host},{port >> 8},{port & 255}).")
            elif verb in ("NLST", "LIST", "MLSD", "RETR", "STOR"):
                self.transfer(verb)
            elif verb == "QUIT":
                self.send("221 Goodbye.")
                return
            else:
                self.send("502 Command not implemented.")

    def transfer(self, verb: str) -> None:
        conn = self.server.accept_data()
        if conn is None:
            self.send("425 Can't open data connection.")
            return
        self.send("150 Here comes the data.")
        try:
            if self.prot_p:
                conn = self.server.tls_context.wrap_socket(conn, server_side=True)
            if verb == "MLSD" and self.info.listing_how is not None:
                if not self.misbehave_listing(conn) and self.info.listing_final == "426":
                    self.send("426 Connection closed; transfer aborted.")
                    return
            elif verb == "MLSD":
                conn.sendall("".join(f"{ln}\r\n" for ln in self.info.listing or []).encode())
            elif verb == "LIST":
                conn.sendall(b"-rw-r--r--    1 0        0               1 Nov 28 09:01 file.txt\r\n")
            elif verb == "NLST":
                conn.sendall(b"file.txt\r\n")
            elif verb == "RETR":
                conn.sendall(b"x" * 100_000)
                if self.info.behaviour == "ragged_eof" and isinstance(conn, ssl.SSLSocket):
                    # Close the TCP connection under TLS: no close_notify.
                    raw = socket.socket(fileno=conn.detach())
                    raw.close()
                    self.send("226 Transfer complete.")
                    return
            else:
                while conn.recv(65536):
                    pass
            if isinstance(conn, ssl.SSLSocket):
                with contextlib.suppress(OSError):
                    conn = conn.unwrap()
        except (OSError, ssl.SSLError):
            self.send("426 Connection closed; transfer aborted.")
            return
        finally:
            conn.close()
        self.send("226 Transfer complete.")

    def misbehave_listing(self, conn: socket.socket) -> bool:
        """Send a hostile listing (see the module docstring); False once the client closed the connection."""
        info = self.info
        stopping = self.server.stopping
        try:
            if info.listing_how == "drip":
                i = 0
                while not stopping.wait(info.drip_interval):
                    line = f"type=file;size=1; drip{i}.txt\r\n".encode()
                    for byte in line:
                        if stopping.wait(info.drip_interval):
                            return False
                        conn.sendall(bytes([byte]))
                        with self.server.lock:
                            info.listing_sent += 1
                    i += 1
                return False
            i = 0
            while info.listing_sent < info.flood_total and not stopping.is_set():
                if info.listing_how == "flood_bytes":
                    chunk = "".join(f"type=file;size=1; {i + k:08d}{'x' * 4000}\r\n" for k in range(16))
                else:
                    chunk = "".join(f"type=file;size=1; f{i + k}\r\n" for k in range(2000))
                data = chunk.encode()
                conn.sendall(data)
                with self.server.lock:
                    info.listing_sent += len(data)
                i += 2000
        except (OSError, ssl.SSLError):
            return False
        return True


class _Runner:
    def __init__(self, info: HostileFTPServer, tls_context: ssl.SSLContext | None) -> None:
        self.info = info
        self.lock = threading.Lock()
        self.tls_context = tls_context or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listener = socket.create_server((HOST, 0))
        self.data_listener = socket.create_server((HOST, 0))
        self.data_listener.settimeout(_IO_TIMEOUT)
        self.data_port = int(self.data_listener.getsockname()[1])
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sessions: list[_Session] = []

    def accept_data(self) -> socket.socket | None:
        try:
            conn, peer = self.data_listener.accept()
        except OSError:
            return None
        conn.settimeout(_IO_TIMEOUT)
        with self.lock:
            self.info.data_connections.append((peer[0], peer[1]))
        return conn

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(_IO_TIMEOUT)
            session = _Session(self, sock)
            with self.lock:
                self.info.connections += 1
                self.sessions.append(session)
            with self.info._idle:
                self.info._active += 1
            t = threading.Thread(target=self._session, args=(session,), daemon=True, name="hostile-ftp-session")
            self.threads.append(t)
            t.start()

    def _session(self, session: _Session) -> None:
        try:
            session.run()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                session.sock.close()
            with self.info._idle:
                self.info._active -= 1
                self.info._idle.notify_all()


@contextlib.contextmanager
def run_hostile_ftp(
    behaviour: str,
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit: bool = False,
    listing: list[str] | None = None,
    listing_how: str | None = None,
    flood_total: int = 16 * 1024 * 1024,
    listing_final: str = "426",
) -> Iterator[HostileFTPServer]:
    """Start a hostile FTP server on ``127.0.0.1:0``; stop it on exit.

    :param behaviour: one of :data:`BEHAVIOURS`.
    :param tls_context: server-side context with its certificate loaded, for the TLS behaviours
        (for ``"tls11_only"``: one from :func:`tls11_server_context`).
    :param implicit: TLS from the first byte instead of ``AUTH TLS``.
    :param listing: MLSD lines to serve (and advertise MLST); default: no MLSD.
    :param listing_how: ``"drip"``, ``"flood_bytes"`` or ``"flood_entries"``: a hostile MLSD.
    :param flood_total: where a flood stops (a bound on the test's own resources).
    :param listing_final: the reply after an abandoned hostile listing (``"426"`` or ``"226"``).
    """
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")
    info = HostileFTPServer(
        behaviour=behaviour,
        host=HOST,
        port=0,
        implicit=implicit,
        listing=listing,
        listing_how=listing_how,
        flood_total=flood_total,
        listing_final=listing_final,
    )
    runner = _Runner(info, tls_context)
    info.port = int(runner.listener.getsockname()[1])
    thread = threading.Thread(target=runner.serve, daemon=True, name="hostile-ftp")
    thread.start()
    try:
        yield info
    finally:
        runner.stopping.set()
        for sock in (runner.listener, runner.data_listener, *(s.sock for s in runner.sessions)):
            # shutdown() wakes a thread blocked in accept()/recv() on Linux; close() alone does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        runner.listener.close()
        runner.data_listener.close()
        thread.join(timeout=5)
        for t in runner.threads:
            t.join(timeout=5)
