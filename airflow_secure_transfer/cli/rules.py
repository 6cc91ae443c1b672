"""The audit's rules: one id, severity, title and fix each.

Rule ids are a contract (suppression comments, CI configurations and SARIF
viewers refer to them): a rule may be added, never renumbered.

* ``STX0xx`` — DAG code, found by reading the source with :mod:`ast`;
* ``STX1xx`` — connections in the connection store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["RULES", "Finding", "Rule", "Severity"]


class Severity(enum.StrEnum):
    """How bad a finding is; ``--fail-on`` compares against it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 1, "medium": 2, "high": 3}[self.value]


@dataclass(frozen=True)
class Rule:
    """One audit rule."""

    id: str
    name: str
    severity: Severity
    title: str
    fix: str
    #: Longer explanation (SARIF ``fullDescription``/``help``).
    help: str


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: in a file (``path``/``line``/``column``) or a connection (``conn_id``)."""

    rule: Rule
    message: str
    fix: str
    path: str | None = None
    line: int | None = None
    #: 1-based column in characters.
    column: int | None = None
    end_line: int | None = None
    end_column: int | None = None
    conn_id: str | None = None
    #: Where a connection was read from ("environment variable AIRFLOW_CONN_X", "metadata database"...).
    source: str | None = None

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    @property
    def location(self) -> str:
        if self.path is not None:
            return f"{self.path}:{self.line or 0}:{self.column or 0}"
        return f"connection {self.conn_id!r} ({self.source})"

    def sort_key(self) -> tuple[int, str, int, int, str, str]:
        if self.path is not None:
            return (0, self.path, self.line or 0, self.column or 0, self.rule.id, "")
        return (1, self.conn_id or "", 0, 0, self.rule.id, self.source or "")


_SECURE_FTPS = (
    "use SecureUploadOperator(conn_id=...) or SecureFTPSHook (airflow_secure_transfer) with a secure_ftps "
    "connection: TLS is always on, the server is verified, PROT P protects the data"
)
_PIN_SFTP = (
    "pin the server: set the connection extra 'host_key' (print it with 'airflow-secure-transfer fingerprint "
    "HOST:PORT --protocol sftp' and compare it out of band) or 'known_hosts'"
)

_RULE_LIST = (
    Rule(
        "STX000",
        "unparsable-file",
        Severity.MEDIUM,
        "file could not be parsed, so it was not audited",
        "fix the syntax error or the encoding, or exclude the file from the audited paths",
        "The audit reads DAG files with Python's ast module and never imports them. A file it cannot parse "
        "is reported instead of skipped, so that a CI gate fails closed.",
    ),
    Rule(
        "STX001",
        "plain-ftp-client",
        Severity.HIGH,
        "plain FTP client ftplib.FTP: password and data travel in clear",
        _SECURE_FTPS,
        "ftplib.FTP speaks unencrypted FTP: the USER/PASS commands and every file cross the network in clear.",
    ),
    Rule(
        "STX002",
        "ftp-tls-unverified",
        Severity.HIGH,
        "ftplib.FTP_TLS without a verifying SSL context: the server certificate is not checked",
        "pass context=ssl.create_default_context() (cafile=... for a private CA), or use SecureFTPSHook "
        "(extras ca_bundle / cert_fingerprint)",
        "Without context=, ftplib.FTP_TLS uses an SSL context with CERT_NONE and no hostname check: anyone "
        "on the path can present any certificate and read the password.",
    ),
    Rule(
        "STX003",
        "ftp-tls-no-prot-p",
        Severity.HIGH,
        "ftplib.FTP_TLS without prot_p(): the data channel (files, listings) stays in clear",
        "call prot_p() right after login(), before any transfer or listing, or use SecureFTPSHook "
        "(always PBSZ 0 + PROT P)",
        "FTP_TLS encrypts only the control channel until PROT P is sent; files and directory listings "
        "are sent in clear before that.",
    ),
    Rule(
        "STX004",
        "ftp-tls-downgrade",
        Severity.HIGH,
        "FTP_TLS.ccc()/prot_c() switches back to clear text",
        "remove the ccc()/prot_c() call",
        "CCC ends TLS on the control channel and PROT C on the data channel: what follows is sent in clear.",
    ),
    Rule(
        "STX010",
        "stock-ftp-class",
        Severity.HIGH,
        "stock Airflow plain-FTP class: credentials and files travel in clear",
        _SECURE_FTPS,
        "FTPHook, FTPFileTransmitOperator and FTPSensor of apache-airflow-providers-ftp use unencrypted FTP.",
    ),
    Rule(
        "STX011",
        "stock-ftps-class",
        Severity.MEDIUM,
        "stock Airflow FTPS class: no private CA or pin, no TLS session reuse, PBSZ/PROT in clear without login",
        _SECURE_FTPS,
        "FTPSHook, FTPSFileTransmitOperator and FTPSSensor verify the certificate against the system store "
        "only, fail against servers that require TLS session reuse (vsftpd's default), and send PBSZ/PROT "
        "before TLS when no login is set.",
    ),
    Rule(
        "STX020",
        "ftp-uri",
        Severity.MEDIUM,
        "ftp:// URI: plain FTP, password and data in clear",
        "use a secure_ftps or sftp connection (ftps:// or sftp:// with a verified server) instead",
        "An ftp:// URL in code is fetched or uploaded with unencrypted FTP (urllib, fsspec, curl...).",
    ),
    Rule(
        "STX030",
        "ssh-accept-any-host-key",
        Severity.HIGH,
        "paramiko AutoAddPolicy/WarningPolicy accepts any SSH host key",
        "use paramiko.RejectPolicy() with the server's key pinned, or SecureSFTPHook; " + _PIN_SFTP,
        "With AutoAddPolicy or WarningPolicy, a man in the middle is accepted silently on the first "
        "(or every) connection and receives the password.",
    ),
    Rule(
        "STX031",
        "no-host-key-check",
        Severity.HIGH,
        "no_host_key_check=True: any SSH server is trusted",
        "remove no_host_key_check; " + _PIN_SFTP,
        "The stock SSH/SFTP hooks switch to AutoAddPolicy when no_host_key_check is true.",
    ),
    Rule(
        "STX032",
        "allow-host-key-change",
        Severity.HIGH,
        "allow_host_key_change=True: a changed (possibly forged) host key is accepted",
        "remove allow_host_key_change; when a server's key really changes, pin the new key after "
        "checking it out of band",
        "allow_host_key_change makes the stock SSH hook accept whatever key a server presents.",
    ),
    Rule(
        "STX033",
        "asyncssh-known-hosts-none",
        Severity.HIGH,
        "asyncssh known_hosts=None disables host key verification",
        "pass known_hosts=<known_hosts path or text>, or omit it (~/.ssh/known_hosts is used)",
        "In asyncssh, known_hosts=None means: accept any server host key.",
    ),
    Rule(
        "STX040",
        "ssl-unverified-context",
        Severity.HIGH,
        "unverified SSL context (ssl._create_unverified_context/_create_stdlib_context)",
        "use ssl.create_default_context(cafile=...) to trust a private CA",
        "These private helpers return contexts with CERT_NONE and no hostname check.",
    ),
    Rule(
        "STX041",
        "ssl-cert-none",
        Severity.HIGH,
        "CERT_NONE: the peer's certificate is not verified",
        "keep verify_mode = ssl.CERT_REQUIRED (the default of ssl.create_default_context()); trust a private "
        "CA with cafile= or pin the certificate (SecureFTPSHook's cert_fingerprint)",
        "With CERT_NONE any certificate is accepted, so TLS protects against nobody who can intercept.",
    ),
    Rule(
        "STX042",
        "ssl-no-hostname-check",
        Severity.HIGH,
        "check_hostname=False: a certificate for another host is accepted",
        "keep check_hostname=True; connect by a name the certificate contains, or pin the certificate "
        "(SecureFTPSHook's cert_fingerprint)",
        "Without the hostname check, any certificate signed by a trusted CA (for any domain) is accepted.",
    ),
    Rule(
        "STX043",
        "ssl-context-no-verify-default",
        Severity.HIGH,
        "SSL context that does not verify by default (ssl.SSLContext() without PROTOCOL_TLS_CLIENT, ssl.wrap_socket)",
        "use ssl.create_default_context() or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)",
        "ssl.SSLContext() and SSLContext(PROTOCOL_TLS) start with CERT_NONE and no hostname check; "
        "ssl.wrap_socket does not verify either.",
    ),
    Rule(
        "STX044",
        "tls-below-1-2",
        Severity.MEDIUM,
        "TLS below 1.2 (or SSL) allowed",
        "set minimum_version = ssl.TLSVersion.TLSv1_2 or keep the default of ssl.create_default_context()",
        "SSLv3, TLS 1.0 and 1.1 are deprecated (RFC 8996) and have known attacks.",
    ),
    Rule(
        "STX100",
        "connection-unreadable",
        Severity.MEDIUM,
        "connection could not be read (malformed URI/JSON or extra)",
        "fix the connection's definition",
        "A connection that cannot be parsed cannot be audited; it is reported so that the audit fails closed.",
    ),
    Rule(
        "STX101",
        "ftp-connection",
        Severity.HIGH,
        "connection of type 'ftp': stock hooks use it in clear",
        "change the connection type to secure_ftps (set ca_bundle or cert_fingerprint for a private server); "
        "SecureFTPSHook always upgrades it to TLS, but the stock FTPHook sends the password in clear",
        "The stock FTPHook/FTPFileTransmitOperator use an 'ftp' connection with unencrypted FTP.",
    ),
    Rule(
        "STX102",
        "ssh-connection-no-host-key-check",
        Severity.HIGH,
        "SSH/SFTP connection with no_host_key_check = true: any server is trusted",
        "remove the extra; " + _PIN_SFTP,
        "The stock SSH/SFTP hooks use AutoAddPolicy when no_host_key_check is true; SecureSFTPHook refuses it.",
    ),
    Rule(
        "STX103",
        "ssh-connection-allow-host-key-change",
        Severity.HIGH,
        "SSH/SFTP connection with allow_host_key_change = true: a changed host key is accepted",
        "remove the extra; " + _PIN_SFTP,
        "allow_host_key_change accepts any key the server presents; SecureSFTPHook refuses it.",
    ),
    Rule(
        "STX104",
        "ssh-connection-no-pinned-key",
        Severity.LOW,
        "SSH/SFTP connection without a pinned host key",
        _PIN_SFTP,
        "Without host_key (or known_hosts), the stock hooks depend on whatever the worker's "
        "~/.ssh/known_hosts contains, and SecureSFTPHook refuses the connection (fail closed).",
    ),
    Rule(
        "STX105",
        "secure-connection-refused",
        Severity.HIGH,
        "secure_ftps/secure_sftp connection with a setting the security policy refuses",
        "change the setting as the message says",
        "The connection would weaken security (plain FTP, no verification, TLS below 1.2, no host key...); "
        "the hooks refuse it.",
    ),
    Rule(
        "STX106",
        "secure-connection-invalid",
        Severity.MEDIUM,
        "secure_ftps/secure_sftp connection that the hooks cannot use (unknown extra, malformed value)",
        "change the setting as the message says",
        "The hooks parse extras strictly; this connection would fail at run time.",
    ),
)

#: Every rule by id.
RULES: dict[str, Rule] = {rule.id: rule for rule in _RULE_LIST}
