"""SSH host-key trust: which keys a connection to one ``host:port`` may accept.

Trust comes from two places only, both already read and checked by
:func:`airflow_secure_transfer.security.policy.parse_sftp_settings`:

* pinned keys (extra ``host_key``): one ``"<type> <base64>"`` line each; they
  are trusted for the connection's host whatever its name;
* known_hosts text (extra ``known_hosts``), matched as OpenSSH does: the host
  name is ``host`` on port 22 and ``[host]:port`` on any other port (there is
  no fall-back to the bare name for another port); comma lists, ``*``/``?``
  wildcards, ``!`` negation and hashed names (``|1|salt|hash``) are understood;
  ``@revoked`` lines refuse a key; ``@cert-authority`` lines are ignored
  (host certificates are not accepted, so such a line trusts nothing).

Nothing else is consulted: not ``~/.ssh/known_hosts``, not ``/etc/ssh``, not an
agent. When no key is trusted for the host, every key is refused (fail closed).

:class:`HostKeyTrust` answers two questions for the transport:

* :meth:`HostKeyTrust.host_key_algorithms` -- which signature algorithms to
  offer in the key exchange: only those of the trusted keys' types (so a server
  with an ed25519 and an RSA key presents the one that is pinned), and never
  SHA-1 ``ssh-rsa`` or DSA;
* :meth:`HostKeyTrust.check` -- accept the key the server presented, or raise
  :class:`~airflow_secure_transfer.exceptions.VerificationError` naming its
  SHA256 fingerprint and the expected ones. The transport calls it during the
  key exchange, before any credential is sent.

This module is pure Python (no SSH library); keys are compared as their wire
blobs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_secure_transfer.exceptions import ConfigurationError, VerificationError

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import SFTPSettings

__all__ = [
    "CIPHERS",
    "CLIENT_SIGNATURE_ALGORITHMS",
    "KEX_ALGORITHMS",
    "MAC_ALGORITHMS",
    "SECURE_HOST_KEY_ALGORITHMS",
    "HostKey",
    "HostKeyTrust",
    "fingerprint",
    "known_hosts_name",
]

#: Host-key signature algorithms for each public-key type. ``ssh-rsa`` keys sign with
#: SHA-2 only (RFC 8332); the SHA-1 ``ssh-rsa`` signature algorithm is never offered.
_SIG_ALGS_BY_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-ed448": ("ssh-ed448",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    "sk-ssh-ed25519@openssh.com": ("sk-ssh-ed25519@openssh.com",),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("sk-ecdsa-sha2-nistp256@openssh.com",),
}

#: Offered when nothing is trusted for the host: the key exchange then still shows us the
#: server's key (for the error message), which is refused.
SECURE_HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-ed448",
)

# --------------------------------------------------------------------------- algorithms
# The only algorithm lists an SSH connection of this package offers, best first. What is
# left out is left out on purpose:
#   * SHA-1 key exchange (diffie-hellman-group1-sha1, -group14-sha1, -group-exchange-sha1),
#     RSA key exchange and GSS-API key exchange;
#   * CBC-mode ciphers (plaintext-recovery attacks), arcfour, 3DES, blowfish;
#   * hmac-sha1, hmac-md5 and every truncated (-96) or 64-bit-tag (umac-64) MAC;
#   * SHA-1 signatures (``ssh-rsa`` as a signature algorithm) and DSA (``ssh-dss``).
# A server that offers nothing from a list fails the key exchange; the transport reports
# that as "no common secure algorithm" (SecurityPolicyError), never by falling back.

#: Key exchange. Post-quantum hybrid first, then curve25519 (OpenSSH's default) and NIST ECDH,
#: then finite-field groups of 2048 bits and more with SHA-2.
KEX_ALGORITHMS: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "curve448-sha512",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)

#: Ciphers: AEAD first. AES-GCM leads because it is the fastest in both asyncssh (measured
#: 1.5x chacha20-poly1305 here: the AES instructions do the work) and OpenSSH; CTR modes are
#: kept for old servers and are only ever paired with the SHA-2 MACs below.
CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)

#: MACs (used only with the CTR ciphers; AEAD ciphers bring their own): encrypt-then-MAC first.
MAC_ALGORITHMS: tuple[str, ...] = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "umac-128@openssh.com",
)

#: Signature algorithms for client public-key authentication (no SHA-1 ``ssh-rsa``, no DSA): the
#: host-key list plus the security-key (FIDO) types a client key may be.
CLIENT_SIGNATURE_ALGORITHMS: tuple[str, ...] = (
    *SECURE_HOST_KEY_ALGORITHMS,
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)

_DEFAULT_PORT = 22


def fingerprint(blob: bytes) -> str:
    """Return the OpenSSH SHA256 fingerprint of a public-key blob: ``SHA256:<base64, no padding>``."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _blob_type(blob: bytes) -> str:
    """Return the key type named inside an SSH public-key blob (its first SSH string)."""
    if len(blob) < 4:
        raise ValueError("short key blob")
    size = int.from_bytes(blob[:4], "big")
    if size > len(blob) - 4:
        raise ValueError("truncated key blob")
    return blob[4 : 4 + size].decode("ascii")


@dataclass(frozen=True)
class HostKey:
    """One SSH public host key, compared by its wire blob."""

    key_type: str
    blob: bytes

    @classmethod
    def from_blob(cls, blob: bytes) -> HostKey:
        """Build from a wire blob (as the server sent it in the key exchange)."""
        try:
            key_type = _blob_type(blob)
        except (ValueError, UnicodeDecodeError):
            key_type = "unknown"
        return cls(key_type, bytes(blob))

    @classmethod
    def parse(cls, key_type: str, b64: str) -> HostKey:
        """Build from the two fields of an OpenSSH line (``"ssh-ed25519"``, ``"AAAA..."``).

        :raises ValueError: when the base64 or the blob is malformed, or the blob's type differs.
        """
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 in {key_type} key") from exc
        inner = _blob_type(blob)
        if inner != key_type:
            raise ValueError(f"key data is of type {inner!r}, the line says {key_type!r}")
        return cls(key_type, blob)

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as printed by ``ssh-keygen -lf``."""
        return fingerprint(self.blob)

    def describe(self) -> str:
        """``"ssh-ed25519 SHA256:..."`` -- safe for messages and logs (public data only)."""
        return f"{self.key_type} {self.fingerprint}"


def known_hosts_name(host: str, port: int) -> str:
    """Return the name OpenSSH looks up in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == _DEFAULT_PORT else f"[{host}]:{port}"


def _hashed_matches(entry: str, name: str) -> bool:
    """Match a hashed known_hosts name ``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``.

    HMAC-SHA1 here only hides host names in the file (OpenSSH's format); it is not a
    security decision about the key.
    """
    parts = entry.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except binascii.Error:
        return False
    actual = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)


def _glob_matches(name: str, pattern: str) -> bool:
    """OpenSSH ``match_pattern``: ``*`` and ``?`` are wildcards, everything else is literal.

    (Not :mod:`fnmatch`: there ``[`` starts a character class, but known_hosts names are
    ``[host]:port``.) Case-insensitive, as OpenSSH lower-cases host names.
    """
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name.lower(), flags=re.DOTALL) is not None


def _pattern_list_matches(patterns: str, names: tuple[str, ...]) -> bool:
    """OpenSSH ``match_hostname``: any positive pattern matches and no negated one does."""
    matched = False
    for raw in patterns.split(","):
        pattern = raw.strip()
        if not pattern:
            continue
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if pattern.startswith("|"):
            hit = any(_hashed_matches(pattern, name) for name in names)
        else:
            hit = any(_glob_matches(name, pattern) for name in names)
        if hit:
            if negated:
                return False
            matched = True
    return matched


@dataclass(frozen=True)
class HostKeyTrust:
    """The host keys a connection to ``host:port`` accepts, and where they came from."""

    host: str
    port: int
    trusted: tuple[HostKey, ...]
    revoked: tuple[HostKey, ...] = ()
    #: Human-readable origin of the trust, for messages (``"extra 'host_key'"``, a path...).
    sources: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: SFTPSettings) -> HostKeyTrust:
        """Collect the pinned keys and the known_hosts entries that apply to the settings' host and port."""
        return cls.build(
            settings.host,
            settings.port,
            host_keys=settings.host_keys,
            known_hosts=settings.known_hosts,
            known_hosts_source=settings.known_hosts_source,
        )

    @classmethod
    def build(
        cls,
        host: str,
        port: int,
        *,
        host_keys: tuple[str, ...] = (),
        known_hosts: str | None = None,
        known_hosts_source: str | None = None,
    ) -> HostKeyTrust:
        """Collect trust for ``host:port`` from pinned key lines and known_hosts text.

        :param host_keys: ``"<type> <base64>"`` lines (already checked by the policy).
        :param known_hosts: known_hosts text; lines for other hosts are ignored, malformed lines
            raise :class:`ConfigurationError` (a typo must not silently remove a pin).
        :param known_hosts_source: where the text came from, for messages.
        """
        trusted: list[HostKey] = []
        revoked: list[HostKey] = []
        sources: list[str] = []
        for line in host_keys:
            parts = line.split()
            try:
                trusted.append(HostKey.parse(parts[0], parts[1]))
            except (IndexError, ValueError) as exc:
                raise ConfigurationError(f"extra 'host_key': {exc}") from None
        if host_keys:
            sources.append("extra 'host_key'")
        if known_hosts:
            source = known_hosts_source or "known_hosts"
            sources.append(source)
            t, r = _match_known_hosts(known_hosts, host, port, source)
            trusted.extend(t)
            revoked.extend(r)
        revoked_blobs = {k.blob for k in revoked}
        unique: dict[bytes, HostKey] = {}
        for key in trusted:
            if key.blob not in revoked_blobs:
                unique.setdefault(key.blob, key)
        return cls(host, port, tuple(unique.values()), tuple(revoked), tuple(sources))

    @property
    def name(self) -> str:
        """The host as known_hosts names it (``[host]:port`` off port 22)."""
        return known_hosts_name(self.host, self.port)

    def host_key_algorithms(self) -> list[str]:
        """Return the host-key algorithms to offer, best first.

        Only the trusted keys' types (a pinned RSA key: ``rsa-sha2-512``/``rsa-sha2-256``,
        never SHA-1 ``ssh-rsa``). With nothing trusted, every secure type is offered so that
        the refused key can be named in the error.
        """
        types = {k.key_type for k in self.trusted}
        algs = [alg for key_type, sig_algs in _SIG_ALGS_BY_KEY_TYPE.items() if key_type in types for alg in sig_algs]
        ordered = [a for a in SECURE_HOST_KEY_ALGORITHMS if a in algs] + [
            a for a in algs if a not in SECURE_HOST_KEY_ALGORITHMS
        ]
        return ordered or list(SECURE_HOST_KEY_ALGORITHMS)

    def expected(self) -> str:
        """Describe the trusted keys for messages: ``"ssh-ed25519 SHA256:..., ..."`` or ``"none"``."""
        return ", ".join(k.describe() for k in self.trusted) or "none"

    def is_trusted(self, blob: bytes) -> bool:
        """Return whether the key blob is trusted (and not revoked)."""
        if any(hmac.compare_digest(blob, k.blob) for k in self.revoked):
            return False
        return any(hmac.compare_digest(blob, k.blob) for k in self.trusted)

    def check(self, blob: bytes) -> HostKey:
        """Accept the presented host key or raise :class:`VerificationError`.

        :param blob: the public-key blob the server presented in the key exchange.
        :returns: the accepted key.
        """
        presented = HostKey.from_blob(blob)
        if self.is_trusted(blob):
            return presented
        raise VerificationError(self.refusal_message(presented))

    def refusal_message(self, presented: HostKey) -> str:
        """Explain why *presented* is refused; names fingerprints only (public data)."""
        where = " and ".join(self.sources) or "no trust source"
        if any(hmac.compare_digest(presented.blob, k.blob) for k in self.revoked):
            return (
                f"host key for {self.name} is REVOKED in {where}: the server presented "
                f"{presented.describe()}; refusing to connect"
            )
        if self.trusted:
            return (
                f"host key for {self.name} does not match: the server presented {presented.describe()}, "
                f"expected {self.expected()} (from {where}). The server's key has changed or someone is "
                "intercepting the connection; nothing was sent. If the server's operator confirms a new key "
                "(compare its fingerprint out of band), update the connection's 'host_key' or 'known_hosts' extra"
            )
        return (
            f"host key for {self.name} is unknown: the server presented {presented.describe()}, and {where} "
            f"has no key for {self.name}; nothing was sent. If the server's operator confirms this fingerprint "
            "(out of band), set the connection's 'host_key' extra to the server's public key line"
        )


def _match_known_hosts(text: str, host: str, port: int, source: str) -> tuple[list[HostKey], list[HostKey]]:
    """Return (trusted, revoked) keys of the known_hosts *text* lines that match ``host:port``."""
    # OpenSSH looks up only this one name (CheckHostIP is off by default since 8.5).
    names_t = (known_hosts_name(host, port),)
    trusted: list[HostKey] = []
    revoked: list[HostKey] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = None
        if fields[0].startswith("@"):
            marker = fields[0]
            fields = fields[1:]
            if marker not in ("@revoked", "@cert-authority"):
                raise ConfigurationError(f"{source} line {lineno}: unknown marker {marker!r}")
        if len(fields) < 3:
            raise ConfigurationError(f"{source} line {lineno}: expected '<host patterns> <key type> <base64 key>'")
        patterns, key_type, b64 = fields[0], fields[1], fields[2]
        if not _pattern_list_matches(patterns, names_t):
            continue
        if marker == "@cert-authority":
            # Host certificates are not accepted; a CA line trusts nothing here.
            continue
        if key_type not in _SIG_ALGS_BY_KEY_TYPE and marker != "@revoked":
            # e.g. ssh-dss: never negotiated, so never trusted.
            continue
        try:
            key = HostKey.parse(key_type, b64)
        except ValueError as exc:
            raise ConfigurationError(f"{source} line {lineno}: {exc}") from None
        (revoked if marker == "@revoked" else trusted).append(key)
    return trusted, revoked
