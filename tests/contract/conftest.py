"""Fixtures of the contract suite's fault-injection tests (uploads and downloads cut mid-transfer)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler

from airflow_secure_transfer.security.policy import parse_ftps_settings
from tests.servers.pki import ServerPKI
from tests.servers.pyftpd import serve_pyftpd

from ._support import SIZE, CutFTPS
from .cutproxy import CutProxy, free_port_range, ipv6_loopback_available


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // (4 << 20)):
            block = os.urandom(4 << 20)
            h.update(block)
            f.write(block)
    return path, h.hexdigest()


@pytest.fixture
def cut_ftps(test_pki: ServerPKI, tmp_path: Path) -> Iterator[CutFTPS]:
    """pyftpdlib explicit FTPS on [::1] (passive ports fixed), reached through a CutProxy on 127.0.0.1."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback: the FTPS data-connection proxy needs [::1]")
    root = tmp_path / "ftps-root"
    root.mkdir()
    password = secrets.token_urlsafe(12)
    auth = DummyAuthorizer()
    auth.add_user("cutuser", password, str(root), perm="elradfmwMT")
    pasv = free_port_range(4)
    stored: list[str] = []

    class Handler(TLS_FTPHandler):  # type: ignore[misc]
        def ftp_STOR(self, file: str, mode: str = "w") -> Any:
            stored.append(file)  # the file-system path of every upload target
            return super().ftp_STOR(file, mode)

    Handler.authorizer = auth
    Handler.certfile = str(test_pki.cert_path)
    Handler.keyfile = str(test_pki.key_path)
    Handler.tls_control_required = True
    Handler.tls_data_required = True
    Handler.passive_ports = list(pasv)
    with serve_pyftpd(Handler, "::1") as port, CutProxy("::1") as proxy:
        control = proxy.add_route(port, counted=False)
        for p in pasv:
            proxy.add_route(p, listen_port=p)
        settings = parse_ftps_settings(
            conn_type="secure_ftps",
            host="127.0.0.1",
            port=control,
            login="cutuser",
            password=password,
            extras={"ca_bundle": test_pki.ca_pem, "conn_timeout": 20},
        )
        yield CutFTPS(settings, proxy, root, stored)
