# ruff: noqa
"""TLS verification turned off or weakened."""

import socket
import ssl
from ssl import CERT_NONE

ssl._create_default_https_context = ssl._create_unverified_context  # expect: STX040


def unverified() -> ssl.SSLContext:
    return ssl._create_unverified_context()  # expect: STX040


def stdlib_context() -> ssl.SSLContext:
    return ssl._create_stdlib_context()  # expect: STX040


def cert_none() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # expect: STX042
    ctx.verify_mode = ssl.CERT_NONE  # expect: STX041
    return ctx


def cert_none_imported() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.verify_mode = CERT_NONE  # expect: STX041
    return ctx


def verify_mode_enum() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.verify_mode = ssl.VerifyMode.CERT_NONE  # expect: STX041
    return ctx


def no_verify_by_default() -> ssl.SSLContext:
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS)  # expect: STX043
    bare = ssl.SSLContext()  # expect: STX043
    del bare
    return legacy


def wrap(sock: socket.socket) -> ssl.SSLSocket:
    return ssl.wrap_socket(sock)  # expect: STX043


def old_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1  # expect: STX044
    old = ssl.SSLContext(ssl.PROTOCOL_TLSv1)  # expect: STX043, STX044
    del old
    return ctx


def keyword_flags(host: str) -> None:
    make_client(host, check_hostname=False)  # expect: STX042
    make_client(host, cert_reqs="CERT_NONE")  # expect: STX041
    make_client(host, min_tls_version="TLSv1.1")  # expect: STX044


OPTIONS = {"check_hostname": False}  # expect: STX042


def make_client(host: str, **kwargs: object) -> None:
    del host, kwargs
