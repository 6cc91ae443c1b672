"""Fixtures of the FTPS client/hook tests: servers with bad certificates, a plain FTP server, helpers.

The shared servers (``pyftpd_explicit``... ``vsftpd_implicit``, ``ftps_server``) come from
``tests/conftest.py``. Here:

* ``make_settings(server, **extras)`` -> :class:`FTPSSettings` that trust exactly *server*;
* ``expired_pyftpd``, ``wrong_host_pyftpd`` -> real pyftpdlib FTPS servers whose certificate
  is expired / issued for ``other.example`` only (each with its own trusted CA, so that only
  the one defect fails verification);
* ``plain_ftpd`` -> a real pyftpdlib server *without* TLS (``FTPHandler``), recording commands;
* ``quirky_pyftpd`` -> pyftpdlib FTPS that refuses to rename onto an existing file and answers
  ``552``/``452`` to uploads of names containing ``full``/``quota``;
* ``tls_context_for`` -> a server-side ``ssl`` context for the hostile servers.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler

from airflow_secure_transfer.security.policy import FTPSSettings
from tests.servers import HOST, FTPSServer
from tests.servers.pki import ServerPKI, make_pki
from tests.servers.pyftpd import SecureTestFTPHandler, _ssl_context, run_pyftpd, serve_pyftpd

from ._helpers import settings_for


@pytest.fixture
def make_settings() -> Callable[..., FTPSSettings]:
    return settings_for


@pytest.fixture(scope="module")
def expired_pyftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPSServer]:
    """pyftpdlib explicit FTPS whose certificate (localhost, 127.0.0.1) expired yesterday."""
    base = tmp_path_factory.mktemp("expired")
    pki = make_pki(base / "pki", organization="sectransfer ftps negative tests", expired=True)
    with run_pyftpd(base / "root", pki, name="expired_pyftpd") as server:
        yield server


@pytest.fixture(scope="module")
def wrong_host_pyftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPSServer]:
    """pyftpdlib explicit FTPS whose (valid) certificate names only ``other.example``."""
    base = tmp_path_factory.mktemp("wronghost")
    pki = make_pki(base / "pki", identities=("other.example",), organization="sectransfer ftps negative tests")
    with run_pyftpd(base / "root", pki, name="wrong_host_pyftpd") as server:
        yield server


class _RecordingFTPHandler(FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    command_log: list[str]

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        self.command_log.append(line)
        super().pre_process_command(line, cmd, arg)


@contextlib.contextmanager
def _own_pyftpd(
    root: Path,
    login: str,
    handler_name: str,
    base: type[FTPHandler],
    attrs: dict[str, Any],
    *,
    ca_pem: str,
    cert_fingerprint: str,
    name: str,
) -> Iterator[FTPSServer]:
    """A pyftpdlib server with a handler class of its own (*base* with *attrs*, a login with a random
    password and a ``command_log``), rooted at *root*, explicit mode."""
    password = secrets.token_urlsafe(12)
    auth = DummyAuthorizer()
    auth.add_user(login, password, str(root), perm="elradfmwMT")
    log: list[str] = []
    handler = type(handler_name, (base,), {"authorizer": auth, "command_log": log, **attrs})
    t0 = time.monotonic()
    with serve_pyftpd(handler) as port:
        yield FTPSServer(
            kind="pyftpdlib",
            host=HOST,
            port=port,
            tls_mode="explicit",
            login=login,
            password=password,
            ca_pem=ca_pem,
            cert_fingerprint=cert_fingerprint,
            writable_dir="/",
            local_root=root,
            server_root=root,
            start_seconds=time.monotonic() - t0,
            name=name,
            command_log=log,
        )


@pytest.fixture(scope="module")
def plain_ftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPSServer]:
    """A real pyftpdlib *plain* FTP server (no TLS at all); ``command_log`` records every line.

    Returned as an :class:`FTPSServer` for convenience (``ca_pem`` is an unrelated CA: there is no TLS).
    """
    with _own_pyftpd(
        tmp_path_factory.mktemp("plain-root"),
        "plainuser",
        "PlainHandler",
        _RecordingFTPHandler,
        {},
        ca_pem=trustme.CA().cert_pem.bytes().decode(),
        cert_fingerprint="0" * 64,
        name="plain_ftpd",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def hostile_ca() -> trustme.CA:
    """The CA that issues the hostile servers' certificates (trusted only where a test says so)."""
    return trustme.CA(organization_name="hostile")


@pytest.fixture
def tls_context_for(hostile_ca: trustme.CA) -> Callable[..., ssl.SSLContext]:
    """``make(*identities, base=None)`` -> a server context with a leaf from :func:`hostile_ca`."""

    def make(*identities: str, base: ssl.SSLContext | None = None, rsa: bool = False) -> ssl.SSLContext:
        ctx = base or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf = hostile_ca.issue_cert(
            *(identities or ("localhost", "127.0.0.1")),
            key_type=trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA,
        )
        leaf.configure_cert(ctx)
        return ctx

    return make


class _QuirkyHandler(SecureTestFTPHandler):
    """Refuses to rename onto an existing file (like IIS); a "full" disk for names containing ``full``."""

    def ftp_RNTO(self, path: str) -> None:
        if self.fs.lexists(path):
            self.respond("550 Cannot rename: target exists.")
            self._rnfr = None
            return
        super().ftp_RNTO(path)

    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        name = self.fs.fs2ftp(file)
        if "full" in name:
            self.respond("552 Requested file action aborted: exceeded storage allocation.")
            return
        if "quota" in name:
            self.respond("452 Insufficient storage space in system.")
            return
        super().ftp_STOR(file, mode)


@pytest.fixture(scope="module")
def quirky_pyftpd(tmp_path_factory: pytest.TempPathFactory, test_pki: ServerPKI) -> Iterator[FTPSServer]:
    """pyftpdlib explicit FTPS (trusted CA) that refuses RNTO onto an existing file and reports 552/452."""
    with _own_pyftpd(
        tmp_path_factory.mktemp("quirky-root"),
        "quirky",
        "QuirkyHandler",
        _QuirkyHandler,
        {
            "ssl_context": _ssl_context(test_pki),
            "certfile": str(test_pki.cert_path),
            "keyfile": str(test_pki.key_path),
            "with_hash": False,
            "session_reuse_failures": [],
        },
        ca_pem=test_pki.ca_pem,
        cert_fingerprint=test_pki.cert_fingerprint,
        name="quirky_pyftpd",
    ) as server:
        yield server
