"""FTPS client (RFC 4217) implementing :class:`~airflow_secure_transfer.transfer.base.RemoteFS`.

Built on :class:`ftplib.FTP_TLS` for the reply parsing only; everything that
decides what goes on the wire is overridden here:

* **Nothing in clear.** Explicit mode sends ``AUTH TLS`` as the first command and
  stops (:class:`SecurityPolicyError`) unless the server answers ``234``;
  implicit mode wraps the socket before the greeting. As a second line of
  defence, :meth:`_FTPTLS.putline` refuses to write any line other than
  ``AUTH TLS`` to a socket that is not TLS, so no code path (ours or an
  ``ftplib`` method called on the object) can send ``USER``/``PASS`` in clear.
* **Verified** with the context of :func:`~airflow_secure_transfer.security.tls.build_ssl_context`
  (chain + host name, or an exact SHA-256 pin checked before anything is sent).
* ``PBSZ 0`` + ``PROT P`` right after login, also for anonymous logins; a refusal
  is an error (a server that will not protect the data channel gets no data).
  ``CCC`` and ``PROT C`` are never sent (the methods raise).
* **Data connections resume the control connection's TLS session**
  (``session=self.sock.session``). Stock ``ftplib`` starts a fresh session, which
  vsftpd (``require_ssl_reuse=YES``, its default) and FileZilla Server reject with
  ``522 SSL connection failed: session reuse required``: the resumed session is
  how they know the data connection comes from the client that logged in, not
  from someone who raced to the passive port. Each data connection is wrapped by
  the same context (so a pin is checked there too).
* **Passive only**: ``EPSV``, falling back to ``PASV`` when refused; the address a
  ``227`` reply names is ignored and the data connection goes to the control
  connection's peer address (a hostile server could otherwise point the client at
  another host: "FTP bounce" in reverse).
* Every socket operation is bounded by ``conn_timeout``. Host and port live on the
  instance (the stock hook's ``FTP_TLS.port = ...`` class attribute leaked into
  later connections).
* 1 MiB blocks on the data channel (the stock 8 KiB ``storbinary`` is about 40 %
  slower against pyftpdlib). A download's data connection is a
  :class:`~airflow_secure_transfer.transfer.tls_reader.TLSStreamReader`: the socket is read one
  queue-full at a time into memory BIOs, not twice per 16 KiB TLS record as an ``SSLSocket`` reads
  it (same context, same checks; 9-22 % less client CPU per MB from vsftpd, BENCHMARKS.md).
* **Few round trips** (issue #15: over 50-150 ms each one counts). Commands whose
  answers do not decide each other go out in one write and their replies are read
  in order (:meth:`_FTPTLS.putlines`, :meth:`_FTPTLS.replies`): the session setup
  after ``PASS`` (to vsftpd, which peeks each line: with ``USER`` and ``PASS``),
  a ``stat`` without ``MLST`` and several stats together (:meth:`FTPSClient.stat_many`,
  to vsftpd with the next transfer's ``EPSV``), ``RNFR`` + ``RNTO``, an upload's
  time set and size check (:meth:`FTPSClient.write_then_stat`), and in
  :meth:`FTPSClient.put_small_many` the next file's ``EPSV`` with this file's
  ``SIZE``, and this file's time + rename with the next file's ``STOR``. A check
  still gates what it protects: ``SIZE`` is read only after the ``226`` (sent
  after it, or, to a server that reads commands only between transfers, with the
  end of the data: :meth:`FTPSClient._after_transfer`), the rename is sent only
  after ``SIZE`` answered with the right size, ``PROT P`` must succeed before any
  data connection. The data connection's TCP handshake overlaps the transfer
  command's round trip, its ClientHello does not wait for the ``150``
  (:meth:`_FTPTLS.begin_data`), an upload ends with close_notify and FIN at once
  (:meth:`_FTPTLS.end_upload`), ``QUIT``'s reply is not waited for, and after a
  TLS 1.3 HelloRetryRequest the context offers the group the server asked for
  (:func:`_learn_key_share`). A server that drops commands it received before it
  answered (it answers the first of the session's first burst, not the next) is
  found within seconds; that session is dropped and the server gets one command at
  a time from then on (this process).

Rename semantics (``rename`` replaces the target): vsftpd and pyftpdlib implement
``RNTO`` with POSIX ``rename(2)``, which atomically replaces an existing target.
Servers that refuse to overwrite (IIS, some FileZilla Server versions) answer
``550``/``553``; then the target is deleted and the rename retried. That fallback
is **not atomic** (for a moment the target does not exist, and a concurrent reader
may see it missing) and is logged as a warning.

Errors are translated at this boundary (see :meth:`FTPSClient._ftp_error`):
``530`` → :class:`AuthenticationError`; ``550``/``553``/``521`` → :class:`RemotePathError`
(``.path`` set); ``552``/``452`` → :class:`RemoteStorageFullError`;
``533``/``534``/``536`` → :class:`SecurityPolicyError`; certificate errors →
:class:`VerificationError`; timeouts → :class:`TransferTimeout`; anything else →
:class:`TransportError` (``retryable = False`` on an instance for other permanent ``5xx``).
"""

# ruff: noqa: S321  (bandit flags every ftplib call; this module is the FTPS client and never speaks plain FTP)

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import errno
import ftplib
import logging
import os
import posixpath
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, NoReturn, TypeVar

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    ConfigurationError,
    LimitExceededError,
    RemotePathError,
    RemoteStorageFullError,
    SecureTransferError,
    SecurityPolicyError,
    ServerBusyError,
    TransportError,
    VerificationError,
    scrub_secrets,
    scrub_text,
)
from airflow_secure_transfer.security.paths import check_name, listed_child
from airflow_secure_transfer.security.policy import TLSMode
from airflow_secure_transfer.security.tls import TLSInfo, build_ssl_context, classify_ssl_error, describe_tls
from airflow_secure_transfer.transfer import limits
from airflow_secure_transfer.transfer.base import Checksum, ClosingClient, ProgressCallback, RemoteEntry
from airflow_secure_transfer.transfer.tls_reader import RECV_BUFFER, TLSStreamReader

_DataConn = TypeVar("_DataConn", ssl.SSLSocket, TLSStreamReader)

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import FTPSSettings

__all__ = ["BLOCK_SIZE", "READ_BLOCK", "FTPSClient"]

log = logging.getLogger(__name__)

#: Bytes per read/write on the data channel.
BLOCK_SIZE = 1024 * 1024
#: Bytes a download collects before handing them to its sink (which writes them to the local file and
#: hashes them). Small enough that the block, the page cache it is copied to and the hash's second pass
#: over it stay in a 1 MiB L2 cache: with 1 MiB blocks the same download cost 0.5-0.7 ms/MB more client
#: CPU (2.33 vs 1.65 ms/MB, medians of 8, vsftpd, 256 MiB); 128 and 512 KiB measured as 256.
READ_BLOCK = 256 * 1024

#: Server HASH algorithm names (draft-bryan-ftpext-hash) -> hashlib names, in order of preference.
_HASH_ALGOS = {"SHA-256": "sha256", "SHA-512": "sha512", "SHA-1": "sha1", "MD5": "md5"}
#: Legacy per-algorithm commands, in order of preference.
_X_HASH_COMMANDS = (("XSHA256", "sha256"), ("XSHA512", "sha512"), ("XSHA1", "sha1"), ("XSHA", "sha1"), ("XMD5", "md5"))
_HEX_LEN = {"sha256": 64, "sha512": 128, "sha1": 40, "md5": 32}

_PATH_CODES = {"550", "553", "521", "551", "554"}
_FULL_CODES = {"552", "452"}
_POLICY_CODES = {"533", "534", "536"}

# "drwxr-xr-x    2 1000     1000         4096 Nov 28 09:01 name" (vsftpd, most Unix servers)
_UNIX_LIST_RE = re.compile(
    r"^(?P<type>[-dlbcps])[-rwxsStTlL]{9}[.+@]?\s+\d+\s+\S+\s+\S+\s+(?P<size>\d+)\s+"
    r"\w{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$"
)


def _parse_mlsx_time(value: str) -> float | None:
    """Parse an MLSx/MDTM timestamp ``YYYYMMDDHHMMSS[.sss]`` (UTC) to epoch seconds."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d+)?", value.strip())
    if not match:
        return None
    y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
    try:
        seconds = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return seconds + (float(match.group(7)) if match.group(7) else 0.0)


def _parse_facts(line: str) -> tuple[dict[str, str], str]:
    """Split one MLSx line ``"type=file;size=3; name"`` into (facts, name)."""
    facts_part, sep, name = line.partition(" ")
    if not sep:
        raise ftplib.error_proto(f"malformed MLSx line {line[:80]!r}")
    facts: dict[str, str] = {}
    for fact in facts_part.split(";"):
        if "=" in fact:
            key, _, value = fact.partition("=")
            facts[key.strip().lower()] = value
    return facts, name


#: TLS 1.3: a ServerHello whose random is this value is a HelloRetryRequest (RFC 8446 section 4.1.3).
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
#: Named groups (RFC 8446 section 4.2.7) by the names ``SSLContext.set_ecdh_curve`` takes.
_GROUP_NAMES = {0x0017: "prime256v1", 0x0018: "secp384r1", 0x0019: "secp521r1", 0x001D: "X25519", 0x001E: "X448"}
_KEY_SHARE_LOCK = threading.Lock()
#: (host, port) of servers that did not answer pipelined commands: this process sends them one at a time.
_NO_PIPELINING: set[tuple[str, int]] = set()
#: At least this long (or 4 round trips) for the answers after the first of the session's first burst.
_PIPELINE_PROBE_S = 2.0
#: Greetings of servers that read the control connection only between transfers (vsftpd's default banner).
_READS_BETWEEN_TRANSFERS = re.compile(r"^220 \(vsFTPd \d")
#: (host, port) of servers that answered a command sent during a transfer before the transfer's own reply:
#: this process waits for the 226 before it sends the next command to them.
_ANSWERS_DURING_TRANSFERS: set[tuple[str, int]] = set()
#: How long a passive port asked for ahead of its transfer is used (``FTPSClient.stat_many``); the
#: server keeps it open until the next transfer (vsftpd), this bounds what an unused one can cost.
_KEPT_PASV_S = 5.0
#: Successful replies to the commands sent with the end of an upload (SIZE, EPSV, PASV): never a transfer's.
_NOT_A_TRANSFER_REPLY = ("213", "227", "229")


class _NoPipelining(Exception):
    """Internal: the server answered the first command of a pipelined burst but not the next ones."""


class _AnsweredDuringTransfer(Exception):
    """Internal: a command sent while an upload ended was answered before the upload's final reply."""


def _hrr_group(message: bytes) -> int | None:
    """Return the group a TLS 1.3 HelloRetryRequest asks for (its ``key_share``), or ``None`` for another message.

    *message* is one handshake message with its 4-byte header, as OpenSSL's message callback passes it.
    """
    # type (1) + length (3) + legacy_version (2) + random (32)
    if len(message) < 39 or message[0] != 2 or message[6:38] != _HRR_RANDOM:
        return None
    pos = 39 + message[38]  # legacy_session_id
    pos += 3  # cipher_suite, legacy_compression_method
    if pos + 2 > len(message):
        return None
    end = min(len(message), pos + 2 + int.from_bytes(message[pos : pos + 2], "big"))
    pos += 2
    while pos + 4 <= end:
        kind = int.from_bytes(message[pos : pos + 2], "big")
        size = int.from_bytes(message[pos + 2 : pos + 4], "big")
        if kind == 0x0033 and size == 2 and pos + 6 <= end:  # key_share: selected_group
            return int.from_bytes(message[pos + 4 : pos + 6], "big")
        pos += 4 + size
    return None


def _learn_key_share(context: ssl.SSLContext) -> Callable[[bool], None] | None:
    """Watch the next control connection's handshake for a HelloRetryRequest; return the function that ends it.

    OpenSSL 3.0's client sends a key share for its first group only (X25519); a server that accepts
    another group only (vsftpd: P-256) answers with a HelloRetryRequest naming the group it wants, and
    every handshake to it (each data connection: one per file) costs one more round trip. Python < 3.15
    cannot order the groups, but ``set_ecdh_curve`` can make the context offer exactly one: after a
    HelloRetryRequest the context offers the group that server asked for, and nothing else. That is the
    group the handshake would have ended with anyway (no other group, no weaker one: the server chose it
    from the ones this client offered), so only the round trip goes away. The context serves one server
    (:class:`FTPSClient`'s ``context``), so what it learns applies to that server only.

    Uses CPython's ``SSLContext._msg_callback`` (the message tracer of its own test suite, 3.8 - 3.14),
    only during the first control connection's handshake. Where it is missing nothing changes.

    :returns: ``done(ok)``, to call once the handshake is over (``ok``: it succeeded), or ``None`` when
        there is nothing to learn (done already, under way in another thread, or not possible here).
    """
    with _KEY_SHARE_LOCK:
        if getattr(context, "_ast_key_share", None) is not None or not hasattr(context, "_msg_callback"):
            return None
        seen: list[int] = []

        def trace(_conn: object, direction: str, _version: object, kind: int, msg_type: int, data: bytes) -> None:
            try:
                if direction == "read" and kind == 22 and msg_type == 2:  # handshake: ServerHello
                    group = _hrr_group(bytes(data))
                    if group is not None:
                        seen.append(group)
            except Exception:  # noqa: S110 - a tracer must never break a handshake
                pass

        try:
            context._msg_callback = trace  # CPython's tracer hook (see the docstring)
        except (AttributeError, TypeError, ValueError):
            context._ast_key_share = "unavailable"  # type: ignore[attr-defined]
            return None
        context._ast_key_share = "learning"  # type: ignore[attr-defined]

    def done(ok: bool) -> None:
        with _KEY_SHARE_LOCK:
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                context._msg_callback = None
            name = _GROUP_NAMES.get(seen[0]) if seen else None
            if ok and name is not None:
                try:
                    context.set_ecdh_curve(name)
                except (ValueError, ssl.SSLError):
                    name = None
                else:
                    log.debug("TLS: the server asked for %s (HelloRetryRequest); offering it first from now on", name)
            context._ast_key_share = (name or "default") if ok else None  # type: ignore[attr-defined]

    return done


class _ReplyReader:
    """Control-connection line reader with one deadline and one size cap per reply (replaces ``sock.makefile()``).

    ``ftplib`` reads replies through ``makefile()``, whose timeout bounds each ``recv`` only: a server
    that drips one byte per second, or sends an endless multi-line reply, would hold the client forever,
    and ``ftplib`` joins the lines of a multi-line reply in memory (a flooded ``FEAT`` grows it at network
    speed). Here a reply ends within ``conn_timeout`` (or the deadline of the operation it belongs to,
    :attr:`op_deadline`) and within :data:`~airflow_secure_transfer.transfer.limits.REPLY_MAX_BYTES`.
    Bytes that are not valid in the encoding are kept as surrogates (``ftplib`` then sees a malformed
    reply: ``error_proto`` -> TransportError) instead of raising ``UnicodeDecodeError``.
    """

    def __init__(self, sock: socket.socket, encoding: str, timeout: float, where: str = "") -> None:
        self._sock = sock
        self._encoding = encoding
        self._timeout = timeout
        self._where = where
        self._buf = bytearray()
        self._deadline = time.monotonic() + timeout
        self._reply_bytes = 0
        #: When set, the end of the operation the next replies belong to (a listing as a whole).
        self.op_deadline: float | None = None

    def start_reply(self) -> None:
        """Start the clock and the byte count for the next reply (called by ``_FTPTLS.getresp``)."""
        self._deadline = time.monotonic() + self._timeout
        if self.op_deadline is not None:
            self._deadline = min(self._deadline, self.op_deadline)
        self._reply_bytes = 0

    def readline(self, limit: int = -1) -> str:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 or (limit > 0 and len(self._buf) >= limit):
                cut = end + 1 if end >= 0 else limit
                if limit > 0:
                    cut = min(cut, limit)
                line = bytes(self._buf[:cut])
                del self._buf[:cut]
                self._count(len(line))
                return line.decode(self._encoding, "surrogateescape")
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete reply within {self._timeout:g} s")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            finally:
                self._sock.settimeout(self._timeout)
            if not chunk:
                line = bytes(self._buf)
                self._buf.clear()
                return line.decode(self._encoding, "surrogateescape")
            self._buf += chunk

    def _count(self, size: int) -> None:
        self._reply_bytes += size
        if self._reply_bytes > limits.REPLY_MAX_BYTES:
            raise LimitExceededError(
                f"{self._where}: the server's reply exceeds {limits.REPLY_MAX_BYTES} bytes (reply size limit); "
                "the connection is closed",
                limit="reply bytes",
            )

    def close(self) -> None:
        """Nothing to release (the socket is closed by ``ftplib``)."""


class _ListingLimit(Exception):
    """Internal: a listing hit a bound (becomes :class:`LimitExceededError` once the server's reply is read)."""

    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(detail)
        self.limit = limit
        self.detail = detail


class _FTPTLS(ftplib.FTP_TLS):
    """``ftplib.FTP_TLS`` that can only speak TLS; see the module docstring.

    Every attribute is set on the instance: nothing here touches class state
    (the stock Airflow hook's ``FTP_TLS.port = port`` leaked across connections).
    """

    def __init__(self, context: ssl.SSLContext, *, timeout: float, encoding: str) -> None:
        super().__init__(context=context, timeout=timeout, encoding=encoding)
        self.passiveserver = True
        self.use_epsv = True
        self.server_hostname = ""
        #: True once the server accepted PROT P; no data connection is opened before.
        self.data_protected = False
        #: Send commands whose answers do not decide each other in one write (see :meth:`exchange`).
        self.pipelining = True
        #: Whether the last data connection resumed the control connection's TLS session.
        self.last_data_session_reused: bool | None = None
        #: The control connection's TLS session, as handed to the data connections. Reading
        #: ``SSLSocket.session`` builds a new Python object each time (0.3 ms of CPU here, ~10 %
        #: of a small file's upload); it is the same OpenSSL session until new tickets arrive, so
        #: it is read once, and again after a data connection that did not resume it.
        self._data_session: ssl.SSLSession | None = None
        #: The receive buffer of every download's TLSStreamReader (made at the first).
        self._recv_buffer: bytearray | None = None
        #: The server reads commands only between transfers (vsftpd): what is sent while a transfer ends
        #: is read after its final reply, so the upload's ``SIZE`` and the next ``EPSV`` need not wait for it.
        self.reads_between_transfers = False
        #: Upload data connections ended by :meth:`end_upload`, closed after the next reply.
        self.lingering: list[ssl.SSLSocket] = []
        #: A passive address asked for ahead of its transfer (:meth:`keep_pasv`), and when it was answered.
        self._kept_pasv: tuple[tuple[str, int], float] | None = None

    def getresp(self) -> str:
        """Read one reply within ``conn_timeout`` in total (see :class:`_ReplyReader`)."""
        if isinstance(self.file, _ReplyReader):
            self.file.start_reply()
        try:
            return super().getresp()
        finally:
            if self.lingering:
                self._close_lingering()

    def close(self) -> None:
        """Close the control connection and any data connection still open."""
        self._close_lingering()
        super().close()

    @contextlib.contextmanager
    def deadline(self, deadline: float) -> Iterator[None]:
        """Bound every reply, connect and handshake inside the block by *deadline* (one operation, as a whole)."""
        reader = self.file
        if not isinstance(reader, _ReplyReader):
            yield
            return
        previous, reader.op_deadline = reader.op_deadline, deadline
        try:
            yield
        finally:
            reader.op_deadline = previous

    def _time_left(self) -> float:
        """The socket timeout for the next step: ``conn_timeout``, or less inside :meth:`deadline`."""
        timeout = float(self.timeout or 0) or 60.0  # always set by FTPSClient (conn_timeout)
        reader = self.file
        if isinstance(reader, _ReplyReader) and reader.op_deadline is not None:
            left = reader.op_deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the operation's deadline has passed")
            timeout = min(timeout, left)
        return timeout

    # -- the clear-text guard ------------------------------------------------

    def putline(self, line: str) -> None:
        """Send one command line; refuse anything but ``AUTH TLS`` before TLS is up."""
        if not isinstance(self.sock, ssl.SSLSocket) and line != "AUTH TLS":
            # Unreachable by design (connect() wraps before anything else is sent); kept so
            # that a future code path cannot send a credential in clear by accident.
            raise SecurityPolicyError(
                f"refusing to send {line.split(' ', 1)[0]!r} on a connection that is not TLS-protected"
            )
        super().putline(line)

    # -- things this client never does ---------------------------------------

    def prot_p(self) -> str:
        """Send ``PBSZ 0`` + ``PROT P`` (RFC 4217 section 9); without them the data channel is clear text."""
        self.voidcmd("PBSZ 0")
        resp = self.voidcmd("PROT P")
        self.data_protected = True
        return resp

    def ccc(self) -> NoReturn:
        """Refuse: ``CCC`` would turn the control connection back to clear text."""
        raise SecurityPolicyError("CCC (clear command channel) is never sent: credentials and commands stay encrypted")

    def prot_c(self) -> NoReturn:
        """Refuse: ``PROT C`` would send file contents in clear."""
        raise SecurityPolicyError("PROT C (clear data channel) is never sent: file contents stay encrypted")

    def makeport(self) -> NoReturn:
        """Refuse active mode (PORT/EPRT): only passive data connections are opened."""
        raise ConfigurationError("active-mode FTP (PORT/EPRT) is not supported; data connections are passive")

    def login(self, user: str = "", passwd: str = "", acct: str = "", secure: bool = True) -> str:
        """Log in; refuses unless the control connection is already TLS."""
        if not isinstance(self.sock, ssl.SSLSocket):
            raise SecurityPolicyError("refusing to log in before the control connection is TLS-protected")
        return ftplib.FTP.login(self, user, passwd, acct)

    # -- data connections ----------------------------------------------------

    def pasv_command(self) -> str:
        """The passive-mode command this connection uses: ``EPSV``, or ``PASV`` once ``EPSV`` was refused."""
        return "EPSV" if self.use_epsv else "PASV"

    def pasv_address(self, reply: str | ftplib.Error) -> tuple[str, int] | None:
        """Turn the reply to :meth:`pasv_command` into (control peer's address, port).

        ``None`` when ``EPSV`` was refused (``500``-``504``): ``PASV`` from now on, ask again.
        The address a ``227`` reply names is ignored (see the module docstring).
        """
        assert self.sock is not None
        peer = self.sock.getpeername()
        if self.use_epsv:
            if isinstance(reply, ftplib.error_perm):
                # 500/501/502: no EPSV (old servers, some NAT setups); PASV from now on.
                self.use_epsv = False
                return None
            if isinstance(reply, ftplib.Error):
                raise reply
            return peer[0], ftplib.parse229(reply, peer)[1]
        if self.af != socket.AF_INET:
            raise TransportError("the server refused EPSV and PASV cannot work over IPv6")
        if isinstance(reply, ftplib.Error):
            raise reply
        return peer[0], ftplib.parse227(reply)[1]

    def keep_pasv(self, reply: str | ftplib.Error) -> None:
        """Keep the answer to a :meth:`pasv_command` sent ahead of its transfer, for :meth:`makepasv`.

        A refusal keeps nothing (the next transfer asks again, as it would have).
        """
        try:
            address = self.pasv_address(reply)
        except (ftplib.Error, TransportError, ValueError):
            address = None
        self._kept_pasv = None if address is None else (address, time.monotonic())

    def makepasv(self) -> tuple[str, int]:
        """Ask for a passive port (EPSV, else PASV); return the control peer's address and that port.

        A port asked for ahead (:meth:`keep_pasv`) in the last :data:`_KEPT_PASV_S` seconds is used
        instead, once.
        """
        kept, self._kept_pasv = self._kept_pasv, None
        if kept is not None and time.monotonic() - kept[1] < _KEPT_PASV_S:
            return kept[0]
        while True:
            command = self.pasv_command()
            try:
                reply: str | ftplib.Error = self.sendcmd(command)
            except (ftplib.error_perm, ftplib.error_temp) as exc:
                reply = exc
            address = self.pasv_address(reply)
            if address is not None:
                return address

    def putlines(self, lines: list[str]) -> None:
        """Send several command lines in one write (pipelining: the replies are read later, in order).

        The same checks as :meth:`putline` for each line (TLS only, no CR/LF inside a line).
        """
        if not isinstance(self.sock, ssl.SSLSocket):
            raise SecurityPolicyError("refusing to send commands on a connection that is not TLS-protected")
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("an illegal newline character should not be contained")
            sys.audit("ftplib.sendcmd", self, line)
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode(self.encoding))

    def exchange(self, lines: list[str]) -> list[str | ftplib.Error]:
        """Send *lines* and read their replies in order: in one write (pipelined), or one by one when
        :attr:`pipelining` is off (a server that drops commands it received before it answered)."""
        if self.pipelining:
            self.putlines(lines)
            return self.replies(len(lines))
        out: list[str | ftplib.Error] = []
        for line in lines:
            self.putlines([line])
            out += self.replies(1)
        return out

    def replies(self, count: int) -> list[str | ftplib.Error]:
        """Read the replies to *count* pipelined commands, in order; a refusal is returned, not raised.

        A malformed reply or a lost connection raises (the stream is out of step then).
        """
        out: list[str | ftplib.Error] = []
        for _ in range(count):
            try:
                out.append(self.getresp())
            except (ftplib.error_perm, ftplib.error_temp) as exc:
                out.append(exc)
        return out

    def start_data_connect(self, address: tuple[str, int]) -> socket.socket:
        """Start connecting to a passive port without waiting (the handshake overlaps the transfer command).

        :meth:`open_data` finishes it. A server in passive mode waits for the data connection after
        the command (RFC 959 section 3.2), and servers that see the command first keep it until the
        connection arrives (vsftpd, pyftpdlib): the TCP handshake and the command's round trip overlap.
        """
        raw = socket.socket(self.af, socket.SOCK_STREAM)
        try:
            if self.source_address is not None:
                raw.bind(self.source_address)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setblocking(False)
            err = raw.connect_ex(address)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                raise OSError(err, os.strerror(err))
        except BaseException:
            raw.close()
            raise
        return raw

    def _finish_connect(self, raw: socket.socket) -> None:
        timeout = self._time_left()
        with selectors.DefaultSelector() as sel:
            sel.register(raw, selectors.EVENT_WRITE)
            if not sel.select(timeout):
                raise TimeoutError(f"the data connection was not established within {timeout:g} s")
        err = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        raw.settimeout(self._time_left())

    def _connect_data(self, raw: socket.socket) -> ssl.SSLSession | None:
        """Finish *raw*'s connect; return the TLS session its handshake must resume. *raw* is closed on any error."""
        assert self.sock is not None
        if not isinstance(self.sock, ssl.SSLSocket) or not self.data_protected:
            raw.close()
            raise SecurityPolicyError("refusing to open a data connection before PROT P is in force")
        try:
            self._finish_connect(raw)
        except BaseException:
            raw.close()
            self._data_session = None
            raise
        # Resuming self.sock.session is what vsftpd's require_ssl_reuse and FileZilla Server
        # check; the pin (if any) is checked again once the handshake ends.
        session = self._data_session
        if session is None:
            session = self._data_session = self.sock.session
        return session

    def begin_reader(self, raw: socket.socket) -> TLSStreamReader:
        """:meth:`begin_data` for a download: the connection is a :class:`TLSStreamReader`.

        It reads one socket-buffer-full per ``recv`` instead of two ``recv`` per TLS record. The
        context, the checks (chain, host name, pin) and the resumed session are the same.
        """
        session = self._connect_data(raw)
        try:
            if self._recv_buffer is None:
                self._recv_buffer = bytearray(RECV_BUFFER)  # one per client, for all its downloads
            reader = TLSStreamReader(
                raw, self.context, server_hostname=self.server_hostname, session=session, buffer=self._recv_buffer
            )
            reader.start_handshake()  # closes raw on failure
        except BaseException:
            self._data_session = None
            raise
        return reader

    def begin_data(self, raw: socket.socket) -> ssl.SSLSocket:
        """Finish *raw*'s connect and send the TLS ClientHello on it; :meth:`finish_data` completes it.

        Called once the transfer command has been sent, before its reply is read: servers start TLS on
        the data connection only after they accepted the command (vsftpd: after its ``150``), so the
        ClientHello waits in their socket buffer meanwhile, and the server's answer travels with the
        ``150`` instead of one round trip after it. Nothing but the ClientHello is sent until the
        handshake (every check included) has completed. *raw* is closed on any error.
        """
        session = self._connect_data(raw)
        try:
            conn = self.context.wrap_socket(
                raw,
                server_hostname=self.server_hostname,
                session=session,
                suppress_ragged_eofs=False,
                do_handshake_on_connect=False,
            )
        except BaseException:
            raw.close()
            self._data_session = None
            raise
        try:
            conn.setblocking(False)
            try:
                conn.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass  # expected: the ClientHello is out; finish_data() continues from here
        except BaseException:
            conn.close()
            self._data_session = None
            raise
        return conn

    def finish_data(self, conn: _DataConn) -> tuple[_DataConn, int | None]:
        """Read the transfer command's ``1xx`` and complete *conn*'s handshake (see :meth:`begin_data`).

        *conn* is closed on any error (a refused command: its reply is the error).
        """
        try:
            resp = self.getresp()
            if resp[0] == "2":
                # Some servers send a 2xx before the 1xx (see ftplib.FTP.ntransfercmd).
                resp = self.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
            size = ftplib.parse150(resp) if resp[:3] == "150" else None
            conn.settimeout(self._time_left())
            conn.do_handshake()
        except BaseException:
            conn.close()
            self._data_session = None
            raise
        self.last_data_session_reused = bool(conn.session_reused)
        if not conn.session_reused:
            self._data_session = None  # the next data connection offers the control connection's current one
        return conn, size

    def open_data(self, raw: socket.socket) -> tuple[ssl.SSLSocket, int | None]:
        """Start TLS on *raw* (from :meth:`start_data_connect`; the transfer command has been sent) and read
        the command's ``1xx``: :meth:`begin_data`, then :meth:`finish_data`."""
        return self.finish_data(self.begin_data(raw))

    def end_upload(self, conn: ssl.SSLSocket) -> None:
        """End an upload's data connection without waiting for the server: close_notify, then FIN.

        ``unwrap()`` waits one round trip for the server's close_notify, and a server that waits for the
        client's FIN before its ``226`` (vsftpd) takes one more. Neither answer proves anything about the
        upload (the ``226`` and the size check do), so neither is waited for; the close_notify still goes
        first, so the server sees a clean end of the TLS stream, never a truncation. The socket is closed
        once the next reply has been read (:meth:`getresp`), after what the server sent meanwhile is read,
        so that it ends with a FIN, not a reset.
        """
        try:
            deadline = time.monotonic() + self._time_left()
            conn.setblocking(False)
            with selectors.DefaultSelector() as sel:
                sel.register(conn, selectors.EVENT_WRITE)
                while True:
                    try:
                        conn.unwrap()  # returns only when the server's close_notify was already here
                        break
                    except ssl.SSLWantReadError:
                        break  # ours is sent; theirs is not waited for
                    except ssl.SSLWantWriteError:
                        # The send buffer is still full of data: wait until the close_notify fits.
                        left = deadline - time.monotonic()
                        if left <= 0 or not sel.select(left):
                            raise TimeoutError("the data connection's close_notify was not sent in time") from None
                    except (OSError, ValueError):
                        # The server closed first (it refused more data: disk full, quota): the
                        # reply that follows on the control connection decides, as after unwrap().
                        break
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
        except BaseException:
            conn.close()
            raise
        self.lingering.append(conn)

    def _close_lingering(self) -> None:
        socks, self.lingering = self.lingering, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                for _ in range(64):  # bounded: the server's close_notify is a few dozen bytes
                    if not socket.socket.recv(sock, 65536):
                        break
            with contextlib.suppress(OSError):
                sock.close()

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        """Open a TLS data connection for *cmd* that resumes the control connection's session."""
        return self.open_data(self._send_transfer(cmd, rest))

    def reader_transfercmd(self, cmd: str, rest: int | None = None) -> TLSStreamReader:
        """:meth:`ntransfercmd` for a download: the data connection is a :class:`TLSStreamReader`."""
        conn, _ = self.finish_data(self.begin_reader(self._send_transfer(cmd, rest)))
        return conn

    def _send_transfer(self, cmd: str, rest: int | str | None) -> socket.socket:
        """Start the data connection's connect, send ``REST`` (if any) and *cmd*; return the socket."""
        assert self.sock is not None
        if not isinstance(self.sock, ssl.SSLSocket) or not self.data_protected:
            raise SecurityPolicyError("refusing to open a data connection before PROT P is in force")
        address = self.makepasv()
        # Inside deadline() the connect and the TLS handshake below get only the time left (the handshake
        # is bounded as a whole by the socket timeout: CPython's ssl module keeps one deadline across reads).
        raw = self.start_data_connect(address)
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            self.putline(cmd)
        except BaseException:
            raw.close()
            raise
        return raw


class FTPSClient(ClosingClient):
    """A connected, logged-in FTPS client of one server (explicit or implicit TLS).

    Connects at construction; use it as a context manager (or call :meth:`close`).
    One thread at a time.

    :param settings: validated settings (:func:`~airflow_secure_transfer.security.policy.parse_ftps_settings`).
    :param context: a TLS context from :func:`~airflow_secure_transfer.security.tls.build_ssl_context`
        to share between several clients of the same server (default: one is built from *settings*).
    :raises VerificationError: the server's certificate is not trusted, does not match the host or the pin.
    :raises SecurityPolicyError: the server refused ``AUTH TLS`` or ``PROT P``, or offers no TLS >= 1.2.
    :raises AuthenticationError: the login was refused.
    :raises TransportError: network failure or timeout (``TransferTimeout``).
    """

    scheme = "ftps"

    def __init__(self, settings: FTPSSettings, *, context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.port
        self._where = f"{settings.host}:{settings.port}"
        self._context = context if context is not None else build_ssl_context(settings)
        self._ftp: _FTPTLS | None = None
        self._broken: str | None = None
        self.welcome = ""
        self.home = "/"
        self.features: dict[str, str] = {}
        self.tls_info: TLSInfo | None = None
        self._hash_algo: str | None = None
        #: How :meth:`set_mtime` asks this server ("MFMT", "MDTM", "" for never), from FEAT once.
        self._mtime_command: str | None = None
        #: False once the server reported another time than the one just set (see SupportsSetMtime).
        self.mtime_trusted = True
        #: Bytes the last upload sent (its final reply may still be unread).
        self._last_sent = 0
        #: Paths the last :meth:`stat_many` found missing (see :meth:`makedirs`).
        self._just_missing: set[str] = set()
        try:
            try:
                self._connect()
            except _NoPipelining as exc:
                # It dropped the commands it received before it answered: never pipeline to it again
                # (this process), and start over with one command at a time (the stream is out of step).
                _NO_PIPELINING.add((self.host, self.port))
                log.warning("%s does not answer pipelined commands (%s); sending one at a time", self._where, exc)
                self._connect()
        except BaseException as exc:
            # AUTH TLS / PROT P refusals are raised outside _errors(): scrub what they chain too.
            scrub_secrets(exc, (settings.password,))
            raise

    # ------------------------------------------------------------------ session

    def _connect(self) -> None:
        settings = self.settings
        ftp = _FTPTLS(self._context, timeout=settings.conn_timeout, encoding=settings.encoding)
        ftp.host = settings.host
        ftp.port = settings.port
        ftp.server_hostname = settings.host
        ftp.pipelining = (settings.host, settings.port) not in _NO_PIPELINING
        self._ftp = ftp
        learned = _learn_key_share(self._context)
        try:
            with self._errors("connect"):
                sock = socket.create_connection((settings.host, settings.port), settings.conn_timeout)
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    ftp.af = sock.family
                    if settings.tls_mode is TLSMode.IMPLICIT:
                        # Implicit FTPS: TLS from the first byte, before the 220 greeting.
                        sock = self._context.wrap_socket(sock, server_hostname=settings.host)
                except BaseException:
                    sock.close()
                    raise
                ftp.sock = sock
                # ftplib only calls readline() and close() on .file.
                ftp.file = _ReplyReader(sock, settings.encoding, settings.conn_timeout, self._where)  # type: ignore[assignment]
                self.welcome = self._scrub(ftp.getresp())
                if not self.welcome.startswith("220"):
                    raise TransportError(f"{self._where}: unexpected greeting {self.welcome[:200]!r}")
                ftp.reads_between_transfers = (
                    _READS_BETWEEN_TRANSFERS.match(self.welcome) is not None
                    and (settings.host, settings.port) not in _ANSWERS_DURING_TRANSFERS
                )
                if settings.tls_mode is TLSMode.EXPLICIT:
                    self._auth_tls(ftp)
            assert isinstance(ftp.sock, ssl.SSLSocket)
            if learned is not None:
                learned(True)
                learned = None
            self.tls_info = describe_tls(ftp.sock)
            # One round trip for the session's setup: PBSZ + PROT P (both must succeed before any data
            # connection, and no data command is among these), TYPE I, FEAT and PWD, replies in order.
            # OPTS UTF8 ON (for a UTF-8 encoding) goes with them whether or not FEAT will list UTF8: a
            # server without it answers 501/502, which changes nothing.
            utf8 = settings.encoding.lower().replace("-", "") == "utf8"
            setup = ["PBSZ 0", "PROT P", "TYPE I", "FEAT", "PWD"] + (["OPTS UTF8 ON"] if utf8 else [])
            # To a server known to read its control connection as a stream (vsftpd: it peeks each line),
            # the setup goes out with USER and PASS: the whole login is one round trip after the handshake.
            # Nothing there is sent in clear (TLS is up and verified); if the login fails, the setup lines
            # are refused (530) and never read, the session is given up.
            early = setup if ftp.pipelining and ftp.reads_between_transfers else []
            self._login(ftp, then=early)
            replies = self._protect_data(ftp, lines=setup, sent=bool(early))
            with self._errors("setup"):
                type_reply, feat_reply, pwd_reply = replies[:3]
                if isinstance(type_reply, ftplib.Error):
                    raise type_reply
                if type_reply[:1] != "2":
                    raise ftplib.error_reply(type_reply)
                self.features = self._parse_feat(feat_reply)
                if isinstance(pwd_reply, str):
                    with contextlib.suppress(ftplib.Error):
                        self.home = ftplib.parse257(pwd_reply) or "/"
        except BaseException:
            if learned is not None:
                learned(False)
            self._abandon()
            raise
        log.debug("FTPS %s connected: %s", self._where, self.tls_info.describe() if self.tls_info else "")

    def _auth_tls(self, ftp: _FTPTLS) -> None:
        """Explicit FTPS: ``AUTH TLS`` must be answered ``234``, then the handshake; else stop."""
        try:
            resp = ftp.sendcmd("AUTH TLS")
        except (ftplib.error_perm, ftplib.error_temp) as exc:
            raise SecurityPolicyError(
                f"{self._where}: the server refused AUTH TLS ({self._scrub(str(exc))[:200]}); it does not offer "
                "explicit FTPS, so nothing else was sent (no credentials). If it speaks implicit FTPS, set extra "
                "'tls_mode' to 'implicit' (usually port 990); plain FTP is never used"
            ) from exc
        if not resp.startswith("234"):
            raise SecurityPolicyError(
                f"{self._where}: unexpected reply to AUTH TLS ({self._scrub(resp)[:200]}); nothing else was sent"
            )
        assert ftp.file is not None and ftp.sock is not None
        ftp.file.close()
        ftp.sock = self._context.wrap_socket(ftp.sock, server_hostname=ftp.server_hostname)
        ftp.file = _ReplyReader(ftp.sock, ftp.encoding, self.settings.conn_timeout, self._where)  # type: ignore[assignment]

    def _login(self, ftp: _FTPTLS, *, then: list[str] | None = None) -> None:
        """``USER`` + ``PASS``; with *then*, ``PASS`` and *then* go out with ``USER`` (their replies are left unread).

        A server that logs the user in on ``USER`` alone (``230``) answers the pipelined ``PASS`` too
        (``503``/``230``/``202``); that reply is read and ignored.
        """
        user = self.settings.login or "anonymous"
        passwd = self.settings.password or ("anonymous@" if self.settings.login is None else "")
        with self._errors("login as " + user):
            if then:
                ftp.putlines([f"USER {user}", f"PASS {passwd}", *then])
                (first,) = ftp.replies(1)
                if isinstance(first, ftplib.Error):
                    raise first
                if first[0] == "3":
                    resp = ftp.getresp()
                else:
                    resp = first
                    ftp.replies(1)  # the PASS that was not needed
                if resp[0] == "3":
                    raise AuthenticationError(f"{self._where}: the server asks for an ACCT after login; not supported")
                if resp[0] != "2":
                    raise ftplib.error_reply(resp)
                return
            resp = ftp.sendcmd(f"USER {user}")
            if resp[0] == "3":
                resp = ftp.sendcmd(f"PASS {passwd}")
            if resp[0] == "3":
                raise AuthenticationError(f"{self._where}: the server asks for an ACCT after login; not supported")
            if resp[0] != "2":
                raise ftplib.error_reply(resp)

    def _protect_data(self, ftp: _FTPTLS, *, lines: list[str], sent: bool = False) -> list[str | ftplib.Error]:
        """``PBSZ 0`` + ``PROT P`` (RFC 4217 §9): without them the data channel would be clear text.

        *lines* start with them; the commands after them are sent with them (none opens a data
        connection), and their replies are returned, in order, as :meth:`_FTPTLS.replies` gives them.
        *sent*: *lines* went out already (pipelined after the login), only their replies are read.
        """
        if lines[:2] != ["PBSZ 0", "PROT P"]:
            raise ValueError("the setup starts with PBSZ 0 and PROT P")
        replies: list[str | ftplib.Error] = []
        try:
            started = time.monotonic()
            if ftp.pipelining and not sent:
                ftp.putlines(lines)
            probe = 0.0
            for line in lines:
                if not ftp.pipelining:
                    ftp.putlines([line])
                    (reply,) = ftp.replies(1)
                elif not replies:
                    (reply,) = ftp.replies(1)
                    # The first pipelined burst of the session tells whether the server reads commands as a
                    # stream: it answers the ones after the first at once, or (if it dropped them) never.
                    rtt = time.monotonic() - started
                    probe = min(float(self.settings.conn_timeout), max(_PIPELINE_PROBE_S, 4 * rtt))
                else:
                    try:
                        with ftp.deadline(time.monotonic() + probe):
                            (reply,) = ftp.replies(1)
                    except TimeoutError:
                        raise _NoPipelining(f"no answer to {line.split(' ', 1)[0]} within {probe:.1f} s") from None
                if len(replies) < 2:
                    # A refusal of PBSZ or PROT ends the session at once: the rest are not waited for.
                    if isinstance(reply, ftplib.Error):
                        raise reply
                    if reply[:1] != "2":
                        raise ftplib.error_reply(reply)
                replies.append(reply)
        except ftplib.Error as exc:
            raise SecurityPolicyError(
                f"{self._where}: the server refused to protect the data channel ({self._scrub(str(exc))[:200]}); "
                "file contents would travel in clear, so nothing is transferred"
            ) from exc
        except (OSError, EOFError) as exc:
            raise classify_ssl_error(exc, self._where) from exc
        ftp.data_protected = True
        return replies[2:]

    @staticmethod
    def _parse_feat(reply: str | ftplib.Error) -> dict[str, str]:
        if isinstance(reply, ftplib.Error):
            return {}
        features: dict[str, str] = {}
        for line in reply.splitlines()[1:]:
            if line.startswith(" "):
                name, _, params = line.strip().partition(" ")
                features[name.upper()] = params
        return features

    @property
    def usable(self) -> bool:
        """Whether the connection is open and not broken by an earlier transport error."""
        return self._ftp is not None and self._broken is None

    @property
    def ftp(self) -> _FTPTLS:
        """The underlying ``ftplib`` object (connected; raises if closed or broken)."""
        if self._broken is not None:
            raise TransportError(f"{self._where}: the connection is unusable after an earlier error ({self._broken})")
        if self._ftp is None:
            raise TransportError(f"{self._where}: the connection is closed")
        return self._ftp

    def _reconnect(self) -> None:
        """Replace a broken session with a new one to the same server (the same settings and context)."""
        self._abandon()
        self._broken = None
        with self._errors("connect"):
            self._connect()

    def _abandon(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            with contextlib.suppress(Exception):
                ftp.close()

    def close(self) -> None:
        """Send ``QUIT`` (best effort) and close the connection; safe to call twice.

        The ``221`` is not waited for: every earlier reply has been read, so it would confirm nothing,
        and over a long distance waiting costs a round trip at the end of every session.
        """
        ftp = self._ftp
        if ftp is None:
            return
        if self._broken is None and ftp.sock is not None:
            with contextlib.suppress(Exception):
                ftp.sock.settimeout(min(self.settings.conn_timeout, 5.0))
                ftp.putline("QUIT")
        self._abandon()

    def session_security(self) -> dict[str, str]:
        """What the control connection negotiated and the certificate that was verified (public facts)."""
        info = self.tls_info
        if info is None:
            raise TransportError(f"{self._where}: not connected")
        return {
            "protocol": "ftps",
            "tls_version": info.version or "unknown",
            "cipher": info.cipher or "unknown",
            "server_identity": f"certificate sha256:{info.cert_sha256}" if info.cert_sha256 else "unknown",
        }

    def __repr__(self) -> str:
        state = "closed" if self._ftp is None else ("broken" if self._broken else "connected")
        return f"FTPSClient({self._where}, login={self.settings.login!r}, {self.settings.tls_mode.value}, {state})"

    # ------------------------------------------------------------------ errors

    def _scrub(self, text: str) -> str:
        """Remove the password from server text that is going into a message (some servers echo input)."""
        return scrub_text(text, (self.settings.password,))

    def _ftp_error(self, exc: ftplib.Error, what: str, path: str | None) -> SecureTransferError:
        reply = self._scrub(str(exc)).strip()[:300]
        code = reply[:3]
        target = f" {path}" if path else ""
        message = f"{self._where}: {what}{target}: {reply}"
        if code == "530":
            return AuthenticationError(message)
        if code in _FULL_CODES:
            return RemoteStorageFullError(message, path=path)
        if code in _PATH_CODES:
            return RemotePathError(message, path=path)
        if code in _POLICY_CODES:
            return SecurityPolicyError(message)
        if code == "421" and what == "connect":
            # The greeting says "come back later" (vsftpd max_clients/max_per_ip, pyftpdlib
            # max_cons_per_ip, IIS/FileZilla user limits): the engine backs off and tries again.
            return ServerBusyError(message)
        error = TransportError(message)
        if isinstance(exc, ftplib.error_perm) or code in ("522",):
            # A permanent refusal does not get better by retrying.
            error.retryable = False
        if isinstance(exc, ftplib.error_proto) or not isinstance(exc, (ftplib.error_perm, ftplib.error_temp)):
            # The reply stream is no longer in a known state.
            self._broken = f"protocol error in {what}: {reply[:80]}"
        return error

    @contextlib.contextmanager
    def _errors(self, what: str, path: str | None = None) -> Iterator[None]:
        """Translate ``ftplib``/``ssl``/socket errors raised inside the block."""
        try:
            yield
        except SecureTransferError as exc:
            # Ours, but maybe chained to a library error that holds a server reply: scrub them all.
            scrub_secrets(exc, (self.settings.password,))
            if isinstance(exc, (TransportError, VerificationError)):
                # A data-channel handshake that failed (pin, certificate) leaves the server's
                # reply to the transfer command unread: the control stream is out of step.
                self._broken = self._broken or str(exc)[:120]
            raise
        except ftplib.Error as exc:
            # The reply becomes the message (scrubbed) and stays the __cause__: scrub it there too
            # (a server may echo the password; tracebacks and error reporters print the cause).
            scrub_secrets(exc, (self.settings.password,))
            raise self._ftp_error(exc, what, path) from exc
        except (OSError, EOFError) as exc:
            # Before ValueError: ssl.SSLCertVerificationError is both an OSError and a ValueError.
            # After a timeout or reset the reply stream may be mid-line: the connection is done.
            scrub_secrets(exc, (self.settings.password,))
            self._broken = f"{type(exc).__name__} in {what}"
            where = f"{self._where} ({what}{' ' + path if path else ''})"
            if what == "connect" and isinstance(exc, ConnectionRefusedError):
                # A saturated (or restarting) listener: worth a bounded wait, unlike a refusal of trust.
                raise ServerBusyError(f"{where}: connection refused") from exc
            raise classify_ssl_error(exc, where) from exc
        except ValueError as exc:
            # ftplib.putline refuses CR/LF; check_name normally catches it first.
            raise ConfigurationError(f"{self._where}: {what}: {exc}") from exc

    # ------------------------------------------------------------------ RemoteFS

    def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at *path* (``MLST``; else ``SIZE``/``MDTM`` and a ``CWD`` test) or ``None``."""
        return self.stat_many([path])[0]

    def stat_many(self, paths: Sequence[str], *, prepare_data: bool = False) -> list[RemoteEntry | None]:
        """:meth:`stat` each of *paths*, all in one round trip (the commands are pipelined).

        :param prepare_data: on a server that reads its control connection as a stream (vsftpd), the
            next data connection's ``EPSV`` goes out with these commands; its answer is kept for the
            next transfer or listing of this session (:meth:`_FTPTLS.makepasv`), for a few seconds.
        """
        for path in paths:
            check_name(path)
        ftp = self.ftp
        with self._errors("stat", paths[0] if paths else None):
            per_path = [self._stat_lines(path) for path in paths]
            lines = [line for group in per_path for line in group]
            prepare = prepare_data and ftp.pipelining and ftp.reads_between_transfers
            if prepare:
                lines.append(ftp.pasv_command())
            replies = ftp.exchange(lines)
            if prepare:
                ftp.keep_pasv(replies.pop())
            out: list[RemoteEntry | None] = []
            at = 0
            for path, group in zip(paths, per_path, strict=True):
                out.append(self._stat_answer(path, replies[at : at + len(group)]))
                at += len(group)
            # What was just found missing needs no second stat before a makedirs (a directory another
            # worker creates meanwhile makes the MKD fail, and that is checked as before).
            self._just_missing = {path for path, entry in zip(paths, out, strict=True) if entry is None}
            return out

    def _stat_lines(self, path: str) -> list[str]:
        """The commands that stat *path*: ``MLST``; or (no MLST: vsftpd) ``SIZE`` (and ``MDTM``) for a file,
        a ``CWD`` test for a directory, and the ``CWD`` back home that undoes it whatever it did."""
        if "MLST" in self.features:
            return [f"MLST {path}"]
        return (
            [f"SIZE {path}"]
            + ([f"MDTM {path}"] if "MDTM" in self.features else [])
            + [f"CWD {path}", f"CWD {self.home}"]
        )

    def _stat_answer(self, path: str, replies: list[str | ftplib.Error]) -> RemoteEntry | None:
        """Judge the replies to :meth:`_stat_lines`' commands for *path*."""
        if len(replies) == 1:  # MLST
            (resp,) = replies
            if isinstance(resp, ftplib.Error):
                if isinstance(resp, ftplib.error_perm) and str(resp)[:3] in _PATH_CODES:
                    return None
                raise resp
            lines = [ln for ln in resp.splitlines()[1:] if not ln[:3].isdigit() or ln[3:4] not in (" ", "-")]
            if not lines:
                raise ftplib.error_proto(f"MLST reply without a facts line: {resp[:120]!r}")
            facts, _ = _parse_facts(lines[0].lstrip(" "))
            return self._entry(path, facts)
        size_reply, went = replies[0], replies[-2]
        if isinstance(size_reply, ftplib.Error):
            code = str(size_reply)[:3]
            if not isinstance(size_reply, ftplib.error_perm) or (
                code not in _PATH_CODES and code not in ("500", "502", "504")
            ):
                raise size_reply
        else:
            try:
                size = int(size_reply[3:].strip())
            except ValueError:
                pass
            else:
                mtime = None
                if len(replies) == 4 and isinstance(replies[1], str):
                    mtime = _parse_mlsx_time(replies[1][3:].strip())
                return RemoteEntry(path=path, is_dir=False, size=size, mtime=mtime)
        if isinstance(went, ftplib.Error):
            if isinstance(went, ftplib.error_perm) and str(went)[:3] in _PATH_CODES:
                return None
            raise went
        if went[:1] != "2":
            raise ftplib.error_reply(went)
        return RemoteEntry(path=path, is_dir=True)

    def _entry(self, path: str, facts: dict[str, str]) -> RemoteEntry:
        raw_kind = facts.get("type", "")
        kind = raw_kind.lower()
        is_dir = kind in ("dir", "cdir", "pdir")
        # RFC 3659 7.5.1 leaves links to OS-specific types: "OS.unix=slink:/target" (ProFTPD, pyftpdlib)
        # or "OS.unix=symlink".
        is_link = kind.startswith(("os.unix=slink", "os.unix=symlink"))
        target = raw_kind.partition(":")[2] if is_link and ":" in raw_kind else None
        size = facts.get("size") or facts.get("sizd")
        modify = facts.get("modify")
        return RemoteEntry(
            path=path,
            is_dir=is_dir,
            size=int(size) if size and size.isdigit() and not is_dir else None,
            mtime=_parse_mlsx_time(modify) if modify else None,
            is_link=is_link,
            link_target=target or None,
        )

    def listdir(self, path: str) -> list[RemoteEntry]:
        """List directory *path* without ``.``/``..`` (``MLSD``; else ``LIST`` parsed, else ``NLST`` + stat).

        :raises RemotePathError: *path* is not a directory, or the server listed a name with
            ``/`` or a ``..`` (a hostile listing that could make a caller escape the directory).
        """
        check_name(path)
        self.ftp  # noqa: B018 - raises if closed or broken
        if "MLST" in self.features:
            lines = self._retr_lines(f"MLSD {path}", "list", path)
            entries = []
            for line in lines:
                facts, name = _parse_facts(line)
                if facts.get("type", "").lower() in ("cdir", "pdir") or name in (".", ".."):
                    continue
                entries.append(self._entry(self._child(path, name), facts))
            return entries
        return self._listdir_fallback(path)

    def _child(self, path: str, name: str) -> str:
        # The same rules as for names we send (control characters, "\\", "C:"), plus one component only.
        return listed_child(path, name, where=self._where)

    def _listdir_fallback(self, path: str) -> list[RemoteEntry]:
        # vsftpd has no MLSD; its LIST is 'ls -l' style with numeric owners.
        lines = self._retr_lines(f"LIST -a {path}", "list", path)
        entries: list[RemoteEntry] = []
        unparsed = False
        for line in lines:
            if line.startswith("total "):
                continue
            match = _UNIX_LIST_RE.match(line)
            if not match:
                unparsed = True
                break
            name = match["name"]
            kind = match["type"]
            target = None
            if kind == "l":
                name, _, target = name.partition(" -> ")
            if name in (".", ".."):
                continue
            child = self._child(path, name)
            if kind == "l":
                entry = self.stat(child)  # what the link leads to (SIZE/CWD follow it)
                if entry is not None:
                    entries.append(dataclasses.replace(entry, is_link=True, link_target=target or None))
                continue
            entries.append(
                RemoteEntry(path=child, is_dir=kind == "d", size=None if kind == "d" else int(match["size"]))
            )
        if not unparsed:
            return entries
        names = self._retr_lines(f"NLST {path}", "list", path)
        result = []
        for raw in names:
            name = posixpath.basename(raw.rstrip("/"))
            if name in (".", ".."):
                continue
            entry = self.stat(self._child(path, name))
            if entry is not None:
                result.append(entry)
        return result

    def _retr_lines(self, cmd: str, what: str, path: str) -> list[str]:
        """Run the listing command *cmd*; return its non-empty lines (``CRLF`` or ``LF`` ended).

        Bounded as a whole, not per read: the command, the data connection (connect, TLS handshake,
        every byte) and the final reply within ``conn_timeout``; at most
        :data:`~airflow_secure_transfer.transfer.limits.LISTING_MAX_ENTRIES` lines and
        :data:`~airflow_secure_transfer.transfer.limits.LISTING_MAX_BYTES`. Past a bound the data
        connection is closed and the server's final reply read (:meth:`_reply_after_abandon`), which
        keeps the control connection usable, and :class:`LimitExceededError` is raised.
        """
        ftp = self.ftp
        timeout = self.settings.conn_timeout
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        over: _ListingLimit | None = None
        with self._errors(what, path):
            with ftp.deadline(deadline):
                conn, _ = ftp.ntransfercmd(cmd)
            with self._data(conn, what, path):
                try:
                    self._read_listing(conn, deadline, lines)
                except _ListingLimit as exc:
                    over = exc
                    conn.close()  # abandoned: no close_notify (the server is still sending)
            if over is None:
                with ftp.deadline(deadline):
                    ftp.voidresp()
            else:
                self._reply_after_abandon(what)
        if over is not None:
            raise LimitExceededError(
                f"{self._where}: {what} {path}: {over.detail} ({over.limit} limit); listing abandoned",
                limit=over.limit,
            )
        return lines

    def _reply_after_abandon(self, what: str) -> None:
        """Read the final reply of a transfer the client abandoned, whatever its code.

        ``426``/``451`` (the server noticed), or ``226`` (it had handed everything to its socket
        already): either way the control connection is in step again. Not under the operation's
        deadline, which has passed: one more ``conn_timeout``; without a reply by then the
        connection is unusable.
        """
        ftp = self._ftp
        if ftp is None:
            return
        try:
            ftp.getresp()
        except ftplib.Error:
            pass
        except (OSError, EOFError, SecureTransferError):
            self._broken = self._broken or f"no reply after an abandoned {what}"

    def _read_listing(self, conn: socket.socket, deadline: float, lines: list[str]) -> None:
        """Read a listing's data connection into *lines*; raise :class:`_ListingLimit` past a bound."""
        encoding = self.settings.encoding
        max_entries = limits.LISTING_MAX_ENTRIES
        max_bytes = limits.LISTING_MAX_BYTES
        pending = bytearray()
        total = 0

        def take(raw: bytes | bytearray) -> None:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if line:
                lines.append(bytes(line).decode(encoding, errors="surrogateescape"))
                if len(lines) > max_entries:
                    raise _ListingLimit("listing entries", f"more than {max_entries} entries")

        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _ListingLimit("conn_timeout", f"not complete within {self.settings.conn_timeout:g} s")
            conn.settimeout(left)
            try:
                data = conn.recv(BLOCK_SIZE)
            except TimeoutError:
                raise _ListingLimit("conn_timeout", f"not complete within {self.settings.conn_timeout:g} s") from None
            if not data:
                break
            total += len(data)
            if total > max_bytes:
                raise _ListingLimit("listing bytes", f"more than {max_bytes} bytes")
            pending += data
            end = pending.rfind(b"\n")
            if end >= 0:
                for raw in pending[:end].split(b"\n"):
                    take(raw)
                del pending[: end + 1]
        take(pending)

    @contextlib.contextmanager
    def _data(self, conn: socket.socket | TLSStreamReader, what: str, path: str) -> Iterator[None]:
        """Close the data connection (TLS close_notify first) on every way out of the block.

        An upload that completed is ended with :meth:`_FTPTLS.end_upload` (not waiting for the server's
        close_notify); the caller reads the ``226``.

        On an error inside the block the server's final reply is read, so that a
        ``552`` (disk full) sent while we were writing explains the broken pipe.
        """
        try:
            yield
        except (OSError, EOFError) as exc:
            with contextlib.suppress(Exception):
                conn.close()
            reply = self._reply_after_failure(what, path)
            if reply is not None:
                raise reply from exc
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            # The server still sends a final reply (426/451); read it so the control
            # connection stays usable, or mark it broken.
            if self._reply_after_failure(what, path) is None:
                self._broken = self._broken or f"aborted {what}"
            raise
        else:
            if what == "upload" and isinstance(conn, ssl.SSLSocket) and self._ftp is not None:
                self._ftp.end_upload(conn)
                return
            if isinstance(conn, (ssl.SSLSocket, TLSStreamReader)):
                try:
                    conn.unwrap()
                except (OSError, ValueError):
                    # The server closed without its close_notify after the data was complete:
                    # the 226 that follows on the control connection decides.
                    pass
            conn.close()

    def _reply_after_failure(self, what: str, path: str) -> SecureTransferError | None:
        """Read the final reply of a failed transfer; return it as an error naming *path*, if any."""
        ftp = self._ftp
        if ftp is None or ftp.sock is None:
            return None
        try:
            resp = ftp.getresp()
        except ftplib.Error as exc:
            return self._ftp_error(exc, what, path)
        except (OSError, EOFError):
            self._broken = self._broken or "no reply after a failed transfer"
            return None
        log.debug("reply after failed transfer: %s", resp[:80])
        return None

    def makedirs(self, path: str) -> None:
        """Create *path* and its missing parents; an existing directory is fine."""
        check_name(path)
        if path in self._just_missing:
            self._just_missing.clear()
            self._mkd_recursive(path)
            return
        existing = self.stat(path)
        if existing is not None:
            if not existing.is_dir:
                raise RemotePathError(f"{self._where}: {path} exists and is not a directory", path=path)
            return
        self._mkd_recursive(path)

    def _mkd_recursive(self, path: str) -> None:
        ftp = self.ftp
        try:
            with self._errors("mkdir", path):
                ftp.sendcmd(f"MKD {path}")
            return
        except RemotePathError:
            existing = self.stat(path)
            if existing is not None:
                if existing.is_dir:
                    return  # created meanwhile (another worker)
                raise RemotePathError(f"{self._where}: {path} exists and is not a directory", path=path) from None
            parent = posixpath.dirname(path.rstrip("/"))
            if not parent or parent == path:
                raise
            if self.stat(parent) is None:
                self._mkd_recursive(parent)
            # else the parent exists now: the MKD failed for another reason, or another worker created
            # the parent between our MKD and the stat; one more MKD tells which.
        with self._errors("mkdir", path):
            try:
                ftp.sendcmd(f"MKD {path}")
            except ftplib.error_perm:
                existing = self.stat(path)
                if existing is None or not existing.is_dir:
                    raise

    def write_from(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write *source* from its current position to its end into *path* at byte *offset*.

        ``offset == 0``: ``STOR`` (create or truncate). ``offset > 0``: ``REST offset`` +
        ``STOR`` (resume), or ``APPE`` when the server refuses ``REST`` for uploads
        (then the remote size must equal *offset*). The caller positions *source*
        (for a resume: ``source.seek(offset)``).

        :returns: the number of bytes sent.
        """
        sent, _ = self._store(path, source, offset=offset, progress=progress, after=[])
        return sent

    def write_then_stat(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int = 0,
        mtime: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[int, bool, RemoteEntry | None]:
        """:meth:`write_from`, then :meth:`set_mtime` (with *mtime*) and :meth:`stat` of *path*: one round trip
        after the transfer's final reply, none to a server that reads commands only between transfers (vsftpd),
        where they go out with the end of the data and their replies are read after the ``226``
        (:meth:`_after_transfer`).

        A server that greets as vsftpd but answers those commands before the transfer's reply (it reads
        commands during transfers; their answers may describe part of the file) is found at the first
        reply: that session is given up, and the time and the stat are sent again on a new one.

        :returns: (bytes sent, whether the time was set, what :meth:`stat` returns for *path*).
        """
        check_name(path)
        stat_lines = self._stat_lines(path)
        time_line = self._mtime_line(path, mtime) if mtime is not None else None
        # SIZE first where there is one (see _after_transfer), the time set before it is read back.
        at = 1 if stat_lines[0].startswith("SIZE ") else 0
        lines = stat_lines[:at] + ([time_line] if time_line else []) + stat_lines[at:]
        try:
            sent, replies = self._store(path, source, offset=offset, progress=progress, after=lines)
        except _AnsweredDuringTransfer:
            # Every byte was sent; what the server made of them is asked again (a file it had not closed
            # yet shows a short size: the engine keeps it for a resume, nothing is renamed).
            self._reconnect()
            sent = self._last_sent
            with self._errors("stat", path):
                replies = self.ftp.exchange(lines)
        was_set = False
        if time_line:
            was_set = self._mtime_answer(time_line, replies.pop(at))
        with self._errors("stat", path):
            entry = self._stat_answer(path, replies)
        return sent, was_set, entry

    def _store(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int,
        progress: ProgressCallback | None,
        after: list[str],
    ) -> tuple[int, list[str | ftplib.Error]]:
        """Upload (see :meth:`write_from`); then send *after* and return the bytes sent and their replies."""
        check_name(path)
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, got {offset}")
        ftp = self.ftp
        with self._errors("upload", path):
            if offset == 0:
                conn, _ = ftp.ntransfercmd(f"STOR {path}")
            else:
                try:
                    conn, _ = ftp.ntransfercmd(f"STOR {path}", rest=offset)
                except ftplib.error_perm as exc:
                    if str(exc)[:3] not in ("500", "501", "502", "504"):
                        raise
                    # No REST for STOR: APPE is equivalent if the remote file has exactly `offset` bytes.
                    current = self.stat(path)
                    if current is None or current.size != offset:
                        raise RemotePathError(
                            f"{self._where}: cannot resume {path} at {offset}: the server refuses REST for uploads "
                            f"and the remote size is {current.size if current else 'unknown'}",
                            path=path,
                        ) from exc
                    conn, _ = ftp.ntransfercmd(f"APPE {path}")
            sent = 0
            buf = bytearray(BLOCK_SIZE)
            view = memoryview(buf)
            with self._data(conn, "upload", path):
                readinto = getattr(source, "readinto", None)
                while True:
                    if readinto is not None:
                        n = readinto(view)
                        if not n:
                            break
                        conn.sendall(view[:n])
                    else:
                        chunk = source.read(BLOCK_SIZE)
                        if not chunk:
                            break
                        n = len(chunk)
                        conn.sendall(chunk)
                    sent += n
                    if progress is not None:
                        progress(n)
            self._last_sent = sent
            if after and after[0].startswith("SIZE ") and ftp.pipelining and ftp.reads_between_transfers:
                replies = self._after_transfer(ftp, after)
            else:
                ftp.voidresp()
                replies = ftp.exchange(after) if after else []
        return sent, replies

    def read_to(
        self,
        path: str,
        sink: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
        size: int | None = None,
    ) -> int:
        """Copy *path* from byte *offset* (``REST`` + ``RETR``) to its end into *sink*; return the bytes read.

        The data connection must end with a TLS ``close_notify`` and the server must
        confirm with ``226``; a connection cut short raises :class:`TransportError`
        instead of returning a truncated file. *size* is not needed (``RETR`` asks for nothing else).
        """
        check_name(path)
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, got {offset}")
        ftp = self.ftp
        received = 0
        with self._errors("download", path):
            conn = ftp.reader_transfercmd(f"RETR {path}", rest=offset or None)
            buf = bytearray(READ_BLOCK)
            view = memoryview(buf)
            with self._data(conn, "download", path):
                eof = False
                while not eof:
                    filled = 0
                    # Fill a whole block before writing: TLS hands out <= 16 KiB per read.
                    while filled < READ_BLOCK:
                        n = conn.readinto(view[filled:])  # 0 only after the close_notify
                        if not n:
                            eof = True
                            break
                        filled += n
                    if filled:
                        sink.write(view[:filled])
                        received += filled
                        if progress is not None:
                            progress(filled)
            ftp.voidresp()
        return received

    def rename(self, source: str, target: str) -> None:
        """Rename *source* to *target*, replacing *target* (see the module docstring on atomicity)."""
        check_name(source)
        check_name(target)
        ftp = self.ftp
        # RNFR and RNTO go out together: a refused RNFR makes the RNTO fail too (503), harmlessly.
        with self._errors("rename", source):
            first, second = ftp.exchange([f"RNFR {source}", f"RNTO {target}"])
            if isinstance(first, ftplib.Error):
                raise first
            if first[:1] != "3":
                raise ftplib.error_reply(first)
        try:
            with self._errors("rename", target):
                if isinstance(second, ftplib.Error):
                    raise second
                if second[:1] != "2":
                    raise ftplib.error_reply(second)
        except RemotePathError as exc:
            self._replace_onto(source, target, exc)

    def _replace_onto(self, source: str, target: str, refusal: RemotePathError) -> None:
        """``RNTO`` *target* was refused: where *target* is an existing file, delete it and rename again."""
        existing = self.stat(target)
        if existing is None or existing.is_dir:
            raise refusal
        log.warning(
            "%s refuses to rename onto the existing %s; deleting it first (not atomic: the target is briefly missing)",
            self._where,
            target,
        )
        self.remove(target)
        ftp = self.ftp
        with self._errors("rename", source):
            ftp.sendcmd(f"RNFR {source}")
        with self._errors("rename", target):
            ftp.voidcmd(f"RNTO {target}")

    def remove(self, path: str) -> None:
        """Delete the file *path* (``DELE``); a missing file raises :class:`RemotePathError`."""
        check_name(path)
        ftp = self.ftp
        with self._errors("delete", path):
            ftp.voidcmd(f"DELE {path}")

    def checksum(self, path: str) -> Checksum | None:
        """Return the server's digest of *path* (``HASH`` if in FEAT, else ``XSHA256``...), or ``None``."""
        check_name(path)
        ftp = self.ftp
        if "HASH" in self.features:
            result = self._hash(ftp, path)
            if result is not None:
                return result
        for command, algorithm in _X_HASH_COMMANDS:
            if command not in self.features:
                continue
            with self._errors("checksum", path):
                try:
                    resp = ftp.sendcmd(f"{command} {path}")
                except ftplib.error_perm as exc:
                    if str(exc)[:3] in _PATH_CODES:
                        raise
                    continue
            digest = self._find_hex(resp[4:], algorithm)
            if digest is not None:
                return Checksum(algorithm, digest, method=command)
        return None

    def _hash(self, ftp: _FTPTLS, path: str) -> Checksum | None:
        # FEAT line: "HASH SHA-256*;SHA-512;SHA-1;MD5" ('*' marks the current algorithm).
        offered = [a.strip() for a in self.features["HASH"].split(";") if a.strip()]
        names = {a.rstrip("*").upper(): a.endswith("*") for a in offered}
        choice = next((a for a in _HASH_ALGOS if a in names), None)
        if choice is None:
            return None
        with self._errors("checksum", path):
            if self._hash_algo != choice and not names.get(choice):
                try:
                    ftp.voidcmd(f"OPTS HASH {choice}")
                except ftplib.error_perm:
                    return None
            self._hash_algo = choice
            try:
                resp = ftp.sendcmd(f"HASH {path}")
            except ftplib.error_perm as exc:
                if str(exc)[:3] in _PATH_CODES:
                    raise
                return None
        # "213 SHA-256 0-49 169cd22282da7f147cb491e559e9dd filename"
        parts = resp[4:].split(" ", 3)
        algorithm = _HASH_ALGOS.get(parts[0].upper()) if parts else None
        if algorithm is None or len(parts) < 3:
            return None
        digest = self._find_hex(" ".join(parts[1:3]), algorithm)
        return Checksum(algorithm, digest, method="HASH") if digest else None

    @staticmethod
    def _find_hex(text: str, algorithm: str) -> str | None:
        length = _HEX_LEN[algorithm]
        for token in text.split():
            if len(token) == length and re.fullmatch(r"[0-9a-fA-F]+", token):
                return token.lower()
        return None

    # ------------------------------------------------------------------ extras

    @property
    def checksum_support(self) -> str | None:
        """How :meth:`checksum` will ask the server (``"HASH SHA-256"``, ``"XSHA256"``...), or ``None``."""
        if "HASH" in self.features:
            offered = {a.strip().rstrip("*").upper() for a in self.features["HASH"].split(";")}
            choice = next((a for a in _HASH_ALGOS if a in offered), None)
            if choice:
                return f"HASH {choice}"
        return next((cmd for cmd, _ in _X_HASH_COMMANDS if cmd in self.features), None)

    def size(self, path: str) -> int | None:
        """Return the size of the file *path*, or ``None`` if it does not exist or is a directory.

        One command: ``SIZE`` where the server offers it (in binary mode, the exact byte count),
        else ``MLST``; :meth:`stat` may need two or three on a server without ``MLST``.
        """
        check_name(path)
        if "SIZE" not in self.features:
            entry = self.stat(path)
            return None if entry is None or entry.is_dir else entry.size
        ftp = self.ftp
        with self._errors("size", path):
            try:
                resp = ftp.sendcmd(f"SIZE {path}")
            except ftplib.error_perm as exc:
                if str(exc)[:3] in _PATH_CODES:
                    return None  # missing, or a directory (SIZE answers for files only)
                raise
        try:
            return int(resp[3:].strip())
        except ValueError:
            raise ConfigurationError(f"{self._where}: size {path}: unexpected reply {resp[:80]!r}") from None

    #: Files per ``put_small_many`` call the engine should hand this client at most. Its files go one
    #: after the other on the one control connection, so the engine also gives each worker only its
    #: share of the last files (workers finish together). Each batch boundary costs two round trips
    #: (the first file's EPSV, the last file's rename); 16 measured best at 50 ms (8: 3-7 % slower).
    put_small_batch = 16

    def put_small(self, part: str, target: str, data: bytes, *, mtime: int | None = None) -> int | None:
        """Upload a whole small file: ``STOR`` *data* into *part*, check its size, rename it to *target*.

        :meth:`put_small_many` with one file.

        :returns: the size the server reported for *part* (``None``: missing); the rename happens
            only when it is ``len(data)``.
        """
        (answer,) = self.put_small_many([(part, target, data)], mtimes=[mtime])
        if isinstance(answer, SecureTransferError):
            raise answer
        return answer

    def put_small_many(
        self, items: Sequence[tuple[str, str, bytes]], *, mtimes: Sequence[int | None] | None = None
    ) -> list[int | SecureTransferError | None]:
        """Upload small files one after the other, each ``STOR`` into its part, size-checked, renamed.

        Per file: ``STOR`` *data* into *part* over a TLS data connection, ``SIZE`` *part* once the
        server confirmed the transfer (``226``), and only when the size is ``len(data)`` the time
        (``MFMT``/``MDTM``, with *mtimes*) and ``RNFR`` *part* + ``RNTO`` *target*.

        Commands whose answers decide nothing about each other go out together and their replies
        are read in order (RFC 959 servers read the control connection as a stream: vsftpd,
        pyftpdlib, ProFTPD, FileZilla Server): the next file's ``EPSV`` goes with this file's
        ``SIZE``, and this file's rename with the next file's ``STOR`` (whose data connection is
        opened meanwhile). What each check protects stays in order: ``SIZE`` is sent after the
        ``226`` (a server that works asynchronously, like pyftpdlib, could otherwise answer before
        the file is closed), except to a server that reads commands only between transfers (vsftpd),
        where it goes with the end of the data and its reply must follow the ``226``
        (:meth:`_after_transfer`); the rename is sent only after ``SIZE`` answered with the right
        size. A refused ``RNFR`` makes the ``RNTO`` after it fail (``503``), harmlessly. About 4
        round trips per file (3 with vsftpd), where one command at a time takes 8.

        :returns: per file what :meth:`put_small` returns, or the error that file met; once the
            connection breaks, every file not yet renamed gets that error.
        """
        count = len(items)
        answers: list[int | SecureTransferError | None] = [None] * count
        settled = [False] * count
        times: list[int | None] = list(mtimes) if mtimes is not None else [None] * count
        for i, (part, target, _) in enumerate(items):
            try:
                check_name(part)
                check_name(target)
            except SecureTransferError as exc:
                answers[i], settled[i] = exc, True
        todo = [i for i in range(count) if not settled[i]]
        #: Lines for the previous file (time, rename) that go out with the next STOR: [(index, kind, line)].
        carry: list[tuple[int, str, str]] = []
        sizes: dict[int, int | None] = {}
        replace_later: list[tuple[int, RemotePathError]] = []
        address: tuple[str, int] | None = None
        ftp = self.ftp
        #: Where the files to send again on a new connection begin (see _after_transfer).
        again: list[int] = []
        try:
            for pos, i in enumerate(todo):
                part, target, data = items[i]
                try:
                    with self._errors("upload", part):
                        if address is None:
                            if carry:
                                self._settle_carry(ftp, carry, sizes, answers, settled, replace_later, send=True)
                                carry = []
                            address = ftp.makepasv()
                        raw = ftp.start_data_connect(address)
                        address = None
                        try:
                            if ftp.pipelining:
                                ftp.putlines([line for _, _, line in carry] + [f"STOR {part}"])
                            else:
                                self._settle_carry(ftp, carry, sizes, answers, settled, replace_later, send=True)
                                ftp.putline(f"STOR {part}")
                        except BaseException:
                            raw.close()
                            raise
                        # The ClientHello goes out now, before the replies to the carried lines are read:
                        # its answer comes with the 150 (see _FTPTLS.begin_data).
                        hello: ssl.SSLSocket | None = None
                        try:
                            hello = ftp.begin_data(raw)
                        finally:
                            # The carried lines' replies come first, whatever became of this data connection.
                            if ftp.pipelining:
                                try:
                                    self._settle_carry(ftp, carry, sizes, answers, settled, replace_later, send=False)
                                except BaseException:
                                    if hello is not None:
                                        hello.close()
                                    raise
                        carry = []
                        conn, _ = ftp.finish_data(hello)
                        with self._data(conn, "upload", part):
                            conn.sendall(data)
                        # Its size, with the next file's passive port: after the 226, or on a server that
                        # reads commands only between transfers (vsftpd) at once, to be read after the 226.
                        more = pos + 1 < len(todo)
                        size_known = "SIZE" in self.features
                        lines = ([f"SIZE {part}"] if size_known else []) + ([ftp.pasv_command()] if more else [])
                        # SIZE first: a server that reads commands during transfers answers it before the
                        # 226 whenever an EPSV behind it could have ended the transfer (_after_transfer).
                        if size_known and ftp.pipelining and ftp.reads_between_transfers:
                            replies = self._after_transfer(ftp, lines)
                        else:
                            ftp.voidresp()
                            replies = ftp.exchange(lines)
                    if size_known:
                        size = self._size_reply(part, replies[0])
                    else:
                        size = self.size(part)
                    if more:
                        with self._errors("upload", items[todo[pos + 1]][0]):
                            address = ftp.pasv_address(replies[-1])
                except _AnsweredDuringTransfer:
                    again = todo[pos:]
                    break
                except SecureTransferError as exc:
                    answers[i], settled[i] = exc, True
                    if not self.usable:
                        raise
                    address = None
                    continue
                sizes[i] = size
                if size != len(data):
                    answers[i], settled[i] = size, True  # no rename: the caller decides what a mismatch means
                    continue
                mtime = times[i]
                line = self._mtime_line(part, mtime) if mtime is not None else None
                if line is not None:
                    carry.append((i, "time", line))
                carry += [(i, "from", f"RNFR {part}"), (i, "to", f"RNTO {target}")]
            if carry:
                with self._errors("rename", items[carry[0][0]][0]):
                    self._settle_carry(ftp, carry, sizes, answers, settled, replace_later, send=True)
                carry = []
            if again:
                # Nothing of these is renamed (the carried renames were settled before this file's
                # 150): a new session, which waits for each 226 first, sends them all again.
                self._reconnect()
                resent = self.put_small_many([items[j] for j in again], mtimes=[times[j] for j in again])
                for j, answer in zip(again, resent, strict=True):
                    answers[j], settled[j] = answer, True
            for i, refusal in replace_later:
                part, target, _ = items[i]
                try:
                    self._replace_onto(part, target, refusal)
                except SecureTransferError as exc:
                    answers[i] = exc
                    if not self.usable:
                        raise
                else:
                    answers[i] = sizes[i]
                settled[i] = True
        except SecureTransferError as exc:
            # The connection is gone: whatever is not renamed yet is not known to be anywhere.
            for i in range(count):
                if not settled[i]:
                    answers[i] = exc
        return answers

    def _after_transfer(self, ftp: _FTPTLS, lines: list[str]) -> list[str | ftplib.Error]:
        """Send *lines* before the upload's final reply is read; return their replies after checking it.

        Only for a server that reads the control connection between transfers only (vsftpd): it reads
        *lines* after it sent the ``226``, so the ``SIZE`` among them sees the complete file. Each reply
        is checked where it stands: the first must be the transfer's own final reply, never one that a
        ``SIZE`` or ``EPSV``/``PASV`` gets. Any other order means the server read the lines while the
        transfer was ending (its ``SIZE`` may have seen part of the file, its ``EPSV`` may have ended
        the transfer). *lines* start with ``SIZE``, so on such a server an ``EPSV`` that ended the
        transfer was read after a ``SIZE`` that was answered before the transfer's reply: it is found
        at the first reply, which is all that is read then. That session is given up
        (:class:`_AnsweredDuringTransfer`: nothing was renamed on it, the caller sends the files again
        on a new session), and this process waits for the ``226`` with that server from then on.
        """
        ftp.putlines(lines)
        (first,) = ftp.replies(1)
        if isinstance(first, str) and first[:3] in _NOT_A_TRANSFER_REPLY:
            # Not read further: a server that let an EPSV end the transfer may never send its reply.
            _ANSWERS_DURING_TRANSFERS.add((self.settings.host, self.settings.port))
            ftp.reads_between_transfers = False
            self._broken = "the server answered a command sent during a transfer before the transfer's reply"
            log.warning(
                "%s answered %s before the upload's final reply: it reads commands during transfers; the "
                "file is sent again on a new connection, and this process waits for the final reply first",
                self._where,
                lines[0].split()[0],
            )
            raise _AnsweredDuringTransfer
        replies = ftp.replies(len(lines))
        if isinstance(first, ftplib.Error):
            raise first
        if first[:1] != "2":
            raise ftplib.error_reply(first)
        return replies

    def _size_reply(self, path: str, reply: str | ftplib.Error) -> int | None:
        """Judge a ``SIZE`` reply as :meth:`size` does (missing or a directory: ``None``)."""
        if isinstance(reply, ftplib.Error):
            if str(reply)[:3] in _PATH_CODES:
                return None
            with self._errors("size", path):
                raise reply
        try:
            return int(reply[3:].strip())
        except ValueError:
            raise ConfigurationError(f"{self._where}: size {path}: unexpected reply {reply[:80]!r}") from None

    def _settle_carry(
        self,
        ftp: _FTPTLS,
        carry: list[tuple[int, str, str]],
        sizes: dict[int, int | None],
        answers: list[int | SecureTransferError | None],
        settled: list[bool],
        replace_later: list[tuple[int, RemotePathError]],
        *,
        send: bool,
    ) -> None:
        """Read the replies to the carried time/rename lines (sending them first with *send*); settle each file."""
        if not carry:
            return
        lines = [line for _, _, line in carry]
        replies = ftp.exchange(lines) if send else ftp.replies(len(carry))
        renamed_from: dict[int, tuple[str, str | ftplib.Error]] = {}
        for (i, kind, line), reply in zip(carry, replies, strict=True):
            if kind == "time":
                self._mtime_answer(line, reply)
            elif kind == "from":
                renamed_from[i] = (line[5:], reply)
            else:
                source, first = renamed_from[i]
                target = line[5:]
                error: SecureTransferError | None = None
                if isinstance(first, ftplib.Error):
                    error = self._ftp_error(first, "rename", source)
                elif first[:1] != "3":
                    error = self._ftp_error(ftplib.error_reply(first), "rename", source)
                elif isinstance(reply, ftplib.Error):
                    error = self._ftp_error(reply, "rename", target)
                    if isinstance(error, RemotePathError):
                        replace_later.append((i, error))
                        continue
                elif reply[:1] != "2":
                    error = self._ftp_error(ftplib.error_reply(reply), "rename", target)
                answers[i] = error if error is not None else sizes[i]
                settled[i] = True

    def mtime(self, path: str) -> float | None:
        """Return the modification time of the file *path* (one ``MDTM``), or None when unknown.

        One command where :meth:`stat` on a server without ``MLST`` (vsftpd) needs ``SIZE`` and ``MDTM``:
        the engine asks it for a file that a ``LIST`` (no seconds, local time) showed at the right size.
        """
        check_name(path)
        if "MDTM" not in self.features:
            entry = self.stat(path)
            return None if entry is None else entry.mtime
        ftp = self.ftp
        with self._errors("modification time", path):
            try:
                resp = ftp.sendcmd(f"MDTM {path}")
            except ftplib.error_perm:
                return None
        return _parse_mlsx_time(resp[3:].strip())

    @property
    def can_set_mtime(self) -> bool | None:
        """Whether :meth:`set_mtime` can work here (``None``: not tried yet on this connection)."""
        if self._mtime_command == "":
            return False
        return None if self._mtime_command is None else True

    def set_mtime(self, path: str, mtime: int) -> bool:
        """Set *path*'s modification time to *mtime* (seconds since the epoch, UTC); return whether it did.

        ``MFMT YYYYMMDDHHMMSS path`` where FEAT lists it (draft-somers-ftp-mfxx), else vsftpd's
        two-argument ``MDTM YYYYMMDDHHMMSS path`` where FEAT lists ``MDTM``. The first refusal
        of the command settles it for the connection: nothing more is sent for a server that
        cannot, so an upload costs no extra round trip there. ``MFMT``'s answer carries the
        time the server now reports (``213 Modify=...``): one other than the time sent (a
        server answering in local time) turns :attr:`mtime_trusted` off.
        """
        check_name(path)
        line = self._mtime_line(path, mtime)
        if line is None:
            return False
        ftp = self.ftp
        with self._errors("set modification time", path):
            try:
                resp: str | ftplib.Error = ftp.sendcmd(line)
            except ftplib.error_perm as exc:
                resp = exc
        return self._mtime_answer(line, resp)

    def _mtime_line(self, path: str, mtime: int) -> str | None:
        """The command that sets *path*'s time to *mtime* on this server, or ``None`` (it cannot)."""
        if self._mtime_command is None:
            self._mtime_command = "MFMT" if "MFMT" in self.features else "MDTM" if "MDTM" in self.features else ""
        command = self._mtime_command
        if not command or mtime < 0:
            return None
        return f"{command} {time.strftime('%Y%m%d%H%M%S', time.gmtime(mtime))} {path}"

    def _mtime_answer(self, line: str, resp: str | ftplib.Error) -> bool:
        """Judge the reply to :meth:`_mtime_line`'s *line*: whether the time was set (see :meth:`set_mtime`)."""
        command, stamp, _ = line.split(" ", 2)
        if isinstance(resp, ftplib.error_temp):
            log.info("%s: %s did not set a modification time this time (%s)", self._where, command, str(resp)[:3])
            return False
        if isinstance(resp, ftplib.Error):
            # Two-argument MDTM is a vsftpd extension: elsewhere "MDTM <time> <path>" reads as
            # a path that does not exist (550). MFMT refused as a command (5xx but a path code) too.
            if command == "MDTM" or str(resp)[:3] not in _PATH_CODES:
                log.info("%s: %s cannot set modification times (%s)", self._where, command, str(resp)[:3])
                self._mtime_command = ""
            return False
        if command == "MDTM" and re.fullmatch(r"\d{14}(\.\d+)?", resp[4:].strip()):
            # A bare time is a *query's* answer: this server read "<time> <path>" as a file name.
            self._mtime_command = ""
            return False
        echoed = re.search(r"Modify=(\d{14})", resp, re.IGNORECASE)
        if echoed is not None and echoed.group(1) != stamp:
            self.mtime_trusted = False
        return True

    def noop(self) -> None:
        """Send ``NOOP`` (keeps the control connection alive during long local work)."""
        ftp = self.ftp
        with self._errors("noop"):
            ftp.voidcmd("NOOP")
