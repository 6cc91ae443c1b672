# ruff: noqa
"""Plain ftplib.FTP in its usual spellings (every use is a finding)."""

import ftplib
import ftplib as fl
from ftplib import FTP as PlainFTP


def upload_report(path: str) -> None:
    ftp = ftplib.FTP("ftp.partner.example")  # expect: STX001
    ftp.login("etl", "secret")
    with open(path, "rb") as fh:
        ftp.storbinary("STOR report.csv", fh)
    ftp.quit()


def with_alias() -> None:
    with fl.FTP("ftp.partner.example", "etl", "secret") as conn:  # expect: STX001
        conn.nlst()


def from_import() -> None:
    client = PlainFTP()  # expect: STX001
    client.connect("ftp.partner.example", 21)


class LegacyClient(ftplib.FTP):  # expect: STX001
    pass


CLIENT_FACTORY = ftplib.FTP  # expect: STX001


def build(factory=fl.FTP):  # expect: STX001
    return factory("ftp.partner.example")
