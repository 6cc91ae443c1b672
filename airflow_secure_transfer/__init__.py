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

#: Connection form fields, declared once: Airflow 3.2+ reads these statically; on 3.1 the hooks'
#: ``get_connection_form_widgets`` builds its form from them. Names are the extras' keys.
#: A null option in an enum renders as the word "null" in the 3.3 form: keep it only where "no value" is a
#: real choice, and then label it in values_display.
FTPS_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "tls_mode": {
        "label": "TLS mode",
        "description": "How the server starts TLS; ask the partner. Explicit (the default): AUTH TLS on the "
        "FTP port (usually 21). Implicit: TLS from the first byte (usually 990). Plain FTP is never used.",
        # No None in the enum: a cleared select then shows the placeholder instead of the word "null"
        # (the type stays nullable so the field is not required; empty means explicit).
        "schema": {
            "type": ["string", "null"],
            "enum": ["explicit", "implicit"],
            "default": "explicit",
            "values_display": {
                "explicit": "Explicit (AUTH TLS, usually port 21)",
                "implicit": "Implicit (TLS from the first byte, usually port 990)",
            },
        },
    },
    "ca_bundle": {
        "label": "CA certificate (PEM)",
        "description": "The certificate of the CA that issued the server's certificate, pasted as PEM text "
        "(-----BEGIN CERTIFICATE-----...; several allowed), or the path of a PEM file on the workers. "
        "Leave empty when a public CA issued it (the system's trust store is used).",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "cert_fingerprint": {
        "label": "Certificate fingerprint",
        "description": "Optional pin, e.g. for a self-signed server: the SHA-256 fingerprint of the server's "
        "certificate in hex (colons and a 'sha256:' prefix allowed; several separated by commas while a "
        "certificate is being renewed). Without a CA certificate the pin alone decides; with one, both must "
        "match. Get it with 'airflow-secure-transfer fingerprint HOST:PORT --protocol ftps' and confirm it "
        "with the server's operator.",
        "schema": _OPTIONAL_STRING,
    },
    "client_cert": {
        "label": "Client certificate (PEM)",
        "description": "Only for servers that require a client certificate (mutual TLS): PEM text or the "
        "path of a PEM file on the workers.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "client_key": {
        "label": "Client certificate key (PEM)",
        "description": "The private key of the client certificate: PEM text (masked here; it may be pasted "
        "on one line) or the path of a PEM file on the workers.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "min_tls_version": {
        "label": "Minimum TLS version",
        "description": "The oldest TLS version accepted. Empty: TLS 1.2. TLS 1.0 and 1.1 are never accepted.",
        "schema": {
            "type": ["string", "null"],
            "enum": ["TLSv1.2", "TLSv1.3"],
            "default": "TLSv1.2",
            "values_display": {"TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"},
        },
    },
    "max_tls_version": {
        "label": "Maximum TLS version",
        "description": "Only to work around a server that misbehaves with TLS 1.3.",
        # Here "no limit" is a real choice, so it stays in the enum, with a readable label.
        "schema": {
            "type": ["string", "null"],
            "enum": [None, "TLSv1.2", "TLSv1.3"],
            "values_display": {
                "null": "No limit (the newest both sides support)",
                "TLSv1.2": "TLS 1.2",
                "TLSv1.3": "TLS 1.3",
            },
        },
    },
    "conn_timeout": {
        "label": "Timeout (seconds)",
        "description": "Limit for connecting and for each network read or write: a stalled server fails the "
        "task instead of hanging it.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0.1},
    },
    "encoding": {
        "label": "File name encoding",
        "description": "Encoding of file and directory names on the server: utf-8 for almost every server, "
        "latin-1 for some old ones.",
        "schema": {"type": ["string", "null"], "default": "utf-8"},
    },
    "max_connections": {
        "label": "Parallel connections",
        "description": "At most this many connections to this server at once during a transfer "
        "(1 for a server that allows one session per user).",
        "schema": {"type": ["integer", "null"], "default": 4, "minimum": 1, "maximum": 64},
    },
    "remote_root": {
        "label": "Remote root directory",
        "description": "Optional safety net: an absolute directory on the server (e.g. /inbox); any remote "
        "path that resolves outside it is refused.",
        "schema": _OPTIONAL_STRING,
    },
}

SFTP_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "host_key": {
        "label": "Host key (pin)",
        "description": "The server's public host key, e.g. 'ssh-ed25519 AAAA...'; one per line (several "
        "while the server rotates its key). Get it with 'airflow-secure-transfer fingerprint HOST:PORT "
        "--protocol sftp' and confirm its SHA256 fingerprint with the server's operator. Required unless "
        "Known hosts is set.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "known_hosts": {
        "label": "Known hosts",
        "description": "Instead of a pinned host key: known_hosts lines (OpenSSH format) or the path of a "
        "known_hosts file on the workers. Required unless a host key is pinned.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "key_file": {
        "label": "Private key file (path)",
        "description": "Path of the client's private key on the workers. Set this or Private key (text), "
        "not both; leave both empty to log in with the password.",
        "schema": _OPTIONAL_STRING,
    },
    "private_key": {
        "label": "Private key (text)",
        "description": "The client's private key, pasted whole (-----BEGIN OPENSSH PRIVATE KEY----- ... "
        "-----END OPENSSH PRIVATE KEY-----); masked here, and it may be pasted on one line.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "private_key_passphrase": {
        "label": "Private key passphrase",
        "description": "Passphrase of the private key, if it has one.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "conn_timeout": {
        "label": "Timeout (seconds)",
        "description": "Limit for connecting, logging in and each SFTP request: a stalled server fails the "
        "task instead of hanging it.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0.1},
    },
    "max_connections": {
        "label": "Parallel connections",
        "description": "At most this many SSH connections to this server at once during a transfer "
        "(1 for a server that allows one session per user).",
        "schema": {"type": ["integer", "null"], "default": 4, "minimum": 1, "maximum": 64},
    },
    "remote_root": {
        "label": "Remote root directory",
        "description": "Optional safety net: an absolute directory on the server (e.g. /inbox); any remote "
        "path that resolves outside it is refused.",
        "schema": _OPTIONAL_STRING,
    },
}

#: The ``secure_pgp`` ("PGP keys") connection: OpenPGP keys, no server. The password field holds the
#: private key's passphrase.
PGP_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "public_keys": {
        "label": "Public keys (ASCII-armoured)",
        "description": "The partner's OpenPGP public key(s), pasted whole (-----BEGIN PGP PUBLIC KEY BLOCK----- "
        "... -----END PGP PUBLIC KEY BLOCK-----; several blocks allowed): the recipients each file is "
        "encrypted to (encrypt_with), or the signers whose signatures are accepted (verify_signature_with). "
        "Confirm each fingerprint with the partner (the Test button lists them).",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "private_key": {
        "label": "Private key (ASCII-armoured)",
        "description": "Our OpenPGP secret key, pasted whole (-----BEGIN PGP PRIVATE KEY BLOCK----- ...); "
        "masked here, and it may be pasted on one line. It signs uploads (sign_with) or decrypts downloads "
        "(decrypt_with); its passphrase goes in the Passphrase field.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "public_keys_use": {
        "label": "Public keys are for",
        "description": "What the Test button checks the public keys for: encrypting to them (each needs an "
        "encryption-capable subkey), verifying their signatures (each needs a signing-capable key), or both.",
        "schema": {
            "type": ["string", "null"],
            "enum": ["encrypt", "verify", "both"],
            "default": "encrypt",
            "values_display": {
                "encrypt": "Encrypting files to them",
                "verify": "Verifying their signatures",
                "both": "Both",
            },
        },
    },
}

# "Host" and "Port" are spelled out for Airflow 3.1's form, which otherwise shows the raw names.
_RELABELING = {"host": "Host", "port": "Port", "login": "Username"}

#: The standard fields of each form. Airflow 3.2+ reads these and the ``*_CONN_FIELDS`` above from
#: :func:`get_provider_info`; Airflow 3.1 gets the same declarations through the hooks' classmethods
#: (``get_ui_field_behaviour`` / ``get_connection_form_widgets``, built by :mod:`airflow_secure_transfer.compat`).
FTPS_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema"],
    "relabeling": _RELABELING,
    "placeholders": {"host": "ftps.partner.example", "port": "21", "login": "username"},
}
SFTP_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema"],
    "relabeling": _RELABELING,
    "placeholders": {"host": "sftp.partner.example", "port": "22", "login": "username"},
}

# Port stays visible (relabelled) only because Airflow 3.3's UI tests a saved connection with port 0 when the
# field is empty or hidden, and its API refuses a test whose port differs from the stored one (HTTP 400):
# storing 0 makes the Test button work.
PGP_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "login", "schema"],
    "relabeling": {"password": "Passphrase (of the private key)", "port": "Port (not used: enter 0)"},
    "placeholders": {"password": "passphrase of the private key, if it has one", "port": "0"},
}


#: ``Asset("ftps://host/path")`` is normalised (default port 990) by our handler; ``sftp`` is the stock one's.
_FTPS_ASSET_URIS: list[dict[str, Any]] = [
    {
        "schemes": ["ftps"],
        "handler": "airflow_secure_transfer.assets.sanitize_uri",
        "factory": "airflow_secure_transfer.assets.create_asset",
        "to_openlineage_converter": "airflow_secure_transfer.assets.convert_asset_to_openlineage",
    }
]


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
            {
                "integration-name": "OpenPGP",
                "external-doc-url": "https://www.rfc-editor.org/rfc/rfc4880",
                "tags": ["protocol"],
            },
        ],
        "hooks": [
            {"integration-name": "Secure FTPS", "python-modules": ["airflow_secure_transfer.hooks.ftps"]},
            {"integration-name": "Secure SFTP", "python-modules": ["airflow_secure_transfer.hooks.sftp"]},
            {"integration-name": "OpenPGP", "python-modules": ["airflow_secure_transfer.hooks.pgp"]},
        ],
        "operators": [
            {
                "integration-name": "Secure FTPS",
                "python-modules": [
                    "airflow_secure_transfer.operators.upload",
                    "airflow_secure_transfer.operators.download",
                ],
            },
            {
                "integration-name": "Secure SFTP",
                "python-modules": [
                    "airflow_secure_transfer.operators.upload",
                    "airflow_secure_transfer.operators.download",
                ],
            },
        ],
        "sensors": [
            {"integration-name": "Secure FTPS", "python-modules": ["airflow_secure_transfer.sensors.file"]},
            {"integration-name": "Secure SFTP", "python-modules": ["airflow_secure_transfer.sensors.file"]},
        ],
        "triggers": [
            {"integration-name": "Secure FTPS", "python-modules": ["airflow_secure_transfer.triggers.file"]},
            {"integration-name": "Secure SFTP", "python-modules": ["airflow_secure_transfer.triggers.file"]},
        ],
        "asset-uris": _FTPS_ASSET_URIS,
        # Airflow 2.x name of the same hook point; the stock providers declare both.
        "dataset-uris": _FTPS_ASSET_URIS,
        "cli": ["airflow_secure_transfer.cli.airflow_cli.get_cli_commands"],
        # Read by airflow_secure_transfer.policy; declared here so that `airflow config list` shows it.
        "config": {
            "secure_transfer": {
                "description": "Options of the airflow-secure-transfer provider.",
                "options": {
                    "cluster_policy": {
                        "description": "What the cluster policy does with a task that would use plain FTP "
                        "(FTPFileTransmitOperator, FTPSensor, a stock FTPHook) or an SSH hook without host-key "
                        "checks, when the DAG processor parses its DAG. off: nothing. warn: the task is named "
                        "in the DAG processor's log. enforce: the DAG is refused (an import error that names "
                        "the task and the fix). Any other value is logged as an error and enforced.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "enforce",
                        "default": "warn",
                    }
                },
            }
        },
        "connection-types": [
            {
                "connection-type": "secure_ftps",
                "hook-class-name": "airflow_secure_transfer.hooks.ftps.SecureFTPSHook",
                "hook-name": "Secure FTPS",
                "ui-field-behaviour": FTPS_UI_FIELD_BEHAVIOUR,
                "conn-fields": FTPS_CONN_FIELDS,
            },
            {
                "connection-type": "secure_sftp",
                "hook-class-name": "airflow_secure_transfer.hooks.sftp.SecureSFTPHook",
                "hook-name": "Secure SFTP",
                "ui-field-behaviour": SFTP_UI_FIELD_BEHAVIOUR,
                "conn-fields": SFTP_CONN_FIELDS,
            },
            {
                "connection-type": "secure_pgp",
                "hook-class-name": "airflow_secure_transfer.hooks.pgp.SecurePGPHook",
                "hook-name": "PGP keys",
                "ui-field-behaviour": PGP_UI_FIELD_BEHAVIOUR,
                "conn-fields": PGP_CONN_FIELDS,
            },
        ],
    }
