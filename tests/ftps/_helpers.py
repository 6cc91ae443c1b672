"""Helpers shared by the FTPS tests (imported relatively: ``from ._helpers import ...``)."""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from pathlib import Path
from typing import Any

import trustme

from airflow_secure_transfer.security.policy import FTPSSettings, parse_ftps_settings
from tests.servers import FTPSServer
from tests.servers.pki import ServerPKI
from tests.servers.proxy import RecordingProxy

#: The password the clients send to hostile servers; it must never appear in their clear bytes.
VICTIM_PASSWORD = "Victim-Pa55word-1f6c"


def settings_for(server: FTPSServer, conn_type: str = "secure_ftps", **extras: Any) -> FTPSSettings:
    """Settings that trust exactly *server* (its CA), with *extras* added (a None value removes one)."""
    merged = {**server.extras(), "conn_timeout": 15, **extras}
    merged = {k: v for k, v in merged.items() if v is not None}
    return parse_ftps_settings(
        conn_type=conn_type,
        host=server.host,
        port=server.port,
        login=server.login,
        password=server.password,
        extras=merged,
    )


def custom_pki(directory: Path, *identities: str, expired: bool = False) -> ServerPKI:
    """A fresh CA and a leaf for *identities* (optionally expired yesterday), as a :class:`ServerPKI`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sectransfer ftps negative tests")
    validity: dict[str, Any] = {}
    if expired:
        now = datetime.datetime.now(datetime.UTC)
        validity = {"not_before": now - datetime.timedelta(days=30), "not_after": now - datetime.timedelta(days=1)}
    leaf = ca.issue_cert(*identities, common_name=identities[0], **validity)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path = directory / "server.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_path = directory / "server.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(leaf.private_key_pem.bytes())
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
    return ServerPKI(
        ca=ca,
        ca_pem=ca.cert_pem.bytes().decode("ascii"),
        ca_path=ca_path,
        cert_path=cert_path,
        key_path=key_path,
        cert_fingerprint=hashlib.sha256(der).hexdigest(),
    )


def hostile_settings(server: Any, ca: trustme.CA | None = None, **extras: Any) -> FTPSSettings:
    """Settings for a hostile server (login ``victim``, a recognisable password)."""
    merged: dict[str, Any] = {"conn_timeout": 10}
    if ca is not None:
        merged["ca_bundle"] = ca.cert_pem.bytes().decode()
    merged.update(extras)
    if server.implicit:
        merged["tls_mode"] = "implicit"
    return parse_ftps_settings(
        conn_type="secure_ftps",
        host=server.host,
        port=server.port,
        login="victim",
        password=VICTIM_PASSWORD,
        extras={k: v for k, v in merged.items() if v is not None},
    )


def wait_proxy_idle(proxy: RecordingProxy, timeout: float = 10.0) -> None:
    """Wait until every proxied connection has ended, so the recording holds all the client sent.

    The client closed its socket when it gave up; the proxy passes that EOF on and its pump
    thread ends once both sides are closed. (RecordingProxy has no public wait; its threads are joined.)
    """
    for thread in list(getattr(proxy, "_threads", [])):
        thread.join(timeout=timeout)
