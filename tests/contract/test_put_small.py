"""``put_small`` (the fused small-file upload) on every server fixture: write, size check, rename."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import RemotePathError, TransferTimeout
from airflow_secure_transfer.transfer.base import SupportsPutSmall, SupportsPutSmallMany
from tests.servers import SFTPServer

from ._support import AnyServer, client_for, leftovers, remote, settings_for


@pytest.mark.parametrize("size", [0, 1, 8192, 600_000])  # 600,000 B: several SFTP WRITEs in flight
def test_put_small_lands_the_bytes_under_the_final_name(any_server: AnyServer, size: int) -> None:
    data = os.urandom(size)
    with client_for(settings_for(any_server)) as fs:
        assert isinstance(fs, SupportsPutSmall)
        landed = fs.put_small(remote(any_server, ".f.part"), remote(any_server, "f"), data)
    assert landed == size
    assert (any_server.local_root / "f").read_bytes() == data
    assert leftovers(any_server.local_root) == []


def test_put_small_replaces_an_existing_target(any_server: AnyServer) -> None:
    with client_for(settings_for(any_server)) as fs:
        assert isinstance(fs, SupportsPutSmall)
        for content in (b"first version, longer", b"second"):
            assert fs.put_small(remote(any_server, ".g.part"), remote(any_server, "g"), content) == len(content)
    assert (any_server.local_root / "g").read_bytes() == b"second"


def test_put_small_into_a_missing_directory_fails_and_lands_nothing(any_server: AnyServer) -> None:
    with client_for(settings_for(any_server)) as fs:
        assert isinstance(fs, SupportsPutSmall)
        with pytest.raises(RemotePathError):
            fs.put_small(remote(any_server, "nope", ".h.part"), remote(any_server, "nope", "h"), b"data")
        # The session is still usable after the refusal.
        assert fs.put_small(remote(any_server, ".h.part"), remote(any_server, "h"), b"data") == 4
    assert not (any_server.local_root / "nope").exists()


def test_put_small_many_answers_for_each_file(sftp_server: SFTPServer) -> None:
    """One file's refusal is that file's answer; the others in the same call land."""
    names = ["a", "b", "nope/c", "d"]
    items = [
        (remote(sftp_server, *n.split("/")[:-1], f".{n[-1]}.part"), remote(sftp_server, n), n.encode() * 9)
        for n in names
    ]
    with client_for(settings_for(sftp_server)) as fs:
        assert isinstance(fs, SupportsPutSmallMany)
        answers = fs.put_small_many(items)
        assert answers[0] == answers[1] == answers[3] == 9
        assert isinstance(answers[2], RemotePathError) and "nope" in str(answers[2])
        assert fs.put_small(remote(sftp_server, ".e.part"), remote(sftp_server, "e"), b"e") == 1  # still usable
    for n in ("a", "b", "d"):
        assert (sftp_server.local_root / n).read_bytes() == n.encode() * 9
    assert leftovers(sftp_server.local_root) == []


class _SilentWrites(asyncssh.SFTPServer):
    """Answers OPEN, then never answers a WRITE (a server that hangs mid-upload)."""

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        await asyncio.sleep(3600)
        return len(data)


def test_put_small_many_times_out_when_the_server_stops_answering(
    asyncssh_factory: Callable[..., SFTPServer],
) -> None:
    server = asyncssh_factory(sftp_server=_SilentWrites)
    items = [(remote(server, f".{i}.part"), remote(server, str(i)), b"x" * 100) for i in range(4)]
    with client_for(settings_for(server, conn_timeout=2)) as fs:
        assert isinstance(fs, SupportsPutSmallMany)
        with pytest.raises(TransferTimeout, match=r"within 2 s"):
            fs.put_small_many(items)
        assert fs.closed  # a session with requests still outstanding is never reused
    assert not any((server.local_root / str(i)).exists() for i in range(4))


def test_get_small_many_reads_each_file_and_shows_growth(sftp_server: SFTPServer) -> None:
    """Downloads' batched read: each file whole, one byte more when the file grew past its listing, a
    missing file fails alone."""
    from airflow_secure_transfer.transfer.base import SupportsGetSmallMany

    files = {f"g{i}.bin": os.urandom(i * 3000) for i in range(6)}  # 0 B .. 15 KB
    for name, data in files.items():
        (sftp_server.local_root / name).write_bytes(data)
    with client_for(settings_for(sftp_server)) as fs:
        assert isinstance(fs, SupportsGetSmallMany)
        items = [(remote(sftp_server, name), len(data)) for name, data in files.items()]
        items.append((remote(sftp_server, "g5.bin"), 100))  # listed smaller than it is now: it grew
        items.append((remote(sftp_server, "g5.bin"), 20_000))  # listed larger: what is there
        items.append((remote(sftp_server, "missing.bin"), 10))
        answers = fs.get_small_many(items)
    assert answers[: len(files)] == list(files.values())
    assert answers[len(files)] == files["g5.bin"][:101]
    assert answers[len(files) + 1] == files["g5.bin"]
    assert isinstance(answers[-1], RemotePathError) and "missing.bin" in str(answers[-1])
