"""The TLS session the data connections resume: read once from the control connection, refreshed when refused."""

from __future__ import annotations

import io
import posixpath
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from airflow_secure_transfer.transfer.ftps import FTPSClient
from tests.servers import FTPSServer

from ._helpers import settings_for


def _count_control_session_reads(monkeypatch: pytest.MonkeyPatch, fs: FTPSClient) -> list[int]:
    reads = [0]
    control = fs.ftp.sock
    real = ssl.SSLSocket.session

    def getter(sock: ssl.SSLSocket) -> Any:
        if sock is control:
            reads[0] += 1
        return real.__get__(sock)

    monkeypatch.setattr(ssl.SSLSocket, "session", property(getter, real.fset))
    return reads


def test_many_transfers_read_the_control_session_once(ftps_server: FTPSServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with FTPSClient(settings_for(ftps_server)) as fs:
        reads = _count_control_session_reads(monkeypatch, fs)
        for i in range(6):
            fs.write_from(posixpath.join(ftps_server.writable_dir, f"f{i}"), io.BytesIO(b"x" * (i + 1)))
            assert fs.ftp.last_data_session_reused is True  # vsftpd/pyftpdlib would refuse otherwise
        assert fs.listdir(ftps_server.writable_dir)  # a listing's data connection too
        assert reads[0] == 1


def test_a_session_the_server_did_not_resume_is_read_again(
    pyftpd_factory: Callable[..., FTPSServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    lenient = pyftpd_factory(require_session_reuse=False)
    other = pyftpd_factory()
    with (
        FTPSClient(settings_for(lenient)) as fs,
        FTPSClient(settings_for(other), context=fs.ftp.context) as elsewhere,
    ):
        elsewhere.write_from(posixpath.join(other.writable_dir, "x"), io.BytesIO(b"x"))
        fs.ftp._data_session = elsewhere.ftp.sock.session  # a session this server never issued
        reads = _count_control_session_reads(monkeypatch, fs)
        fs.write_from(posixpath.join(lenient.writable_dir, "a"), io.BytesIO(b"a"))
        assert fs.ftp.last_data_session_reused is False and reads[0] == 0
        fs.write_from(posixpath.join(lenient.writable_dir, "b"), io.BytesIO(b"b"))
        assert fs.ftp.last_data_session_reused is True and reads[0] == 1
    assert (lenient.local_root / "a").read_bytes() == b"a" and (lenient.local_root / "b").read_bytes() == b"b"
