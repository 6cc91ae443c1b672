"""R1 No plaintext: what a network observer records contains no password, no key, no file content.

A :class:`~tests.security.tools.Relay` sits between the client and the server and records every byte
of every connection in both directions: for FTPS the control connection *and every data connection*
(the server announces passive ports that are the relay's, see ``run_relayed_pyftpd``), for SFTP the SSH
connection. The file is random, so any 64-byte window of it in the capture would be a leak (every run of
127 bytes of the file contains one of its 64-byte-aligned chunks, and the capture is scanned at stride 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
from tests.security.conftest import sha256_file, write_random
from tests.security.tools import (
    Relay,
    find_content,
    leaks_in,
    private_key_material,
    secret_needles,
)
from tests.servers import FTPSServer, SFTPServer

# Not a multiple of any block size: the last partial block is checked too.
SIZE = 1024 * 1024 + 12345


def _check_capture(relay: Relay, content: bytes, needles: dict[str, bytes]) -> None:
    capture = relay.captured()
    assert len(capture) > len(content), "the relay did not carry the transfer"
    # The detector itself must work: 64 bytes of the file at odd offsets, in noise, are found.
    # The noise must not continue the run by chance (1 in 256 per side): its bytes next to the
    # window are chosen to differ from the file's bytes there.
    before = os.urandom(32) + bytes([content[1000] ^ 0xFF])
    after = bytes([content[1001 + 64] ^ 0xFF]) + os.urandom(34)
    probe = before + content[1001 : 1001 + 64] + after
    assert find_content(probe, content) == 33
    cut = before + content[1001 : 1001 + 63] + bytes([content[1001 + 63] ^ 0xFF]) + os.urandom(35)
    assert find_content(cut, content) is None  # 63 bytes are not a window
    offset = find_content(capture, content)
    assert offset is None, f"file content in clear on the wire at capture offset {offset}"
    leaked = leaks_in(capture, needles)
    assert not leaked, f"secrets in clear on the wire: {leaked}"


@pytest.mark.parametrize("tls_mode", ["explicit", "implicit"])
@pytest.mark.parametrize("conn_type", ["secure_ftps", "ftp"])
def test_ftps_upload_and_download_show_nothing_in_clear(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    airflow_conn: Callable[..., str],
    tmp_path: Path,
    tls_mode: str,
    conn_type: str,
) -> None:
    server, relay = relayed_ftps(tls_mode)
    conn_id = airflow_conn("r1_ftps", server, conn_type)
    src = write_random(tmp_path / "payload.bin", SIZE)
    content = src.read_bytes()
    with SecureFTPSHook(conn_id) as hook:
        hook.store_file("/inbox/payload.bin", str(src))
        assert relay.received("data", "c2s") >= SIZE, "the upload's data connection did not pass the relay"
        down = tmp_path / "back.bin"
        hook.retrieve_file("/inbox/payload.bin", str(down))
    assert relay.received("data", "s2c") >= SIZE, "the download's data connection did not pass the relay"
    assert sha256_file(down) == sha256_file(src) == sha256_file(server.local_path("/inbox/payload.bin"))
    commands = [c.split(" ", 1)[0] for c in server.command_log]
    assert "STOR" in commands and "RETR" in commands and "PASS" in commands
    _check_capture(
        relay,
        content,
        secret_needles(password=server.password, user_command=f"USER {server.login}", pass_command="PASS "),
    )


@pytest.mark.parametrize("auth", ["password", "key_file", "encrypted_private_key"])
def test_sftp_upload_and_download_show_nothing_in_clear(
    relayed_sftp: Callable[..., tuple[SFTPServer, Relay]],
    airflow_conn: Callable[..., str],
    tmp_path: Path,
    auth: str,
) -> None:
    server, relay = relayed_sftp()
    extras: dict[str, str] = {}
    fields: dict[str, str | None] = {}
    if auth == "key_file":
        extras["key_file"] = str(server.client_key_path)
        fields["password"] = None
    elif auth == "encrypted_private_key":
        extras["private_key"] = server.encrypted_key_text
        extras["private_key_passphrase"] = server.key_passphrase
        fields["password"] = None
    conn_id = airflow_conn("r1_sftp", server, fields=fields, **extras)
    src = write_random(tmp_path / "payload.bin", SIZE)
    content = src.read_bytes()
    remote = f"{server.writable_dir}/inbox/payload.bin"
    with SecureSFTPHook(conn_id) as hook:
        hook.store_file(remote, str(src))
        down = tmp_path / "back.bin"
        hook.retrieve_file(remote, str(down))
    assert relay.received("ssh", "c2s") >= SIZE and relay.received("ssh", "s2c") >= SIZE
    assert sha256_file(down) == sha256_file(src) == sha256_file(server.local_path(remote))
    expected_method = "password" if auth == "password" else "publickey"
    assert (server.login, expected_method) in server.auth_log
    _check_capture(
        relay,
        content,
        secret_needles(
            password=server.password,
            private_key=server.client_key_text,
            encrypted_private_key=server.encrypted_key_text,
            passphrase=server.key_passphrase,
            private_scalar=private_key_material(server.client_key_text),
            encrypted_key_scalar=private_key_material(server.encrypted_key_text, server.key_passphrase),
        ),
    )
