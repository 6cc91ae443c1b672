"""Throwaway PKI for the FTPS test servers (``trustme``)."""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme


@dataclass
class ServerPKI:
    """A CA and one server certificate (SANs ``localhost``, ``127.0.0.1``) written to files."""

    ca: trustme.CA = field(repr=False)
    ca_pem: str = field(repr=False)
    ca_path: Path
    #: Leaf + chain (PEM), no key.
    cert_path: Path
    #: Private key (PEM, unencrypted, mode 600).
    key_path: Path
    #: SHA-256 of the leaf certificate (DER), lower-case hex without colons.
    cert_fingerprint: str

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts exactly this CA (for tests of the fixtures)."""
        return ssl.create_default_context(cadata=self.ca_pem)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file, mode 600 from its creation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_pki(
    directory: Path,
    *,
    identities: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ca: trustme.CA | None = None,
    organization: str = "sectransfer tests",
    expired: bool = False,
    rsa: bool = False,
) -> ServerPKI:
    """Create a CA and a server certificate for ``identities`` under ``directory``.

    :param ca: the CA to issue from (e.g. the session's, so only the name or the date is wrong);
        default: a new one named *organization*.
    :param expired: valid from 30 days ago until yesterday.
    :param rsa: RSA keys (default: ECDSA).
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_type = trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA
    ca = ca or trustme.CA(organization_name=organization, key_type=key_type)
    validity: dict[str, Any] = {}
    if expired:
        now = datetime.datetime.now(datetime.UTC)
        validity = {"not_before": now - datetime.timedelta(days=30), "not_after": now - datetime.timedelta(days=1)}
    leaf = ca.issue_cert(*identities, common_name=identities[0], key_type=key_type, **validity)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path = directory / "server.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_path = directory / "server.key"
    write_private(key_path, leaf.private_key_pem.bytes())
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
    return ServerPKI(
        ca=ca,
        ca_pem=ca.cert_pem.bytes().decode("ascii"),
        ca_path=ca_path,
        cert_path=cert_path,
        key_path=key_path,
        cert_fingerprint=hashlib.sha256(der).hexdigest(),
    )
