"""A connection cut at several offsets of a 64 MiB download; each next try resumes and lands the exact file.

The cut is real: ``cutproxy.CutProxy`` resets the connection that carries the N-th
server-to-client byte (SFTP: the SSH connection; FTPS: the TLS data connection, see
``cutproxy``). Checked at every cut: the try fails with a *retryable* error, the final
local path never exists (a watcher samples it throughout), one hidden partial is left; the
last try reports ``resumed``, reads fewer bytes than the file has, and the landed file's
sha256 is the server's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import TransportError
from airflow_secure_transfer.transfer.download import download
from tests.servers import SFTPServer, sha256_file

from ._support import SIZE, CountingFactory, CutFTPS, FinalPathWatcher, settings_for
from .cutproxy import CutProxy

pytestmark = pytest.mark.slow

#: Server-to-client bytes (protocol overhead included) after which each successive try is cut.
CUTS = (1_000_000, 20 * 1024 * 1024, 40 * 1024 * 1024)


def _partials(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.part"))


def _cut_and_resume(connect: Callable[[], Any], proxy: CutProxy, remote: str, served: Path, local_dir: Path) -> None:
    digest = sha256_file(served)
    final = local_dir / "big.bin"
    watcher = FinalPathWatcher(final, SIZE)
    had = 0
    try:
        for cut in CUTS:
            proxy.arm(cut, from_server=True)
            with pytest.raises(TransportError) as info:
                download(connect, remote, str(final))
            assert info.value.retryable, info.value
            assert proxy.cut.is_set()
            assert not final.exists()
            (part,) = _partials(local_dir)
            now = part.stat().st_size
            assert had <= now < SIZE  # each try continued the last one's bytes
            had = now
        proxy.disarm()
        (record,) = download(connect, remote, str(final), verify="checksum")
    finally:
        watcher.stop()
    assert record.resumed is True and record.bytes == SIZE - had and record.bytes < SIZE
    assert record.sha256 == digest == sha256_file(final)
    assert _partials(local_dir) == []
    assert watcher.samples > 10 and watcher.partial_sizes == []
    print(f"\ncut at {CUTS} server bytes: {had} bytes were local before the last try; it read {record.bytes}")


def _serve_big(root: Path) -> Path:
    path = root / "out" / "big.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = root.stat()
    with open(path, "wb") as f:
        for _ in range(SIZE // (4 << 20)):
            f.write(os.urandom(4 << 20))
    os.chown(path.parent, owner.st_uid, owner.st_gid)
    os.chown(path, owner.st_uid, owner.st_gid)
    return path


def test_sftp_download_resumes_after_each_cut(sftp_server: SFTPServer, tmp_path: Path) -> None:
    served = _serve_big(sftp_server.local_root)
    with CutProxy("127.0.0.1") as proxy:
        port = proxy.add_route(sftp_server.port)
        connect = CountingFactory(settings_for(sftp_server, port=port))
        _cut_and_resume(connect, proxy, f"{sftp_server.writable_dir}/out/big.bin", served, tmp_path)
        assert proxy.connections == len(CUTS) + 1  # one SSH connection per try


def test_ftps_download_resumes_after_each_cut(cut_ftps: CutFTPS, tmp_path: Path) -> None:
    served = _serve_big(cut_ftps.root)
    _cut_and_resume(CountingFactory(cut_ftps.settings), cut_ftps.proxy, "/out/big.bin", served, tmp_path)
