"""``verify="checksum"`` and ``skip_identical`` with ``sha256sum`` run over SSH (as rclone does).

Real asyncssh servers whose ``exec`` behaves as a server may: computes the digest of the SFTP view's
file, sees another file system (a chroot that the shell does not share), floods, hangs, or is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.transfer.engine import upload
from tests.contract._support import client_for, connect, remote, settings_for
from tests.servers import SFTPServer


def _exec_server(factory: Callable[..., SFTPServer], behaviour: str) -> SFTPServer:
    """An asyncssh server whose exec channel answers ``sha256sum -- PATH`` according to *behaviour*."""
    holder: list[SFTPServer] = []
    calls: list[str] = []

    async def process(proc: asyncssh.SSHServerProcess[Any]) -> None:
        command = proc.command or ""
        calls.append(command)
        words = shlex.split(command)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "flood":
            for _ in range(1000):
                proc.stdout.write("f" * 65536)
            proc.exit(0)
            return
        if words[:2] != ["sha256sum", "--"] or len(words) != 3:
            proc.exit(127)
            return
        server = holder[0]
        local = server.local_path(words[2])
        if behaviour == "other-view":
            local = local.with_name("does-not-matter")  # the shell's view: another file
            digest = hashlib.sha256(b"something else").hexdigest()
        else:
            try:
                digest = hashlib.sha256(local.read_bytes()).hexdigest()
            except OSError:
                proc.exit(1)
                return
        proc.stdout.write(f"{digest}  {words[2]}\n")
        proc.exit(0)

    server = factory(listen_options={"process_factory": process})
    holder.append(server)
    server.exec_calls = calls  # type: ignore[attr-defined]
    return server


@pytest.fixture
def exec_server(asyncssh_factory: Callable[..., SFTPServer]) -> Callable[[str], SFTPServer]:
    return lambda behaviour: _exec_server(asyncssh_factory, behaviour)


def test_verify_checksum_uses_sha256sum_over_exec(
    exec_server: Callable[[str], SFTPServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = exec_server("honest")
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3_000_000))
    with caplog.at_level(logging.INFO):
        (record,) = upload(connect(server), str(src), remote(server, "a.bin"), verify="checksum")
    assert record.verified == "checksum"
    assert "exec sha256sum" in caplog.text and "read back" not in caplog.text
    assert server.exec_calls and server.exec_calls[0].startswith("sha256sum -- ")  # type: ignore[attr-defined]
    assert (server.local_root / "a.bin").read_bytes() == src.read_bytes()


def test_skip_identical_by_exec_checksum(exec_server: Callable[[str], SFTPServer], tmp_path: Path) -> None:
    server = exec_server("honest")
    (server.local_root / "same.bin").write_bytes(b"S" * 1000)
    (server.local_root / "other.bin").write_bytes(b"A" * 1000)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "same.bin").write_bytes(b"S" * 1000)
    (tmp_path / "s" / "other.bin").write_bytes(b"B" * 1000)
    records = {
        Path(r.remote_path).name: r
        for r in upload(connect(server), str(tmp_path / "s"), remote(server), overwrite="skip_identical")
    }
    assert records["same.bin"].skipped and records["same.bin"].verified == "checksum"
    assert not records["other.bin"].skipped and (server.local_root / "other.bin").read_bytes() == b"B" * 1000


def test_a_shell_with_another_view_is_overruled_by_a_read_back(
    exec_server: Callable[[str], SFTPServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = exec_server("other-view")
    for name in ("a.bin", "b.bin"):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(os.urandom(2_000_000))
    with caplog.at_level(logging.INFO):
        records = upload(connect(server), str(tmp_path / "d"), remote(server), verify="checksum", max_connections=1)
    assert all(r.verified == "checksum" for r in records)
    assert caplog.text.count("disagreed with the file read back") == 1
    assert len(server.exec_calls) == 1  # type: ignore[attr-defined]  # not asked again on that connection


def test_flooding_exec_output_is_ignored(exec_server: Callable[[str], SFTPServer]) -> None:
    """64 MiB of output: at most 8 KiB is read, it is not a digest, and exec is not asked again."""
    server = exec_server("flood")
    (server.local_root / "f").write_bytes(b"x")
    with client_for(settings_for(server)) as client:
        assert client.checksum(remote(server, "f")) is None
        assert client.checksum(remote(server, "f")) is None
    assert [c.split()[0] for c in server.exec_calls] == ["sha256sum", "md5sum"]  # type: ignore[attr-defined]


def test_a_server_without_exec(asyncssh_factory: Callable[..., SFTPServer], tmp_path: Path) -> None:
    server = asyncssh_factory()
    (server.local_root / "f").write_bytes(b"x")
    with client_for(settings_for(server)) as client:
        assert client.checksum(remote(server, "f")) is None
        assert client.checksum(remote(server, "f")) is None


def test_a_command_that_never_ends_costs_one_timeout(exec_server: Callable[[str], SFTPServer], tmp_path: Path) -> None:
    server = exec_server("hang")
    (server.local_root / "f").write_bytes(b"x")
    with client_for(settings_for(server, conn_timeout=1)) as client:
        assert client.checksum(remote(server, "f")) is None
        assert client.checksum(remote(server, "f")) is None  # not tried again
        assert client.stat(remote(server, "f")) is not None  # the session still works
    assert len(server.exec_calls) == 1  # type: ignore[attr-defined]
