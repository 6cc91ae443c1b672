"""``SecureSFTPHook``: an Airflow connection -> validated settings -> a verified SFTP client.

The hook is thin: :func:`~airflow_secure_transfer.hooks.resolve.sftp_settings_from_connection`
(:func:`~airflow_secure_transfer.security.policy.parse_sftp_settings`)
decides what a connection may say, :class:`~airflow_secure_transfer.transfer.sftp.SFTPClient`
does the protocol (asyncssh on a private event loop), and the upload engine does
atomic, verified, resumable uploads.

What it takes from the stock ``apache-airflow-providers-sftp`` / ``-ssh``: the
connection types ``sftp`` and ``ssh`` (accepted, validated under our policy, so
safe connections migrate unchanged), the extras' names and meaning (``host_key``,
``key_file``, ``private_key``, ``private_key_passphrase``, ``conn_timeout``, the
legacy ``timeout``, ``compress``), ``private_key`` text with literal ``\\n``, and the
local user name as the login when none is set. What it leaves out on purpose:
``no_host_key_check`` / ``allow_host_key_change`` (refused with a message saying how
to pin the key), the system and user known_hosts files, ``~/.ssh/config``
(``ProxyCommand``, ``IdentityFile``), ``look_for_keys`` and the SSH agent,
connection retries (a wrong host key fails once, at once), zlib compression by
default, and a connection per ``store_file``. It does not inherit ``SSHHook``:
that class offers exactly the switches our policy forbids.

``asyncssh``, ``paramiko`` and the client are imported only when a connection is
opened, so importing this module (DAG parsing, the providers manager) stays light.
The constructor does no network or database I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_secure_transfer.exceptions import SecureTransferError
from airflow_secure_transfer.hooks._files import RemoteFileMethods
from airflow_secure_transfer.hooks.resolve import sftp_settings_from_connection

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import SFTPSettings
    from airflow_secure_transfer.transfer.sftp import SFTPClient

__all__ = ["SecureSFTPHook"]


class SecureSFTPHook(RemoteFileMethods, BaseHook):
    """Interact with an SFTP server whose host key is pinned, over secure algorithms only.

    :param sftp_conn_id: the connection (type ``secure_sftp``, ``sftp`` or ``ssh``); read when first needed.
    """

    conn_name_attr = "sftp_conn_id"
    default_conn_name = "secure_sftp_default"
    conn_type = "secure_sftp"
    hook_name = "Secure SFTP"

    # Airflow 3.1's connection form (3.2+ reads the same declaration from the provider info). Defined
    # on this class itself: the providers manager only looks in the hook class's own __dict__.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the form fields of the Airflow 3.1 UI, built from ``SFTP_CONN_FIELDS``."""
        from airflow_secure_transfer import SFTP_CONN_FIELDS
        from airflow_secure_transfer.compat import connection_form_widgets

        return connection_form_widgets(SFTP_CONN_FIELDS)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the standard fields' behaviour for the Airflow 3.1 UI, from ``SFTP_UI_FIELD_BEHAVIOUR``."""
        from airflow_secure_transfer import SFTP_UI_FIELD_BEHAVIOUR
        from airflow_secure_transfer.compat import ui_field_behaviour

        return ui_field_behaviour(SFTP_UI_FIELD_BEHAVIOUR)

    def __init__(self, sftp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sftp_conn_id = sftp_conn_id
        self._settings: SFTPSettings | None = None
        self._client: SFTPClient | None = None

    # ------------------------------------------------------------------ connection

    def get_settings(self) -> SFTPSettings:
        """Read the connection and validate it (strictly) into :class:`SFTPSettings`; cached.

        The password, private key and passphrase are registered with Airflow's secrets
        masker before anything else happens.

        :raises ConfigurationError: unknown extra, malformed value, wrong connection type.
        :raises SecurityPolicyError: a setting that would weaken security (no host key pinned,
            ``no_host_key_check``, ``allow_host_key_change``, a DSA key...).
        """
        if self._settings is None:
            self._settings = sftp_settings_from_connection(self.get_connection(self.sftp_conn_id))
        return self._settings

    def get_fs(self) -> SFTPClient:
        """Open a new connected, authenticated client; the caller closes it (``with hook.get_fs() as fs:``).

        :raises VerificationError: the server's host key is not the pinned one (nothing was sent).
        :raises AuthenticationError: the login was refused.
        """
        from airflow_secure_transfer.transfer.sftp import SFTPClient

        return SFTPClient(self.get_settings())

    def get_conn(self) -> SFTPClient:
        """Return the hook's own client (opened on first use, reused by the convenience methods)."""
        client = self._client
        if client is None or client.closed:
            client = self._client = self.get_fs()
        return client

    # ------------------------------------------------------------------ UI

    def test_connection(self) -> tuple[bool, str]:
        """Connect, verify the host key, log in and start SFTP; say what was negotiated.

        :returns: ``(True, "Connected to host:port as LOGIN; host key ssh-ed25519 SHA256:...; kex ...;
            cipher ...")`` or ``(False, reason)`` with the real reason (e.g. the presented and the
            expected fingerprint). Never a traceback, never a secret.
        """
        try:
            settings = self.get_settings()
        except SecureTransferError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the UI shows the message, not a traceback
            return False, f"cannot read connection {self.sftp_conn_id!r}: {type(exc).__name__}: {exc}"
        where = f"{settings.host}:{settings.port}"
        try:
            from airflow_secure_transfer.transfer.sftp import SFTPClient

            with SFTPClient(settings) as client:
                info = client.info
                trusted_by = "host_key pin" if settings.host_keys else "known_hosts"
                if settings.host_keys and settings.known_hosts:
                    trusted_by = "host_key pin / known_hosts"
                parts = [
                    f"Connected to {where} as {info.login}",
                    f"host key {info.host_key.describe()} (trusted by {trusted_by})",
                    f"kex {info.kex}",
                    f"cipher {info.cipher}" + ("" if _aead(info.cipher) else f" + {info.mac}"),
                    f"server {info.server_version}",
                    f"home {client.home}",
                    f"atomic rename: {'yes (posix-rename)' if info.atomic_rename else 'no'}",
                ]
            return True, "; ".join(parts)
        except SecureTransferError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the UI shows the message, not a traceback
            text = str(exc)
            for secret in (settings.password, settings.private_key_passphrase):
                if secret:
                    text = text.replace(secret, "***")
            return False, f"{where}: unexpected {type(exc).__name__}: {text}"


def _aead(cipher: str) -> bool:
    return "gcm" in cipher or "poly1305" in cipher
