"""SFTPClient against real servers: round trips, resume, metadata, errors, one connection for many files.

``sftp_server`` runs each test on the in-process asyncssh server and on OpenSSH sshd (interop).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    IntegrityError,
    RemotePathError,
    RemoteStorageFullError,
    ServerBusyError,
    TransferTimeout,
    TransportError,
)
from airflow_secure_transfer.security.policy import parse_sftp_settings
from airflow_secure_transfer.transfer.base import RemoteFS
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import SFTPServer, sha256_file
from tests.servers.proxy import RecordingProxy
from tests.sftp._servers import CustomServer, silent_listener
from tests.sftp.conftest import AUTH_MODES, make_settings

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


@pytest.mark.parametrize("auth", AUTH_MODES)
def test_round_trip_sha256_equal(
    sftp_server: SFTPServer, auth: str, random_file: Callable[[int], Path], tmp_path: Path
) -> None:
    size = 3 * MiB + 12345  # several full requests and a short last one
    src = random_file(size)
    remote = f"{sftp_server.writable_dir}/sub dir/data.bin"
    with SFTPClient(make_settings(sftp_server, auth)) as client:
        assert isinstance(client, RemoteFS)
        client.makedirs(posixpath.dirname(remote))
        with open(src, "rb") as f:
            assert client.write_from(remote, f) == size
        assert sha256_file(sftp_server.local_path(remote)) == sha256_file(src)
        out = tmp_path / "back.bin"
        with open(out, "wb") as f:
            assert client.read_to(remote, f) == size
        assert sha256_file(out) == sha256_file(src)
    if sftp_server.kind == "asyncssh":
        expected = "password" if auth == "password" else "publickey"
        assert sftp_server.auth_log == [(sftp_server.login, expected)]


def test_session_info_names_what_was_negotiated(sftp_server: SFTPServer) -> None:
    with SFTPClient(make_settings(sftp_server)) as client:
        info = client.info
        assert info.host_key.key_type == "ssh-ed25519"
        assert info.host_key.fingerprint.startswith("SHA256:")
        assert info.cipher == "aes128-gcm@openssh.com"  # our first choice; both servers offer it
        assert "sha1" not in info.kex and info.kex != "unknown"
        assert info.login == sftp_server.login
        assert info.atomic_rename  # OpenSSH and asyncssh both offer posix-rename@openssh.com
        assert info.block_size == 261120 if sftp_server.kind == "openssh" else info.block_size > 0
        text = info.describe()
        assert info.host_key.fingerprint in text and info.kex in text and sftp_server.login in text


def test_many_files_over_one_connection(
    sftp_server: SFTPServer, recording_proxy: Callable[[str, int], RecordingProxy]
) -> None:
    # Connections are counted by a proxy in front of sshd, and by the asyncssh server's login log
    # (the proxy's sockets have Nagle on, which with the in-process server costs ~40 ms per request).
    proxy = recording_proxy(sftp_server.host, sftp_server.port) if sftp_server.kind == "openssh" else None
    payloads = {f"{sftp_server.writable_dir}/f{i:03d}.txt": os.urandom(100 + i * 37) for i in range(60)}
    settings = make_settings(sftp_server, port=proxy.port if proxy else None)
    with SFTPClient(settings) as client:
        for path, data in payloads.items():
            assert client.write_from(path, io.BytesIO(data)) == len(data)
        for path, data in payloads.items():
            sink = io.BytesIO()
            client.read_to(path, sink)
            assert sink.getvalue() == data
        listed = client.listdir(sftp_server.writable_dir)
    assert [e.path for e in listed] == sorted(payloads)
    if proxy is not None:
        assert proxy.connections == 1
    else:
        assert len(sftp_server.auth_log) == 1
    for path, data in payloads.items():
        assert sftp_server.local_path(path).read_bytes() == data


def test_resume_upload_from_offset(sftp_server: SFTPServer, random_file: Callable[[int], Path]) -> None:
    size = 2 * MiB + 777
    src = random_file(size)
    remote = f"{sftp_server.writable_dir}/resume.bin"
    cut = 1 * MiB + 5
    moved: list[int] = []
    with SFTPClient(make_settings(sftp_server)) as client, open(src, "rb") as f:
        assert client.write_from(remote, io.BytesIO(f.read(cut))) == cut
        assert client.stat(remote).size == cut  # type: ignore[union-attr]
        f.seek(cut)
        assert client.write_from(remote, f, offset=cut, progress=moved.append) == size - cut
    assert sum(moved) == size - cut and all(n > 0 for n in moved)
    assert sha256_file(sftp_server.local_path(remote)) == sha256_file(src)


def test_resume_refuses_a_remote_file_of_another_size(sftp_server: SFTPServer) -> None:
    remote = f"{sftp_server.writable_dir}/r.bin"
    with SFTPClient(make_settings(sftp_server)) as client:
        client.write_from(remote, io.BytesIO(b"x" * 100))
        with pytest.raises(IntegrityError, match="has 100 bytes"):
            client.write_from(remote, io.BytesIO(b"y" * 10), offset=50)
        # the file is untouched and the client still works
        assert client.stat(remote).size == 100  # type: ignore[union-attr]


def test_read_from_offset_and_empty_file(sftp_server: SFTPServer) -> None:
    data = os.urandom(700_000)
    d = sftp_server.writable_dir
    with SFTPClient(make_settings(sftp_server)) as client:
        client.write_from(f"{d}/a", io.BytesIO(data))
        sink = io.BytesIO()
        assert client.read_to(f"{d}/a", sink, offset=123_456) == len(data) - 123_456
        assert sink.getvalue() == data[123_456:]
        client.write_from(f"{d}/empty", io.BytesIO(b""))
        sink = io.BytesIO()
        assert client.read_to(f"{d}/empty", sink) == 0
        assert sink.getvalue() == b""
        assert client.stat(f"{d}/empty").size == 0  # type: ignore[union-attr]


def test_read_with_the_listed_size_sends_no_fstat(sftp_server: SFTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download passes the listing's size: no FSTAT round trip, and the server's EOF still ends the copy."""
    stats: list[object] = []
    original = asyncssh.SFTPClientFile.stat

    async def counting_stat(self: asyncssh.SFTPClientFile, *args: object, **kwargs: object) -> asyncssh.SFTPAttrs:
        stats.append(self)
        return await original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncssh.SFTPClientFile, "stat", counting_stat)
    data = os.urandom(600_001)  # several READs of 255 KiB and a short last one
    d = sftp_server.writable_dir
    with SFTPClient(make_settings(sftp_server)) as client:
        client.write_from(f"{d}/a", io.BytesIO(data))
        for listed in (len(data), 100, 0, len(data) + 300_000):  # as listed; the file grew; or shrank since
            sink = io.BytesIO()
            assert client.read_to(f"{d}/a", sink, size=listed) == len(data)
            assert sink.getvalue() == data
        sink = io.BytesIO()
        assert client.read_to(f"{d}/a", sink, offset=500_000, size=len(data)) == len(data) - 500_000
        assert sink.getvalue() == data[500_000:]
        assert stats == []
        client.read_to(f"{d}/a", io.BytesIO())  # no size given: FSTAT asks
        assert len(stats) == 1
        with pytest.raises(ConfigurationError, match="size must be >= 0"):
            client.read_to(f"{d}/a", io.BytesIO(), size=-1)


def test_small_blocks_and_few_requests_still_round_trip(
    sftp_server: SFTPServer, random_file: Callable[[int], Path], tmp_path: Path
) -> None:
    src = random_file(300_001)
    remote = f"{sftp_server.writable_dir}/small-blocks.bin"
    with SFTPClient(make_settings(sftp_server), block_size=4096, max_requests=3) as client:
        assert client.info.block_size == 4096
        with open(src, "rb") as f:
            client.write_from(remote, f)
        out = tmp_path / "out"
        with open(out, "wb") as f:
            client.read_to(remote, f)
    assert sha256_file(out) == sha256_file(src) == sha256_file(sftp_server.local_path(remote))


def test_metadata_stat_listdir_makedirs(sftp_server: SFTPServer) -> None:
    d = sftp_server.writable_dir
    with SFTPClient(make_settings(sftp_server)) as client:
        assert client.stat(f"{d}/missing") is None
        client.makedirs(f"{d}/a/b/c")
        client.makedirs(f"{d}/a/b/c")  # existing: fine
        client.makedirs(f"{d}/a/")  # trailing slash: fine
        client.write_from(f"{d}/a/file", io.BytesIO(b"12345"))
        top = client.stat(f"{d}/a")
        assert top is not None and top.is_dir and top.size is None
        entries = client.listdir(f"{d}/a")
        assert [(e.path, e.is_dir, e.size) for e in entries] == [(f"{d}/a/b", True, None), (f"{d}/a/file", False, 5)]
        assert entries[1].mtime is not None and abs(entries[1].mtime - time.time()) < 300
        with pytest.raises(RemotePathError) as err:
            client.makedirs(f"{d}/a/file/below")
        assert "not a directory" in str(err.value)
        with pytest.raises(RemotePathError) as err2:
            client.listdir(f"{d}/nope")
        assert err2.value.path == f"{d}/nope"


def test_rename_replaces_an_existing_target(sftp_server: SFTPServer) -> None:
    d = sftp_server.writable_dir
    with SFTPClient(make_settings(sftp_server)) as client:
        client.write_from(f"{d}/target", io.BytesIO(b"old"))
        client.write_from(f"{d}/.target.part", io.BytesIO(b"new contents"))
        client.rename(f"{d}/.target.part", f"{d}/target")
        assert client.stat(f"{d}/.target.part") is None
    assert sftp_server.local_path(f"{d}/target").read_bytes() == b"new contents"


def test_errors_carry_the_remote_path(sftp_server: SFTPServer) -> None:
    d = sftp_server.writable_dir
    with SFTPClient(make_settings(sftp_server)) as client:
        with pytest.raises(RemotePathError) as err:
            client.remove(f"{d}/missing")
        assert err.value.path == f"{d}/missing" and not err.value.retryable
        with pytest.raises(RemotePathError) as err:
            client.read_to(f"{d}/missing", io.BytesIO())
        assert err.value.path == f"{d}/missing"
        with pytest.raises(RemotePathError):
            client.write_from(f"{d}/no/such/dir/file", io.BytesIO(b"x"))
        with pytest.raises(RemotePathError, match="NUL"):
            client.stat(f"{d}/bad\x00name")
        # the connection survives all of that
        client.write_from(f"{d}/ok", io.BytesIO(b"ok"))
        client.remove(f"{d}/ok")
        assert client.stat(f"{d}/ok") is None


def test_checksum_is_none_when_the_server_has_no_check_file(sftp_server: SFTPServer) -> None:
    with SFTPClient(make_settings(sftp_server)) as client:
        client.write_from(f"{sftp_server.writable_dir}/c", io.BytesIO(b"abc"))
        assert client.checksum(f"{sftp_server.writable_dir}/c") is None
        assert client.checksum(f"{sftp_server.writable_dir}/c") is None  # remembered, no second request


def test_text_source_is_refused(sftp_server: SFTPServer) -> None:
    with SFTPClient(make_settings(sftp_server)) as client:
        with pytest.raises(ConfigurationError, match="binary"):
            client.write_from(f"{sftp_server.writable_dir}/t", io.StringIO("text"))  # type: ignore[arg-type]


def test_closed_client_refuses_work_and_closes_twice(asyncssh_server: SFTPServer) -> None:
    client = SFTPClient(make_settings(asyncssh_server))
    assert not client.closed
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(TransportError, match="closed"):
        client.stat("/")
    assert "closed" in repr(client) and asyncssh_server.password not in repr(client)


def test_silent_server_times_out_fast() -> None:
    with silent_listener() as (host, port):
        settings = parse_sftp_settings(
            conn_type="secure_sftp",
            host=host,
            port=port,
            login="u",
            password="pw",
            extras={"host_key": _any_ed25519_line(), "conn_timeout": 0.5},
        )
        started = time.monotonic()
        with pytest.raises(TransferTimeout) as err:
            SFTPClient(settings)
        assert time.monotonic() - started < 2.0
        assert err.value.retryable and f"[{host}]:{port}" in str(err.value)


def test_connection_refused_is_a_transport_error() -> None:
    with silent_listener() as (host, port):
        pass  # closed again: nothing listens on that port now
    settings = parse_sftp_settings(
        conn_type="secure_sftp", host=host, port=port, login="u", extras={"host_key": _any_ed25519_line()}
    )
    with pytest.raises(TransportError) as err:
        SFTPClient(settings)
    assert type(err.value) is ServerBusyError and err.value.retryable  # a refused connection may be a busy listener


def test_dropped_connection_mid_transfer_is_a_transport_error(
    asyncssh_server: SFTPServer, recording_proxy: Callable[[str, int], RecordingProxy]
) -> None:
    proxy = recording_proxy(asyncssh_server.host, asyncssh_server.port).close_after(200_000, "client_to_server")
    with SFTPClient(make_settings(asyncssh_server, port=proxy.port)) as client:
        with pytest.raises(TransportError) as err:
            client.write_from(f"{asyncssh_server.writable_dir}/cut", io.BytesIO(os.urandom(3 * MiB)))
        assert err.value.retryable
        assert client.closed


def test_dropped_connection_mid_download_is_a_transport_error(
    asyncssh_server: SFTPServer, recording_proxy: Callable[[str, int], RecordingProxy]
) -> None:
    remote = f"{asyncssh_server.writable_dir}/big"
    asyncssh_server.local_path(remote).write_bytes(os.urandom(3 * MiB))
    proxy = recording_proxy(asyncssh_server.host, asyncssh_server.port).close_after(1_000_000, "server_to_client")
    sink = io.BytesIO()
    with SFTPClient(make_settings(asyncssh_server, port=proxy.port)) as client:
        with pytest.raises(TransportError) as err:
            client.read_to(remote, sink)
        assert err.value.retryable
    assert 0 < len(sink.getvalue()) < 3 * MiB


# --------------------------------------------------------------------------- server-side checksum


def test_checksum_via_check_file_extension(asyncssh_server: SFTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that implements check-file-name (draft-ietf-secsh-filexfer-extensions) yields a SHA-256."""
    import hashlib

    from asyncssh.constants import FXP_EXTENDED_REPLY
    from asyncssh.packet import SSHPacket, String
    from asyncssh.sftp import SFTPServerHandler

    class _Reply:
        def __init__(self, digest: bytes) -> None:
            self.digest = digest

        def encode(self, version: int) -> bytes:
            return String(b"check-file") + String(b"sha256") + self.digest

    async def check_file_name(self: SFTPServerHandler, packet: SSHPacket) -> _Reply:
        filename = packet.get_string()
        algorithms = packet.get_string().split(b",")
        packet.get_uint64(), packet.get_uint64(), packet.get_uint32()
        assert b"sha256" in algorithms
        local = self._server.map_path(filename)
        with open(local, "rb") as f:
            return _Reply(hashlib.sha256(f.read()).digest())

    monkeypatch.setitem(SFTPServerHandler._packet_handlers, b"check-file-name", check_file_name)
    monkeypatch.setitem(SFTPServerHandler._return_types, b"check-file-name", FXP_EXTENDED_REPLY)
    data = os.urandom(50_000)
    with SFTPClient(make_settings(asyncssh_server)) as client:
        client.write_from(f"{asyncssh_server.writable_dir}/h", io.BytesIO(data))
        checksum = client.checksum(f"{asyncssh_server.writable_dir}/h")
    assert checksum is not None
    assert checksum.algorithm == "sha256" and checksum.hexdigest == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def _tiny_tmpfs(directory: Path, size_kib: int) -> Iterator[None]:
    st = directory.stat()
    opts = f"size={size_kib}k,uid={st.st_uid},gid={st.st_gid},mode=0755"
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(directory)], capture_output=True, check=False
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_remote_storage_full(sftp_server: SFTPServer) -> None:
    with _tiny_tmpfs(sftp_server.local_root, 512), SFTPClient(make_settings(sftp_server)) as client:
        with pytest.raises(RemoteStorageFullError) as err:
            client.write_from(f"{sftp_server.writable_dir}/big", io.BytesIO(os.urandom(2 * MiB)))
        assert err.value.retryable and err.value.path == f"{sftp_server.writable_dir}/big"


def _any_ed25519_line() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


# --------------------------------------------------------------------------- unusual servers


def test_rename_without_posix_rename_falls_back(asyncssh_server: SFTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without posix-rename@openssh.com: SFTP v3 RENAME refuses an existing target, so it is removed first."""
    from asyncssh.sftp import SFTPServerHandler

    monkeypatch.setattr(
        SFTPServerHandler,
        "_extensions",
        [e for e in SFTPServerHandler._extensions if e[0] != b"posix-rename@openssh.com"],
    )
    d = asyncssh_server.writable_dir
    with SFTPClient(make_settings(asyncssh_server)) as client:
        assert not client.info.atomic_rename
        client.write_from(f"{d}/target", io.BytesIO(b"old"))
        client.write_from(f"{d}/part", io.BytesIO(b"new"))
        client.rename(f"{d}/part", f"{d}/target")
        client.write_from(f"{d}/part2", io.BytesIO(b"fresh"))
        client.rename(f"{d}/part2", f"{d}/other")  # no target: a plain rename
    assert asyncssh_server.local_path(f"{d}/target").read_bytes() == b"new"
    assert asyncssh_server.local_path(f"{d}/other").read_bytes() == b"fresh"


def test_listing_with_an_unsafe_name_is_refused(custom_sshd: Callable[..., CustomServer]) -> None:
    class HostileSFTP(asyncssh.SFTPServer):
        async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
            attrs = asyncssh.SFTPAttrs(permissions=0o100644, size=1)
            for name in (b".", b"..", b"fine.txt", b"../../etc/passwd"):
                yield asyncssh.SFTPName(name, attrs=attrs)

    server = custom_sshd(sftp_server=HostileSFTP)
    with SFTPClient(make_settings(server)) as client:
        with pytest.raises(RemotePathError, match="listing of /in contains the name") as err:
            client.listdir("/in")
        assert err.value.path == "/in"
