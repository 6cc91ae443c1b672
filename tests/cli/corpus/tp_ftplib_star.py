# ruff: noqa
from ftplib import *


def fetch() -> None:
    ftp = FTP("ftp.partner.example")  # expect: STX001
    ftp.login()
    tls = FTP_TLS("ftps.partner.example")  # expect: STX002, STX003
    tls.login()
