"""A connection cut in the middle of a 64 MiB upload; the second try resumes and lands the exact file.

The cut is real: a loopback proxy (``cutproxy.CutProxy``) resets the connection that
carries the N-th client-to-server byte. For SFTP that is the SSH connection; for
FTPS it is the TLS data connection (the server listens on ``[::1]`` with a fixed
passive range that the proxy mirrors on ``127.0.0.1``, see ``cutproxy``).

Checked: the first try fails with a *retryable* error, the final path does not
exist (a watcher samples it throughout, and the FTPS server logs every ``STOR``
target), the second try reports ``resumed`` and sends fewer bytes than the file
has, and the landed file's sha256 is the source's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import TransportError
from airflow_secure_transfer.transfer.engine import upload
from tests.servers import SFTPServer, settled_size

from ._support import SIZE, CountingFactory, CutFTPS, FinalPathWatcher, leftovers, settings_for
from .cutproxy import CutProxy

pytestmark = pytest.mark.slow

CUT_AFTER = 24 * 1024 * 1024


def _cut_then_resume(
    connect: Callable[[], Any], proxy: CutProxy, big: tuple[Path, str], target: str, final: Path, **options: Any
) -> None:
    src, digest = big
    watcher = FinalPathWatcher(final, SIZE)
    try:
        proxy.arm(CUT_AFTER)
        with pytest.raises(TransportError) as info:
            upload(connect, str(src), target, **options)
        assert info.value.retryable, info.value
        assert proxy.cut.is_set()
        assert not final.exists()
        (part,) = leftovers(final.parent)
        left = settled_size(part)
        assert 0 < left < SIZE

        proxy.disarm()
        (record,) = upload(connect, str(src), target, **options)
    finally:
        watcher.stop()
    assert record.resumed is True
    assert record.bytes == SIZE - left
    assert record.bytes < SIZE
    assert record.sha256 == digest
    h = hashlib.sha256()
    with open(final, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == digest
    assert leftovers(final.parent) == []
    assert watcher.samples > 10 and watcher.partial_sizes == []
    print(f"\ncut after {CUT_AFTER} proxied bytes: {left} bytes were on the server; resumed, sent {record.bytes}")


def test_sftp_resumes_after_the_ssh_connection_is_cut(sftp_server: SFTPServer, big_file: tuple[Path, str]) -> None:
    with CutProxy("127.0.0.1") as proxy:
        port = proxy.add_route(sftp_server.port)
        connect = CountingFactory(settings_for(sftp_server, port=port))
        # One connection: the single-stream resume (a split upload's is in test_segmented_upload.py).
        _cut_then_resume(
            connect,
            proxy,
            big_file,
            f"{sftp_server.writable_dir}/big.bin",
            sftp_server.local_root / "big.bin",
            max_connections=1,
        )
        assert proxy.connections == 2  # one SSH connection per try


def test_ftps_resumes_after_the_data_connection_is_cut(cut_ftps: CutFTPS, big_file: tuple[Path, str]) -> None:
    connect = CountingFactory(cut_ftps.settings)
    _cut_then_resume(connect, cut_ftps.proxy, big_file, "/in/big.bin", cut_ftps.root / "in" / "big.bin")
    # Every STOR went to the hidden temporary name; the final name was only ever a rename target.
    assert len(cut_ftps.stored) == 2
    assert all(Path(p).name.startswith(".big.bin.") and p.endswith(".part") for p in cut_ftps.stored)
    assert len(set(cut_ftps.stored)) == 1  # the second try wrote to the same partial
