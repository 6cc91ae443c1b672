"""``preserve_mtime`` over FTPS against real pyftpdlib servers: MFMT, no MFMT, and a server in local time."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_secure_transfer.transfer.engine import upload
from tests.contract._support import client_for, connect, remote, settings_for
from tests.servers import FTPSServer
from tests.servers.pyftpd import SecureTestFTPHandler

HOUR_AGO = int(time.time()) - 3600


def _tree(root: Path, count: int = 3) -> Path:
    for i in range(count):
        path = root / f"f{i}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d" % i * 100)
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return root


def test_mfmt_sets_the_time_and_a_second_run_skips(pyftpd_factory: Callable[..., FTPSServer], tmp_path: Path) -> None:
    server = pyftpd_factory(with_hash=False)
    src = _tree(tmp_path / "src")
    upload(connect(server), str(src), remote(server, "in"))
    assert sum(c.startswith("MFMT ") for c in server.command_log) == 3
    assert all(int(p.stat().st_mtime) == HOUR_AGO for p in (server.local_root / "in").iterdir())
    second = upload(connect(server), str(src), remote(server, "in"), overwrite="skip_identical")
    assert all(r.skipped and r.verified == "size+mtime" for r in second)


def test_without_mfmt_one_try_then_nothing(
    pyftpd_factory: Callable[..., FTPSServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No MFMT in FEAT: vsftpd's MDTM form is tried once; refused (550 here), it is not sent again."""
    cmds = {k: v for k, v in SecureTestFTPHandler.proto_cmds.items() if k != "MFMT"}
    server = pyftpd_factory(with_hash=False, handler_attrs={"proto_cmds": cmds})
    src = _tree(tmp_path / "src", 5)
    with caplog.at_level(logging.INFO):
        upload(connect(server), str(src), remote(server, "in"), max_connections=1)
    mdtm_sets = [c for c in server.command_log if c.startswith("MDTM ") and len(c.split()) > 2]
    assert len(mdtm_sets) == 1
    assert caplog.text.count("preserve_mtime: the server cannot set modification times") == 1
    second = upload(connect(server), str(src), remote(server, "in"), overwrite="skip_identical")
    assert not any(r.skipped for r in second)  # no time of ours on the server: nothing proves identity


@pytest.fixture
def local_time_zone() -> Iterator[None]:
    """Run the in-process server (and this test) in UTC+05:30, so local time is not UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_a_server_reporting_local_time_is_not_believed(
    pyftpd_factory: Callable[..., FTPSServer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    local_time_zone: None,
) -> None:
    """pyftpdlib with use_gmt_times=False sets MFMT in UTC but reports local time: never a size+mtime skip."""
    server = pyftpd_factory(with_hash=False, handler_attrs={"use_gmt_times": False})
    src = _tree(tmp_path / "src")
    with client_for(settings_for(server)) as client:
        client.makedirs(remote(server, "probe"))
        (server.local_root / "probe" / "p").write_bytes(b"p")
        assert client.set_mtime(remote(server, "probe", "p"), HOUR_AGO)  # type: ignore[attr-defined]
        assert client.mtime_trusted is False  # type: ignore[attr-defined]  # the MFMT answer gave it away
    with caplog.at_level(logging.INFO):
        upload(connect(server), str(src), remote(server, "in"))
    assert caplog.text.count("do not round-trip (it answered the time just set with another one") == 1
    second = upload(connect(server), str(src), remote(server, "in"), overwrite="skip_identical")
    assert not any(r.skipped for r in second)


def test_a_listing_without_times_costs_one_mdtm_per_same_size_file(
    vsftpd_explicit: FTPSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vsftpd (no MLST): LIST gives sizes, then one MDTM per file of the right size; no SIZE, no STOR."""
    from airflow_secure_transfer.transfer import ftps

    sent: list[str] = []
    original = ftps._FTPTLS.putline

    def putline(self: ftps._FTPTLS, line: str) -> None:
        sent.append(line.split(" ", 1)[0].upper())  # verbs only: no password in the test's memory
        original(self, line)

    monkeypatch.setattr(ftps._FTPTLS, "putline", putline)
    server = vsftpd_explicit
    src = _tree(tmp_path / "src", 10)
    upload(connect(server), str(src), remote(server, "in"), max_connections=1)
    del sent[:]
    second = upload(connect(server), str(src), remote(server, "in"), overwrite="skip_identical", max_connections=1)
    assert all(r.skipped and r.verified == "size+mtime" for r in second)
    assert sent.count("LIST") == 1 and sent.count("MDTM") == 10, sent
    assert "STOR" not in sent and sent.count("SIZE") <= 1, sent  # SIZE: the target directory's check
