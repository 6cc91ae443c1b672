"""Build every TLS context of this package, and describe and classify TLS outcomes.

:func:`build_ssl_context` is the only place an :class:`ssl.SSLContext` is made.
Its defaults, all visible here:

* ``PROTOCOL_TLS_CLIENT``: certificate chain **and** host name verified
  (``CERT_REQUIRED``, ``check_hostname``), SSLv2/3 and compression off;
* TLS 1.2 as the floor (``min_tls_version``/``max_tls_version`` may narrow it,
  never widen it: the settings parser refuses anything below 1.2);
* trust: the CA(s) of ``ca_bundle`` *instead of* the system store when set,
  otherwise the system store;
* a client certificate for mutual TLS, loaded without the key ever touching a
  disk (an anonymous in-memory file on Linux, see :func:`_load_client_cert`);
* ``SSLKEYLOGFILE`` is ignored (``ssl.create_default_context`` honours it, which
  would let an environment variable write the session keys of a connection that
  carries passwords to a file);
* certificate pinning (``cert_fingerprint``), described below.

Pinning
-------
With pins, the returned context is a :class:`PinningSSLContext`. Every socket it
wraps is a :class:`PinnedSSLSocket`, whose ``do_handshake`` compares the SHA-256
of the leaf certificate the server presented with the pins *as the last step of
the handshake*: ``wrap_socket`` (which performs the handshake) either returns a
socket whose peer matched, or closes it and raises
:class:`~airflow_secure_transfer.exceptions.VerificationError` naming the
presented and the expected fingerprints. No application byte (no ``USER``, no
``PASS``, no FTP command) can be written before that check, and it runs again on
every data connection, including resumed sessions (OpenSSL keeps the peer
certificate in the session).

* Pins alone (no ``ca_bundle``): the pin *replaces* the chain and host-name
  check (a pinned self-signed server has no chain to check), so the context
  uses ``CERT_NONE`` + ``check_hostname=False`` and accepts exactly the pinned
  certificates and nothing else. This is the only place in the package where
  ``CERT_NONE`` appears, and it is unreachable without a pin.
* Pins with ``ca_bundle``: both must pass (chain + host name, then the pin).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    SecureTransferError,
    SecurityPolicyError,
    TransferTimeout,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.security.policy import TLSVersion

if TYPE_CHECKING:
    from airflow_secure_transfer.security.policy import FTPSSettings

__all__ = [
    "PinnedSSLObject",
    "PinnedSSLSocket",
    "PinningSSLContext",
    "TLSInfo",
    "build_ssl_context",
    "classify_ssl_error",
    "describe_tls",
    "format_fingerprint",
    "sha256_fingerprint",
]

_TLS_VERSIONS = {
    TLSVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    TLSVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}

TRUST_HINT = (
    "to trust a private or self-signed server, set extra 'ca_bundle' to its CA (PEM) "
    "or 'cert_fingerprint' to its certificate's SHA-256 "
    "(print it with: airflow-secure-transfer fingerprint HOST:PORT --protocol ftps)"
)


# --------------------------------------------------------------------------- fingerprints


def sha256_fingerprint(der: bytes) -> str:
    """Return the SHA-256 of a DER certificate as 64 lower-case hex digits (the pin format)."""
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(hexdigest: str) -> str:
    """Return ``ab:cd:...`` for a hex digest (how browsers and ``openssl x509 -fingerprint`` print it)."""
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2))


def _matches_pin(der: bytes, pins: tuple[str, ...]) -> bool:
    presented = sha256_fingerprint(der)
    # compare_digest: constant time, although a fingerprint is not a secret.
    return any(hmac.compare_digest(presented, pin) for pin in pins)


# --------------------------------------------------------------------------- pinning context


class PinnedSSLSocket(ssl.SSLSocket):
    """An SSLSocket that checks its context's pins as the last step of the handshake."""

    def do_handshake(self, block: bool = False) -> None:
        """Perform the TLS handshake, then require the peer certificate to match a pin."""
        super().do_handshake(block)
        context = self.context
        if isinstance(context, PinningSSLContext):
            try:
                context.check_pin(self.getpeercert(binary_form=True), self.server_hostname)
            except VerificationError:
                # wrap_socket only closes the socket for OSError/ValueError: close it here so
                # nothing more can be sent on a connection to an unpinned peer.
                self.close()
                raise


class PinnedSSLObject(ssl.SSLObject):
    """The memory-BIO counterpart of :class:`PinnedSSLSocket` (asyncio transports)."""

    def do_handshake(self) -> None:
        """Perform the TLS handshake, then require the peer certificate to match a pin."""
        super().do_handshake()
        context = self.context
        if isinstance(context, PinningSSLContext):
            context.check_pin(self.getpeercert(binary_form=True), self.server_hostname)


class PinningSSLContext(ssl.SSLContext):
    """An SSLContext whose sockets accept only peers whose leaf certificate matches a pin."""

    sslsocket_class = PinnedSSLSocket
    sslobject_class = PinnedSSLObject
    #: Lower-case hex SHA-256 pins; set by :func:`build_ssl_context`, never empty there.
    pins: tuple[str, ...] = ()

    def check_pin(self, der: bytes | None, host: str | None) -> None:
        """Raise :class:`VerificationError` unless *der* matches one of :attr:`pins`.

        :param der: the peer's leaf certificate (DER), ``None`` if it presented none.
        :param host: the server name, for the message.
        """
        if not self.pins:
            # A pinning context without pins would accept anything: refuse loudly.
            raise VerificationError("internal error: pinning TLS context has no pins; refusing the connection")
        expected = ", ".join(format_fingerprint(p) for p in self.pins)
        if der is None:
            raise VerificationError(f"{host}: the server presented no certificate; expected SHA-256 {expected}")
        if not _matches_pin(der, self.pins):
            raise VerificationError(
                f"{host}: certificate pin mismatch: the server presented SHA-256 "
                f"{format_fingerprint(sha256_fingerprint(der))}, expected {expected} "
                "(extra 'cert_fingerprint'). If the server's certificate was renewed, verify the new "
                "fingerprint with its operator and add it to the pins"
            )


# --------------------------------------------------------------------------- build


def _refuse_passphrase() -> bytes:
    # Called by OpenSSL only for an encrypted key. Without a callback OpenSSL would prompt
    # on the terminal and hang a worker.
    raise ConfigurationError(
        "extra 'client_key' is an encrypted private key; give the key unencrypted "
        "(store it in a secrets backend) - passphrase-protected client keys are not supported"
    )


def _load_client_cert(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a client certificate and key from text without writing the key to a disk.

    OpenSSL's ``load_cert_chain`` only reads files. On Linux the PEM goes into an
    anonymous in-memory file (``memfd_create``) read through ``/proc/self/fd``;
    elsewhere into a 0600 temporary file that is deleted as soon as it has been read.
    """
    blob = (cert_pem.rstrip("\n") + "\n" + key_pem.rstrip("\n") + "\n").encode("utf-8")
    password: Callable[[], bytes] = _refuse_passphrase
    try:
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is not None and os.path.isdir("/proc/self/fd"):
            fd = memfd_create("airflow-secure-transfer-client-cert", getattr(os, "MFD_CLOEXEC", 0))
            try:
                os.write(fd, blob)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}", password=password)
            finally:
                os.close(fd)
        else:  # pragma: no cover - non-Linux
            fd, path = tempfile.mkstemp(prefix="ast-client-", suffix=".pem")  # mode 0600
            try:
                os.write(fd, blob)
                os.close(fd)
                ctx.load_cert_chain(path, password=password)
            finally:
                os.unlink(path)
    except ssl.SSLError as exc:
        # The message names the problem, never the key.
        raise ConfigurationError(
            f"extras 'client_cert'/'client_key' cannot be used: {exc.reason or 'invalid PEM'} "
            "(is the key the one of this certificate, and both PEM?)"
        ) from None


def build_ssl_context(settings: FTPSSettings) -> ssl.SSLContext:
    """Return the client TLS context for *settings*; see the module docstring for the defaults.

    :param settings: validated FTPS settings. ``ca_bundle`` (default: system store) decides whom
        to trust; ``cert_fingerprint`` pins (default: none); ``min_tls_version`` (default TLS 1.2)
        and ``max_tls_version`` bound the protocol; ``client_cert``/``client_key`` enable mTLS.
    :raises ConfigurationError: the CA bundle or the client certificate cannot be loaded.
    """
    pins = tuple(settings.cert_fingerprints)
    ctx: ssl.SSLContext
    if pins:
        pinning = PinningSSLContext(ssl.PROTOCOL_TLS_CLIENT)
        pinning.pins = pins
        ctx = pinning
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # PROTOCOL_TLS_CLIENT starts with CERT_REQUIRED and check_hostname=True; say so explicitly.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = _TLS_VERSIONS[settings.min_tls_version]
    if settings.max_tls_version is not None:
        ctx.maximum_version = _TLS_VERSIONS[settings.max_tls_version]
    ctx.options |= ssl.OP_NO_COMPRESSION
    if settings.ca_bundle:
        try:
            ctx.load_verify_locations(cadata=settings.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(f"extra 'ca_bundle' does not contain a usable PEM certificate: {exc}") from None
    elif pins:
        # Pin only: the pin replaces the chain and host-name check (see module docstring).
        # PinnedSSLSocket.do_handshake enforces the exact match before anything is sent.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.client_cert:
        if not settings.client_key and "PRIVATE KEY-----" not in settings.client_cert:
            raise ConfigurationError("extra 'client_cert' is set but no 'client_key' (and the certificate has none)")
        _load_client_cert(ctx, settings.client_cert, settings.client_key or "")
        # TLS 1.3 servers may ask for the certificate after the handshake.
        ctx.post_handshake_auth = True
    return ctx


# --------------------------------------------------------------------------- describe


@dataclass(frozen=True)
class TLSInfo:
    """What a TLS connection negotiated and whom it talks to (for messages and logs)."""

    version: str | None
    cipher: str | None
    #: Lower-case hex SHA-256 of the peer's leaf certificate.
    cert_sha256: str | None
    subject: str | None
    issuer: str | None
    not_after: str | None
    session_reused: bool

    def describe(self) -> str:
        """Return ``"TLSv1.3 (TLS_AES_256_GCM_SHA384); certificate SHA-256 ab:..., subject CN=..."``."""
        parts = [f"{self.version or 'TLS'} ({self.cipher or 'unknown cipher'})"]
        if self.cert_sha256:
            cert = f"certificate SHA-256 {format_fingerprint(self.cert_sha256)}"
            if self.subject:
                cert += f", subject {self.subject}"
            if self.issuer:
                cert += f", issuer {self.issuer}"
            if self.not_after:
                cert += f", valid until {self.not_after}"
            parts.append(cert)
        return "; ".join(parts)


def describe_tls(sock: ssl.SSLSocket) -> TLSInfo:
    """Describe the negotiated TLS session of *sock* (works with pinned ``CERT_NONE`` contexts too)."""
    cipher = sock.cipher()
    der = sock.getpeercert(binary_form=True)
    subject = issuer = not_after = None
    if der:
        try:
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
            not_after = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        except (ImportError, ValueError):  # pragma: no cover - unparsable certificate
            pass
    return TLSInfo(
        version=sock.version(),
        cipher=cipher[0] if cipher else None,
        cert_sha256=sha256_fingerprint(der) if der else None,
        subject=subject,
        issuer=issuer,
        not_after=not_after,
        session_reused=bool(sock.session_reused),
    )


# --------------------------------------------------------------------------- errors

# OpenSSL X509_V_ERR_* codes worth a specific message.
_X509_EXPIRED = 10
_X509_NOT_YET_VALID = 9
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_MISMATCH = 64
_X509_UNTRUSTED = (2, 18, 19, 20, 21, 27)

_PROTOCOL_REASONS = (
    "UNSUPPORTED_PROTOCOL",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "WRONG_SSL_VERSION",
    "VERSION_TOO_LOW",
)


def classify_ssl_error(exc: BaseException, where: str) -> SecureTransferError:
    """Translate an ``ssl``/socket error raised during a TLS handshake or transfer.

    :param exc: the exception caught.
    :param where: ``"host:port"`` (and what was being done), for the message.
    :returns: the exception to raise ``from exc``.
    """
    if isinstance(exc, SecureTransferError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        reason = getattr(exc, "verify_message", None) or str(exc)
        if code == _X509_EXPIRED:
            return VerificationError(f"{where}: the server's certificate has expired ({reason}); nothing was sent")
        if code == _X509_NOT_YET_VALID:
            return VerificationError(f"{where}: the server's certificate is not yet valid ({reason})")
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH):
            return VerificationError(
                f"{where}: hostname mismatch: {reason} Connect with a name the certificate lists "
                "(see its subjectAltName), or pin it with extra 'cert_fingerprint'; nothing was sent"
            )
        if code in _X509_UNTRUSTED:
            return VerificationError(f"{where}: untrusted certificate ({reason}); nothing was sent; {TRUST_HINT}")
        return VerificationError(f"{where}: certificate verification failed ({reason}); nothing was sent")
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")
        text = f"{reason} {exc}".upper()
        if any(r in text for r in _PROTOCOL_REASONS):
            return SecurityPolicyError(
                f"{where}: TLS handshake failed ({reason or exc}): the server does not offer TLS 1.2 or newer "
                "(or not within min_tls_version/max_tls_version); ask its operator to enable TLS 1.2+"
            )
        if "CERTIFICATE" in text and ("REQUIRED" in text or "UNKNOWN" in text or "BAD" in text):
            return VerificationError(
                f"{where}: the server rejected the client certificate ({reason or exc}); "
                "check extras 'client_cert'/'client_key'"
            )
        return TransportError(f"{where}: TLS error: {reason or exc}")
    if isinstance(exc, TimeoutError):
        return TransferTimeout(f"{where}: timed out ({exc or 'no answer within conn_timeout'})")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError(f"{where}: connection refused")
    if isinstance(exc, OSError):
        return TransportError(f"{where}: {exc.strerror or exc}")
    if isinstance(exc, EOFError):
        return TransportError(f"{where}: the server closed the connection")
    return TransportError(f"{where}: {type(exc).__name__}: {exc}")
