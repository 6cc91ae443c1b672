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
    │   └── LimitExceededError    a listing/reply over its cap or deadline (.limit)
    ├── RemotePathError (.path)   not found, permission denied, exists retryable = False
    │   └── RemoteStorageFullError  disk full / quota                  retryable = True
    ├── LocalPathError (.path)    local source missing or unusable     retryable = False
    └── IntegrityError            size or checksum mismatch            retryable = True

The operator turns ``retryable = False`` into ``AirflowFailException`` so that
Airflow does not retry what cannot succeed (a wrong host key stays wrong).

No message built by this package contains a password, a private key or a
passphrase; messages name hosts, paths, fingerprints and server replies only.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "IntegrityError",
    "LimitExceededError",
    "LocalPathError",
    "RemotePathError",
    "RemoteStorageFullError",
    "SecureTransferError",
    "SecurityPolicyError",
    "TransferTimeout",
    "TransportError",
    "VerificationError",
]


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


class IntegrityError(SecureTransferError):
    """The remote file's size or checksum does not match the local file."""

    retryable = True
