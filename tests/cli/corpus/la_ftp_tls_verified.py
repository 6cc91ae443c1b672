# ruff: noqa
"""FTP_TLS done right: a verifying context and prot_p(). Nothing to report."""

import ftplib
import ssl
from ftplib import FTP_TLS


def upload(path: str) -> None:
    ctx = ssl.create_default_context(cafile="/etc/partner-ca.pem")
    ftps = FTP_TLS(context=ctx, timeout=30)
    ftps.connect("ftps.partner.example", 21)
    ftps.login("etl", "secret")
    ftps.prot_p()
    with open(path, "rb") as fh:
        ftps.storbinary("STOR report.csv", fh)
    ftps.quit()


def with_block() -> None:
    with ftplib.FTP_TLS("ftps.partner.example", context=ssl.create_default_context()) as ftps:
        ftps.login("etl", "secret")
        ftps.prot_p()
        ftps.nlst()


def connect() -> ftplib.FTP_TLS:
    """Returns the client; the caller calls prot_p() (see use())."""
    ftps = FTP_TLS(context=ssl.create_default_context())
    ftps.connect("ftps.partner.example")
    return ftps


def use() -> None:
    client = connect()
    client.login("etl", "secret")
    client.prot_p()


class PartnerClient:
    def __init__(self) -> None:
        self.conn = FTP_TLS(context=ssl.create_default_context())

    def open(self) -> None:
        self.conn.connect("ftps.partner.example")
        self.conn.login("etl", "secret")
        self.conn.prot_p()


class ReuseFTP_TLS(ftplib.FTP_TLS):
    """Subclassing FTP_TLS (for TLS session reuse) is not a use of plain FTP."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return conn, size


def type_checks(obj: object) -> bool:
    if isinstance(obj, (ftplib.FTP, ftplib.FTP_TLS)):
        return True
    try:
        pass
    except ftplib.error_perm:
        return False
    return issubclass(type(obj), ftplib.FTP)


def from_options(options: dict) -> None:
    """The context may come in **options: not guessed."""
    ftps = FTP_TLS(**options)
    ftps.login()
    ftps.prot_p()
