"""``SecureFTPSHook``: an Airflow connection -> validated settings -> a verified FTPS client.

The hook is thin: :func:`~airflow_secure_transfer.hooks.resolve.ftps_settings_from_connection`
(:func:`~airflow_secure_transfer.security.policy.parse_ftps_settings`)
decides what a connection may say, :class:`~airflow_secure_transfer.transfer.ftps.FTPSClient`
does the protocol. It accepts connections of type ``secure_ftps`` and of the stock
``ftp`` type (always upgraded to TLS: explicit ``AUTH TLS`` unless ``tls_mode``
says implicit), so existing connections migrate without re-entering credentials.

``ftplib``, ``ssl`` and the client are imported only when a connection is
opened, so importing this module (DAG parsing, the providers manager) stays light.
The constructor does no network or database I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_secure_transfer.exceptions import LimitExceededError, RemotePathError, SecureTransferError
from airflow_secure_transfer.hooks._files import RemoteFileMethods
from airflow_secure_transfer.hooks.resolve import ftps_settings_from_connection

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import FTPSSettings
    from airflow_secure_transfer.transfer.ftps import FTPSClient

__all__ = ["SecureFTPSHook"]


class SecureFTPSHook(RemoteFileMethods, BaseHook):
    """Interact with an FTPS server that is verified and never spoken to in clear.

    :param ftps_conn_id: the connection (type ``secure_ftps`` or ``ftp``); read when first needed.
    """

    conn_name_attr = "ftps_conn_id"
    default_conn_name = "secure_ftps_default"
    conn_type = "secure_ftps"
    hook_name = "Secure FTPS"

    # Airflow 3.1's connection form (3.2+ reads the same declaration from the provider info). Defined
    # on this class itself: the providers manager only looks in the hook class's own __dict__.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the form fields of the Airflow 3.1 UI, built from ``FTPS_CONN_FIELDS``."""
        from airflow_secure_transfer import FTPS_CONN_FIELDS
        from airflow_secure_transfer.compat import connection_form_widgets

        return connection_form_widgets(FTPS_CONN_FIELDS)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the standard fields' behaviour for the Airflow 3.1 UI, from ``FTPS_UI_FIELD_BEHAVIOUR``."""
        from airflow_secure_transfer import FTPS_UI_FIELD_BEHAVIOUR
        from airflow_secure_transfer.compat import ui_field_behaviour

        return ui_field_behaviour(FTPS_UI_FIELD_BEHAVIOUR)

    def __init__(self, ftps_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ftps_conn_id = ftps_conn_id
        self._settings: FTPSSettings | None = None
        self._client: FTPSClient | None = None

    # ------------------------------------------------------------------ connection

    def get_settings(self) -> FTPSSettings:
        """Read the connection and validate it (strictly) into :class:`FTPSSettings`; cached.

        :raises ConfigurationError: unknown extra, malformed value, wrong connection type.
        :raises SecurityPolicyError: a setting that would weaken security.
        """
        if self._settings is None:
            self._settings = ftps_settings_from_connection(self.get_connection(self.ftps_conn_id))
        return self._settings

    def get_fs(self) -> FTPSClient:
        """Open a new connected, logged-in client; the caller closes it (``with hook.get_fs() as fs:``)."""
        from airflow_secure_transfer.transfer.ftps import FTPSClient

        return FTPSClient(self.get_settings())

    def get_conn(self) -> FTPSClient:
        """Return the hook's own client (opened on first use, reused by the convenience methods)."""
        client = self._client
        if client is None or not client.usable:
            if client is not None:
                client.close()
            client = self._client = self.get_fs()
        return client

    # ------------------------------------------------------------------ UI

    def test_connection(self) -> tuple[bool, str]:
        """Connect, log in, protect the data channel and list the login directory; say what happened.

        :returns: ``(True, "Connected to host:port as LOGIN over TLSv1.3 (...); certificate SHA-256 ...")``
            or ``(False, reason)`` with the real reason. Never a traceback, never a secret.
        """
        try:
            settings = self.get_settings()
        except SecureTransferError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the UI shows the message, not a traceback
            return False, f"cannot read connection {self.ftps_conn_id!r}: {type(exc).__name__}: {exc}"
        where = f"{settings.host}:{settings.port}"
        try:
            from airflow_secure_transfer.transfer.ftps import FTPSClient

            with FTPSClient(settings) as client:
                info = client.tls_info
                parts = [
                    f"Connected to {where} as {settings.login or 'anonymous'} over {info.describe() if info else 'TLS'}"
                ]
                if settings.cert_fingerprints and not settings.ca_bundle:
                    parts.append("trusted by pin (cert_fingerprint)")
                try:
                    entries = client.listdir(client.home)
                except (RemotePathError, LimitExceededError) as exc:
                    # Logged in and protected; only this directory is not listable (permissions, or a
                    # listing past its bounds: the connection works, the listing is what is too big).
                    parts.append(f"login directory not listable ({exc})")
                else:
                    reused = client.ftp.last_data_session_reused
                    parts.append(
                        f"data channel: PROT P, TLS session {'resumed' if reused else 'not resumed'}, "
                        f"{len(entries)} entries in {client.home}"
                    )
                parts.append(f"server checksums: {client.checksum_support or 'unavailable'}")
            return True, "; ".join(parts)
        except SecureTransferError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the UI shows the message, not a traceback
            text = str(exc)
            if settings.password:
                text = text.replace(settings.password, "***")
            return False, f"{where}: unexpected {type(exc).__name__}: {text}"
