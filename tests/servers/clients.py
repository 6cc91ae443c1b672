"""Minimal reference clients used to check the fixture servers themselves (not the project's clients)."""

from __future__ import annotations

import ftplib
import socket
import ssl
from typing import Any

import asyncssh

from tests.servers import FTPSServer, SFTPServer


class ReuseFTP_TLS(ftplib.FTP_TLS):
    """``FTP_TLS`` whose data connections resume the control connection's TLS session.

    Stock ``ftplib`` starts a fresh session per data connection, which vsftpd (``require_ssl_reuse=YES``) and
    our pyftpdlib handler refuse.
    """

    reuse_session = True

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            session = self.sock.session if self.reuse_session else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


class ImplicitFTP_TLS(ReuseFTP_TLS):
    """Implicit FTPS: wrap the socket in TLS right after connect, before reading the 220 greeting."""

    def connect(self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None) -> str:
        if host:
            self.host = host
        if port > 0:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=self.host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def ftps_connect(
    server: FTPSServer,
    *,
    context: ssl.SSLContext | None = None,
    login: bool = True,
    reuse_session: bool = True,
    host: str | None = None,
    port: int | None = None,
) -> ReuseFTP_TLS:
    """Connect (explicit: ``AUTH TLS``; implicit: TLS first), log in, ``PBSZ 0`` + ``PROT P``."""
    ctx = context or ssl.create_default_context(cadata=server.ca_pem)
    cls = ImplicitFTP_TLS if server.tls_mode == "implicit" else ReuseFTP_TLS
    ftp = cls(context=ctx, timeout=10)
    ftp.reuse_session = reuse_session
    ftp.connect(host or server.host, port or server.port)
    if server.tls_mode == "explicit":
        ftp.auth()
    if login:
        ftp.login(server.login, server.password)
        ftp.prot_p()
    return ftp


def sftp_connect(server: SFTPServer, *, known_hosts: str | None = None, **auth: Any) -> Any:
    """``asyncssh.connect`` to *server* as its login, trusting *known_hosts* (default: the server's own
    lines), with the given *auth* options (``password``, ``client_keys``); use as ``async with``."""
    return asyncssh.connect(
        server.host,
        server.port,
        username=server.login,
        known_hosts=asyncssh.import_known_hosts(known_hosts or server.known_hosts_text),
        connect_timeout=10,
        **auth,
    )
