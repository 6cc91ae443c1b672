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
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler

from airflow_secure_transfer.exceptions import TransportError
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.transfer.engine import upload
from tests.servers import SFTPServer, settled_size
from tests.servers.pki import ServerPKI
from tests.servers.pyftpd import serve_pyftpd

from ._support import CountingFactory, leftovers, settings_for
from .cutproxy import CutProxy, free_port_range, ipv6_loopback_available

pytestmark = pytest.mark.slow

SIZE = 64 * 1024 * 1024
CUT_AFTER = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // (4 << 20)):
            block = os.urandom(4 << 20)
            h.update(block)
            f.write(block)
    return path, h.hexdigest()


class FinalPathWatcher:
    """Samples the final path in a thread; records any size other than the complete one."""

    def __init__(self, path: Path, complete: int) -> None:
        self.path = path
        self.complete = complete
        self.partial_sizes: list[int] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.samples += 1
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                continue
            if size != self.complete:
                self.partial_sizes.append(size)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _cut_then_resume(
    connect: Callable[[], Any], proxy: CutProxy, big: tuple[Path, str], target: str, final: Path
) -> None:
    src, digest = big
    watcher = FinalPathWatcher(final, SIZE)
    try:
        proxy.arm(CUT_AFTER)
        with pytest.raises(TransportError) as info:
            upload(connect, str(src), target)
        assert info.value.retryable, info.value
        assert proxy.cut.is_set()
        assert not final.exists()
        (part,) = leftovers(final.parent)
        left = settled_size(part)
        assert 0 < left < SIZE

        proxy.disarm()
        (record,) = upload(connect, str(src), target)
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
        _cut_then_resume(
            connect, proxy, big_file, f"{sftp_server.writable_dir}/big.bin", sftp_server.local_root / "big.bin"
        )
        assert proxy.connections == 2  # one SSH connection per try


@dataclass
class CutFTPS:
    settings: Any
    proxy: CutProxy
    root: Path
    stored: list[str] = field(default_factory=list)


@pytest.fixture
def cut_ftps(test_pki: ServerPKI, tmp_path: Path) -> Iterator[CutFTPS]:
    """pyftpdlib explicit FTPS on [::1] (passive ports fixed), reached through a CutProxy on 127.0.0.1."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback: the FTPS data-connection proxy needs [::1]")
    root = tmp_path / "ftps-root"
    root.mkdir()
    password = secrets.token_urlsafe(12)
    auth = DummyAuthorizer()
    auth.add_user("cutuser", password, str(root), perm="elradfmwMT")
    pasv = free_port_range(4)
    stored: list[str] = []

    class Handler(TLS_FTPHandler):  # type: ignore[misc]
        def ftp_STOR(self, file: str, mode: str = "w") -> Any:
            stored.append(file)  # the file-system path of every upload target
            return super().ftp_STOR(file, mode)

    Handler.authorizer = auth
    Handler.certfile = str(test_pki.cert_path)
    Handler.keyfile = str(test_pki.key_path)
    Handler.tls_control_required = True
    Handler.tls_data_required = True
    Handler.passive_ports = list(pasv)
    with serve_pyftpd(Handler, "::1") as port, CutProxy("::1") as proxy:
        control = proxy.add_route(port, counted=False)
        for p in pasv:
            proxy.add_route(p, listen_port=p)
        settings = parse_ftps_settings(
            conn_type="secure_ftps",
            host="127.0.0.1",
            port=control,
            login="cutuser",
            password=password,
            extras={"ca_bundle": test_pki.ca_pem, "conn_timeout": 20},
        )
        yield CutFTPS(settings, proxy, root, stored)


def test_ftps_resumes_after_the_data_connection_is_cut(cut_ftps: CutFTPS, big_file: tuple[Path, str]) -> None:
    connect = CountingFactory(cut_ftps.settings)
    _cut_then_resume(connect, cut_ftps.proxy, big_file, "/in/big.bin", cut_ftps.root / "in" / "big.bin")
    # Every STOR went to the hidden temporary name; the final name was only ever a rename target.
    assert len(cut_ftps.stored) == 2
    assert all(Path(p).name.startswith(".big.bin.") and p.endswith(".part") for p in cut_ftps.stored)
    assert len(set(cut_ftps.stored)) == 1  # the second try wrote to the same partial
