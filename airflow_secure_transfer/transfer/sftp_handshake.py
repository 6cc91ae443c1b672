"""SSH connect, host-key trust, algorithm lists and the handshake's error mapping: the one code path.

:func:`open_sftp_session` connects, verifies the host key (only a pinned key or a known_hosts entry is
trusted: :class:`~airflow_secure_transfer.security.hostkeys.HostKeyTrust`), logs in and starts SFTP on the
running event loop. :class:`~airflow_secure_transfer.transfer.sftp.SFTPClient` (on its private loop) and
the sensor's trigger (on the triggerer's loop) both connect through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    SecureTransferError,
    SecurityPolicyError,
    ServerBusyError,
    TransferTimeout,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.security.hostkeys import (
    CIPHERS,
    CLIENT_SIGNATURE_ALGORITHMS,
    KEX_ALGORITHMS,
    MAC_ALGORITHMS,
    HostKey,
    HostKeyTrust,
)
from airflow_secure_transfer.transfer import _asyncssh_private as private

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import SFTPSettings


def _supported(wanted: tuple[str, ...], available: list[bytes]) -> list[str]:
    names = {a.decode("ascii") for a in available}
    return [a for a in wanted if a in names]


def _algorithms() -> dict[str, list[str]]:
    """Intersect our secure lists with what this asyncssh build implements."""
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs
    from asyncssh.public_key import get_public_key_algs

    return {
        "kex_algs": _supported(KEX_ALGORITHMS, get_kex_algs()),
        "encryption_algs": _supported(CIPHERS, get_encryption_algs()),
        "mac_algs": _supported(MAC_ALGORITHMS, get_mac_algs()),
        "signature_algs": _supported(CLIENT_SIGNATURE_ALGORITHMS, get_public_key_algs()),
    }


def _public_key_algs() -> set[str]:
    from asyncssh.public_key import get_public_key_algs

    return {a.decode("ascii") for a in get_public_key_algs()}


@dataclass
class _HandshakeState:
    """Filled in by the key-exchange callback: the key the server presented and our verdict."""

    presented: HostKey | None = None
    accepted: HostKey | None = None
    refusal: str | None = None
    #: The connection object, kept to read the server's KEXINIT when the handshake fails.
    conn: asyncssh.SSHClientConnection | None = None


class _VerifyingClient(asyncssh.SSHClient):
    """asyncssh client callbacks: the host-key decision, made by :class:`HostKeyTrust`.

    asyncssh calls :meth:`validate_host_public_key` during the key exchange for every key
    not in its (deliberately empty) trusted set; returning False aborts the handshake with
    ``HostKeyNotVerifiable`` before authentication starts.
    """

    def __init__(self, trust: HostKeyTrust, state: _HandshakeState) -> None:
        self._trust = trust
        self._state = state

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._state.conn = conn

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        blob = bytes(key.public_data)
        presented = HostKey.from_blob(blob)
        self._state.presented = presented
        if self._trust.is_trusted(blob):
            self._state.accepted = presented
            return True
        self._state.refusal = self._trust.refusal_message(presented)
        return False

    def validate_host_ca_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return False  # host certificates are never offered nor accepted


_WEAK_HOST_KEY_ALGS = {"ssh-rsa": "SHA-1 RSA signatures (ssh-rsa)", "ssh-dss": "DSA (ssh-dss)"}

#: The receive window of the SFTP channel to a far server: what it may send before it waits for our
#: window adjustment. A download moves at most one window per round trip, and asyncssh tops it up once
#: half is used: with its default (2 MiB, as OpenSSH's) one stream moved 19 MB/s at 50 ms through the
#: bench's delay proxy (one MiB per round trip; OpenSSH's ``sftp`` 34 MB/s). 16 MiB keeps at least 8 MiB
#: open, what a download's outstanding READs ask for (``sftp.DEFAULT_MAX_REQUESTS`` x the block): those
#: requests bound the data in flight and buffered, not the window (92-102 MB/s at 50 ms, 50-55 at 150).
RECV_WINDOW = 16 * 1024 * 1024
#: A server whose SFTP start (channel open, subsystem request, version: three round trips) took at least
#: three times this gets :data:`RECV_WINDOW`; nearer, 2 MiB per round trip is not the limit (2 MiB / 5 ms =
#: 400 MB/s), and on loopback the wide window cost 17 % more client CPU per MB (asyncssh buffers more).
WIDE_WINDOW_MIN_RTT = 0.005


def _kexinit_mismatch(
    lists: list[list[str]], offered: dict[str, list[str]], host_key_algs: list[str], compression: list[str]
) -> tuple[str, list[str], list[str]] | None:
    """Find the first negotiation step with nothing in common: (what, ours, the server's), or None.

    *lists* are the server's KEXINIT name-lists (kex, host key, ciphers c->s, s->c, MACs c->s,
    s->c, compression c->s, s->c). A MAC is needed only when the chosen cipher is not AEAD.
    """
    if len(lists) < 8:
        return None
    markers = ("ext-info-", "kex-strict-")
    server_kex = [a for a in lists[0] if not a.startswith(markers)]
    steps: list[tuple[str, list[str], list[str]]] = [
        ("key exchange", offered["kex_algs"], server_kex),
        ("host key", host_key_algs, lists[1]),
        ("encryption", offered["encryption_algs"], lists[2]),
        ("encryption", offered["encryption_algs"], lists[3]),
    ]
    for what, ours, theirs in steps:
        if not set(ours) & set(theirs):
            return what, ours, theirs
    for enc, macs in ((lists[2], lists[4]), (lists[3], lists[5])):
        chosen = next(a for a in offered["encryption_algs"] if a in enc)
        if not _is_aead(chosen) and not set(offered["mac_algs"]) & set(macs):
            return "MAC", offered["mac_algs"], macs
    for theirs in (lists[6], lists[7]):
        if not set(compression) & set(theirs):
            return "compression", compression, theirs
    return None


def _is_aead(cipher: str) -> bool:
    return "gcm" in cipher or "poly1305" in cipher


def _no_common_algorithm(what: str, ours: list[str], theirs: list[str], trust: HostKeyTrust) -> SecureTransferError:
    """Explain a failed algorithm negotiation; *theirs* is what the server offered."""
    detail = f"No matching {what} algorithm found, sent {','.join(ours)} and received {','.join(theirs) or '<None>'}"
    if what == "host key":
        weak = [_WEAK_HOST_KEY_ALGS[a] for a in theirs if a in _WEAK_HOST_KEY_ALGS]
        trusted_types = {k.key_type for k in trust.trusted}
        if weak and (not trusted_types or "ssh-rsa" in trusted_types):
            return SecurityPolicyError(
                f"{trust.name}: no common secure algorithm with the server: it signs its host key only with "
                f"{', '.join(weak)}, which is disabled ({detail}); ask the server's operator to enable "
                "rsa-sha2-256/512 or an ed25519 host key"
            )
        return VerificationError(
            f"{trust.name}: the server offers no host key of a trusted type ({trust.expected()}); {detail}. "
            "The server's keys may have changed; nothing was sent"
        )
    return SecurityPolicyError(
        f"{trust.name}: no common secure algorithm with the server: {detail}. Weak algorithms "
        "(SHA-1 key exchange and signatures, CBC ciphers, hmac-sha1/md5) are disabled; ask the server's "
        "operator to enable a modern one (e.g. curve25519-sha256, aes128-gcm@openssh.com)"
    )


@dataclass(frozen=True)
class OpenedSession:
    """An SSH connection whose host key was verified and logged in, with its SFTP session started."""

    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    #: The host key the server presented and the trust accepted.
    host_key: HostKey
    #: The negotiated key exchange.
    kex: str


def _handshake_failure(
    state: _HandshakeState,
    algs: dict[str, list[str]],
    host_key_algs: list[str],
    compression: list[str],
    trust: HostKeyTrust,
) -> SecureTransferError | None:
    """If the handshake died before a host key was presented, name the step with nothing in common."""
    if state.presented is not None:
        return None
    found = _kexinit_mismatch(_server_kexinit(state.conn), algs, host_key_algs, compression)
    return None if found is None else _no_common_algorithm(*found, trust)


async def open_sftp_session(
    settings: SFTPSettings,
    trust: HostKeyTrust,
    client_keys: list[asyncssh.SSHKey] | None,
    *,
    prepare: Callable[[asyncssh.SSHClientConnection], None] | None = None,
) -> OpenedSession:
    """Connect, verify the host key, log in and start SFTP on the running event loop: the one code path.

    :class:`SFTPClient` (on its private loop) and the sensor's trigger (on the triggerer's loop) both
    connect through here, so the host-key trust, the algorithm lists and the error mapping are the
    same everywhere. Each step is bounded by ``conn_timeout``; every error is one of this package's.

    :param settings: validated settings.
    :param trust: the host-key trust built from *settings* (:meth:`HostKeyTrust.from_settings`).
    :param client_keys: the loaded client key (see ``SFTPClient._load_client_keys``), or None.
    :param prepare: called with the connection after it is verified and before SFTP starts.
    :raises VerificationError: the host key is not trusted (nothing was sent).
    :raises AuthenticationError: the server refused the login.
    :raises SecurityPolicyError: no secure algorithm in common with the server.
    :raises ServerBusyError: the server refused the connection or session for load.
    :raises TransferTimeout: no answer within ``conn_timeout``.
    :raises TransportError: the connection failed.
    """
    s = settings
    timeout = s.conn_timeout
    state = _HandshakeState()
    algs = _algorithms()
    host_key_algs = [a for a in trust.host_key_algorithms() if a in _public_key_algs()]
    options: dict[str, Any] = {
        "port": s.port,
        "client_factory": lambda: _VerifyingClient(trust, state),
        # Trust: nothing from asyncssh's defaults. An empty known_hosts tuple makes asyncssh
        # ask _VerifyingClient about every key; no ~/.ssh/config, no X.509, no agent, no GSS.
        "known_hosts": ([], [], []),
        "x509_trusted_certs": None,
        "config": None,
        "agent_path": None,
        "agent_forwarding": False,
        "pkcs11_provider": None,
        "gss_host": None,
        "host_based_auth": False,
        "server_host_key_algs": host_key_algs,
        "compression_algs": ["zlib@openssh.com", "none"] if s.compress else ["none"],
        "client_keys": client_keys,  # None: no key files from ~/.ssh
        "connect_timeout": timeout,
        **algs,
    }
    if s.login:
        options["username"] = s.login
    if s.password is not None:
        options["password"] = s.password
    else:
        options["password_auth"] = False
        options["kbdint_auth"] = False
    try:
        conn = await asyncio.wait_for(asyncssh.connect(s.host, **options), timeout)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise VerificationError(state.refusal or f"{trust.name}: host key not verified: {exc.reason}") from None
    except asyncssh.KeyExchangeFailed as exc:
        # The client or the server may notice first (the server then disconnects, sometimes
        # without a message); the server's KEXINIT says what it offered either way.
        found = _handshake_failure(state, algs, host_key_algs, options["compression_algs"], trust)
        if found is not None:
            raise found from None
        if "No matching" in exc.reason or "Unable to find compatible" in exc.reason:
            raise SecurityPolicyError(
                f"{trust.name}: no common secure algorithm with the server: {exc.reason}"
            ) from None
        raise TransportError(f"{trust.name}: key exchange failed: {exc.reason}") from None
    except asyncssh.PermissionDenied as exc:
        user = s.login or "(local user name)"
        methods = []
        if client_keys:
            methods.append("publickey")
        if s.password is not None:
            methods.append("password")
        raise AuthenticationError(
            f"{trust.name}: the server refused the login {user!r} "
            f"(tried: {', '.join(methods) or 'no credentials configured'}): {exc.reason}"
        ) from None
    except TimeoutError:
        stage = "authentication" if state.accepted else "connect / key exchange"
        raise TransferTimeout(f"{trust.name}: no answer within {timeout:g} s ({stage})") from None
    except asyncssh.DisconnectError as exc:
        if state.refusal:
            raise VerificationError(state.refusal) from None
        mismatch = _handshake_failure(state, algs, host_key_algs, options["compression_algs"], trust)
        if mismatch is not None:
            raise mismatch from None
        if state.presented is None:
            # Closed before the server showed a host key: OpenSSH drops connections beyond
            # MaxStartups exactly so (nothing was sent yet); the engine backs off and retries.
            raise ServerBusyError(
                f"{trust.name}: the server closed the connection before the key exchange "
                f"(busy: too many connections, e.g. sshd MaxStartups): {exc.reason}"
            ) from None
        raise TransportError(f"{trust.name}: the server closed the connection: {exc.reason}") from None
    except ConnectionRefusedError:
        raise ServerBusyError(f"cannot connect to {trust.name}: connection refused") from None
    except ConnectionResetError as exc:
        if state.presented is None:
            # sshd resets connections beyond MaxStartups before its version line: busy, nothing sent.
            raise ServerBusyError(
                f"cannot connect to {trust.name}: connection reset before the key exchange "
                "(busy: too many connections, e.g. sshd MaxStartups)"
            ) from None
        raise TransportError(f"cannot connect to {trust.name}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise TransportError(f"cannot connect to {trust.name}: {exc.strerror or exc}") from None
    if state.accepted is None:  # pragma: no cover - asyncssh always asks (empty trusted set)
        conn.abort()
        raise VerificationError(f"{trust.name}: the host key was not checked; refusing the connection")
    try:
        if prepare is not None:
            prepare(conn)
        try:
            started = time.monotonic()
            sftp = await asyncio.wait_for(conn.start_sftp_client(), timeout)
            if (time.monotonic() - started) / 3 >= WIDE_WINDOW_MIN_RTT:
                private.widen_recv_window(sftp, RECV_WINDOW)
        except TimeoutError:
            raise TransferTimeout(f"{trust.name}: the SFTP subsystem did not start within {timeout:g} s") from None
        except asyncssh.ChannelOpenError as exc:
            # OpenSSH MaxSessions (and per-user session limits elsewhere) refuse the session channel.
            raise ServerBusyError(f"{trust.name}: the server refused a session channel: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"{trust.name}: cannot start the SFTP subsystem: {exc}") from None
    except BaseException:
        conn.abort()
        raise
    return OpenedSession(conn=conn, sftp=sftp, host_key=state.accepted, kex=_negotiated_kex(conn, algs["kex_algs"]))


def _server_kexinit(conn: asyncssh.SSHClientConnection | None) -> list[list[str]]:
    """Return the name-lists of the server's KEXINIT (kex, host key, ciphers c->s, s->c, MACs...).

    asyncssh keeps the raw payload (byte 20, 16-byte cookie, then name-lists) for the
    exchange hash; it does not keep the chosen names, so they are derived from it.
    """
    payload = private.server_kexinit_payload(conn)
    lists: list[list[str]] = []
    pos = 17
    try:
        while len(lists) < 10 and pos + 4 <= len(payload):
            length = int.from_bytes(payload[pos : pos + 4], "big")
            lists.append([a for a in payload[pos + 4 : pos + 4 + length].decode("ascii").split(",") if a])
            pos += 4 + length
    except (TypeError, ValueError, UnicodeDecodeError):
        return []
    return lists


def _negotiated_kex(conn: asyncssh.SSHClientConnection, offered: list[str]) -> str:
    """Name the key exchange used: our first offered algorithm that the server lists (RFC 4253, 7.1)."""
    lists = _server_kexinit(conn)
    server = set(lists[0]) if lists else set()
    return next((alg for alg in offered if alg in server), "unknown")
