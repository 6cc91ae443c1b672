"""Every use of an asyncssh private name, in one place (asyncssh ``>=2.23.1,<2.25``).

The SFTP client leans on a few asyncssh internals for speed and for protocol features asyncssh
has no public API for. Each is reached only through a function here, each function degrades
to asyncssh's public behaviour when the name is missing (a slower path, never a weaker one),
and :data:`PRIVATE_NAMES` lists them all for ``tests/sftp/test_asyncssh_private.py``, which fails
on an asyncssh upgrade that removes or renames any of them (then update this module, or raise
the dependency's ceiling only after the suite passed):

==============================================  ===========================================================
name                                            why
==============================================  ===========================================================
``SSHClientConnection._transport``              coalesce the packets of one loop turn into one ``send()``
``SSHClientConnection.send_packet``             skip ``SSH_MSG_IGNORE`` before packets of non-CBC ciphers
``SSHClientConnection._send_encryption``        ... decided once per key (re-decided after a rekey)
``SSHClientConnection._server_kexinit``         name the negotiated key exchange; say which list had
                                                nothing in common when a handshake fails
``SSHClientConnection.log_sent_packet`` et al.  skip per-packet log formatting below debug level 3
``asyncssh.logging.logger._debug_level``        ... that level
``SFTPClient._handler``                         the SFTP request layer (requests by handle), for:
``SFTPClientHandler.open/read/write/``         small-file batches (OPEN, then WRITEs + FSETSTAT + FSTAT +
``fsetstat/fstat/close``                        CLOSE, or READs + CLOSE, in flight together); fallback: the
                                                public ``open``/``write``/``read``
``SFTPClientHandler._send_request``             the ``check-file-name`` extension (server-side checksums);
                                                fallback: no server checksum (a read-back verifies)
``SFTPClientHandler._supports_posix_rename``    report whether renames are atomic (``posix-rename@openssh.com``)
``SFTPClientHandler._supports_limits``          whether the block size was advertised (``limits@openssh.com``)
``SFTPClientHandler._logger``, ``._writer``     skip per-request debug formatting; the channel's packet log
``SSHChannel._init_recv_window``                widen a far server's SFTP receive window once it is open
                                                (the next window adjustment grants it); fallback: asyncssh's
                                                2 MiB (downloads from far servers slower, nothing weaker)
==============================================  ===========================================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import asyncssh

from airflow_secure_transfer.security.hostkeys import CIPHERS

__all__ = [
    "PRIVATE_NAMES",
    "CoalescingTransport",
    "coalesce_writes",
    "request_layer",
    "send_extended_request",
    "server_kexinit_payload",
    "sftp_channel",
    "sftp_handler",
    "skip_cbc_ignore_packets",
    "skip_debug_formatting",
    "skip_packet_log_formatting",
    "supports_limits",
    "supports_posix_rename",
    "widen_recv_window",
]

#: ``(kind, attribute)``: what this module reads or replaces. ``kind`` is ``"connection"``
#: (``SSHClientConnection``), ``"handler"`` (``SFTPClientHandler``), ``"sftp"`` (``SFTPClient``),
#: ``"channel"`` (the SFTP session's ``SSHClientChannel``) or ``"logger"`` (``asyncssh.logging.logger``).
PRIVATE_NAMES: Final[tuple[tuple[str, str], ...]] = (
    ("connection", "_transport"),
    ("connection", "send_packet"),
    ("connection", "_send_encryption"),
    ("connection", "_server_kexinit"),
    ("connection", "log_sent_packet"),
    ("connection", "log_received_packet"),
    ("logger", "_debug_level"),
    ("sftp", "_handler"),
    ("handler", "open"),
    ("handler", "read"),
    ("handler", "write"),
    ("handler", "fsetstat"),
    ("handler", "fstat"),
    ("handler", "close"),
    ("handler", "_send_request"),
    ("handler", "_supports_posix_rename"),
    ("handler", "_supports_limits"),
    ("handler", "_logger"),
    ("handler", "_writer"),
    ("channel", "_init_recv_window"),
)

#: The request-layer methods a small-file batch needs (all coroutines taking a handle).
_REQUESTS: Final = ("open", "read", "write", "fsetstat", "fstat", "close")


def sftp_handler(sftp: asyncssh.SFTPClient | None) -> Any:
    """Return asyncssh's SFTP request layer behind *sftp* (``SFTPClient._handler``), or None."""
    return getattr(sftp, "_handler", None)


def sftp_channel(sftp: asyncssh.SFTPClient | None) -> Any:
    """Return the SSH channel of *sftp*'s session (through ``SFTPClientHandler._writer``), or None."""
    writer = getattr(sftp_handler(sftp), "_writer", None)
    return getattr(writer, "channel", None)


def widen_recv_window(sftp: asyncssh.SFTPClient | None, window: int) -> bool:
    """Make *sftp*'s channel keep up to *window* bytes open for the server; return whether it could.

    asyncssh fixes a channel's receive window when the channel opens and tops it up to that size
    whenever half is used (``SSHChannel._init_recv_window``): raised here, the next top-up grants the
    difference. Only ever raised, so the server never sees a window shrink.
    """
    channel = sftp_channel(sftp)
    current = getattr(channel, "_init_recv_window", None)
    if not isinstance(current, int):
        return False
    if current < window:
        channel._init_recv_window = window
    return True


def request_layer(sftp: asyncssh.SFTPClient | None) -> Any:
    """Return the request layer when it has every method a small-file batch sends, else None.

    None means: use the public API (``SFTPClient.open`` and the file's methods) instead.
    """
    handler = sftp_handler(sftp)
    if handler is None or not all(callable(getattr(handler, name, None)) for name in _REQUESTS):
        return None
    return handler


def send_extended_request(sftp: asyncssh.SFTPClient | None, name: bytes, args: Any, waiter: Any) -> bool:
    """Send the SFTP extension request *name* (``SSH_FXP_EXTENDED``); False when it cannot be sent."""
    handler = sftp_handler(sftp)
    send = getattr(handler, "_send_request", None)
    if not callable(send):
        return False
    send(name, args, waiter)
    return True


def supports_posix_rename(sftp: asyncssh.SFTPClient | None) -> bool:
    """Whether the server offers ``posix-rename@openssh.com`` (atomic replacing renames)."""
    return bool(getattr(sftp_handler(sftp), "_supports_posix_rename", False))


def supports_limits(sftp: asyncssh.SFTPClient | None) -> bool:
    """Whether the server advertised its read/write limits (``limits@openssh.com``); True if unknown."""
    return bool(getattr(sftp_handler(sftp), "_supports_limits", True))


def server_kexinit_payload(conn: asyncssh.SSHClientConnection | None) -> bytes:
    """The raw payload of the server's KEXINIT as asyncssh keeps it (for the exchange hash), or b''."""
    payload = getattr(conn, "_server_kexinit", b"") or b""
    return payload if isinstance(payload, bytes) else b""


def coalesce_writes(conn: asyncssh.SSHClientConnection, loop: asyncio.AbstractEventLoop) -> bool:
    """Put a :class:`CoalescingTransport` under *conn*; False (nothing changed) if it has no transport."""
    transport = getattr(conn, "_transport", None)
    if not isinstance(transport, asyncio.Transport):
        return False
    conn._transport = CoalescingTransport(transport, loop)  # type: ignore[assignment] # a private attribute
    return True


def quiet_sftp_handler(sftp: asyncssh.SFTPClient | None) -> None:
    """Skip per-packet and per-request log formatting in the SFTP layer and its channel."""
    handler = sftp_handler(sftp)
    skip_packet_log_formatting(handler)  # SFTP packets
    skip_debug_formatting(handler)  # SFTP requests
    skip_packet_log_formatting(getattr(getattr(handler, "_writer", None), "channel", None))  # channel data


class CoalescingTransport:
    """Join the SSH packets written in one event-loop turn into one ``send()``.

    asyncssh writes every SSH packet (and an ``SSH_MSG_IGNORE`` before each data packet)
    with its own ``transport.write``, which on a selector loop is one ``send()`` system
    call per packet -- about two per 32 KiB of file data. Buffering them until the end of
    the current loop iteration cuts the system calls and the per-call overhead (about a tenth
    of the client's CPU in a 256 MiB upload, measured); the bytes and their order on the wire
    are unchanged.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending:
            chunks, self._pending = self._pending, []
            if not self._transport.is_closing():
                self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def skip_packet_log_formatting(packet_logger: object) -> None:
    """Skip asyncssh's per-packet log formatting when its packet log is off (debug level < 3).

    asyncssh builds a log line (type name, size, note) for every SSH and SFTP packet and
    then drops it unless debug level 3 is set; for a 32 KiB data packet that formatting is
    about an eighth of the client's CPU (measured). Below level 3 the result is identical:
    nothing is logged either way. Level 3 (packet dumps) is left alone.
    """
    level = getattr(getattr(asyncssh, "logging", None), "logger", None)
    if packet_logger is None or getattr(level, "_debug_level", 3) >= 3:
        return

    def _no_packet_log(*args: object, **kwargs: object) -> None:
        return None

    for name in ("log_sent_packet", "log_received_packet"):
        if callable(getattr(packet_logger, name, None)):
            setattr(packet_logger, name, _no_packet_log)


class _LevelCheckedLogger:
    """An asyncssh ``SSHLogger`` whose ``debug1``/``debug2`` return at once when DEBUG is off.

    asyncssh's ``SSHLogger.log`` converts every argument to text before the standard library
    checks the level, and its SFTP client logs each request (``Sending write for 8192 bytes at
    offset 0 in handle ...``): with many small files that formatting was ~9 % of the client's CPU
    (py-spy, 500 files of 8 KiB). Checking the level first changes nothing that is logged.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def debug1(self, msg: str, *args: object, **kwargs: object) -> None:
        if self._inner.isEnabledFor(logging.DEBUG):
            self._inner.debug1(msg, *args, **kwargs)

    def debug2(self, msg: str, *args: object, **kwargs: object) -> None:
        if self._inner.isEnabledFor(logging.DEBUG):
            self._inner.debug2(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def skip_debug_formatting(handler: object) -> None:
    """Put a :class:`_LevelCheckedLogger` in front of the SFTP handler's logger (asyncssh internals)."""
    inner = getattr(handler, "_logger", None)
    if inner is not None and callable(getattr(inner, "isEnabledFor", None)):
        setattr(handler, "_logger", _LevelCheckedLogger(inner))  # noqa: B010 - a private attribute


def skip_cbc_ignore_packets(conn: asyncssh.SSHClientConnection) -> None:
    """Do not send asyncssh's empty ``SSH_MSG_IGNORE`` before every packet when the cipher is not CBC.

    asyncssh precedes each encrypted packet with an empty ``SSH_MSG_IGNORE``: the countermeasure
    of RFC 4251 section 9.3.1 against predictable CBC initialisation vectors. CBC ciphers are
    never offered here (:data:`~airflow_secure_transfer.security.hostkeys.CIPHERS`: AES-GCM,
    ChaCha20-Poly1305, AES-CTR with encrypt-then-MAC), where the countermeasure protects
    nothing, and OpenSSH does not send these packets either. Skipping them halves the packets
    the client encrypts (one per 32 KiB of data); each costs about 13 us of CPU, some 7 % of an
    upload's client CPU (measured). The check is made per packet on the negotiated cipher, so a
    cipher outside our list (there is none) would keep them.
    """
    from asyncssh.constants import MSG_IGNORE
    from asyncssh.packet import String

    original = conn.send_packet
    empty = String(b"")
    # The decision holds until a rekey installs a new encryption object (the cipher is looked up
    # again then); get_extra_info on every packet cost ~3 % of a large upload's client CPU.
    decided: list[object] = [None, False]  # [encryption object, skip]

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == (empty,) and not kwargs:
            encryption = getattr(conn, "_send_encryption", None)
            if encryption is None or encryption is not decided[0]:
                decided[:] = [encryption, str(conn.get_extra_info("send_cipher", "")) in CIPHERS]
            if decided[1]:
                return None
        return original(pkttype, *args, **kwargs)

    setattr(conn, "send_packet", send_packet)  # noqa: B010 - an instance attribute shadows the method
