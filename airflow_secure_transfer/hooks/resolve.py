"""One connection id -> validated settings and a client factory, with one secrets-backend lookup.

:func:`resolve_connection` is the only place that turns a ``conn_id`` into settings and a
client factory: it reads the connection once (``BaseHook.get_connection``), picks the
protocol from the connection type, and validates it under the security policy. The hooks'
``get_settings`` share the per-protocol parse (:func:`ftps_settings_from_connection`,
:func:`sftp_settings_from_connection`), so there is one set of rules and one place that
registers the connection's secrets with Airflow's log masker.

Nothing heavy is imported here at module level: the Airflow SDK is imported when a
connection is resolved, the clients (``ftplib``/``ssl``, ``asyncssh``) when a client is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_secure_transfer.exceptions import ConfigurationError
from airflow_secure_transfer.security.policy import (
    FTPS_CONN_TYPES,
    SFTP_CONN_TYPES,
    parse_ftps_settings,
    parse_sftp_settings,
)

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import FTPSSettings, SFTPSettings
    from airflow_secure_transfer.transfer.base import RemoteFS

__all__ = [
    "ResolvedConnection",
    "ftps_settings_from_connection",
    "resolve_connection",
    "sftp_settings_from_connection",
]

_SFTP_SECRET_EXTRAS = ("private_key", "private_key_passphrase")


def _mask(secret: object) -> None:
    """Register *secret* with Airflow's log masker (task logs and the supervisor's)."""
    if not isinstance(secret, str) or not secret:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


def ftps_settings_from_connection(conn: Any) -> FTPSSettings:
    """Validate an Airflow connection object into :class:`FTPSSettings`, masking its secrets first.

    :param conn: the connection as ``BaseHook.get_connection`` returns it.
    :raises ConfigurationError: unknown extra, malformed value, wrong connection type.
    :raises SecurityPolicyError: a setting that would weaken security.
    """
    _mask(conn.password)
    extras = conn.extra_dejson
    if isinstance(extras, dict):
        _mask(extras.get("client_key"))
    settings = parse_ftps_settings(
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        extras=extras,
    )
    _mask(settings.client_key)  # the key text, also when the extra was a path
    return settings


def sftp_settings_from_connection(conn: Any) -> SFTPSettings:
    """Validate an Airflow connection object into :class:`SFTPSettings`, masking its secrets first.

    The password, private key and passphrase are registered with Airflow's secrets
    masker before anything else happens.

    :param conn: the connection as ``BaseHook.get_connection`` returns it.
    :raises ConfigurationError: unknown extra, malformed value, wrong connection type.
    :raises SecurityPolicyError: a setting that would weaken security (no host key pinned,
        ``no_host_key_check``, ``allow_host_key_change``, a DSA key...).
    """
    _mask(conn.password)
    extras = conn.extra_dejson
    if isinstance(extras, dict):
        for key in _SFTP_SECRET_EXTRAS:
            _mask(extras.get(key))
    settings = parse_sftp_settings(
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        extras=extras,
    )
    _mask(settings.private_key)  # normalised text (literal "\n" replaced)
    return settings


@dataclass(frozen=True)
class ResolvedConnection:
    """A connection read once and validated: its protocol, settings and a client factory.

    :param conn_id: the Airflow connection id it was resolved from.
    :param scheme: ``"ftps"`` or ``"sftp"``.
    :param settings: the validated settings (secrets stay out of ``repr``).
    :param connect: opens a new connected, verified, logged-in client; the caller closes it.
    """

    conn_id: str
    scheme: Literal["ftps", "sftp"]
    settings: FTPSSettings | SFTPSettings
    connect: Callable[[], RemoteFS] = field(repr=False, compare=False)

    @property
    def host(self) -> str:
        """The server's host name or address."""
        return self.settings.host

    @property
    def port(self) -> int:
        """The server's port."""
        return self.settings.port

    @property
    def remote_root(self) -> str | None:
        """The directory remote paths are confined to, if the connection sets one."""
        return self.settings.remote_root

    @property
    def max_connections(self) -> int:
        """The most concurrent sessions the connection allows."""
        return self.settings.max_connections

    @property
    def conn_timeout(self) -> float:
        """The connect/read timeout in seconds."""
        return self.settings.conn_timeout


def resolve_connection(conn_id: str, *, consumer: str = "airflow-secure-transfer") -> ResolvedConnection:
    """Read *conn_id* once from the secrets backends and validate it into a :class:`ResolvedConnection`.

    ``secure_ftps``/``ftp`` connections become FTPS (``ftp`` is always upgraded to TLS),
    ``secure_sftp``/``sftp``/``ssh`` connections become SFTP.

    :param conn_id: the Airflow connection id.
    :param consumer: who asks, named in the message for a connection type it does not accept.
    :raises ConfigurationError: a connection type that is neither FTPS nor SFTP, or invalid settings.
    :raises SecurityPolicyError: a setting that would weaken security.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    conn_type = (conn.conn_type or "").strip().lower()
    if conn_type in FTPS_CONN_TYPES:
        ftps_settings = ftps_settings_from_connection(conn)

        def ftps_client() -> RemoteFS:
            from airflow_secure_transfer.transfer.ftps import FTPSClient

            return FTPSClient(ftps_settings)

        return ResolvedConnection(conn_id=conn_id, scheme="ftps", settings=ftps_settings, connect=ftps_client)
    if conn_type in SFTP_CONN_TYPES:
        sftp_settings = sftp_settings_from_connection(conn)

        def sftp_client() -> RemoteFS:
            from airflow_secure_transfer.transfer.sftp import SFTPClient

            return SFTPClient(sftp_settings)

        return ResolvedConnection(conn_id=conn_id, scheme="sftp", settings=sftp_settings, connect=sftp_client)
    raise ConfigurationError(
        f"connection {conn_id!r} has type {conn.conn_type!r}, which {consumer} does not accept; "
        f"accepted types: {', '.join(FTPS_CONN_TYPES + SFTP_CONN_TYPES)} "
        "(ftp connections are always upgraded to TLS)"
    )
