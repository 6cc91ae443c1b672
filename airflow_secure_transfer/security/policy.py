"""Strict parsing of connection settings into frozen, validated settings objects.

This is the one place that decides what a connection may say. It reads the
fields and extras of a connection (as plain values: the core imports no
Airflow) and returns :class:`FTPSSettings` or :class:`SFTPSettings`, or raises:

* :class:`~airflow_secure_transfer.exceptions.SecurityPolicyError` for a
  setting that would weaken security (``verify: false``, ``tls_mode: none``,
  ``min_tls_version: TLSv1``, ``no_host_key_check: true``, a DSA host key...),
  with a message saying what to set instead;
* :class:`~airflow_secure_transfer.exceptions.ConfigurationError` for an unknown
  extra, a malformed value or a missing required one.

Values may arrive as JSON types (from the UI or JSON connections) or as strings
(from URI connections, where every query value is a string): ``"30"`` is read as
30, ``"false"`` as ``False``; ``"yes?"`` is an error, never truthy. ``None`` and
``""`` mean "not set" (the UI stores empty optional fields that way).

Secrets (passwords, private keys, passphrases) are kept out of ``repr`` and out
of every message.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import os
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.security.paths import resolve_remote

# The settings types live in security/settings.py; importing them from here keeps working.
from airflow_secure_transfer.security.settings import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    FTPS_CONN_TYPES,
    MAX_MAX_CONNECTIONS,
    SFTP_CONN_TYPES,
    FTPSSettings,
    SFTPSettings,
    TLSMode,
    TLSVersion,
)

__all__ = [
    "FTPS_CONN_TYPES",
    "SFTP_CONN_TYPES",
    "FTPSSettings",
    "SFTPSettings",
    "TLSMode",
    "TLSVersion",
    "parse_ftps_settings",
    "parse_sftp_settings",
]

_UNSET = (None, "")


# --------------------------------------------------------------------------- primitives


class _Extras:
    """Reads extras strictly: every key must be consumed, unknown keys are an error."""

    def __init__(self, extras: Mapping[str, Any] | None, kind: str) -> None:
        if extras is None:
            extras = {}
        if not isinstance(extras, Mapping):
            raise ConfigurationError(f"{kind} connection extra must be a JSON object, got {type(extras).__name__}")
        self._data = dict(extras)
        self._kind = kind

    def has(self, key: str) -> bool:
        return self._data.get(key) not in _UNSET

    def raw(self, key: str) -> Any:
        value = self._data.pop(key, None)
        if isinstance(value, str):
            value = value.strip()
        return None if value in _UNSET else value

    def string(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigurationError(f"extra {key!r} must be a string, got {type(value).__name__}")
        return value

    def boolean(self, key: str) -> bool | None:
        return parse_bool(key, self.raw(key))

    def number(self, key: str, *, minimum: float, maximum: float) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        return parse_number(key, value, minimum=minimum, maximum=maximum)

    def integer(self, key: str, *, minimum: int, maximum: int) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        number = parse_number(key, value, minimum=minimum, maximum=maximum)
        if number != int(number):
            raise ConfigurationError(f"extra {key!r} must be a whole number, got {value!r}")
        return int(number)

    def finish(self, known: tuple[str, ...]) -> None:
        if self._data:
            unknown = ", ".join(sorted(repr(k) for k in self._data))
            raise ConfigurationError(
                f"unknown extra(s) {unknown} in {self._kind} connection; accepted extras: {', '.join(known)}"
            )


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_bool(key: str, value: Any) -> bool | None:
    """Parse a boolean extra strictly: ``"false"`` is False, ``"yes?"`` is an error."""
    if value in _UNSET:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ConfigurationError(f"extra {key!r} must be true or false, got {value!r}")


def parse_number(key: str, value: Any, *, minimum: float, maximum: float) -> float:
    """Parse a number (JSON number or numeric string) within ``[minimum, maximum]``."""
    if isinstance(value, bool):
        raise ConfigurationError(f"extra {key!r} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"extra {key!r} must be a number, got {value!r}") from None
    if not (minimum <= number <= maximum):
        raise ConfigurationError(f"extra {key!r} must be between {minimum:g} and {maximum:g}, got {value!r}")
    return number


_ARMORED_BLOCK = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.S)


def restore_armored_newlines(text: str) -> str:
    """Give back the line breaks of PEM / OpenSSH blocks pasted into a single-line field.

    The Airflow UI's masked fields (``format: password``) are ``<input>`` elements: a browser turns the
    line breaks of a pasted key into spaces (or drops them), leaving
    ``-----BEGIN OPENSSH PRIVATE KEY----- b3Bl... -----END OPENSSH PRIVATE KEY-----``. A base64 body has
    no spaces, so the body is re-joined and wrapped at 64 columns (PEM; OpenSSH readers accept any width).
    Blocks with RFC 1421 headers (``Proc-Type:``, ``DEK-Info:``) are left as they are. A literal
    ``\\n`` (as written in URIs and environment variables) also becomes a line break.
    """

    def fix(match: re.Match[str]) -> str:
        body = match.group(2)
        if ":" in body:
            return match.group(0)
        return "\n".join([match.group(1), *textwrap.wrap("".join(body.split()), 64), match.group(3)])

    return _ARMORED_BLOCK.sub(fix, text.replace("\\n", "\n")).strip() + "\n"


def read_pem_or_path(key: str, value: str | None, *, what: str, secret: bool = False) -> str | None:
    """Return PEM text given either inline or as a path to a readable file.

    :param secret: the value may be key material: never repeat it in a message.
    """
    if value is None:
        return None
    if "-----BEGIN " in value:
        return restore_armored_newlines(value)
    shown = "the value" if secret else repr(value)
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise ConfigurationError(
            f"extra {key!r} is neither PEM text (-----BEGIN ...) nor a readable file: {shown} does not exist"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"extra {key!r}: cannot read {what} from {shown}: {type(exc).__name__}") from None
    if "-----BEGIN " not in text:
        raise ConfigurationError(f"extra {key!r}: {shown} does not contain PEM data ({what})")
    return text


def _host(host: str | None, kind: str) -> str:
    if host is None or not str(host).strip():
        raise ConfigurationError(f"{kind} connection has no host")
    host = str(host).strip()
    if "://" in host or any(c in host for c in " /\r\n\x00"):
        raise ConfigurationError(f"{kind} connection host must be a bare host name or address, got {host!r}")
    return host


def _port(port: Any, default: int) -> int:
    if port in _UNSET:
        return default
    number = parse_number("port", port, minimum=1, maximum=65535)
    if number != int(number):
        raise ConfigurationError(f"port must be a whole number, got {port!r}")
    return int(number)


def _remote_root(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("/"):
        raise ConfigurationError(f"extra 'remote_root' must be an absolute POSIX path, got {value!r}")
    return resolve_remote(value)


def _conn_type(conn_type: str | None, accepted: tuple[str, ...], kind: str) -> str:
    ct = (conn_type or "").strip().lower()
    if ct not in accepted:
        raise ConfigurationError(
            f"connection type {conn_type!r} is not accepted by the {kind} hook; accepted types: {', '.join(accepted)}"
        )
    return ct


# --------------------------------------------------------------------------- FTPS

_FTPS_EXTRAS = (
    "tls_mode",
    "ca_bundle",
    "cert_fingerprint",
    "client_cert",
    "client_key",
    "min_tls_version",
    "max_tls_version",
    "conn_timeout",
    "encoding",
    "max_connections",
    "remote_root",
)
#: Extras that users of other tools set to turn verification off. We refuse them by name.
_NO_VERIFY_KEYS = (
    "verify",
    "verify_ssl",
    "ssl_verify",
    "verify_certificate",
    "check_hostname",
    "insecure",
    "cert_reqs",
    "no_verify",
    "ssl_cert_reqs",
)
_TRUST_HINT = (
    "to trust a private or self-signed server, set extra 'ca_bundle' to its CA (PEM) "
    "or 'cert_fingerprint' to its certificate's SHA-256 "
    "(print it with: airflow-secure-transfer fingerprint HOST:PORT --protocol ftps)"
)
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_tls_version(key: str, value: str | None) -> TLSVersion | None:
    """Parse ``TLSv1.2``/``TLSv1.3`` (also ``1.2``, ``TLS1.3``); refuse anything older."""
    if value is None:
        return None
    compact = value.strip().lower().replace(" ", "").replace("_", ".")
    compact = compact.removeprefix("tlsv").removeprefix("tls").removeprefix("v")
    if compact in ("1.2", "12"):
        return TLSVersion.TLSv1_2
    if compact in ("1.3", "13"):
        return TLSVersion.TLSv1_3
    if compact in ("1", "1.0", "10", "1.1", "11") or value.strip().lower().startswith("ssl"):
        raise SecurityPolicyError(
            f"extra {key!r} = {value!r} is refused: TLS below 1.2 is broken; use 'TLSv1.2' or 'TLSv1.3' "
            "and ask the server's operator to enable TLS 1.2"
        )
    raise ConfigurationError(f"extra {key!r} must be 'TLSv1.2' or 'TLSv1.3', got {value!r}")


def parse_cert_fingerprints(value: str | None) -> tuple[str, ...]:
    """Normalise one or more SHA-256 fingerprints (hex, colons and ``sha256:`` optional).

    Several pins (for a certificate rotation) are separated by commas or white space.
    """
    if value is None:
        return ()
    pins: list[str] = []
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        norm = item.lower()
        if norm.startswith("sha256:"):
            norm = norm[len("sha256:") :]
        elif re.match(r"^(sha-?1|md5):", norm):
            raise SecurityPolicyError(
                f"extra 'cert_fingerprint' {item!r}: only SHA-256 fingerprints are accepted (SHA-1 and MD5 are not)"
            )
        norm = norm.replace(":", "")
        if not _FINGERPRINT_RE.match(norm):
            if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{32}", norm):
                raise SecurityPolicyError(
                    f"extra 'cert_fingerprint' {item!r} looks like a SHA-1 or MD5 fingerprint; "
                    "give the certificate's SHA-256 fingerprint (64 hex digits)"
                )
            raise ConfigurationError(
                f"extra 'cert_fingerprint' {item!r} is not a SHA-256 fingerprint "
                "(64 hex digits, colons and a 'sha256:' prefix optional)"
            )
        pins.append(norm)
    return tuple(dict.fromkeys(pins))


def parse_ftps_settings(
    *,
    conn_type: str | None,
    host: str | None,
    port: Any = None,
    login: str | None = None,
    password: str | None = None,
    extras: Mapping[str, Any] | None = None,
) -> FTPSSettings:
    """Validate an FTPS connection's fields and extras; see the module docstring."""
    ct = _conn_type(conn_type, FTPS_CONN_TYPES, "FTPS")
    ex = _Extras(extras, "FTPS")
    for key in _NO_VERIFY_KEYS:
        if key in (extras or {}):
            raise SecurityPolicyError(
                f"extra {key!r} is refused: certificate verification cannot be turned off; {_TRUST_HINT}"
            )
    # The stock ftp connection's "passive" extra: passive is all we do.
    passive = ex.boolean("passive")
    if passive is False:
        raise ConfigurationError(
            "extra 'passive' = false: active-mode FTP is not supported (data connections are opened "
            "by the client in passive mode); remove the extra"
        )
    raw_mode = ex.string("tls_mode")
    if raw_mode is None:
        mode = TLSMode.EXPLICIT
    else:
        try:
            mode = TLSMode(raw_mode.lower())
        except ValueError:
            if raw_mode.lower() in ("none", "off", "false", "plain", "disabled", "no", "ftp", "ccc"):
                raise SecurityPolicyError(
                    f"extra 'tls_mode' = {raw_mode!r} is refused: this provider never sends credentials or "
                    "data in clear; use 'explicit' (AUTH TLS, port 21) or 'implicit' (port 990)"
                ) from None
            raise ConfigurationError(f"extra 'tls_mode' must be 'explicit' or 'implicit', got {raw_mode!r}") from None
    min_v = parse_tls_version("min_tls_version", ex.string("min_tls_version")) or TLSVersion.TLSv1_2
    max_v = parse_tls_version("max_tls_version", ex.string("max_tls_version"))
    if max_v is not None and max_v.rank < min_v.rank:
        raise ConfigurationError(f"max_tls_version {max_v.value} is below min_tls_version {min_v.value}")
    encoding = ex.string("encoding") or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigurationError(f"extra 'encoding': unknown encoding {encoding!r}") from None
    client_cert = read_pem_or_path("client_cert", ex.string("client_cert"), what="client certificate")
    client_key = read_pem_or_path("client_key", ex.string("client_key"), what="client key", secret=True)
    if client_key and not client_cert:
        raise ConfigurationError("extra 'client_key' is set without 'client_cert'")
    settings = FTPSSettings(
        host=_host(host, "FTPS"),
        port=_port(port, 990 if mode is TLSMode.IMPLICIT else 21),
        login=login or None,
        password=password or None,
        tls_mode=mode,
        ca_bundle=read_pem_or_path("ca_bundle", ex.string("ca_bundle"), what="CA bundle"),
        cert_fingerprints=parse_cert_fingerprints(ex.string("cert_fingerprint")),
        client_cert=client_cert,
        client_key=client_key,
        min_tls_version=min_v,
        max_tls_version=max_v,
        conn_timeout=ex.number("conn_timeout", minimum=0.1, maximum=86400) or DEFAULT_TIMEOUT,
        encoding=encoding,
        max_connections=ex.integer("max_connections", minimum=1, maximum=MAX_MAX_CONNECTIONS)
        or DEFAULT_MAX_CONNECTIONS,
        remote_root=_remote_root(ex.string("remote_root")),
        conn_type=ct,
    )
    ex.finish(_FTPS_EXTRAS)
    return settings


# --------------------------------------------------------------------------- SFTP

_SFTP_EXTRAS = (
    "host_key",
    "known_hosts",
    "key_file",
    "private_key",
    "private_key_passphrase",
    "conn_timeout",
    "max_connections",
    "remote_root",
)
#: Extras of the stock SSH/SFTP providers we accept for migration (only in their safe form).
_STOCK_SSH_EXTRAS = ("no_host_key_check", "allow_host_key_change", "compress", "timeout")
_PIN_HINT = (
    "pin the server instead: set extra 'host_key' to its public key (\"ssh-ed25519 AAAA...\"; print it with "
    "'airflow-secure-transfer fingerprint HOST:PORT --protocol sftp' and compare the fingerprint with one "
    "obtained out of band) or 'known_hosts' to a known_hosts file"
)
#: Host key algorithms accepted in pins. DSA (ssh-dss) is refused: 1024-bit, SHA-1, removed from OpenSSH.
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-ed448",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def _ssh_string(blob: bytes) -> bytes:
    if len(blob) < 4:
        raise ValueError("short key blob")
    size = int.from_bytes(blob[:4], "big")
    if size > len(blob) - 4:
        raise ValueError("truncated key blob")
    return blob[4 : 4 + size]


def parse_host_key_line(line: str) -> str:
    """Check one pinned key ``"<type> <base64> [comment]"``; return ``"<type> <base64>"``."""
    parts = line.split()
    if len(parts) < 2:
        raise ConfigurationError(
            f"extra 'host_key' line {line[:40]!r} must be '<key type> <base64 key>', e.g. 'ssh-ed25519 AAAA...'"
        )
    key_type, b64 = parts[0], parts[1]
    if key_type == "ssh-dss":
        raise SecurityPolicyError(
            "extra 'host_key': DSA (ssh-dss) host keys are refused (1024-bit, SHA-1); "
            "pin the server's ed25519, ECDSA or RSA key instead"
        )
    if key_type not in HOST_KEY_TYPES:
        raise ConfigurationError(
            f"extra 'host_key': unknown key type {key_type!r}; expected one of {', '.join(HOST_KEY_TYPES)}"
        )
    try:
        blob = base64.b64decode(b64, validate=True)
        inner = _ssh_string(blob).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ConfigurationError(f"extra 'host_key': the {key_type} key is not valid base64 key data") from None
    if inner != key_type:
        raise ConfigurationError(f"extra 'host_key': the key data is of type {inner!r}, but the line says {key_type!r}")
    return f"{key_type} {b64}"


def _known_hosts(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if "\n" in value or " " in value.strip():
        return value, "extra 'known_hosts'"
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise ConfigurationError(
            f"extra 'known_hosts': file {value!r} does not exist; nothing would be trusted (fail closed)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"extra 'known_hosts': cannot read {value!r}: {exc}") from exc
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise ConfigurationError(
            f"extra 'known_hosts': file {value!r} is empty; nothing would be trusted (fail closed)"
        )
    return text, value


def parse_sftp_settings(
    *,
    conn_type: str | None,
    host: str | None,
    port: Any = None,
    login: str | None = None,
    password: str | None = None,
    extras: Mapping[str, Any] | None = None,
) -> SFTPSettings:
    """Validate an SFTP connection's fields and extras; see the module docstring."""
    ct = _conn_type(conn_type, SFTP_CONN_TYPES, "SFTP")
    ex = _Extras(extras, "SFTP")
    if ex.boolean("no_host_key_check"):
        raise SecurityPolicyError(f"extra 'no_host_key_check' = true is refused: it trusts any server; {_PIN_HINT}")
    if ex.boolean("allow_host_key_change"):
        raise SecurityPolicyError(
            f"extra 'allow_host_key_change' = true is refused: it accepts a changed (possibly forged) key; {_PIN_HINT}"
        )
    compress = bool(ex.boolean("compress"))
    timeout = ex.number("conn_timeout", minimum=0.1, maximum=86400)
    legacy_timeout = ex.number("timeout", minimum=0.1, maximum=86400)
    raw_host_key = ex.string("host_key")
    host_keys: tuple[str, ...] = ()
    if raw_host_key is not None:
        lines = [ln.strip() for ln in raw_host_key.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        host_keys = tuple(dict.fromkeys(parse_host_key_line(ln) for ln in lines))
    known_hosts, known_hosts_source = _known_hosts(ex.string("known_hosts"))
    if not host_keys and known_hosts is None:
        raise SecurityPolicyError(
            "the SFTP connection has no 'host_key' and no 'known_hosts' extra, so the server cannot be "
            f"verified (fail closed); {_PIN_HINT}"
        )
    key_file = ex.string("key_file")
    if key_file is not None and not Path(os.path.expanduser(key_file)).is_file():
        raise ConfigurationError(f"extra 'key_file': {key_file!r} does not exist or is not a file")
    private_key = ex.string("private_key")
    if private_key is not None and "-----BEGIN " not in private_key:
        raise ConfigurationError(
            "extra 'private_key' must be the key's text (-----BEGIN ... PRIVATE KEY-----); use 'key_file' for a path"
        )
    if key_file and private_key:
        raise ConfigurationError("set either extra 'key_file' or 'private_key', not both")
    settings = SFTPSettings(
        host=_host(host, "SFTP"),
        port=_port(port, 22),
        login=login or None,
        password=password or None,
        host_keys=host_keys,
        known_hosts=known_hosts,
        known_hosts_source=known_hosts_source,
        key_file=os.path.expanduser(key_file) if key_file else None,
        private_key=restore_armored_newlines(private_key) if private_key else None,
        private_key_passphrase=ex.string("private_key_passphrase"),
        conn_timeout=timeout or legacy_timeout or DEFAULT_TIMEOUT,
        max_connections=ex.integer("max_connections", minimum=1, maximum=MAX_MAX_CONNECTIONS)
        or DEFAULT_MAX_CONNECTIONS,
        remote_root=_remote_root(ex.string("remote_root")),
        compress=compress,
        conn_type=ct,
    )
    ex.finish(_SFTP_EXTRAS + _STOCK_SSH_EXTRAS)
    return settings
