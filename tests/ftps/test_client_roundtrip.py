"""``FTPSClient`` against every real FTPS server: round trips, resume, the RemoteFS operations.

``ftps_server`` runs each test on pyftpdlib explicit + implicit and (marker ``interop``) vsftpd
explicit (``require_ssl_reuse=YES``; TLS 1.3 and capped at TLS 1.2) and vsftpd implicit. The pyftpdlib
fixtures also refuse a data connection that does not resume the control session.
"""

from __future__ import annotations

import dataclasses
import ftplib
import hashlib
import io
import os
import posixpath
import ssl

import pytest

from airflow_secure_transfer.exceptions import RemotePathError
from airflow_secure_transfer.security.tls import PinnedSSLSocket, format_fingerprint
from airflow_secure_transfer.transfer.base import RemoteFS
from airflow_secure_transfer.transfer.ftps import BLOCK_SIZE, READ_BLOCK, FTPSClient
from tests.servers import FTPSServer
from tests.servers.proxy import RecordingProxy

from ._helpers import settings_for, wait_proxy_idle


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remote(server: FTPSServer, name: str) -> str:
    return posixpath.join(server.writable_dir, name)


@pytest.mark.parametrize("size", [0, 1, READ_BLOCK, BLOCK_SIZE + 7, 5 * BLOCK_SIZE // 2])
def test_upload_and_download_round_trip(ftps_server: FTPSServer, size: int) -> None:
    data = os.urandom(size)
    remote = _remote(ftps_server, "blob.bin")
    with FTPSClient(settings_for(ftps_server)) as fs:
        assert isinstance(fs, RemoteFS)
        moved: list[int] = []
        assert fs.write_from(remote, io.BytesIO(data), progress=moved.append) == size
        assert sum(moved) == size
        assert _sha(ftps_server.local_path(remote).read_bytes()) == _sha(data)
        sink = io.BytesIO()
        assert fs.read_to(remote, sink) == size
        assert _sha(sink.getvalue()) == _sha(data)
        # Every data connection resumed the control connection's TLS session.
        assert fs.ftp.last_data_session_reused is True


def test_tls_version_and_certificate_are_the_servers(ftps_server: FTPSServer) -> None:
    with FTPSClient(settings_for(ftps_server)) as fs:
        info = fs.tls_info
        assert info is not None
        assert info.version == (ftps_server.max_tls_version or "TLSv1.3")
        assert info.cert_sha256 == ftps_server.cert_fingerprint
        assert fs.ftp.data_protected


def test_pinned_certificate_round_trip_checks_data_channels_too(ftps_server: FTPSServer) -> None:
    data = os.urandom(300_000)
    remote = _remote(ftps_server, "pinned.bin")
    pin = format_fingerprint(ftps_server.cert_fingerprint)
    settings = settings_for(ftps_server, ca_bundle=None, cert_fingerprint=pin)
    with FTPSClient(settings) as fs:
        assert isinstance(fs.ftp.sock, PinnedSSLSocket)
        conn, _ = fs.ftp.ntransfercmd(f"STOR {remote}")
        assert isinstance(conn, PinnedSSLSocket)  # the data channel went through the pin check
        conn.sendall(data)
        conn.unwrap()
        conn.close()
        fs.ftp.voidresp()
        sink = io.BytesIO()
        fs.read_to(remote, sink)
    assert sink.getvalue() == data


def test_resume_upload_and_download_from_an_offset(ftps_server: FTPSServer) -> None:
    data = os.urandom(2 * BLOCK_SIZE + 123)
    cut = BLOCK_SIZE + 5
    remote = _remote(ftps_server, "resume.bin")
    with FTPSClient(settings_for(ftps_server)) as fs:
        fs.write_from(remote, io.BytesIO(data[:cut]))
        source = io.BytesIO(data)
        source.seek(cut)  # the caller positions the source; the server continues at `offset`
        assert fs.write_from(remote, source, offset=cut) == len(data) - cut
        assert ftps_server.local_path(remote).read_bytes() == data
        sink = io.BytesIO()
        assert fs.read_to(remote, sink, offset=cut) == len(data) - cut
        assert sink.getvalue() == data[cut:]


def test_stat_listdir_makedirs_rename_remove(ftps_server: FTPSServer) -> None:
    base = ftps_server.writable_dir
    with FTPSClient(settings_for(ftps_server)) as fs:
        assert fs.stat(_remote(ftps_server, "missing")) is None
        root = fs.stat(base)
        assert root is not None and root.is_dir
        deep = _remote(ftps_server, "a/b/c")
        fs.makedirs(deep)
        fs.makedirs(deep)  # existing: fine
        assert ftps_server.local_path(deep).is_dir()
        fs.write_from(_remote(ftps_server, "a/new.txt"), io.BytesIO(b"new"))
        fs.write_from(_remote(ftps_server, "a/old.txt"), io.BytesIO(b"old contents"))
        entry = fs.stat(_remote(ftps_server, "a/new.txt"))
        assert entry is not None and not entry.is_dir and entry.size == 3
        listing = {posixpath.basename(e.path): e for e in fs.listdir(_remote(ftps_server, "a"))}
        assert set(listing) == {"b", "new.txt", "old.txt"}
        assert listing["b"].is_dir and listing["new.txt"].size == 3
        assert all(e.path.startswith(_remote(ftps_server, "a/")) for e in listing.values())
        # rename replaces an existing target (vsftpd and pyftpdlib use rename(2): atomic)
        fs.rename(_remote(ftps_server, "a/new.txt"), _remote(ftps_server, "a/old.txt"))
        assert ftps_server.local_path(_remote(ftps_server, "a/old.txt")).read_bytes() == b"new"
        assert not ftps_server.local_path(_remote(ftps_server, "a/new.txt")).exists()
        fs.remove(_remote(ftps_server, "a/old.txt"))
        assert fs.stat(_remote(ftps_server, "a/old.txt")) is None
        with pytest.raises(RemotePathError) as info:
            fs.remove(_remote(ftps_server, "a/old.txt"))
        assert info.value.path == _remote(ftps_server, "a/old.txt")
        with pytest.raises(RemotePathError):
            fs.read_to(_remote(ftps_server, "nope.bin"), io.BytesIO())
        fs.write_from(_remote(ftps_server, "file"), io.BytesIO(b"x"))
        with pytest.raises(RemotePathError):
            fs.makedirs(_remote(ftps_server, "file"))  # a file is in the way
        with pytest.raises(RemotePathError):
            fs.makedirs(_remote(ftps_server, "file/sub"))
        # the connection is still usable after those errors
        assert fs.stat(base) is not None


def test_checksum_when_the_server_has_one(ftps_server: FTPSServer) -> None:
    data = os.urandom(100_000)
    remote = _remote(ftps_server, "sum.bin")
    with FTPSClient(settings_for(ftps_server)) as fs:
        fs.write_from(remote, io.BytesIO(data))
        result = fs.checksum(remote)
        if ftps_server.with_hash:
            # The pyftpdlib fixture defaults to SHA-1 (like FileZilla): the client must switch to SHA-256.
            assert result is not None and result.algorithm == "sha256"
            assert result.hexdigest == _sha(data)
            assert fs.checksum_support == "HASH SHA-256"
        else:
            assert result is None  # vsftpd: no HASH, no XSHA*
            assert fs.checksum_support is None


def test_xsha256_fallback(pyftpd_explicit: FTPSServer) -> None:
    data = b"checksum me"
    remote = _remote(pyftpd_explicit, "x.bin")
    with FTPSClient(settings_for(pyftpd_explicit)) as fs:
        fs.write_from(remote, io.BytesIO(data))
        del fs.features["HASH"]
        result = fs.checksum(remote)
    assert result is not None and (result.algorithm, result.hexdigest) == ("sha256", _sha(data))
    assert f"XSHA256 {remote}" in pyftpd_explicit.command_log


def test_no_checksum_is_none(pyftpd_explicit_nohash: FTPSServer) -> None:
    remote = _remote(pyftpd_explicit_nohash, "n.bin")
    with FTPSClient(settings_for(pyftpd_explicit_nohash)) as fs:
        fs.write_from(remote, io.BytesIO(b"x"))
        assert fs.checksum(remote) is None


def test_protocol_sequence_is_tls_first_and_prot_p_before_data(pyftpd_explicit: FTPSServer) -> None:
    with FTPSClient(settings_for(pyftpd_explicit)) as fs:
        fs.listdir(pyftpd_explicit.writable_dir)
    log = pyftpd_explicit.command_log
    assert log[:5] == ["AUTH TLS", "USER " + pyftpd_explicit.login, "PASS ******", "PBSZ 0", "PROT P"]
    assert "CCC" not in log and "PROT C" not in log
    # QUIT is sent on close without waiting for its 221: it is the last command if the server has logged it yet.
    assert "QUIT" not in log[:-1]


def test_nothing_readable_on_the_wire(pyftpd_explicit: FTPSServer) -> None:
    data = b"file contents that must not be visible" * 100
    with RecordingProxy(pyftpd_explicit.host, pyftpd_explicit.port) as proxy:
        settings = dataclasses.replace(settings_for(pyftpd_explicit), port=proxy.port)
        with FTPSClient(settings) as fs:
            fs.write_from(_remote(pyftpd_explicit, "w.bin"), io.BytesIO(data))
        wait_proxy_idle(proxy)
        wire = proxy.client_to_server
    assert wire.startswith(b"AUTH TLS\r\n")
    assert wire[len(b"AUTH TLS\r\n") : len(b"AUTH TLS\r\n") + 1] == b"\x16"  # a TLS handshake record follows
    for needle in (b"USER", b"PASS", pyftpd_explicit.password.encode(), b"STOR", b"w.bin"):
        assert needle not in wire


def test_ports_do_not_leak_between_clients(pyftpd_explicit: FTPSServer, pyftpd_implicit: FTPSServer) -> None:
    # The stock FTPSHook sets ftplib.FTP_TLS.port (a class attribute): the next connection inherits it.
    class_ports = (ftplib.FTP.port, ftplib.FTP_TLS.port)
    with FTPSClient(settings_for(pyftpd_explicit)) as a, FTPSClient(settings_for(pyftpd_implicit)) as b:
        assert (a.ftp.port, b.ftp.port) == (pyftpd_explicit.port, pyftpd_implicit.port)
        assert a.ftp.sock is not None and b.ftp.sock is not None
        assert a.ftp.sock.getpeername()[1] == pyftpd_explicit.port
        assert b.ftp.sock.getpeername()[1] == pyftpd_implicit.port
        assert "port" not in vars(type(a.ftp))
    assert (ftplib.FTP.port, ftplib.FTP_TLS.port) == class_ports == (21, 21)


def test_close_twice_and_repr(pyftpd_explicit: FTPSServer) -> None:
    fs = FTPSClient(settings_for(pyftpd_explicit))
    assert "connected" in repr(fs) and pyftpd_explicit.password not in repr(fs)
    fs.close()
    fs.close()
    assert "closed" in repr(fs)
    with pytest.raises(Exception, match="closed"):
        fs.stat("/")


def test_a_shared_context_serves_several_clients(pyftpd_explicit: FTPSServer) -> None:
    from airflow_secure_transfer.security.tls import build_ssl_context

    settings = settings_for(pyftpd_explicit)
    ctx = build_ssl_context(settings)
    with FTPSClient(settings, context=ctx) as a, FTPSClient(settings, context=ctx) as b:
        a.write_from(_remote(pyftpd_explicit, "1"), io.BytesIO(b"1"))
        b.write_from(_remote(pyftpd_explicit, "2"), io.BytesIO(b"2"))
        assert isinstance(a.ftp.sock, ssl.SSLSocket) and a.ftp.sock.context is ctx
