"""``makedirs`` while another connection creates the same parents (parallel workers of one upload)."""

from __future__ import annotations

import ftplib
import posixpath
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import RemotePathError
from airflow_secure_transfer.transfer.ftps import FTPSClient
from tests.servers import FTPSServer

from ._helpers import settings_for


def test_a_parent_created_by_someone_else_after_a_failed_mkd(
    pyftpd_explicit: FTPSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MKD a/b fails (no a); before the client checks a, another worker creates it: a/b is still made."""
    server = pyftpd_explicit
    parent = posixpath.join(server.writable_dir, "a")
    child = posixpath.join(parent, "b")
    with FTPSClient(settings_for(server)) as fs:
        ftp = fs.ftp
        real = ftp.sendcmd
        first = [True]

        def racing_sendcmd(cmd: str) -> Any:
            if cmd == f"MKD {child}" and first[0]:
                first[0] = False
                try:
                    reply = real(cmd)
                except ftplib.error_perm:  # 550: the parent is missing ...
                    server.local_path(parent).mkdir()  # ... and now the other worker creates it
                    raise
                raise AssertionError(f"expected a 550, got {reply}")
            return real(cmd)

        monkeypatch.setattr(ftp, "sendcmd", racing_sendcmd)
        fs.makedirs(child)
        assert first[0] is False
    assert server.local_path(child).is_dir()


def test_a_refused_mkd_under_an_existing_parent_is_still_an_error(pyftpd_explicit: FTPSServer) -> None:
    server = pyftpd_explicit
    blocker = server.local_path(posixpath.join(server.writable_dir, "f"))
    blocker.write_bytes(b"a file, not a directory")
    with FTPSClient(settings_for(server)) as fs, pytest.raises(RemotePathError):
        fs.makedirs(posixpath.join(server.writable_dir, "f", "sub"))
