"""asyncssh's per-request debug lines: formatted only when DEBUG is on for the ``asyncssh`` logger."""

from __future__ import annotations

import logging
import posixpath

import pytest

from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import SFTPServer
from tests.sftp.conftest import make_settings


def _sftp_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("asyncssh.sftp")]


def test_request_lines_are_logged_at_debug_and_not_built_otherwise(
    asyncssh_server: SFTPServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = posixpath.join(asyncssh_server.writable_dir, "f")
    part = posixpath.join(asyncssh_server.writable_dir, ".f.part")
    with SFTPClient(make_settings(asyncssh_server)) as fs:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            assert fs.put_small(part, target, b"debug on") == 8
        lines = _sftp_records(caplog)
        assert any("Sending open for" in line for line in lines), lines
        assert any("Sending write for 8 bytes" in line for line in lines), lines

        caplog.clear()
        built: list[object] = []
        inner = fs._sftp_handler()._logger._inner  # what asyncssh would have formatted with
        monkeypatch.setattr(inner, "log", lambda *a, **k: built.append(a))
        with caplog.at_level(logging.WARNING, logger="asyncssh"):
            assert fs.put_small(part, target, b"debug off") == 9
        assert _sftp_records(caplog) == [] and built == []
