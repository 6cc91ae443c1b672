"""airflow-secure-transfer: FTPS and SFTP for Apache Airflow that never falls back to plain FTP.

This module is the target of the ``apache_airflow_provider`` entry point. It
imports nothing heavy: the Airflow UI and the providers manager read
:func:`get_provider_info` without importing hooks.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DISTRIBUTION_NAME = "airflow-provider-secure-transfer"

_OPTIONAL_STRING: dict[str, Any] = {"type": ["string", "null"]}

#: Connection form fields (Airflow 3.2+ reads these statically). Names are the extras' keys.
FTPS_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "tls_mode": {
        "label": "TLS mode",
        "description": "explicit: AUTH TLS on the control port (usually 21). "
        "implicit: TLS from the first byte (usually 990). Plain FTP is not possible.",
        "schema": {"type": ["string", "null"], "enum": ["explicit", "implicit", None], "default": "explicit"},
    },
    "ca_bundle": {
        "label": "CA bundle (PEM)",
        "description": "PEM text of the CA certificate(s) that issued the server's certificate, or a path "
        "to a PEM file on the workers. Empty: the system trust store.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "cert_fingerprint": {
        "label": "Certificate fingerprint (SHA-256)",
        "description": "Pins the server's certificate, e.g. for a self-signed server: its SHA-256 "
        "fingerprint in hex (colons and a 'sha256:' prefix optional; several separated by commas). "
        "Get it with 'airflow-secure-transfer fingerprint HOST:PORT --protocol ftps' and compare it with "
        "the one the server's operator gives you.",
        "schema": _OPTIONAL_STRING,
    },
    "client_cert": {
        "label": "Client certificate (PEM)",
        "description": "For servers that require mutual TLS: the client certificate as PEM text or a path.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "client_key": {
        "label": "Client private key (PEM)",
        "description": "The private key of the client certificate, as PEM text or a path.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "min_tls_version": {
        "label": "Minimum TLS version",
        "description": "TLSv1.2 (default) or TLSv1.3. Older versions are refused.",
        "schema": {"type": ["string", "null"], "enum": ["TLSv1.2", "TLSv1.3", None], "default": "TLSv1.2"},
    },
    "max_tls_version": {
        "label": "Maximum TLS version",
        "description": "Empty: the newest both sides support.",
        "schema": {"type": ["string", "null"], "enum": ["TLSv1.2", "TLSv1.3", None]},
    },
    "conn_timeout": {
        "label": "Timeout (seconds)",
        "description": "Limit for connecting and for every read or write on the network.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0.1},
    },
    "encoding": {
        "label": "Control channel encoding",
        "description": "Encoding of file names on the control connection.",
        "schema": {"type": ["string", "null"], "default": "utf-8"},
    },
    "max_connections": {
        "label": "Maximum connections",
        "description": "Most connections a transfer may open to this server at once.",
        "schema": {"type": ["integer", "null"], "default": 4, "minimum": 1, "maximum": 64},
    },
    "remote_root": {
        "label": "Remote root directory",
        "description": "Optional: an absolute directory outside which no remote path may resolve.",
        "schema": _OPTIONAL_STRING,
    },
}

SFTP_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "host_key": {
        "label": "Host key (pin)",
        "description": "The server's public host key(s), one per line, e.g. 'ssh-ed25519 AAAA...'. "
        "Get it with 'airflow-secure-transfer fingerprint HOST:PORT --protocol sftp' and compare its "
        "fingerprint with the one the server's operator gives you. Required unless known_hosts is set.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "known_hosts": {
        "label": "known_hosts",
        "description": "known_hosts text, or the path of a known_hosts file on the workers. "
        "Required unless a host key is pinned.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "key_file": {
        "label": "Private key file",
        "description": "Path of the client's private key file on the workers.",
        "schema": _OPTIONAL_STRING,
    },
    "private_key": {
        "label": "Private key (text)",
        "description": "The client's private key as text (-----BEGIN OPENSSH PRIVATE KEY-----...).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "private_key_passphrase": {
        "label": "Private key passphrase",
        "description": "Passphrase of the private key, if it has one.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "conn_timeout": {
        "label": "Timeout (seconds)",
        "description": "Limit for connecting, authenticating and every SFTP request.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0.1},
    },
    "max_connections": {
        "label": "Maximum connections",
        "description": "Most SSH connections a transfer may open to this server at once.",
        "schema": {"type": ["integer", "null"], "default": 4, "minimum": 1, "maximum": 64},
    },
    "remote_root": {
        "label": "Remote root directory",
        "description": "Optional: an absolute directory outside which no remote path may resolve.",
        "schema": _OPTIONAL_STRING,
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's providers manager (entry point target)."""
    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "Secure Transfer",
        "description": "FTPS and SFTP uploads that verify the server, never send anything in clear, "
        "and land files atomically.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Secure FTPS",
                "external-doc-url": "https://datatracker.ietf.org/doc/html/rfc4217",
                "tags": ["protocol"],
            },
            {
                "integration-name": "Secure SFTP",
                "external-doc-url": "https://datatracker.ietf.org/doc/html/draft-ietf-secsh-filexfer-02",
                "tags": ["protocol"],
            },
        ],
        "hooks": [
            {"integration-name": "Secure FTPS", "python-modules": ["airflow_secure_transfer.hooks.ftps"]},
            {"integration-name": "Secure SFTP", "python-modules": ["airflow_secure_transfer.hooks.sftp"]},
        ],
        "operators": [
            {"integration-name": "Secure FTPS", "python-modules": ["airflow_secure_transfer.operators.upload"]},
        ],
        "cli": ["airflow_secure_transfer.cli.airflow_cli.get_cli_commands"],
        "connection-types": [
            {
                "connection-type": "secure_ftps",
                "hook-class-name": "airflow_secure_transfer.hooks.ftps.SecureFTPSHook",
                "hook-name": "Secure FTPS",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"login": "Username"},
                    "placeholders": {"host": "ftps.partner.example", "port": "21", "login": "username"},
                },
                "conn-fields": FTPS_CONN_FIELDS,
            },
            {
                "connection-type": "secure_sftp",
                "hook-class-name": "airflow_secure_transfer.hooks.sftp.SecureSFTPHook",
                "hook-name": "Secure SFTP",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"login": "Username"},
                    "placeholders": {"host": "sftp.partner.example", "port": "22", "login": "username"},
                },
                "conn-fields": SFTP_CONN_FIELDS,
            },
        ],
    }
