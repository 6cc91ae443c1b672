"""The validated settings of a connection, and the constants every layer shares.

:mod:`airflow_secure_transfer.security.policy` builds these from a connection's fields and
extras (and refuses what would weaken security); clients, the engine and the operators only
read them. A module of its own, importing nothing but the standard library, so that the
operator's parse-time checks (``max_connections``' bounds) and the settings' users do not
load the policy's parsers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "FTPS_CONN_TYPES",
    "MAX_MAX_CONNECTIONS",
    "SFTP_CONN_TYPES",
    "FTPSSettings",
    "SFTPSettings",
    "TLSMode",
    "TLSVersion",
]

#: Connection types the FTPS hook accepts: ours, and the stock ``ftp`` type (always upgraded to TLS).
FTPS_CONN_TYPES = ("secure_ftps", "ftp")
#: Connection types the SFTP hook accepts: ours, and the stock ``sftp``/``ssh`` types under our policy.
SFTP_CONN_TYPES = ("secure_sftp", "sftp", "ssh")

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 4
MAX_MAX_CONNECTIONS = 64


class TLSMode(enum.StrEnum):
    """How TLS starts on the FTPS control connection."""

    #: Plain TCP connect, then ``AUTH TLS`` before anything else (RFC 4217); port 21.
    EXPLICIT = "explicit"
    #: TLS from the first byte; port 990.
    IMPLICIT = "implicit"


class TLSVersion(enum.StrEnum):
    """TLS versions that may be negotiated; nothing below 1.2 exists here."""

    TLSv1_2 = "TLSv1.2"
    TLSv1_3 = "TLSv1.3"

    @property
    def rank(self) -> int:
        return 2 if self is TLSVersion.TLSv1_2 else 3


@dataclass(frozen=True)
class FTPSSettings:
    """Validated settings of one FTPS server. Secrets are excluded from ``repr``."""

    host: str
    port: int
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_mode: TLSMode = TLSMode.EXPLICIT
    #: PEM text of the CA certificates to trust instead of the system store.
    ca_bundle: str | None = field(default=None, repr=False)
    #: Lower-case hex SHA-256 fingerprints of accepted server certificates (pins).
    cert_fingerprints: tuple[str, ...] = ()
    client_cert: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)
    min_tls_version: TLSVersion = TLSVersion.TLSv1_2
    max_tls_version: TLSVersion | None = None
    conn_timeout: float = DEFAULT_TIMEOUT
    encoding: str = "utf-8"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    remote_root: str | None = None
    #: The connection type it came from (``secure_ftps`` or ``ftp``).
    conn_type: str = "secure_ftps"


@dataclass(frozen=True)
class SFTPSettings:
    """Validated settings of one SFTP server. Secrets are excluded from ``repr``."""

    host: str
    port: int
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Pinned public keys, one OpenSSH line each (``"ssh-ed25519 AAAA..."``).
    host_keys: tuple[str, ...] = ()
    #: known_hosts text (read from the file when a path was given).
    known_hosts: str | None = None
    #: Where known_hosts came from, for messages (a path, or ``"extra"``).
    known_hosts_source: str | None = None
    key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)
    conn_timeout: float = DEFAULT_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    remote_root: str | None = None
    compress: bool = False
    conn_type: str = "secure_sftp"
