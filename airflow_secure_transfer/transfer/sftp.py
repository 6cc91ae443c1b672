"""SFTP transport: a synchronous :class:`~airflow_secure_transfer.transfer.base.RemoteFS` over asyncssh.

Why asyncssh, and why this shape
--------------------------------
Measured on one loopback OpenSSH sshd (see ``bench/sftp_throughput.py`` and the
probe results): paramiko's ``put`` reaches about 0.45-0.6x the throughput of
OpenSSH's own ``sftp``; asyncssh with 255 KiB requests, many requests in flight
and AES-GCM reaches about 1x. The SFTP protocol is request/response, so
throughput comes from keeping many write requests outstanding; asyncssh does
that naturally on an event loop.

:class:`SFTPClient` runs one asyncssh connection on a private event loop in a
daemon thread and exposes blocking methods. Every call waits on the loop with
the connection's ``conn_timeout``. Data moves in pipelined requests:

* upload: the *calling* thread reads the local file (the read releases the GIL)
  and hands each block to the loop, which sends it as one SFTP ``WRITE`` at its
  offset while up to ``max_requests`` writes await their answers; so reading,
  encrypting and the server's disk writes overlap;
* download: the loop keeps up to ``max_requests`` ``READ`` requests outstanding,
  the calling thread writes the answers to the sink in offset order.

The client's CPU is what limits one transfer on a fast link, so three things
keep asyncssh's per-packet work down without changing the protocol's security:
packets written in one loop turn leave in one ``send()``, asyncssh's packet-log
formatting is skipped while its packet log is off, and its empty ``SSH_MSG_IGNORE``
before each packet -- a countermeasure for CBC ciphers, which are never negotiated
here -- is not sent. Each uses asyncssh internals, all of them in
:mod:`~airflow_secure_transfer.transfer._asyncssh_private` (measured in its docstrings).

A resumed upload continues at the partial file's size. That is right because SFTP
servers execute the requests of one session in order (OpenSSH's sftp-server and
asyncssh's server do), so a cut connection leaves a prefix of the file.

Security (see :mod:`airflow_secure_transfer.security.hostkeys`)
---------------------------------------------------------------
* The server's host key is checked during the key exchange, before any
  credential is sent, against the pinned keys / known_hosts entries of the
  settings only; nothing else (``~/.ssh/known_hosts``, ``~/.ssh/config``, an SSH
  agent, default identity files, GSS-API, X.509) is consulted.
* An unknown or changed key raises
  :class:`~airflow_secure_transfer.exceptions.VerificationError` at once, with
  the presented key's SHA256 fingerprint and the expected ones; there is no
  retry anywhere in this module.
* Only the algorithm lists of :mod:`~airflow_secure_transfer.security.hostkeys`
  are offered; a server without a common one fails with
  :class:`~airflow_secure_transfer.exceptions.SecurityPolicyError`.
* Passwords, private keys and passphrases are passed to asyncssh and nowhere
  else: not into messages, not into our log lines. asyncssh's own logger is set
  to WARNING unless the application configured it (its packet dumps, at debug
  level 3, would show authentication packets).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import posixpath
import queue
import shlex
import stat as stat_module
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import asyncssh

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    IntegrityError,
    LimitExceededError,
    RemotePathError,
    RemoteStorageFullError,
    SecureTransferError,
    SecurityPolicyError,
    TransferTimeout,
    TransportError,
    scrub_secrets,
)
from airflow_secure_transfer.security.hostkeys import (
    HostKey,
    HostKeyTrust,
)
from airflow_secure_transfer.security.paths import check_name, listed_child
from airflow_secure_transfer.transfer import _asyncssh_private as private
from airflow_secure_transfer.transfer import limits
from airflow_secure_transfer.transfer.base import Checksum, ClosingClient, ProgressCallback, RemoteEntry
from airflow_secure_transfer.transfer.sftp_handshake import (
    OpenedSession,
    _is_aead,
    open_sftp_session,
)
from airflow_secure_transfer.transfer.sftp_pipeline import (
    _Downloader,
    _LoopThread,
    _Uploader,
    _UploadError,
    _UploadTimeout,
)

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import SFTPSettings

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_REQUESTS",
    "OpenedSession",
    "SFTPClient",
    "SessionInfo",
    "listing_entries",
    "open_sftp_session",
    "read_listing",
    "translate_error",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes per SFTP READ/WRITE request. OpenSSH's sftp-server refuses requests above
#: 256 KiB minus header room (it advertises 261120 in ``limits@openssh.com``); a server
#: that advertises a smaller limit gets that, one that advertises none gets 32 KiB
#: (the size every SFTP server must accept).
DEFAULT_BLOCK_SIZE = 261120
_UNADVERTISED_BLOCK_SIZE = 32768
#: WRITE/READ requests in flight per transfer: 32 x 255 KiB = 8 MiB, the data buffered per
#: connection. The SSH channel window caps what is actually on the wire (OpenSSH: 2 MiB, so 8
#: requests fill it on loopback; 8 MiB still fills 1 Gbit/s at 65 ms round trip). On loopback
#: 8 to 128 measured the same throughput within noise, but the peak memory of a 2 GiB upload
#: grew with the count (bench case 4: 128 -> +52 MiB over a 1 MiB upload, 32 -> +33 MiB).
DEFAULT_MAX_REQUESTS = 32

_FXF_READ = asyncssh.FXF_READ
_FXF_WRITE = asyncssh.FXF_WRITE
_FXF_CREAT = asyncssh.FXF_CREAT
_FXF_TRUNC = asyncssh.FXF_TRUNC
_ATTR_DEFINED = asyncssh.constants.FILEXFER_ATTR_DEFINED_V4
_FXF_NEW = _FXF_WRITE | _FXF_CREAT | _FXF_TRUNC

#: check-file hash names (draft-ietf-secsh-filexfer-extensions) -> hashlib names, preferred first.
_CHECK_FILE_ALGORITHMS = {
    "sha256": "sha256",
    "sha512": "sha512",
    "sha384": "sha384",
    "sha224": "sha224",
    "sha1": "sha1",
    "md5": "md5",
}

#: Checksum commands tried over SSH exec (where the server allows commands), preferred first.
_EXEC_CHECKSUMS = (("sha256sum", "sha256"), ("md5sum", "md5"))
_HEX_DIGITS = {"sha256": 64, "md5": 32}
#: Most bytes of a checksum command's output read (a digest, two spaces and a path need far less).
_EXEC_OUTPUT_LIMIT = 8192


async def _exec_digest(conn: asyncssh.SSHClientConnection, command: str, digits: int) -> str | None:
    """Run *command* on *conn*; return the hex digest that starts its output, or None (untrusted output)."""
    try:
        process = await conn.create_process(command, stdin=asyncssh.DEVNULL, stderr=asyncssh.DEVNULL, encoding=None)
    except (asyncssh.Error, OSError):
        return None  # exec refused (an SFTP-only account), or the channel could not open
    try:
        out = b""
        while len(out) <= _EXEC_OUTPUT_LIMIT:
            chunk = await process.stdout.read(_EXEC_OUTPUT_LIMIT + 1 - len(out))
            if not chunk:
                break
            out += chunk
        if len(out) > _EXEC_OUTPUT_LIMIT:
            return None
        status = (await process.wait()).exit_status
    except (asyncssh.Error, OSError):
        return None
    finally:
        process.close()
    token = out.split(None, 1)[0] if out.strip() else b""
    if status != 0 or len(token) != digits or any(c not in b"0123456789abcdefABCDEF" for c in token):
        return None
    return token.decode("ascii").lower()


_quiet_lock = threading.Lock()
_quieted = False


def _quiet_asyncssh_logger() -> None:
    """Set asyncssh's logger to WARNING unless the application chose a level for it.

    asyncssh logs every connection and SFTP session at INFO; in an Airflow task log that
    is noise. Its packet dumps (debug level 3) would show authentication packets, so we
    never raise its debug level.
    """
    global _quieted
    with _quiet_lock:
        if _quieted:
            return
        _quieted = True
        lg = logging.getLogger("asyncssh")
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)


@dataclass(frozen=True)
class SessionInfo:
    """What was negotiated with the server (public facts only; safe to log and show)."""

    host: str
    port: int
    login: str
    server_version: str
    host_key: HostKey
    kex: str
    cipher: str
    mac: str
    compression: str
    #: Whether ``posix-rename@openssh.com`` makes :meth:`SFTPClient.rename` atomic.
    atomic_rename: bool
    #: Bytes per READ/WRITE request actually used with this server.
    block_size: int

    def describe(self) -> str:
        """One line for logs and ``test_connection``: login, host key, kex and cipher."""
        mac = "" if self.mac in ("", "none") or _is_aead(self.cipher) else f"/{self.mac}"
        return (
            f"{self.login}@{self.host}:{self.port} ({self.server_version}); host key {self.host_key.describe()}; "
            f"kex {self.kex}; cipher {self.cipher}{mac}"
        )


def _sftp_error_message(exc: asyncssh.SFTPError) -> str:
    reason = (exc.reason or "").strip()
    return reason or type(exc).__name__


class SFTPClient(ClosingClient):
    """A connected SFTP client of one server (one SSH connection, one SFTP session).

    Construct it to connect; use it as a context manager or call :meth:`close`.
    Not thread-safe: use one client per thread (the engine opens several for
    parallel work, up to the connection's ``max_connections``).

    :param settings: validated settings (:func:`~airflow_secure_transfer.security.policy.parse_sftp_settings`).
    :param block_size: bytes per READ/WRITE request, capped by what the server advertises.
        Default 255 KiB (the most OpenSSH accepts).
    :param max_requests: requests kept in flight per transfer. Default 32 (8 MiB buffered;
        see ``DEFAULT_MAX_REQUESTS``).
    :raises VerificationError: the host key is not trusted (nothing was sent).
    :raises AuthenticationError: the server refused the login.
    :raises SecurityPolicyError: no secure algorithm in common with the server.
    :raises ConfigurationError: the private key cannot be read (e.g. a wrong passphrase).
    :raises TransferTimeout: no answer within ``conn_timeout``.
    :raises TransportError: the connection failed.
    """

    scheme = "sftp"

    def __init__(
        self,
        settings: SFTPSettings,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_requests: int = DEFAULT_MAX_REQUESTS,
    ) -> None:
        if block_size < 1024:
            raise ConfigurationError(f"block_size must be at least 1024 bytes, got {block_size}")
        if max_requests < 1:
            raise ConfigurationError(f"max_requests must be at least 1, got {max_requests}")
        _quiet_asyncssh_logger()
        self._settings = settings
        self._timeout = settings.conn_timeout
        self._max_requests = max_requests
        self._wanted_block_size = block_size
        self._trust = HostKeyTrust.from_settings(settings)
        self._client_keys = self._load_client_keys(settings)
        self._closed = False
        #: Set after a timeout or a lost connection mid-transfer: the session is not reused, and
        #: close() aborts it instead of waiting for a server that stopped answering.
        self._broken = False
        self._check_file_supported: bool | None = None
        #: The exec command that gives digests (``"sha256sum"``...), False: none; None: not tried yet.
        self._exec_checksum: str | bool | None = None
        #: Whether the server sets modification times (SETSTAT/FSETSTAT); None: not tried yet.
        self.can_set_mtime: bool | None = None
        #: SFTP times are seconds since the epoch by the protocol (no time zone to get wrong).
        self.mtime_trusted = True
        self._home: str | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._thread = _LoopThread(name=f"sftp-{settings.host}:{settings.port}")
        try:
            # _connect bounds itself (TCP + handshake + auth, then the SFTP start: conn_timeout each).
            self.info: SessionInfo = self._run(
                self._connect(), timeout=None, what="connect", backstop=2 * self._timeout + 5.0
            )
        except BaseException:
            conn, self._conn = self._conn, None
            if conn is not None:  # connected, then failed (e.g. the SFTP subsystem did not start)
                with contextlib.suppress(RuntimeError):
                    self._thread.call(conn.abort)
            self._thread.stop()
            self._closed = True
            raise
        log.info("SFTP connected: %s", self.info.describe())

    # ------------------------------------------------------------------ connection

    @property
    def _where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    @staticmethod
    def _load_client_keys(settings: SFTPSettings) -> list[asyncssh.SSHKey] | None:
        """Load the client key from ``key_file`` or ``private_key`` (decrypting it here)."""
        if not settings.key_file and not settings.private_key:
            return None
        what = "extra 'key_file'" if settings.key_file else "extra 'private_key'"
        passphrase = settings.private_key_passphrase
        try:
            if settings.key_file:
                key = asyncssh.read_private_key(settings.key_file, passphrase)
            else:
                key = asyncssh.import_private_key(cast(str, settings.private_key), passphrase)
        except asyncssh.KeyEncryptionError:
            hint = "a wrong 'private_key_passphrase'" if passphrase else "no 'private_key_passphrase' was set"
            raise ConfigurationError(f"cannot decrypt the private key from {what}: {hint}") from None
        except asyncssh.KeyImportError as exc:
            if "passphrase" in str(exc).lower():
                raise ConfigurationError(
                    f"the private key from {what} is encrypted and no 'private_key_passphrase' was set"
                ) from None
            raise ConfigurationError(f"cannot read the private key from {what}: {exc}") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read the private key from {what}: {exc.strerror}") from None
        if key.algorithm == b"ssh-dss":
            raise SecurityPolicyError(f"the private key from {what} is DSA (ssh-dss), which is refused; use ed25519")
        return [key]

    async def _connect(self) -> SessionInfo:
        s = self._settings
        loop = asyncio.get_running_loop()

        def prepare(conn: asyncssh.SSHClientConnection) -> None:
            self._conn = conn
            private.coalesce_writes(conn, loop)  # see CoalescingTransport for why
            private.skip_packet_log_formatting(conn)
            private.skip_cbc_ignore_packets(conn)

        session = await open_sftp_session(s, self._trust, self._client_keys, prepare=prepare)
        conn = session.conn
        self._sftp = session.sftp
        private.quiet_sftp_handler(self._sftp)
        return SessionInfo(
            host=s.host,
            port=s.port,
            login=str(conn.get_extra_info("username", s.login or "")),
            server_version=str(conn.get_extra_info("server_version", "")),
            host_key=session.host_key,
            kex=session.kex,
            cipher=str(conn.get_extra_info("send_cipher", "")),
            mac=str(conn.get_extra_info("send_mac", "")),
            compression=str(conn.get_extra_info("send_compression", "")),
            atomic_rename=private.supports_posix_rename(self._sftp),
            block_size=self._block_size_for_server(),
        )

    def _sftp_handler(self) -> Any:
        """asyncssh's SFTP request layer behind this session (see ``_asyncssh_private``), or None."""
        return private.sftp_handler(self._sftp)

    def _block_size_for_server(self) -> int:
        assert self._sftp is not None
        limits = self._sftp.limits
        advertised = private.supports_limits(self._sftp)
        server_max = min(limits.max_read_len, limits.max_write_len)
        if not advertised:
            server_max = _UNADVERTISED_BLOCK_SIZE
        return max(1024, min(self._wanted_block_size, server_max))

    # ------------------------------------------------------------------ plumbing

    def _run(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        timeout: float | None,
        what: str,
        path: str | None = None,
        backstop: float | None = None,
    ) -> T:
        """Run *coro* on the loop and wait; translate every error into our hierarchy.

        :param timeout: bound for the call (the coroutine is cancelled after it), or None when
            the coroutine bounds itself.
        :param backstop: with ``timeout=None``, the longest wait here should the loop be stuck.
        """
        if self._closed and what != "close":
            coro.close()
            raise TransportError(f"{self._where}: the SFTP client is closed")

        async def bounded() -> T:
            if timeout is None:
                return await coro
            return await asyncio.wait_for(coro, timeout)

        future = self._thread.submit(bounded())
        try:
            # The coroutine is bounded on the loop; the extra margin here only guards a stuck loop.
            return future.result(backstop if timeout is None else timeout + 5.0)
        except SecureTransferError as exc:
            # Ours, but built from server text (a disconnect reason) and chained to asyncssh's error.
            scrub_secrets(exc, self._secrets)
            raise
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise TransferTimeout(
                f"{self._where}: no answer to {what}{f' {path}' if path else ''} within {self._timeout:g} s"
            ) from None
        except BaseException as exc:
            raise self._translate(exc, what, path) from exc

    def _call(self, fn: Callable[[], Awaitable[T]], what: str, path: str | None = None) -> T:
        async def run() -> T:
            return await fn()

        return self._run(run(), timeout=self._timeout, what=what, path=path)

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        return (self._settings.password, self._settings.private_key_passphrase)

    def _translate(self, exc: BaseException, what: str, path: str | None) -> BaseException:
        """See :func:`translate_error`."""
        return translate_error(exc, where=self._where, what=what, path=path, secrets=self._secrets)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, or when the connection was lost (the client cannot be reused)."""
        return self._closed or self._broken or self._conn is None or self._conn.is_closed()

    @property
    def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None or self._closed:
            raise TransportError(f"{self._where}: the SFTP client is closed")
        return self._sftp

    @property
    def home(self) -> str:
        """The login directory as the server names it (``realpath(".")``); relative paths start there."""
        if self._home is None:
            sftp = self.sftp
            home = self._call(lambda: sftp.realpath("."), "realpath", ".")
            self._home = home if isinstance(home, str) else home.decode("utf-8", "replace")
        return self._home

    # ------------------------------------------------------------------ RemoteFS: metadata

    def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at *path* (following symlinks), or ``None`` when nothing is there."""
        check_name(path)
        sftp = self.sftp

        async def op() -> asyncssh.SFTPAttrs | None:
            try:
                return await sftp.stat(path)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None

        attrs = self._call(op, "stat", path)
        return None if attrs is None else _entry(path, attrs)

    def realpath(self, path: str) -> str:
        """Return the server's canonical form of *path*, symbolic links resolved (``realpath``).

        :raises RemotePathError: the server answered with a name the path rules refuse.
        """
        check_name(path)
        sftp = self.sftp
        resolved = self._call(lambda: sftp.realpath(path), "realpath", path)
        if isinstance(resolved, bytes):
            resolved = resolved.decode("utf-8", "replace")
        check_name(resolved)
        if not resolved.startswith("/"):
            raise RemotePathError(f"{self._where}: realpath {path} answered the relative path {resolved[:80]!r}", path)
        return posixpath.normpath(resolved)

    def listdir(self, path: str) -> list[RemoteEntry]:
        """List directory *path* (without ``.`` and ``..``), sorted by name.

        :raises RemotePathError: *path* is missing or not a directory, or the server listed a name
            that :func:`~airflow_secure_transfer.security.paths.listed_child` refuses (``/``, a control
            character, ``\\``, a drive prefix: a listing must not lead outside the directory).
        """
        check_name(path)
        sftp = self.sftp
        names = self._run(
            self._read_listing(sftp, path), timeout=None, what="list", path=path, backstop=self._timeout + 5.0
        )
        return listing_entries(names, path, where=self._where)

    async def _read_listing(self, sftp: asyncssh.SFTPClient, path: str) -> list[asyncssh.SFTPName]:
        """See :func:`read_listing` (bounded in entries, bytes and time)."""
        return await read_listing(sftp, path, timeout=self._timeout, where=self._where)

    def makedirs(self, path: str) -> None:
        """Create directory *path* and any missing parents; an existing directory is fine."""
        check_name(path)
        sftp = self.sftp

        async def op() -> None:
            await _makedirs(sftp, path.rstrip("/") or "/")

        self._call(op, "makedirs", path)

    def rename(self, source: str, target: str) -> None:
        """Rename *source* to *target*, replacing *target* if it exists.

        With ``posix-rename@openssh.com`` (OpenSSH, asyncssh) the replacement is atomic: readers
        see the old file or the new one, never neither. Without it, SFTP v3's RENAME refuses an
        existing target, so the target is removed first and then renamed: a short window in which
        *target* does not exist (documented fallback; no server in the test suite needs it).
        """
        check_name(source)
        check_name(target)
        sftp = self.sftp
        self._call(lambda: _replace(sftp, source, target), "rename", f"{source} -> {target}")

    def remove(self, path: str) -> None:
        """Delete the file *path*; a missing file raises :class:`RemotePathError`."""
        check_name(path)
        sftp = self.sftp
        self._call(lambda: sftp.remove(path), "remove", path)

    def checksum(self, path: str) -> Checksum | None:
        """Return the server's digest of *path* via the ``check-file-name`` extension, or None.

        Neither OpenSSH nor asyncssh implement it (they answer OP_UNSUPPORTED, remembered for
        the rest of the session); some commercial servers do.
        """
        check_name(path)
        if self._check_file_supported is False:
            return self.exec_checksum(path)
        if private.sftp_handler(self._sftp) is None:
            self._check_file_supported = False
            return self.exec_checksum(path)
        sftp = self._sftp

        async def op() -> tuple[int, Any]:
            from asyncssh.packet import String, UInt32, UInt64

            waiter: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
            args = (
                String(path.encode("utf-8")),
                String(",".join(_CHECK_FILE_ALGORITHMS).encode("ascii")),
                UInt64(0),
                UInt64(0),
                UInt32(0),
            )
            if not private.send_extended_request(sftp, b"check-file-name", args, waiter):
                self._check_file_supported = False  # no request layer: no server checksum on this client
                return 0, None
            return await waiter

        resptype, packet = self._call(op, "checksum", path)
        result = self._parse_check_file(resptype, packet, path)
        if result is None and self._check_file_refused():
            return self.exec_checksum(path)  # OP_UNSUPPORTED just now (OpenSSH, asyncssh)
        return result

    def _check_file_refused(self) -> bool:
        return self._check_file_supported is False

    def exec_checksum(self, path: str) -> Checksum | None:
        """Return *path*'s digest from ``sha256sum`` (else ``md5sum``) run over SSH, or None.

        As rclone does, for servers that allow commands besides SFTP. The path is quoted for a
        POSIX shell and follows ``--``; stdin is closed at once (so a server forcing
        ``internal-sftp`` ends the session instead of waiting), stderr is discarded, and at most
        ``_EXEC_OUTPUT_LIMIT`` bytes of output are read within ``conn_timeout``. The output is
        untrusted: only a first token of exactly the digest's length in hex, with exit status 0,
        counts. Caveat: the command sees the shell's view of the file system, which can differ
        from the SFTP view (a chroot, virtual folders): the engine confirms a mismatch by reading
        the file back. The first command that fails settles it for the session.
        """
        check_name(path)
        if self._exec_checksum is False or self._conn is None:
            return None
        conn = self._conn
        commands = [c for c in _EXEC_CHECKSUMS if self._exec_checksum in (None, c[0])]
        for command, algorithm in commands:
            try:
                digest = self._run(
                    _exec_digest(conn, f"{command} -- {shlex.quote(path)}", _HEX_DIGITS[algorithm]),
                    timeout=self._timeout,
                    what=command,
                    path=path,
                )
            except TransferTimeout:
                # A command that never ends: the session itself is fine, exec is not asked again.
                self._exec_checksum = False
                return None
            if digest is not None:
                self._exec_checksum = command
                return Checksum(algorithm, digest, method=f"exec {command}")
            if self._exec_checksum == command:
                return None  # worked before: this file is the problem (missing...), not the command
        self._exec_checksum = False
        return None

    def _parse_check_file(self, resptype: int, packet: Any, path: str) -> Checksum | None:
        from asyncssh.constants import FXP_EXTENDED_REPLY, FXP_STATUS

        if resptype == FXP_STATUS:
            code = packet.get_uint32()
            if code == asyncssh.FX_OP_UNSUPPORTED:
                self._check_file_supported = False
                return None
            if code == asyncssh.FX_NO_SUCH_FILE:
                raise RemotePathError(f"{self._where}: checksum {path}: no such file", path=path)
            if code == asyncssh.FX_PERMISSION_DENIED:
                raise RemotePathError(f"{self._where}: checksum {path}: permission denied", path=path)
            return None
        if resptype != FXP_EXTENDED_REPLY:
            return None
        try:
            kind = packet.get_string()
            if kind not in (b"check-file", b"check-file-name"):
                # Some servers omit the name and start with the algorithm.
                algo_raw = kind
            else:
                algo_raw = packet.get_string()
            algo = algo_raw.decode("ascii").lower()
            rest = packet.get_remaining_payload()
        except Exception:  # malformed reply: treat as "no checksum available"
            return None
        name = _CHECK_FILE_ALGORITHMS.get(algo)
        if name is None:
            return None
        size = hashlib.new(name).digest_size
        if len(rest) == size + 4 and int.from_bytes(rest[:4], "big") == size:
            rest = rest[4:]  # length-prefixed variant
        if len(rest) != size:
            return None
        self._check_file_supported = True
        return Checksum(algorithm=name, hexdigest=rest.hex(), method="check-file")

    # ------------------------------------------------------------------ RemoteFS: data

    def write_from(
        self,
        path: str,
        source: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write *source* (read to its end) into *path* from byte *offset*; return the bytes written.

        ``offset == 0`` creates or truncates; a larger offset resumes a file that must be exactly
        *offset* bytes long (else :class:`IntegrityError`). Up to ``max_requests`` WRITE requests
        of ``info.block_size`` bytes are in flight while the calling thread reads the next block.

        :raises RemoteStorageFullError: the server ran out of space (or quota) for the file.
        """
        check_name(path)
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, got {offset}")
        sftp = self.sftp
        flags = _FXF_WRITE | (_FXF_CREAT | _FXF_TRUNC if offset == 0 else 0)

        async def open_file() -> asyncssh.SFTPClientFile:
            f = await sftp.open(path, flags, encoding=None, block_size=0)
            if offset:
                size = (await f.stat()).size or 0
                if size != offset:
                    await f.close()
                    raise IntegrityError(
                        f"{self._where}: cannot resume {path} at byte {offset}: the remote file has {size} bytes"
                    )
            return f

        remote = self._call(open_file, "open for writing", path)
        try:
            written = self._pump_upload(remote, path, source, offset, progress)
        except BaseException as exc:
            self._after_failure(remote, exc)
            raise
        self._call(remote.close, "close", path)
        return written

    def _pump_upload(
        self,
        remote: asyncssh.SFTPClientFile,
        path: str,
        source: IO[bytes],
        offset: int,
        progress: ProgressCallback | None,
    ) -> int:
        block = self.info.block_size
        uploader = _Uploader(remote, self._thread.loop, self._max_requests)
        pos = offset
        try:
            while True:
                # Read in the calling thread (the read, and a caller's hashing, release the GIL)
                # while the loop thread encrypts and sends the blocks before it.
                data = source.read(block)
                if not data:
                    break
                if not isinstance(data, bytes):
                    if not isinstance(data, (bytearray, memoryview)):
                        raise ConfigurationError("write_from needs a binary source (opened with 'rb')")
                    data = bytes(data)
                uploader.put(pos, data, self._timeout)
                pos += len(data)
                if progress is not None:
                    _report(progress, uploader.take_done())
            uploader.finish(self._timeout)
        except _UploadTimeout:
            uploader.abort()
            raise TransferTimeout(
                f"{self._where}: write {path}: no WRITE answered within {self._timeout:g} s"
            ) from None
        except _UploadError as exc:
            uploader.abort()
            raise self._write_failure(exc.error, path) from exc.error
        except BaseException:
            uploader.abort()
            raise
        if progress is not None:
            _report(progress, uploader.take_done())
        return pos - offset

    @property
    def can_assemble(self) -> bool:
        """Whether the server copies data between files itself (the ``copy-data`` extension).

        OpenSSH's sftp-server offers it since 9.0, asyncssh's server too. See :meth:`assemble`.
        """
        return self._sftp is not None and not self._closed and bool(self._sftp.supports_remote_copy)

    def assemble(self, target: str, parts: Sequence[tuple[str, int, int]]) -> None:
        """Copy each ``(path, offset, length)`` part into *target* at *offset*, server-side.

        *target* is created when missing and never truncated (segments of one file are copied
        into it from several connections, each as its segment is complete). Every part is opened
        and its size checked first: it must be exactly *length* bytes (``copy-data`` stops quietly
        at a source's end, which would leave a hole). The opens and stats, then the copies, then the
        closes are each all in flight together (three round trips); the server moves the bytes, none
        cross the network. The wait is ``conn_timeout`` plus one second per 10 MB copied (a server's
        disk, not the link, is the limit).

        :raises IntegrityError: a part is not *length* bytes long.
        :raises RemoteStorageFullError: the server ran out of space (as ``write_from`` tells it).
        :raises RemotePathError: a part is missing, or *target* cannot be written.
        """
        check_name(target)
        for path, offset, length in parts:
            check_name(path)
            if offset < 0 or length < 0:
                raise ConfigurationError(f"assemble {target}: bad part {path} at {offset} of {length} bytes")
        if not self.can_assemble:
            raise ConfigurationError(f"{self._where}: the server does not offer copy-data; cannot assemble {target}")
        sftp = self.sftp
        where = self._where

        async def op() -> None:
            opened: list[asyncssh.SFTPClientFile] = []

            async def open_file(path: str, flags: int) -> asyncssh.SFTPClientFile:
                f = await sftp.open(path, flags, encoding=None, block_size=0)
                opened.append(f)
                return f

            async def source(path: str, length: int) -> asyncssh.SFTPClientFile:
                # The size by name, in the same round trip as the open (an FSTAT would need the handle first).
                src, attrs = await asyncio.gather(open_file(path, _FXF_READ), sftp.stat(path))
                if attrs.size != length:
                    raise IntegrityError(
                        f"{where}: {path} holds {attrs.size} bytes, expected {length}; not assembled into {target}"
                    )
                return src

            try:
                results = await asyncio.gather(
                    open_file(target, _FXF_WRITE | _FXF_CREAT),
                    *(source(path, length) for path, _, length in parts),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                dst, *sources = cast("list[asyncssh.SFTPClientFile]", results)
                copies = await asyncio.gather(
                    *(
                        sftp.remote_copy(src, dst, src_offset=0, src_length=length, dst_offset=offset)
                        for src, (_, offset, length) in zip(sources, parts, strict=True)
                    ),
                    return_exceptions=True,
                )
                for copied in copies:
                    if isinstance(copied, BaseException):
                        raise copied
            finally:
                closing = [f.close() for f in opened]
                await asyncio.gather(*closing, return_exceptions=True)

        budget = self._timeout + sum(length for _, _, length in parts) / 10e6
        try:
            self._run(op(), timeout=budget, what="assemble", path=target)
        except RemotePathError as exc:
            cause = exc.__cause__
            if isinstance(cause, asyncssh.SFTPFailure):  # a full disk says only "Failure" (SFTP v3): as for WRITE
                raise self._write_failure(cause, target) from cause
            raise

    def remove_many(self, paths: Sequence[str]) -> list[SecureTransferError | None]:
        """Delete every file of *paths* in one exchange (all requests in flight); per path its error or None."""
        for path in paths:
            check_name(path)
        sftp = self.sftp

        async def op() -> list[BaseException | None]:
            results = await asyncio.gather(*(sftp.remove(p) for p in paths), return_exceptions=True)
            return [r if isinstance(r, BaseException) else None for r in results]

        answers = self._call(op, "remove", ", ".join(paths[:2]) + (" ..." if len(paths) > 2 else ""))
        out: list[SecureTransferError | None] = []
        for answer, path in zip(answers, paths, strict=True):
            error = None if answer is None else self._translate(answer, "remove", path)
            out.append(error if isinstance(error, SecureTransferError) or error is None else TransportError(str(error)))
        return out

    def set_mtime(self, path: str, mtime: int) -> bool:
        """Set *path*'s modification time to *mtime* (seconds since the epoch, UTC) with SETSTAT.

        The access time is set to now. A server that refuses (permission denied on a drop box,
        an unsupported attribute) is remembered: nothing more is sent for it on this session.
        """
        check_name(path)
        if self.can_set_mtime is False:
            return False
        sftp = self.sftp
        attrs = asyncssh.SFTPAttrs(atime=int(time.time()), mtime=mtime)

        async def op() -> bool:
            try:
                await sftp.setstat(path, attrs)
            except (asyncssh.SFTPOpUnsupported, asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure):
                return False
            return True

        done = self._call(op, "set modification time", path)
        self.can_set_mtime = done
        return done

    def put_small(self, part: str, target: str, data: bytes, *, mtime: int | None = None) -> int | None:
        """Upload a whole small file: write *data* to *part*, check it, then rename it to *target*.

        One coroutine on the connection's loop sends OPEN (create, truncate), then the WRITEs, an
        FSTAT and the CLOSE back to back (the server answers in order), and only when every WRITE
        and the CLOSE succeeded and the FSTAT reported ``len(data)`` bytes, the rename (replacing
        *target*, atomically with ``posix-rename@openssh.com``). Three round trips and one
        hand-over between threads per file, where :meth:`write_from` + :meth:`stat` +
        :meth:`rename` take five of each. Meant for files of a few blocks: *data* is in memory.

        :returns: the size the FSTAT reported; when it is not ``len(data)`` nothing was renamed.
        :raises RemoteStorageFullError: the server ran out of space (or quota).
        :raises TransportError: the connection failed or timed out (the client is then unusable).
        """
        (result,) = self.put_small_many([(part, target, data)], mtimes=[mtime])
        if isinstance(result, BaseException):
            raise result
        return result

    def put_small_many(
        self, items: Sequence[tuple[str, str, bytes]], *, mtimes: Sequence[int | None] | None = None
    ) -> list[int | SecureTransferError | None]:
        """:meth:`put_small` for several files at once, all in flight together on this session.

        The files' requests share the loop's turns, the TCP segments and the server's reads: on
        loopback, 16 files of 8 KiB cost ~40 % less client CPU per file than 16 calls of
        :meth:`put_small`. Each file succeeds or fails on its own, like :meth:`put_small`; the
        whole call fails (:class:`TransferTimeout`) only when the server answers nothing for
        ``conn_timeout`` seconds.

        :param items: ``(part, target, data)`` per file; the targets must differ.
        :param mtimes: per file, the modification time to give *part* (None: the server's): an
            FSETSTAT sent with the WRITEs, before the FSTAT (no extra round trip); a server that
            refuses it is remembered and the files still land.
        :returns: per file, in order: the size the server reported for *part* (renamed to
            *target* when it is ``len(data)``), or the error that file met.
        :raises TransportError: the connection failed or timed out (the client is then unusable).
        """
        for part, target, _ in items:
            check_name(part)
            check_name(target)
        sftp = self.sftp
        # asyncssh's request layer (private): WRITEs, FSETSTAT, FSTAT and CLOSE in flight together;
        # without it, the public file API (one request after the other, per file).
        handler = private.request_layer(sftp)
        block = self.info.block_size
        timeout = self._timeout
        write_errors: dict[int, BaseException] = {}
        answered = [0.0]
        times = list(mtimes) if mtimes is not None else [None] * len(items)

        async def one_public(i: int, part: str, target: str, data: bytes) -> int | None:
            loop = asyncio.get_running_loop()
            try:
                f = await sftp.open(part, _FXF_WRITE | _FXF_CREAT | _FXF_TRUNC, encoding=None, block_size=0)
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "open for writing", part) from exc
            answered[0] = loop.time()
            try:
                try:
                    for pos in range(0, len(data), block):
                        await f.write(data[pos : pos + block], pos)
                        answered[0] = loop.time()
                except asyncssh.SFTPError as exc:
                    write_errors[i] = exc  # named (full disk or not) outside the loop
                    return None
                mtime = times[i] if self.can_set_mtime is not False else None
                if mtime is not None:
                    try:
                        await f.utime((int(time.time()), mtime))
                        self.can_set_mtime = True
                    except asyncssh.SFTPError:
                        self.can_set_mtime = False
                try:
                    attrs = await f.stat()
                except asyncssh.SFTPError as exc:
                    raise self._translate(exc, "stat", part) from exc
            finally:
                await f.close()
            answered[0] = loop.time()
            if attrs.size != len(data):
                return attrs.size
            try:
                await _replace(sftp, part, target)
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "rename", f"{part} -> {target}") from exc
            answered[0] = loop.time()
            return attrs.size

        async def one(i: int, part: str, target: str, data: bytes) -> int | None:
            if handler is None:
                return await one_public(i, part, target, data)
            loop = asyncio.get_running_loop()
            try:
                handle = await handler.open(
                    sftp.encode(part), _FXF_WRITE | _FXF_CREAT | _FXF_TRUNC, asyncssh.SFTPAttrs()
                )
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "open for writing", part) from exc
            answered[0] = loop.time()
            # Created in order, the tasks send their requests in order on the loop's next turn.
            writes = [
                loop.create_task(handler.write(handle, pos, data[pos : pos + block]))
                for pos in range(0, len(data), block)
            ]
            mtime = times[i] if self.can_set_mtime is not False else None
            setstat = (
                [loop.create_task(handler.fsetstat(handle, asyncssh.SFTPAttrs(atime=int(time.time()), mtime=mtime)))]
                if mtime is not None
                else []
            )
            fstat = loop.create_task(handler.fstat(handle, _ATTR_DEFINED))
            close = loop.create_task(handler.close(handle))
            results = await asyncio.gather(*writes, *setstat, fstat, close, return_exceptions=True)
            answered[0] = loop.time()
            if setstat:
                self.can_set_mtime = not isinstance(results[len(writes)], asyncssh.SFTPError)
            for result in results[: len(writes)]:
                if isinstance(result, BaseException):
                    write_errors[i] = result  # named (full disk or not) outside the loop
                    return None
            attrs, closed = results[-2], results[-1]
            if isinstance(attrs, BaseException):
                raise self._translate(attrs, "stat", part) from attrs
            if isinstance(closed, BaseException):
                raise self._translate(closed, "close", part) from closed
            size = cast("asyncssh.SFTPAttrs", attrs).size
            if size != len(data):
                return size
            try:
                await _replace(sftp, part, target)
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "rename", f"{part} -> {target}") from exc
            answered[0] = loop.time()
            return size

        async def run_all() -> list[int | BaseException | None]:
            loop = asyncio.get_running_loop()
            answered[0] = loop.time()
            gathered = asyncio.gather(*(one(i, *item) for i, item in enumerate(items)), return_exceptions=True)
            while True:
                # Bounded by the time since the server last answered, not by the batch's size.
                left = answered[0] + timeout - loop.time()
                try:
                    return await asyncio.wait_for(asyncio.shield(gathered), max(left, 0.0))
                except TimeoutError:
                    if answered[0] + timeout <= loop.time():
                        gathered.cancel()
                        gathered.add_done_callback(_retrieve)  # no "exception was never retrieved"
                        raise

        what = f"upload of {len(items)} file(s)" if len(items) > 1 else "upload"
        where = items[0][0] if len(items) == 1 else None
        try:
            raw = self._run(run_all(), timeout=None, what=what, path=where, backstop=timeout * (len(items) + 1) + 5.0)
        except TransportError:
            self._broken = True  # requests may still be outstanding: never reuse this session
            raise
        out: list[int | SecureTransferError | None] = []
        for i, ((part, _, _), result) in enumerate(zip(items, raw, strict=True)):
            if i in write_errors:
                result = self._write_failure(write_errors[i], part)
            elif isinstance(result, BaseException) and not isinstance(result, SecureTransferError):
                result = self._translate(result, "upload", part)
            if isinstance(result, BaseException) and not isinstance(result, SecureTransferError):
                raise result  # KeyboardInterrupt and the like
            if isinstance(result, TransportError):
                self._broken = True
            out.append(result)
        return out

    def _write_failure(self, exc: BaseException, path: str) -> BaseException:
        """Name a failed WRITE: out of space when the server says so or statvfs shows it."""
        translated = self._translate(exc, "write", path)
        if isinstance(exc, asyncssh.SFTPFailure) and not isinstance(translated, RemoteStorageFullError):
            # SFTP v3 servers (OpenSSH) report ENOSPC/EDQUOT as a bare "Failure": ask statvfs.
            free = self._free_bytes(path)
            if free is not None and free < self.info.block_size:
                return RemoteStorageFullError(
                    f"{self._where}: write {path}: the server's file system is full ({free} bytes free)", path=path
                )
        return translated

    def _free_bytes(self, path: str) -> int | None:
        sftp = self.sftp
        directory = path.rsplit("/", 1)[0] or "/"

        async def op() -> int | None:
            try:
                vfs = await sftp.statvfs(directory)
            except (asyncssh.SFTPError, asyncssh.Error):
                return None
            return int(vfs.bavail) * int(vfs.frsize or vfs.bsize)

        try:
            return self._call(op, "statvfs", directory)
        except SecureTransferError:
            return None

    def get_small_many(self, items: Sequence[tuple[str, int]]) -> list[bytes | SecureTransferError]:
        """Read several small files whole, all in flight together on this session (downloads).

        Per file: OPEN, then the READs of the listed size plus one byte (so a file that grew is
        seen) and the CLOSE in flight together (asyncssh's request layer: two round trips a batch);
        without the request layer, or when the server answers a READ short, the public API
        (``open``, ``read`` in order, ``close``). The files' requests overlap, so a batch costs
        two or three round trips instead of four or five per file.
        Each file succeeds or fails on its own; the whole call fails only when the server answers
        nothing for ``conn_timeout`` seconds.

        :param items: ``(path, listed size)`` per file; each size at most the server's read limit.
        :returns: per file, in order: the bytes read (compare their length with the listed size),
            or the error that file met.
        :raises TransportError: the connection failed or timed out (the client is then unusable).
        """
        for path, _ in items:
            check_name(path)
        sftp = self.sftp
        timeout = self._timeout
        answered = [0.0]

        handler = private.request_layer(sftp)
        block = self.info.block_size

        async def one_fast(path: str, size: int) -> bytes:
            """OPEN, then every READ (to size + 1) and the CLOSE in flight together: two round trips."""
            loop = asyncio.get_running_loop()
            try:
                handle = await handler.open(sftp.encode(path), _FXF_READ, asyncssh.SFTPAttrs())
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "open for reading", path) from exc
            answered[0] = loop.time()
            wanted = [(pos, min(block, size + 1 - pos)) for pos in range(0, size + 1, block)]
            reads = [loop.create_task(handler.read(handle, pos, length)) for pos, length in wanted]
            close = loop.create_task(handler.close(handle))
            results = await asyncio.gather(*reads, close, return_exceptions=True)
            answered[0] = loop.time()
            # Contiguous only if every READ but the last came back whole, and nothing came after an end.
            chunks: list[bytes] = []
            ended = False
            for (_, length), result in zip(wanted, results[:-1], strict=True):
                if isinstance(result, asyncssh.SFTPEOFError):
                    ended = True
                    continue
                if isinstance(result, BaseException):
                    raise self._translate(result, "read", path) from result
                data = result[0] if isinstance(result, tuple) else result
                if ended and data:
                    return await one(path, size)  # the server answered a READ short: read in order instead
                chunks.append(data)
                ended = ended or len(data) < length
            if isinstance(results[-1], BaseException) and not isinstance(results[-1], asyncssh.SFTPError):
                raise results[-1]
            return b"".join(chunks)

        async def one(path: str, size: int) -> bytes:
            loop = asyncio.get_running_loop()
            try:
                f = await sftp.open(path, _FXF_READ, encoding=None, block_size=0)
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "open for reading", path) from exc
            answered[0] = loop.time()
            chunks: list[bytes] = []
            got = 0
            try:
                # Up to the listed size + 1 (a file that grew shows); a server may answer a READ short.
                while True:
                    data = await f.read(size + 1 - got, got)
                    answered[0] = loop.time()
                    if not data:
                        break
                    # encoding=None: asyncssh returns bytes (its type says str | bytes).
                    chunk = data if isinstance(data, bytes) else b""
                    chunks.append(chunk)
                    got += len(chunk)
                    if got >= size:
                        break  # all the listing promised (and one more byte if the file grew): no READ for EOF
            except asyncssh.SFTPError as exc:
                raise self._translate(exc, "read", path) from exc
            finally:
                await f.close()
                answered[0] = loop.time()
            return b"".join(chunks)

        async def run_all() -> list[bytes | BaseException]:
            loop = asyncio.get_running_loop()
            answered[0] = loop.time()
            fetch = one if handler is None else one_fast
            gathered = asyncio.gather(*(fetch(p, n) for p, n in items), return_exceptions=True)
            while True:
                # Bounded by the time since the server last answered, not by the batch's size.
                left = answered[0] + timeout - loop.time()
                try:
                    return await asyncio.wait_for(asyncio.shield(gathered), max(left, 0.0))
                except TimeoutError:
                    if answered[0] + timeout <= loop.time():
                        gathered.cancel()
                        gathered.add_done_callback(_retrieve)
                        raise

        where = items[0][0] if len(items) == 1 else None
        try:
            raw = self._run(
                run_all(),
                timeout=None,
                what=f"download of {len(items)} file(s)",
                path=where,
                backstop=timeout * (len(items) + 1) + 5.0,
            )
        except TransportError:
            self._broken = True  # requests may still be outstanding: never reuse this session
            raise
        out: list[bytes | SecureTransferError] = []
        for (path, _), result in zip(items, raw, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, SecureTransferError):
                translated = self._translate(result, "download", path)
                if not isinstance(translated, SecureTransferError):
                    raise translated  # KeyboardInterrupt and the like
                result = translated
            if isinstance(result, TransportError):
                self._broken = True
            out.append(result)
        return out

    def read_to(
        self,
        path: str,
        sink: IO[bytes],
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
        size: int | None = None,
    ) -> int:
        """Copy *path* from byte *offset* to its end into *sink*; return the bytes read.

        Up to ``max_requests`` READ requests are in flight; the calling thread writes the
        answers to *sink* in order. A file that grows while it is read is read to its new end.

        :param size: the size the caller's listing gave. With it, the file is only opened (no
            FSTAT: one round trip less per file) and the READs are planned up to it; without it,
            FSTAT asks. Either way the server's EOF ends the copy, not this number: a file that
            grew is read to its new end, one that shrank ends early (the caller compares).
        """
        check_name(path)
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, got {offset}")
        if size is not None and size < 0:
            raise ConfigurationError(f"size must be >= 0, got {size}")
        sftp = self.sftp
        listed = size

        async def open_file() -> tuple[asyncssh.SFTPClientFile, int]:
            f = await sftp.open(path, _FXF_READ, encoding=None, block_size=0)
            if listed is not None:
                return f, listed
            try:
                stat_size = (await f.stat()).size
            except BaseException:
                await f.close()
                raise
            return f, int(stat_size or 0)

        remote, planned = self._call(open_file, "open for reading", path)
        try:
            copied = self._pump_download(remote, path, sink, offset, planned, progress)
        except BaseException as exc:
            self._after_failure(remote, exc)
            raise
        self._call(remote.close, "close", path)
        return copied

    def _pump_download(
        self,
        remote: asyncssh.SFTPClientFile,
        path: str,
        sink: IO[bytes],
        offset: int,
        size: int,
        progress: ProgressCallback | None,
    ) -> int:
        block = self.info.block_size
        results: queue.SimpleQueue[tuple[str, int, Any, bool]] = queue.SimpleQueue()
        reader = _Downloader(remote, block, self._max_requests, offset, size, results)
        task_future = self._thread.submit(reader.run())
        expected = offset
        pending: dict[int, tuple[bytes, bool]] = {}
        eof_at: int | None = None
        try:
            while eof_at is None or expected < eof_at:
                try:
                    kind, pos, payload, last = results.get(timeout=self._timeout)
                except queue.Empty:
                    raise TransferTimeout(
                        f"{self._where}: read {path}: no READ answered within {self._timeout:g} s"
                    ) from None
                if kind == "error":
                    raise self._translate(payload, "read", path) from payload
                if kind == "eof":
                    eof_at = pos if eof_at is None else min(eof_at, pos)
                    continue
                pending[pos] = (payload, last)
                while expected in pending:
                    data, last = pending.pop(expected)
                    sink.write(data)
                    expected += len(data)
                    if last:
                        self._thread.call(reader.release)
                    if progress is not None:
                        progress(len(data))
        finally:
            if not task_future.done():
                self._thread.call(reader.cancel)
            with contextlib.suppress(Exception):
                task_future.result(self._timeout)
        return expected - offset

    def _after_failure(self, remote: asyncssh.SFTPClientFile, exc: BaseException) -> None:
        """Release the file handle after a failed transfer, unless the connection itself failed.

        After a timeout or a lost connection, closing the handle would wait another
        ``conn_timeout`` for a server that stopped answering: mark the client broken instead,
        so that :meth:`close` aborts the connection at once.
        """
        if isinstance(exc, TransportError):  # TransferTimeout included
            self._broken = True
            return
        self._close_quietly(remote)

    def _close_quietly(self, remote: asyncssh.SFTPClientFile) -> None:
        if self._closed or self._broken:
            return
        with contextlib.suppress(Exception):
            self._call(remote.close, "close")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the SFTP session and the SSH connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        conn, sftp = self._conn, self._sftp
        self._conn = self._sftp = None
        broken = self._broken

        async def shutdown() -> None:
            if broken:
                if conn is not None:
                    conn.abort()
                return
            if sftp is not None:
                sftp.exit()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sftp.wait_closed(), 2.0)
            if conn is not None:
                conn.close()
                try:
                    await asyncio.wait_for(conn.wait_closed(), 2.0)
                except TimeoutError:
                    conn.abort()

        try:
            with contextlib.suppress(Exception):
                self._thread.submit(shutdown()).result(5.0)
        finally:
            self._thread.stop()

    def session_security(self) -> dict[str, str]:
        """What the session negotiated and the host key that was verified (public facts)."""
        return {
            "protocol": "sftp",
            "ssh_kex": self.info.kex,
            "ssh_cipher": self.info.cipher,
            "server_identity": self.info.host_key.describe(),
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SFTPClient {self._settings.login or ''}@{self._where} {state}>"


# ---------------------------------------------------------------------- helpers


def translate_error(
    exc: BaseException, *, where: str, what: str, path: str | None, secrets: tuple[str | None, ...]
) -> BaseException:
    """Map an asyncssh / socket error to our hierarchy (messages name paths and codes only).

    The server's text (an SFTP status message, a disconnect reason) may echo the password: it is
    scrubbed in *exc* itself, which stays reachable as the translation's ``__cause__``.
    """
    scrub_secrets(exc, secrets)
    target = f" {path}" if path else ""
    if isinstance(exc, asyncssh.SFTPError):
        msg = f"{where}: {what}{target}: {_sftp_error_message(exc)}"
        if isinstance(exc, (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
            return RemoteStorageFullError(msg, path=path)
        if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.SFTPBadMessage)):
            return TransportError(msg)
        return RemotePathError(msg, path=path)
    if isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError)):
        return TransportError(f"{where}: connection lost during {what}{target}: {exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return TransportError(f"{where}: {what}{target}: {exc.reason}")
    if isinstance(exc, OSError):
        return TransportError(f"{where}: {what}{target}: {exc.strerror or exc}")
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return exc
    return TransportError(f"{where}: {what}{target} failed: {type(exc).__name__}: {exc}")


async def read_listing(sftp: asyncssh.SFTPClient, path: str, *, timeout: float, where: str) -> list[asyncssh.SFTPName]:
    """Read directory *path* within ``conn_timeout`` as a whole, at most ``LISTING_MAX_ENTRIES`` names
    and ``LISTING_MAX_BYTES`` of names (a server can answer ``READDIR`` with names forever, or slowly).

    The reading runs in a task of its own, so that neither bound waits for the server: asyncssh's
    ``scandir`` closes the directory handle (one more request) on its way out, and a server busy
    dripping names answers that late or never. The handle is closed in the background; the session
    stays usable (requests are matched to answers by id).

    :raises LimitExceededError: past a bound.
    """
    max_entries = limits.LISTING_MAX_ENTRIES
    max_bytes = limits.LISTING_MAX_BYTES
    where = f"{where}: list {path}"
    names: list[asyncssh.SFTPName] = []
    outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(error: BaseException | None) -> None:
        if not outcome.done():
            outcome.set_result(None) if error is None else outcome.set_exception(error)

    async def read() -> None:
        size = 0
        try:
            # scandir is an async generator (typed as an iterator): aclosing() closes the handle early.
            listing_gen = cast("AsyncGenerator[asyncssh.SFTPName, None]", sftp.scandir(path))
            async with contextlib.aclosing(listing_gen) as listing:
                async for name in listing:
                    names.append(name)
                    size += len(name.filename) + len(name.longname or "")
                    if len(names) > max_entries:
                        finish(
                            LimitExceededError(
                                f"{where}: more than {max_entries} entries (listing entries limit); listing abandoned",
                                limit="listing entries",
                            )
                        )
                        return
                    if size > max_bytes:
                        finish(
                            LimitExceededError(
                                f"{where}: more than {max_bytes} bytes of names (listing bytes limit); "
                                "listing abandoned",
                                limit="listing bytes",
                            )
                        )
                        return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            finish(exc)
            return
        finish(None)

    task = asyncio.ensure_future(read())
    task.add_done_callback(_retrieve)
    try:
        await asyncio.wait_for(asyncio.shield(outcome), timeout)
    except TimeoutError:
        task.cancel()
        raise LimitExceededError(
            f"{where}: not complete within {timeout:g} s (conn_timeout limit); listing abandoned",
            limit="conn_timeout",
        ) from None
    except asyncio.CancelledError:
        task.cancel()
        raise
    return names


def listing_entries(names: Sequence[asyncssh.SFTPName], path: str, *, where: str) -> list[RemoteEntry]:
    """Turn the names :func:`read_listing` read in directory *path* into entries, sorted by path.

    :raises RemotePathError: a name :func:`~airflow_secure_transfer.security.paths.listed_child` refuses.
    """
    base = path.rstrip("/") or "/"
    entries = []
    for name in names:
        filename = name.filename if isinstance(name.filename, str) else name.filename.decode("utf-8", "replace")
        if filename in (".", ".."):
            continue
        entries.append(_entry(listed_child(base, filename, where=where), name.attrs))
    entries.sort(key=lambda e: e.path)
    return entries


def _report(progress: ProgressCallback, amount: int) -> None:
    if amount:
        progress(amount)


def _entry(path: str, attrs: asyncssh.SFTPAttrs) -> RemoteEntry:
    if attrs.permissions is not None:
        is_dir = stat_module.S_ISDIR(attrs.permissions)
        is_link = stat_module.S_ISLNK(attrs.permissions)
    else:
        is_dir = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
        is_link = attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK
    mtime = float(attrs.mtime) if attrs.mtime is not None else None
    return RemoteEntry(path=path, is_dir=is_dir, size=None if is_dir else attrs.size, mtime=mtime, is_link=is_link)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (it is reported another way)."""
    if not future.cancelled():
        future.exception()


async def _replace(sftp: asyncssh.SFTPClient, source: str, target: str) -> None:
    """Rename *source* to *target*, replacing it (see :meth:`SFTPClient.rename`)."""
    try:
        await sftp.posix_rename(source, target)
        return
    except asyncssh.SFTPOpUnsupported:
        pass
    try:
        await sftp.rename(source, target)
    except asyncssh.SFTPError:
        if not await sftp.exists(target) or await sftp.isdir(target):
            raise
        await sftp.remove(target)
        await sftp.rename(source, target)


async def _makedirs(sftp: asyncssh.SFTPClient, path: str) -> None:
    """mkdir -p: walk up to the first existing directory, then create downwards."""
    missing: list[str] = []
    current = path
    while current not in ("", "/"):
        try:
            attrs = await sftp.stat(current)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            missing.append(current)
            current = current.rsplit("/", 1)[0] or "/"
            continue
        except asyncssh.SFTPPermissionDenied:
            # A chroot may hide or forbid stat on parents; try to create below it anyway.
            break
        if not _entry(current, attrs).is_dir:
            raise asyncssh.SFTPFailure(f"{current} exists and is not a directory")
        break
    for directory in reversed(missing):
        try:
            await sftp.mkdir(directory)
        except asyncssh.SFTPError:
            # Created meanwhile by someone else? Then it is fine.
            try:
                existing: asyncssh.SFTPAttrs | None = await sftp.stat(directory)
            except asyncssh.SFTPError:
                existing = None
            if existing is None or not _entry(directory, existing).is_dir:
                raise
