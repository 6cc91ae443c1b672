"""R8 Downloads: what a server lists is untrusted; nothing is ever written outside ``local_path``.

* Hostile SFTP (asyncssh serving crafted ``readdir`` names) and hostile FTPS (crafted ``MLSD``
  lines) listings: every escaping name (``..``, ``/``, ``\\``, absolute, NUL/CR/LF, a drive
  prefix) is refused with an error naming it, before any byte is written anywhere.
* Real symbolic links on real servers (asyncssh, OpenSSH): a link leading outside the
  downloaded directory is refused, naming the entry; a link inside is downloaded.
* A local directory on the way that is a symlink to elsewhere is refused.
* A full local disk (a real 1 MiB tmpfs): a retryable ``LocalStorageFullError``, the run
  stops, the final path is untouched and no partial is left.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import LocalPathError, LocalStorageFullError, RemotePathError
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.transfer.download import download
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.contract._support import connect
from tests.security.conftest import sftp_settings
from tests.security.tools import can_mount_tmpfs, run_custom_sftp, tls_server_context
from tests.servers import SFTPServer
from tests.servers.hostile_ftp import run_hostile_ftp
from tests.servers.pki import ServerPKI
from tests.servers.sftp_asyncssh import ClientKeys

# ("." and ".." themselves are in every honest listing: skipped, never followed.)
ESCAPING_NAMES = ["../escape.txt", "sub/../../x", "/etc/cron.d/evil", "..\\..\\win.ini", "C:evil", "a\r\nb"]


def _nothing_written(base: Path) -> None:
    assert [p for p in base.rglob("*")] == [], f"files were written: {list(base.rglob('*'))}"


class _HostileListing(asyncssh.SFTPServer):
    """Lists one honest file and then :attr:`name` (whatever it is) in every directory."""

    name: ClassVar[bytes] = b""

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:  # type: ignore[override]
        attrs = asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, size=1, permissions=0o100644, mtime=1)
        yield asyncssh.SFTPName(b"fine.txt", attrs=attrs)
        yield asyncssh.SFTPName(self.name, attrs=attrs)


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_hostile_sftp_listing_names_are_refused(client_keys: ClientKeys, tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    (root / "out" / "fine.txt").write_bytes(b"f")
    _HostileListing.name = name.encode()
    local = tmp_path / "local"
    local.mkdir()
    with run_custom_sftp(root, client_keys, sftp_server=_HostileListing) as server:
        with pytest.raises(RemotePathError) as info:
            download(lambda: SFTPClient(sftp_settings(server)), "/out", str(local))
    assert repr(name[:20])[1:-1] in str(info.value) or name in str(info.value), str(info.value)
    assert info.value.retryable is False
    _nothing_written(local)
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize(
    "line",
    [
        *(f"type=file;size=1;modify=20240101000000; {n}" for n in ESCAPING_NAMES if "\r" not in n),
        "type=OS.unix=slink:/etc/passwd;size=10; passwd-link",
        "type=OS.unix=slink:../../etc/shadow;size=10; shadow-link",
        "type=OS.unix=symlink;size=10; unnamed-link",
    ],
)
def test_hostile_ftps_listing_names_and_links_are_refused(test_pki: ServerPKI, tmp_path: Path, line: str) -> None:
    listing = ["type=file;size=1;modify=20240101000000; fine.txt", line]
    with run_hostile_ftp("tls", tls_context=tls_server_context(test_pki), listing=listing) as server:
        settings = parse_ftps_settings(
            conn_type="secure_ftps",
            host="127.0.0.1",
            port=server.port,
            login="victim",
            password="Hostile-Victim-Pw-1",
            extras={"ca_bundle": test_pki.ca_pem, "conn_timeout": 10},
        )
        with pytest.raises(RemotePathError) as info:
            download(lambda: FTPSClient(settings), "/out/*", str(tmp_path / "local"))
    entry = line.rpartition("; ")[2]
    assert entry[:20] in str(info.value) or "/out" in str(info.value), str(info.value)
    assert info.value.retryable is False
    assert not (tmp_path / "local").exists() or not any((tmp_path / "local").rglob("*"))


def test_real_links_outside_are_refused_inside_are_downloaded(sftp_server: SFTPServer, tmp_path: Path) -> None:
    top = sftp_server.local_root / "linked"
    top.mkdir()
    (top / "real.txt").write_bytes(b"real")
    outside = sftp_server.local_root / "secret.txt"
    outside.write_bytes(b"not for you")
    os.symlink("real.txt", top / "alias.txt")  # inside: fine
    records = download(connect(sftp_server), f"{sftp_server.writable_dir}/linked", str(tmp_path / "a"))
    assert sorted(Path(r.local_path).name for r in records) == ["alias.txt", "real.txt"]
    assert (tmp_path / "a" / "alias.txt").read_bytes() == b"real"

    os.symlink("../secret.txt", top / "leak.txt")  # outside the downloaded directory
    with pytest.raises(RemotePathError, match=r"leak\.txt.*symbolic link.*outside") as info:
        download(connect(sftp_server), f"{sftp_server.writable_dir}/linked", str(tmp_path / "b"))
    assert info.value.retryable is False
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*"))


def test_a_local_directory_symlinked_elsewhere_is_refused(sftp_server: SFTPServer, tmp_path: Path) -> None:
    (sftp_server.local_root / "t" / "sub").mkdir(parents=True)
    (sftp_server.local_root / "t" / "sub" / "x.txt").write_bytes(b"x")
    local = tmp_path / "local"
    local.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (local / "sub").symlink_to(elsewhere)
    with pytest.raises(LocalPathError, match="leads outside"):
        download(connect(sftp_server), f"{sftp_server.writable_dir}/t", str(local))
    assert list(elsewhere.iterdir()) == []


def test_local_disk_full_is_retryable_and_leaves_nothing(asyncssh_server: SFTPServer, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    if not can_mount_tmpfs(mnt):
        if os.environ.get("CI"):
            pytest.fail("CI must run as root with mount: the full-disk test needs a real tmpfs")
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        (asyncssh_server.local_root / "big.bin").write_bytes(os.urandom(3_000_000))
        (mnt / "big.bin").write_bytes(b"the old version")
        with pytest.raises(LocalStorageFullError, match="local disk full") as info:
            download(connect(asyncssh_server), f"{asyncssh_server.writable_dir}/big.bin", str(mnt / "big.bin"))
        assert info.value.retryable is True
        assert (mnt / "big.bin").read_bytes() == b"the old version"  # untouched
        assert sorted(p.name for p in mnt.iterdir()) == ["big.bin"]  # no partial holds the space
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_large_download_is_synced_while_it_arrives(
    asyncssh_server: SFTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over the early-writeback size is fdatasync'ed during the transfer, then whole and verified."""
    from airflow_secure_transfer.transfer import download as download_module
    from airflow_secure_transfer.transfer import writeback

    monkeypatch.setattr(download_module, "WRITEBACK_MIN_SIZE", 1 << 20)
    monkeypatch.setattr(writeback, "WRITEBACK_EVERY", 256 << 10)
    synced: list[str] = []
    real = writeback._datasync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(writeback, "_datasync", spy)
    data = os.urandom(3_000_000)
    (asyncssh_server.local_root / "big.bin").write_bytes(data)
    records = download(connect(asyncssh_server), f"{asyncssh_server.writable_dir}/big.bin", str(tmp_path / "big.bin"))
    assert (tmp_path / "big.bin").read_bytes() == data
    assert [r.verified for r in records] == ["size"]
    assert synced, "no early sync ran"
    assert all(os.path.basename(p).startswith(".big.bin.") and p.endswith(".part") for p in synced), synced


@pytest.mark.parametrize(
    ("err_no", "error"), [(errno.EIO, LocalPathError), (errno.ENOSPC, LocalStorageFullError)], ids=["eio", "enospc"]
)
def test_an_early_writeback_error_fails_the_file_and_leaves_nothing(
    asyncssh_server: SFTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err_no: int, error: type
) -> None:
    """The kernel reports a write-back error once per open file: the one an early sync saw fails the file."""
    from airflow_secure_transfer.transfer import download as download_module
    from airflow_secure_transfer.transfer import writeback

    monkeypatch.setattr(download_module, "WRITEBACK_MIN_SIZE", 1 << 20)
    monkeypatch.setattr(writeback, "WRITEBACK_EVERY", 256 << 10)

    def failing(fd: int) -> None:
        raise OSError(err_no, os.strerror(err_no))

    monkeypatch.setattr(writeback, "_datasync", failing)
    (asyncssh_server.local_root / "big.bin").write_bytes(os.urandom(3_000_000))
    (tmp_path / "big.bin").write_bytes(b"the old version")
    with pytest.raises(error, match=os.strerror(err_no)):
        download(connect(asyncssh_server), f"{asyncssh_server.writable_dir}/big.bin", str(tmp_path / "big.bin"))
    assert (tmp_path / "big.bin").read_bytes() == b"the old version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]
