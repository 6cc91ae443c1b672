"""The client's reductions inside asyncssh change what it costs, not what goes on the wire."""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
from typing import Any

import pytest
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection, SSHServerConnection
from asyncssh.constants import MSG_CHANNEL_WINDOW_ADJUST, MSG_IGNORE

from airflow_secure_transfer.transfer import sftp_handshake
from airflow_secure_transfer.transfer.sftp import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_REQUESTS, SFTPClient
from tests.servers import SFTPServer
from tests.servers.clients import sftp_connect
from tests.sftp.conftest import make_settings


@pytest.fixture
def ignores_received_by_server(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the SSH_MSG_IGNORE packets the in-process asyncssh server receives."""
    count = [0]
    handlers = dict(SSHConnection._packet_handlers)
    original = handlers[MSG_IGNORE]

    def counting(self: SSHConnection, *args: Any) -> Any:
        if isinstance(self, SSHServerConnection):
            count[0] += 1
        return original(self, *args)

    handlers[MSG_IGNORE] = counting
    monkeypatch.setattr(SSHConnection, "_packet_handlers", handlers)
    return count


def test_no_cbc_countermeasure_packets_with_an_aead_cipher(
    asyncssh_server: SFTPServer, ignores_received_by_server: list[int]
) -> None:
    data = os.urandom(1 << 20)
    with SFTPClient(make_settings(asyncssh_server)) as fs:
        assert fs.info.cipher in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
        ignores_received_by_server[0] = 0  # from here on: the connection is set up, the data is sent
        fs.write_from(posixpath.join(asyncssh_server.writable_dir, "f"), io.BytesIO(data))
    assert (asyncssh_server.local_root / "f").read_bytes() == data
    assert ignores_received_by_server[0] == 0

    # The counter sees them from a stock asyncssh client, which sends one before every packet.
    async def stock_upload() -> None:
        async with sftp_connect(asyncssh_server, password=asyncssh_server.password) as conn:
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(posixpath.join(asyncssh_server.writable_dir, "g"), "wb") as f:
                    await f.write(data)

    ignores_received_by_server[0] = 0
    asyncio.run(stock_upload())
    assert ignores_received_by_server[0] > 32  # 1 MiB is at least 32 packets of 32 KiB


@pytest.fixture
def window_adjusts_received_by_server(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the SSH_MSG_CHANNEL_WINDOW_ADJUST packets the in-process asyncssh server receives."""
    count = [0]
    handlers = dict(SSHChannel._packet_handlers)
    original = handlers[MSG_CHANNEL_WINDOW_ADJUST]

    def counting(self: SSHChannel[Any], *args: Any) -> Any:
        if isinstance(self._conn, SSHServerConnection):
            count[0] += 1
        return original(self, *args)

    handlers[MSG_CHANNEL_WINDOW_ADJUST] = counting
    monkeypatch.setattr(SSHChannel, "_packet_handlers", handlers)
    return count


@pytest.mark.parametrize("far", [True, False], ids=["far", "near"])
def test_a_far_servers_download_gets_a_receive_window_larger_than_its_outstanding_reads(
    asyncssh_server: SFTPServer,
    window_adjusts_received_by_server: list[int],
    monkeypatch: pytest.MonkeyPatch,
    far: bool,
) -> None:
    """A stream moves at most one receive window per round trip. asyncssh's default (2 MiB, topped up each time
    half is used) needs 32 adjustments for 32 MiB and held a download from a server 50 ms away to ~1 MiB per
    round trip; a far server's window keeps at least the outstanding READs' bytes open (8 MiB: 4 adjustments
    for 32 MiB). A near one keeps asyncssh's window (on loopback the wide one cost 17 % more client CPU)."""
    monkeypatch.setattr(sftp_handshake, "WIDE_WINDOW_MIN_RTT", 0.0 if far else 60.0)
    size = 32 << 20
    (asyncssh_server.local_root / "big").write_bytes(os.urandom(size))
    with SFTPClient(make_settings(asyncssh_server)) as fs:
        window_adjusts_received_by_server[0] = 0
        sink = io.BytesIO()
        assert fs.read_to(posixpath.join(asyncssh_server.writable_dir, "big"), sink) == size
    outstanding = DEFAULT_MAX_REQUESTS * DEFAULT_BLOCK_SIZE
    if far:
        assert 1 <= window_adjusts_received_by_server[0] <= -(-size // outstanding)
    else:
        assert window_adjusts_received_by_server[0] >= size // (2 << 20)
