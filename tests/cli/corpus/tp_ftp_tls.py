# ruff: noqa
"""ftplib.FTP_TLS used without verification or without PROT P."""

import ftplib
import ssl
from ftplib import FTP_TLS


def no_context_no_prot_p() -> None:
    # The "compliant" seed DAG: CERT_NONE, and the data channel in clear.
    ftps = ftplib.FTP_TLS("ftps.partner.example")  # expect: STX002, STX003
    ftps.login("etl", "secret")
    ftps.nlst()


def no_context_with_prot_p() -> None:
    ftps = FTP_TLS("ftps.partner.example")  # expect: STX002
    ftps.login("etl", "secret")
    ftps.prot_p()


def context_none() -> None:
    ftps = FTP_TLS("ftps.partner.example", context=None)  # expect: STX002
    ftps.login()
    ftps.prot_p()


def key_and_cert_but_no_context() -> None:
    ftps = FTP_TLS(host="ftps.partner.example", keyfile="k.pem", certfile="c.pem")  # expect: STX002
    ftps.login()
    ftps.prot_p()


def verified_but_no_prot_p() -> None:
    ctx = ssl.create_default_context()
    ftps = FTP_TLS(context=ctx)  # expect: STX003
    ftps.connect("ftps.partner.example", 21)
    ftps.login("etl", "secret")
    ftps.retrlines("LIST")


def prot_p_on_another_object() -> None:
    ctx = ssl.create_default_context()
    first = FTP_TLS(context=ctx)  # expect: STX003
    second = FTP_TLS(context=ctx)
    first.login()
    second.login()
    second.prot_p()


def chained_temporary() -> None:
    FTP_TLS("ftps.partner.example", context=ssl.create_default_context()).login("etl", "x")  # expect: STX003


def positional_context() -> None:
    ctx = ssl.create_default_context()
    ftps = FTP_TLS("h", "u", "p", "", None, None, ctx)
    ftps.prot_p()


def downgrades() -> None:
    ftps = FTP_TLS(context=ssl.create_default_context())
    ftps.login()
    ftps.prot_p()
    ftps.ccc()  # expect: STX004
    ftps.prot_c()  # expect: STX004
