"""``fingerprint``: show what an FTPS or SFTP server presents, and the extras that pin it.

**No credential is ever sent.** This command takes no connection, login or
password; it cannot authenticate:

* FTPS: explicit mode reads the greeting and sends ``AUTH TLS`` (implicit mode
  starts TLS at once), completes the TLS handshake, sends ``QUIT`` over TLS and
  closes. No ``USER``/``PASS``.
* SFTP: the SSH key exchange only (:func:`asyncssh.get_server_host_key`), once
  per host key algorithm so that every key the server has is shown; the
  connection is closed before authentication.

A self-signed or privately issued certificate cannot be fetched through a
verifying handshake (it fails before the certificate is handed over), so the
certificate is fetched with a **display-only** context that does not verify
(:func:`_display_only_context`). That context is used for nothing else: the
socket it wraps is closed after ``QUIT`` and nothing secret exists in this
process to be sent. A second handshake, verified the way the hook does it
(:func:`~airflow_secure_transfer.security.tls.build_ssl_context`), tells whether
the server is trusted without a pin.

What is printed is what the network delivered: an attacker in the middle would
be shown just the same. The output says so, and asks the user to compare the
fingerprint with one obtained out of band (from the server's operator) before
pasting the extras into a connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_secure_transfer.cli.output import visible
from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    LimitExceededError,
    SecureTransferError,
    TransferTimeout,
    TransportError,
)
from airflow_secure_transfer.security.policy import TLSMode, parse_ftps_settings, parse_host_key_line

__all__ = [
    "CertificateInfo",
    "FTPSReport",
    "HostKeyInfo",
    "SFTPReport",
    "fetch_ftps",
    "fetch_sftp",
    "fingerprint_command",
    "parse_target",
]

WARNING = (
    "WARNING: this is what the network delivered, unauthenticated. Before trusting it, compare the "
    "SHA-256 fingerprint with one obtained out of band (from the server's operator, over another channel). "
    "A man in the middle would be shown here just the same."
)

#: Host key algorithms probed one by one (each a separate key exchange): every key type the server has.
_HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ssh-ed448",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
)


def parse_target(target: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (``[v6]:PORT`` or a bare IPv6 address) into host and port."""
    text = target.strip()
    if not text:
        raise ConfigurationError("empty target; expected HOST[:PORT]")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigurationError(f"target {target!r}: missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigurationError(f"target {target!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigurationError(f"target {target!r}: write an IPv6 address with a port as [ADDR]:PORT") from None
    if "://" in target or not host:
        raise ConfigurationError(f"target {target!r}: expected HOST[:PORT], e.g. ftps.example.com:21")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigurationError(f"target {target!r}: port must be a number between 1 and 65535")
    return host, int(port_text)


# --------------------------------------------------------------------------- FTPS


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate of the chain the server presented."""

    subject: str
    issuer: str
    not_before: str
    not_after: str
    san: tuple[str, ...]
    sha256: str
    self_signed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "subject_alt_names": list(self.san),
            "sha256": self.sha256,
            "self_signed": self.self_signed,
        }


@dataclass
class FTPSReport:
    """What an FTPS server presented."""

    host: str
    port: int
    tls_mode: TLSMode
    tls_version: str | None = None
    cipher: str | None = None
    greeting: str | None = None
    chain: list[CertificateInfo] = field(default_factory=list)
    #: None: trusted by the system store (hostname included); otherwise why not.
    untrusted_reason: str | None = None

    def extras(self) -> dict[str, Any]:
        """The connection extras that pin the leaf certificate."""
        extras: dict[str, Any] = {"tls_mode": self.tls_mode.value}
        if self.chain:
            extras["cert_fingerprint"] = self.chain[0].sha256
        return extras

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": "ftps",
            "host": self.host,
            "port": self.port,
            "tls_mode": self.tls_mode.value,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "greeting": self.greeting,
            "certificates": [c.as_dict() for c in self.chain],
            "trusted_by_system_store": self.untrusted_reason is None,
            "untrusted_reason": self.untrusted_reason,
            "extras": self.extras(),
            "warning": WARNING,
        }


def _cert_info(der: bytes) -> CertificateInfo:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [f"DNS:{n}" for n in ext.value.get_values_for_type(x509.DNSName)]
        names += [f"IP:{ip}" for ip in ext.value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        san=tuple(names),
        sha256=hashlib.sha256(der).hexdigest(),
        self_signed=cert.subject == cert.issuer,
    )


def _display_only_context() -> ssl.SSLContext:
    """A context that does NOT verify, used only to fetch and display a certificate.

    It never carries a credential: the fingerprint command has none, and the
    socket is closed after QUIT. Do not reuse it for anything else.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Display only: a self-signed certificate must be shown before anyone can pin it.
    ctx.check_hostname = False  # secure-transfer: ignore[STX042] display only, no credential is sent
    ctx.verify_mode = ssl.CERT_NONE  # secure-transfer: ignore[STX041] display only, no credential is sent
    return ctx


def _read_reply(sock: socket.socket | ssl.SSLSocket, buffer: bytearray) -> str:
    """Read one (possibly multi-line) FTP reply; return its text.

    Bounded like the client's replies: the whole reply within the socket's timeout (a server dripping
    one byte a second does not hold the command) and within ``REPLY_MAX_BYTES`` (nor does a flood).
    """
    from airflow_secure_transfer.transfer import limits

    lines: list[str] = []
    code = ""
    timeout = sock.gettimeout() or 15.0
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransferTimeout(f"no complete reply within {timeout:g} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                raise TransferTimeout(f"no complete reply within {timeout:g} s") from None
            finally:
                sock.settimeout(timeout)
            if not chunk:
                raise TransportError("the server closed the connection")
            buffer.extend(chunk)
            if len(buffer) > 65536:
                raise TransportError("the server's reply is too long")
        raw, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        total += len(raw) + 1
        if total > limits.REPLY_MAX_BYTES:
            raise LimitExceededError(
                f"the server's reply exceeds {limits.REPLY_MAX_BYTES} bytes (reply size limit)", limit="reply bytes"
            )
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        lines.append(line)
        if not code:
            code = line[:3]
            if not code.isdigit():
                raise TransportError(f"not an FTP server (it said {line[:80]!r})")
            if line[3:4] != "-":
                break
        elif line.startswith(code + " "):
            break
    return "\n".join(lines)


def _chain_der(sock: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, leaf first (Python 3.13+ public API, 3.10+ private one)."""
    public = getattr(sock, "get_unverified_chain", None)
    if public is not None:
        return [bytes(c) for c in public()]
    sslobj = getattr(sock, "_sslobj", None)
    private = getattr(sslobj, "get_unverified_chain", None)
    if private is not None:
        chain = private() or []
        return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]  # 3.11 private API
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _handshake(
    host: str, port: int, mode: TLSMode, ctx: ssl.SSLContext, timeout: float
) -> tuple[ssl.SSLSocket, str | None, bytearray]:
    """Connect, start TLS (AUTH TLS or implicit) with ``ctx``; return the TLS socket, the greeting, the buffer."""
    raw = socket.create_connection((host, port), timeout=timeout)
    buffer = bytearray()
    greeting: str | None = None
    try:
        if mode is TLSMode.EXPLICIT:
            greeting = _read_reply(raw, buffer)
            if not greeting.startswith("220"):
                raise TransportError(f"{host}:{port}: unexpected greeting {greeting[:80]!r}")
            raw.sendall(b"AUTH TLS\r\n")
            reply = _read_reply(raw, buffer)
            if not reply.startswith("234"):
                raise TransportError(f"{host}:{port}: the server refused AUTH TLS ({reply[:80]!r}); not an FTPS server")
        tls = ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    return tls, greeting, buffer


def _quit(tls: ssl.SSLSocket, buffer: bytearray, mode: TLSMode) -> str | None:
    greeting: str | None = None
    try:
        if mode is TLSMode.IMPLICIT:
            greeting = _read_reply(tls, buffer)
        tls.sendall(b"QUIT\r\n")
    except (OSError, TransportError):
        pass
    finally:
        tls.close()
    return greeting


def fetch_ftps(host: str, port: int, mode: TLSMode, *, timeout: float = 15.0) -> FTPSReport:
    """Fetch and describe an FTPS server's certificate chain; check it against the system store.

    :raises SecureTransferError: the server cannot be reached or does not speak FTPS.
    """
    from airflow_secure_transfer.security.tls import build_ssl_context, classify_ssl_error

    where = f"{host}:{port}"
    report = FTPSReport(host=host, port=port, tls_mode=mode)
    try:
        tls, greeting, buffer = _handshake(host, port, mode, _display_only_context(), timeout)
    except SecureTransferError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise classify_ssl_error(exc, where) from exc
    try:
        report.tls_version = tls.version()
        cipher = tls.cipher()
        report.cipher = cipher[0] if cipher else None
        report.chain = [_cert_info(der) for der in _chain_der(tls)]
    finally:
        implicit_greeting = _quit(tls, buffer, mode)
    report.greeting = greeting or implicit_greeting

    # The second handshake, verified exactly as the hook does with no ca_bundle and no pin.
    settings = parse_ftps_settings(
        conn_type="secure_ftps", host=host, port=port, extras={"tls_mode": mode.value, "conn_timeout": timeout}
    )
    try:
        tls, _, buffer = _handshake(host, port, mode, build_ssl_context(settings), timeout)
    except ssl.SSLCertVerificationError as exc:
        # OpenSSL's reason only ("unable to get local issuer certificate", "Hostname mismatch..."):
        # the hook's full message would point back at this very command.
        report.untrusted_reason = str(exc.verify_message or exc.reason or exc)
    except (OSError, ssl.SSLError, SecureTransferError) as exc:
        report.untrusted_reason = str(classify_ssl_error(exc, where))
    else:
        _quit(tls, buffer, mode)
    return report


# --------------------------------------------------------------------------- SFTP


@dataclass(frozen=True)
class HostKeyInfo:
    """One host key the server presented."""

    key_type: str
    sha256: str
    line: str
    bits: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.key_type, "sha256": self.sha256, "bits": self.bits, "public_key": self.line}


@dataclass
class SFTPReport:
    """What an SSH server presented."""

    host: str
    port: int
    keys: list[HostKeyInfo] = field(default_factory=list)

    def extras(self) -> dict[str, Any]:
        """The connection extras that pin every key shown."""
        return {"host_key": "\n".join(k.line for k in self.keys)} if self.keys else {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": "sftp",
            "host": self.host,
            "port": self.port,
            "host_keys": [k.as_dict() for k in self.keys],
            "extras": self.extras(),
            "warning": WARNING,
        }


def _openssh_sha256(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


async def _probe_keys(host: str, port: int, timeout: float) -> list[HostKeyInfo]:
    import asyncssh

    keys: dict[str, HostKeyInfo] = {}
    errors: list[str] = []
    for alg in _HOST_KEY_ALGS:
        try:
            key = await asyncio.wait_for(
                # Key exchange only: get_server_host_key closes the connection before authentication.
                # config=None: ~/.ssh/config must not redirect the host or add a ProxyCommand here.
                asyncssh.get_server_host_key(host, port, server_host_key_algs=[alg], config=None),
                timeout,
            )
        except asyncssh.KeyExchangeFailed:
            continue  # the server has no key of this type
        except TimeoutError:
            errors.append(f"{alg}: timed out after {timeout:g} s")
            if not keys:
                break
            continue
        except (OSError, asyncssh.Error) as exc:
            errors.append(f"{alg}: {type(exc).__name__}: {exc}")
            if isinstance(exc, OSError) and not keys:
                break
            continue
        if key is None:
            continue
        line = key.export_public_key("openssh").decode("ascii").split()
        blob = base64.b64decode(line[1])
        keys.setdefault(
            line[1],
            HostKeyInfo(
                key_type=line[0],
                sha256=_openssh_sha256(blob),
                line=f"{line[0]} {line[1]}",
                bits=getattr(getattr(key, "pyca_key", None), "key_size", None),
            ),
        )
    if not keys:
        detail = "; ".join(errors) or "no host key of a supported type"
        if any("timed out" in e for e in errors):
            raise TransferTimeout(f"{host}:{port}: {detail}")
        raise TransportError(f"{host}:{port}: cannot get a host key ({detail})")
    return list(keys.values())


def fetch_sftp(host: str, port: int, *, timeout: float = 15.0) -> SFTPReport:
    """Fetch every host key an SSH server presents (key exchange only, no authentication).

    :raises SecureTransferError: the server cannot be reached or offers no usable host key.
    """
    keys = asyncio.run(_probe_keys(host, port, timeout))
    for key in keys:
        # The printed extras must be what the hook accepts (DSA and unknown types are refused there).
        parse_host_key_line(key.line)
    return SFTPReport(host=host, port=port, keys=keys)


# --------------------------------------------------------------------------- output


def _format_colon(hexdigest: str) -> str:
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2)).upper()


def render_ftps(report: FTPSReport) -> str:
    """Human-readable FTPS report; every text the server chose is shown through :func:`visible`."""
    out = [f"FTPS server {visible(report.host)}:{report.port} ({report.tls_mode.value} TLS)"]
    if report.greeting:
        # The first line of the reply (the reader joined its lines with LF); a CR inside it stays visible.
        first_line = report.greeting.split("\n")[0]
        out.append(f"  greeting:   {visible(first_line)[:160]}")
    out.append(f"  TLS:        {visible(str(report.tls_version))} ({visible(str(report.cipher))})")
    out.append("")
    for index, cert in enumerate(report.chain):
        role = "leaf (server) certificate" if index == 0 else f"chain certificate {index}"
        out.append(f"  [{index}] {role}")
        out.append(f"      subject:   {visible(cert.subject)}")
        out.append(f"      issuer:    {visible(cert.issuer)}{'  (self-signed)' if cert.self_signed else ''}")
        out.append(f"      valid:     {cert.not_before} .. {cert.not_after}")
        if index == 0:
            out.append(f"      names:     {visible(', '.join(cert.san)) or '(no subjectAltName)'}")
        out.append(f"      SHA-256:   {_format_colon(cert.sha256)}")
    out.append("")
    if report.untrusted_reason is None:
        out.append("  Trusted by this machine's system trust store (chain and host name verified):")
        out.append("  no pin is needed; the extras below pin the certificate anyway (renewals then need a new pin).")
    else:
        out.append(f"  NOT trusted by the system trust store: {visible(report.untrusted_reason)}")
        out.append("  Pin it (cert_fingerprint below) or set extra 'ca_bundle' to the CA that issued it.")
    out.append("")
    out.append(WARNING)
    out.append("")
    out.append("Connection extras (secure_ftps) to paste after checking the fingerprint:")
    out.append(json.dumps(report.extras(), indent=2))
    return "\n".join(out) + "\n"


def render_sftp(report: SFTPReport) -> str:
    """Human-readable SFTP report."""
    out = [f"SSH server {visible(report.host)}:{report.port}: {len(report.keys)} host key(s)"]
    for key in report.keys:
        bits = f" ({key.bits} bits)" if key.bits else ""
        out.append(f"  {visible(key.key_type):<22} {key.sha256}{bits}")
    out.append("")
    out.append(WARNING)
    out.append("")
    out.append("Connection extras (secure_sftp) to paste after checking the fingerprint:")
    out.append(json.dumps(report.extras(), indent=2))
    return "\n".join(out) + "\n"


def fingerprint_command(args: argparse.Namespace) -> int:
    """Run ``fingerprint`` (exit code 0 shown, 1 failed, 2 bad target)."""
    from airflow_secure_transfer.cli.main import UsageError

    protocol: str = args.protocol
    default_port = {"ftps": 21, "ftps-implicit": 990, "sftp": 22}[protocol]
    try:
        host, port = parse_target(args.target, default_port)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if not args.timeout or args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    try:
        if protocol == "sftp":
            sftp = fetch_sftp(host, port, timeout=args.timeout)
            text = json.dumps(sftp.as_dict(), indent=2) + "\n" if args.format == "json" else render_sftp(sftp)
        else:
            mode = TLSMode.IMPLICIT if protocol == "ftps-implicit" else TLSMode.EXPLICIT
            ftps = fetch_ftps(host, port, mode, timeout=args.timeout)
            text = json.dumps(ftps.as_dict(), indent=2) + "\n" if args.format == "json" else render_ftps(ftps)
    except SecureTransferError as exc:
        # The message may quote the server (a refusal, an SSH disconnect reason): same terminal, same rule.
        print(f"airflow-secure-transfer fingerprint: {visible(str(exc))}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    if args.format == "json":
        # Keep stdout machine-readable, and the warning visible.
        print(WARNING, file=sys.stderr)
    return 0
