"""A TLS client connection for bulk reads, driven through memory BIOs.

An :class:`ssl.SSLSocket` reads every TLS record with two system calls: OpenSSL reads the
record's 5-byte header, then its body (Python's :mod:`ssl` does not expose
``SSL_CTX_set_read_ahead``). A large download is made of 16 KiB records, so that is ~130
``read`` calls per MB. :class:`TLSStreamReader` reads the socket itself, as much as is
queued (up to :data:`RECV_BUFFER`), and hands the bytes to an :class:`ssl.SSLObject`. That is
one ``recv`` per 40-1,000 KiB. For a 256 MiB FTPS download from vsftpd, this cut the client's
CPU per MB by 9 % in an in-process A/B and by 22 % in the bench (BENCHMARKS.md, "The FTPS data
channel read through memory BIOs").

The checks are those of a socket from the same context, in the same places:

* The object comes from ``context.wrap_bio``, so the context's ``sslobject_class`` applies.
  That is :class:`~airflow_secure_transfer.security.tls.PinnedSSLObject` for a pinning context,
  whose pin check is the last step of the handshake. Chain, host name and the TLS floor are
  checked by OpenSSL as on a socket.
* The caller's *session* is offered for resumption (FTPS data connections resume the control
  connection's session).
* Nothing is sent before :meth:`TLSStreamReader.do_handshake` has returned, except handshake
  messages and the alerts OpenSSL itself writes. A failed handshake closes the socket.
* A stream cut without the server's ``close_notify`` is an error (:class:`ssl.SSLEOFError`), never
  a short read that looks complete: :meth:`TLSStreamReader.readinto` returns 0 only after the
  ``close_notify``.
* Every socket call is bounded by the socket's timeout (:meth:`TLSStreamReader.settimeout`).

Only what the FTPS download path needs is here: reads after the handshake, then one
``close_notify`` back. Data is never written through it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

__all__ = ["RECV_BUFFER", "TLSStreamReader"]

#: The most one ``recv`` takes from the socket. 1 MiB takes what loopback queues while the
#: caller writes and hashes one 256 KiB block.
RECV_BUFFER = 1024 * 1024


class TLSStreamReader:
    """A client-side TLS connection on the connected socket *raw*, read through memory BIOs.

    Call :meth:`start_handshake` (sends the ClientHello), then :meth:`do_handshake` (completes and
    verifies it), then :meth:`readinto` until it returns 0, then :meth:`unwrap`. :meth:`close`
    closes the socket at any point. *raw* is owned from construction on; it is closed if the TLS
    object cannot be made.

    :param raw: a connected TCP socket, in blocking mode with a timeout.
    :param context: the client context (its ``sslobject_class`` is used).
    :param server_hostname: the name checked against the certificate (when the context checks names).
    :param session: a session to resume, or ``None``.
    :param buffer: the receive buffer (default: a new one of :data:`RECV_BUFFER` bytes). Its bytes are
        copied into the TLS object as soon as they arrive, so one buffer can serve a client's successive
        connections (an FTPS client reuses one for every download).
    """

    def __init__(
        self,
        raw: socket.socket,
        context: ssl.SSLContext,
        *,
        server_hostname: str | None,
        session: ssl.SSLSession | None,
        buffer: bytearray | None = None,
    ) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        try:
            self._tls = context.wrap_bio(
                self._incoming, self._outgoing, server_hostname=server_hostname, session=session
            )
        except BaseException:
            raw.close()
            raise
        self._view = memoryview(bytearray(RECV_BUFFER) if buffer is None else buffer)
        if not len(self._view):
            raw.close()
            raise ValueError("the receive buffer must not be empty")
        self._handshake_done = False

    # ------------------------------------------------------------------ socket-like surface

    @property
    def context(self) -> ssl.SSLContext:
        """The context the connection was made from."""
        return self._tls.context

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session (for resumption by a later connection)."""
        return self._tls.session

    @property
    def session_reused(self) -> bool:
        """Whether the handshake resumed the offered session."""
        return bool(self._tls.session_reused)

    @property
    def server_hostname(self) -> str | None:
        """The name the certificate was checked against."""
        return self._tls.server_hostname

    def getpeercert(self, binary_form: bool = False) -> object:
        """The server's certificate, as :meth:`ssl.SSLSocket.getpeercert`."""
        return self._tls.getpeercert(binary_form)

    def version(self) -> str | None:
        """The negotiated protocol version (``"TLSv1.3"``...)."""
        return self._tls.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """The negotiated cipher, as :meth:`ssl.SSLSocket.cipher`."""
        return self._tls.cipher()

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return self._raw.fileno()

    def settimeout(self, timeout: float | None) -> None:
        """Bound every later socket call by *timeout* seconds."""
        self._raw.settimeout(timeout)

    def close(self) -> None:
        """Close the socket (no ``close_notify``; see :meth:`unwrap`)."""
        self._raw.close()

    # ------------------------------------------------------------------ I/O

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._raw.sendall(self._outgoing.read())

    def _fill(self) -> None:
        n = self._raw.recv_into(self._view)
        if n:
            self._incoming.write(self._view[:n])
        else:
            self._incoming.write_eof()

    def start_handshake(self) -> None:
        """Send the ClientHello (the socket must be connected); :meth:`do_handshake` completes it."""
        try:
            self._step()
        except BaseException:
            self.close()
            raise

    def _step(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        self._flush()
        self._handshake_done = True
        return True

    def do_handshake(self) -> None:
        """Complete the handshake: every check of the context (chain, host name, pin) included.

        The socket is closed on any failure, so that nothing more goes to an unverified peer.
        """
        try:
            while not self._step():
                self._fill()
        except BaseException:
            self.close()
            raise

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Read up to ``len(buffer)`` bytes of application data into *buffer*; return how many.

        Returns 0 only once the server's ``close_notify`` has arrived. A connection closed without
        one raises :class:`ssl.SSLEOFError`; an empty *buffer* raises :class:`ValueError`.
        """
        if not self._handshake_done:
            raise ValueError("readinto() before the TLS handshake completed")
        if not len(buffer):
            raise ValueError("readinto() needs a non-empty buffer")
        while True:
            try:
                n = int(self._tls.read(len(buffer), buffer))  # with a buffer: the count
            except ssl.SSLWantReadError:
                # Post-handshake messages (a TLS 1.3 KeyUpdate) may have queued an answer.
                self._flush()
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                # OpenSSL's ZERO_RETURN is the close_notify: CPython raises it for a read that
                # finds the close_notify with nothing before it on this object.
                return 0
            if n:
                return n
            # ssl returns 0 for SSL_ERROR_ZERO_RETURN with SSL_RECEIVED_SHUTDOWN: the close_notify.
            return 0

    def unwrap(self) -> None:
        """Send our ``close_notify`` without waiting for anything (call after :meth:`readinto` returned 0)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self._tls.unwrap()
        self._flush()
