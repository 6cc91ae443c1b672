"""The one error hierarchy of airflow-secure-transfer.

Every transport translates its library's errors (paramiko, asyncssh, ``ftplib``,
``ssl``, sockets) into these classes at its boundary (``raise ... from exc``), so
callers can decide what to do from the class alone::

    SecureTransferError
    ├── ConfigurationError        bad connection or arguments          retryable = False
    ├── SecurityPolicyError       would weaken security                retryable = False
    ├── VerificationError         certificate / host key not trusted   retryable = False
    ├── AuthenticationError       login refused                        retryable = False
    ├── TransportError            network or protocol failure          retryable = True
    │   ├── TransferTimeout       no answer within conn_timeout        retryable = True
    │   ├── ServerBusyError       refused for load (421, MaxStartups)  retryable = True
    │   └── LimitExceededError    a listing/reply over its cap or deadline (.limit)
    ├── RemotePathError (.path)   not found, permission denied, exists retryable = False
    │   └── RemoteStorageFullError  disk full / quota                  retryable = True
    ├── LocalPathError (.path)    local source missing or unusable     retryable = False
    │   └── LocalStorageFullError   local disk full (a download)       retryable = True
    └── IntegrityError            size or checksum mismatch            retryable = True

The operator turns ``retryable = False`` into ``AirflowFailException`` so that
Airflow does not retry what cannot succeed (a wrong host key stays wrong).

No message built by this package contains a password, a private key or a
passphrase; messages name hosts, paths, fingerprints and server replies only.
Server replies are scrubbed, and so is every exception reachable from what the
clients raise (:func:`scrub_secrets`): a server that echoes the password (in a
``PROT P`` or ``AUTH TLS`` refusal, an SSH disconnect reason, an SFTP status)
must not get it into a traceback through a chained library exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "IntegrityError",
    "LimitExceededError",
    "LocalPathError",
    "LocalStorageFullError",
    "RemotePathError",
    "RemoteStorageFullError",
    "SecureTransferError",
    "SecurityPolicyError",
    "ServerBusyError",
    "TransferTimeout",
    "TransportError",
    "VerificationError",
    "scrub_secrets",
    "scrub_text",
]

#: What a secret is replaced with.
MASK = "***"


class SecureTransferError(Exception):
    """Base class of every error this package raises."""

    #: Whether running the same transfer again may succeed.
    retryable: bool = False


class ConfigurationError(SecureTransferError, ValueError):
    """A connection or an argument is malformed, missing or of the wrong type."""


class SecurityPolicyError(ConfigurationError):
    """A setting would weaken security (plain FTP, no host-key check, TLS < 1.2...)."""


class VerificationError(SecureTransferError):
    """The server's certificate or host key is not trusted; nothing was sent."""


class AuthenticationError(SecureTransferError):
    """The server refused the credentials."""


class TransportError(SecureTransferError):
    """A network or protocol failure; running again may succeed."""

    retryable = True


class TransferTimeout(TransportError):
    """The server did not answer within ``conn_timeout``."""


class ServerBusyError(TransportError):
    """The server refused a new session for load; the same connection a little later may be accepted.

    Raised while connecting only: FTP ``421`` (too many connections / users), an SSH
    connection closed before or during the key exchange (OpenSSH ``MaxStartups``), an
    SSH session channel refused (``MaxSessions``), or a refused TCP connection (a
    saturated listener). The engine waits and tries again, with a bounded, jittered
    back-off (:mod:`airflow_secure_transfer.transfer.backoff`), before it raises it.
    """


class LimitExceededError(TransportError):
    """The server sent more than a bound allows, or too slowly: a listing or a reply over its size cap,
    or a listing not complete within ``conn_timeout`` (see :mod:`airflow_secure_transfer.transfer.limits`).

    Retryable like any transport error; where the upload engine listed a directory to save round trips,
    it checks each file on its own instead.

    :param limit: the bound that was hit: ``"conn_timeout"``, ``"listing entries"``, ``"listing bytes"``
        or ``"reply bytes"``.
    """

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class RemotePathError(SecureTransferError):
    """A remote path does not exist, is not permitted, exists already, or is unsafe."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RemoteStorageFullError(RemotePathError):
    """The server has no room for the file (FTP 452/552, SFTP out of space/quota)."""

    retryable = True


class LocalPathError(SecureTransferError):
    """A local source is missing, unreadable, or of a kind that cannot be sent."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LocalStorageFullError(LocalPathError):
    """The local file system is full (or over quota) while a download writes to it.

    Retryable: space may be freed before the next try. The run stops at once (the other
    files would need space too); the final path is never touched.
    """

    retryable = True


class IntegrityError(SecureTransferError):
    """The remote file's size or checksum does not match the local file."""

    retryable = True


def _clean_str(value: str, needles: list[str]) -> str:
    for needle in needles:
        value = value.replace(needle, MASK)
    return value


def _clean(value: object, needles: list[str]) -> object:
    if isinstance(value, str):
        return _clean_str(value, needles)
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        for needle in needles:
            raw = raw.replace(needle.encode("utf-8", "surrogateescape"), MASK.encode())
        return raw
    if isinstance(value, tuple):
        return tuple(_clean(v, needles) for v in value)
    if isinstance(value, list):
        return [_clean(v, needles) for v in value]
    return value


def _needles(secrets: Iterable[str | None]) -> list[str]:
    return sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str | None]) -> str:
    """Return *text* with every secret (of 3 characters or more) replaced by ``***``."""
    return _clean_str(text, _needles(secrets))


def scrub_secrets(exc: BaseException, secrets: Iterable[str | None]) -> None:
    """Replace every secret in *exc* and in every exception reachable from it, in place.

    Reachable: ``__cause__``, ``__context__``, the members of an exception group, and exceptions
    held in ``args`` or attributes. Scrubbed: ``args`` (also nested tuples, lists and bytes), the
    string attributes of each exception (asyncssh's ``reason``, ``OSError.strerror``/``filename``),
    and ``__notes__``. Secrets shorter than 3 characters are left alone (they would mask ordinary
    words). Never raises.

    :param secrets: the passwords and passphrases of the connection (``None`` entries are skipped).
    """
    needles = _needles(secrets)
    if not needles:
        return
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # An exception type whose args cannot be set: its other fields still are scrubbed.
        with contextlib.suppress(Exception):
            current.args = tuple(_clean(a, needles) for a in current.args)
        fields: dict[str, object] = dict(getattr(current, "__dict__", {}))
        if isinstance(current, OSError):
            fields.update(strerror=current.strerror, filename=current.filename, filename2=current.filename2)
        for name, value in fields.items():
            if isinstance(value, BaseException):
                pending.append(value)
            elif isinstance(value, (str, bytes, bytearray, tuple, list)):
                cleaned = _clean(value, needles)
                if cleaned != value:
                    with contextlib.suppress(Exception):  # a read-only attribute: nothing more to do
                        setattr(current, name, cleaned)
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
