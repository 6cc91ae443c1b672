"""Helpers shared by the FTPS tests (imported relatively: ``from ._helpers import ...``)."""

from __future__ import annotations

from typing import Any

import trustme

from airflow_secure_transfer.security.policy import FTPSSettings, parse_ftps_settings
from tests.servers import FTPSServer
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
