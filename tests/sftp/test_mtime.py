"""``preserve_mtime`` over SFTP against real asyncssh servers: set with the data, or refused by the server."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.transfer.engine import upload
from tests.contract._support import connect, remote
from tests.servers import SFTPServer

HOUR_AGO = int(time.time()) - 3600


class _NoSetstat(asyncssh.SFTPServer):  # type: ignore[misc]  # asyncssh's server class is untyped here
    """A drop box that refuses attribute changes (some commercial servers do)."""

    setstats: list[str] = []

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> Any:
        self.setstats.append("setstat")
        raise asyncssh.SFTPPermissionDenied("attributes are read-only here")

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> Any:
        self.setstats.append("fsetstat")
        raise asyncssh.SFTPPermissionDenied("attributes are read-only here")


def _tree(root: Path) -> Path:
    for name, size in (("small-1", 10), ("small-2", 20), ("small-3", 30), ("big", 3_000_000)):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return root


def test_small_and_large_files_get_the_local_time(asyncssh_server: SFTPServer, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    upload(connect(asyncssh_server), str(src), remote(asyncssh_server, "in"), max_connections=1)
    landed = sorted((asyncssh_server.local_root / "in").iterdir())
    assert [int(p.stat().st_mtime) for p in landed] == [HOUR_AGO] * 4


def test_a_server_refusing_setstat_still_gets_every_file(
    asyncssh_factory: Callable[..., SFTPServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _NoSetstat.setstats = []
    server = asyncssh_factory(sftp_server=_NoSetstat)
    src = _tree(tmp_path / "src")
    with caplog.at_level(logging.INFO):
        records = upload(connect(server), str(src), remote(server, "in"), max_connections=1)
    assert len(records) == 4 and all(r.verified == "size" for r in records)
    for p in src.iterdir():
        assert (server.local_root / "in" / p.name).read_bytes() == p.read_bytes()
    assert caplog.text.count("preserve_mtime: the server cannot set modification times") == 1
    assert len(_NoSetstat.setstats) == 1  # refused once; not asked again on that connection
    second = upload(connect(server), str(src), remote(server, "in"), overwrite="skip_identical")
    assert not any(r.skipped for r in second)
