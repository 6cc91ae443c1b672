"""Helpers of the upload contract suite: clients for any fixture server, a counting factory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_secure_transfer.security.policy import parse_ftps_settings, parse_sftp_settings
from airflow_secure_transfer.transfer.base import RemoteFS
from tests.contract.cutproxy import CutProxy
from tests.servers import FTPSServer, SFTPServer

AnyServer = FTPSServer | SFTPServer

#: The size of the file the fault-injection tests cut mid-transfer.
SIZE = 64 * 1024 * 1024


def settings_for(server: AnyServer, *, host: str | None = None, port: int | None = None, **extras: Any) -> Any:
    """Settings that trust exactly *server* (CA or pinned host key); *extras* override (None removes)."""
    merged = {**server.extras(), "conn_timeout": 20, **extras}
    merged = {k: v for k, v in merged.items() if v is not None}
    parse = parse_ftps_settings if isinstance(server, FTPSServer) else parse_sftp_settings
    return parse(
        conn_type=server.default_conn_type,
        host=host or server.host,
        port=port or server.port,
        login=server.login,
        password=server.password,
        extras=merged,
    )


def client_for(settings: Any) -> RemoteFS:
    """Open a connected client for *settings* (FTPS or SFTP by type)."""
    from airflow_secure_transfer.security.policy import FTPSSettings

    if isinstance(settings, FTPSSettings):
        from airflow_secure_transfer.transfer.ftps import FTPSClient

        return FTPSClient(settings)
    from airflow_secure_transfer.transfer.sftp import SFTPClient

    return SFTPClient(settings)


class CountingFactory:
    """A client factory that counts the connections it opened and how many are open at once."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.opened = 0
        self.open_now = 0
        self.max_open = 0
        self._lock = threading.Lock()

    def __call__(self) -> RemoteFS:
        client = client_for(self.settings)
        original_close = client.close
        closed = False

        def close() -> None:
            nonlocal closed
            original_close()
            with self._lock:
                if not closed:
                    closed = True
                    self.open_now -= 1

        client.close = close  # type: ignore[method-assign]
        with self._lock:
            self.opened += 1
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
        return client


def connect(server: AnyServer, **extras: Any) -> Callable[[], RemoteFS]:
    """A factory of clients for *server*."""
    return CountingFactory(settings_for(server, **extras))


def has_checksum(server: AnyServer) -> bool:
    """Whether the fixture server computes checksums (pyftpdlib with HASH/XSHA256; none of the others)."""
    return isinstance(server, FTPSServer) and server.with_hash


def leftovers(root: Path) -> list[Path]:
    """Temporary files left under *root* (there should be none after a successful upload)."""
    return sorted(p for p in root.rglob(".*.part"))


def remote(server: AnyServer, *parts: str) -> str:
    """A path under *server*'s writable directory for this test."""
    return "/".join([server.writable_dir.rstrip("/"), *parts])


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


@dataclass
class CutFTPS:
    settings: Any
    proxy: CutProxy
    root: Path
    stored: list[str] = field(default_factory=list)
