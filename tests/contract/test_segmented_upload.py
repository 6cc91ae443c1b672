"""A large SFTP file sent in segments over several connections (issue #15, see ``transfer/segments.py``).

On both SFTP servers (asyncssh in-process, OpenSSH sshd with copy-data): the landed file's
sha256, no partial left, the final path never seen partial, a cut mid-transfer and a retry
that sends only what the segment files lack, ``max_connections=1`` and many files meaning
no split, a server refusing the extra connections still getting the file, an unfinished
assembly done again (never trusted), a server without copy-data getting one stream.

The thresholds are lowered for the tests (a 12 MiB file, 3 MiB segments); the layout logic
is the same as for 64 MiB and more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import RemoteStorageFullError, ServerBusyError, TransportError
from airflow_secure_transfer.transfer import segments
from airflow_secure_transfer.transfer.engine import partial_name, upload
from airflow_secure_transfer.transfer.local import expand_local
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import sftp_settings
from tests.security.tools import disk_quota_sftp_server, quota_sftp_server, run_custom_sftp
from tests.servers import SFTPServer, settled_size, sha256_file
from tests.servers.sftp_asyncssh import ClientKeys

from ._support import CountingFactory, FinalPathWatcher, client_for, leftovers, remote, settings_for
from .cutproxy import CutProxy

SIZE = 12 * 1024 * 1024 + 12345  # four segments of 3 MiB + the rest (the last one is shorter)


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "SEGMENT_MIN_FILE", 8 * 1024 * 1024)
    monkeypatch.setattr(segments, "MIN_SEGMENT", 2 * 1024 * 1024)
    monkeypatch.setattr(segments, "SEGMENT_MIN_RTT", 0.0)  # loopback: split anyway


@pytest.fixture
def big(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    yield path, sha256_file(path)


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.fixture
def log() -> Iterator[Messages]:
    handler = Messages()
    logger = logging.getLogger("test.segments")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


def _seg_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.seg*of*.part"))


def _as_server_user(server: SFTPServer, path: Path) -> None:
    st = server.local_root.stat()
    os.chown(path, st.st_uid, st.st_gid)


def test_large_file_goes_in_segments(sftp_server: SFTPServer, big: tuple[Path, str], log: Messages) -> None:
    src, digest = big
    final = sftp_server.local_root / "big.bin"
    factory = CountingFactory(settings_for(sftp_server))
    watcher = FinalPathWatcher(final, SIZE)
    try:
        (record,) = upload(
            factory, str(src), remote(sftp_server, "big.bin"), max_connections=4, log=logging.getLogger("test.segments")
        )
    finally:
        watcher.stop()
    assert log.said("in 4 segments"), log.lines
    # Four connections in all, never more at once; the worker's own stays open throughout, so at least two
    # overlapped (a lent one may finish its segment and close before the last one opens).
    assert factory.opened == 4 and 2 <= factory.max_open <= 4
    assert record.sha256 == digest and sha256_file(final) == digest
    assert record.bytes == SIZE and not record.resumed and record.size == SIZE
    assert leftovers(sftp_server.local_root) == []
    assert watcher.samples > 10 and watcher.partial_sizes == []


def test_checksum_verify_reads_the_assembled_file(sftp_server: SFTPServer, big: tuple[Path, str]) -> None:
    src, digest = big
    (record,) = upload(
        CountingFactory(settings_for(sftp_server)),
        str(src),
        remote(sftp_server, "big.bin"),
        max_connections=3,
        verify="checksum",
    )
    assert record.verified == "checksum" and record.sha256 == digest
    assert sha256_file(sftp_server.local_root / "big.bin") == digest
    assert leftovers(sftp_server.local_root) == []


def test_one_connection_means_no_split(sftp_server: SFTPServer, big: tuple[Path, str], log: Messages) -> None:
    src, digest = big
    factory = CountingFactory(settings_for(sftp_server))
    (record,) = upload(
        factory, str(src), remote(sftp_server, "big.bin"), max_connections=1, log=logging.getLogger("test.segments")
    )
    assert factory.opened == 1 and not log.said("segments")
    assert record.sha256 == digest and sha256_file(sftp_server.local_root / "big.bin") == digest


def test_a_near_server_gets_one_stream(
    sftp_server: SFTPServer, big: tuple[Path, str], log: Messages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below ``SEGMENT_MIN_RTT`` (here 60 s, so loopback surely is) one stream is not window-bound: no split."""
    monkeypatch.setattr(segments, "SEGMENT_MIN_RTT", 60.0)
    src, digest = big
    factory = CountingFactory(settings_for(sftp_server))
    (record,) = upload(
        factory, str(src), remote(sftp_server, "big.bin"), max_connections=4, log=logging.getLogger("test.segments")
    )
    assert factory.opened == 1 and not log.said("segments")
    assert record.sha256 == digest and sha256_file(sftp_server.local_root / "big.bin") == digest


def test_many_files_do_not_split(sftp_server: SFTPServer, tmp_path: Path, log: Messages) -> None:
    """A file is split only when no other file waits: of four, at most the last one taken (when the other
    worker has already finished and its slot is free), never more connections at once than max_connections."""
    names = ("a.bin", "b.bin", "c.bin", "d.bin")
    for name in names:
        (tmp_path / "many" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "many" / name).write_bytes(os.urandom(SIZE))
    factory = CountingFactory(settings_for(sftp_server))
    records = upload(
        factory,
        str(tmp_path / "many"),
        remote(sftp_server, "many", ""),
        max_connections=2,
        log=logging.getLogger("test.segments"),
    )
    splits = [line for line in log.lines if "segments" in line and " in " in line]
    assert len(records) == 4 and factory.max_open <= 2 and len(splits) <= 1, log.lines
    if not splits:
        assert factory.opened == 2
    for name in names:
        assert sha256_file(sftp_server.local_root / "many" / name) == sha256_file(tmp_path / "many" / name)


def test_server_refusing_extra_connections_still_gets_the_file(
    sftp_server: SFTPServer, big: tuple[Path, str], log: Messages
) -> None:
    src, digest = big
    settings = settings_for(sftp_server)
    opened = []

    def factory() -> Any:
        if opened:
            raise ServerBusyError("127.0.0.1: the server refused another session (MaxSessions)")
        opened.append(1)
        return client_for(settings)

    (record,) = upload(
        factory, str(src), remote(sftp_server, "big.bin"), max_connections=4, log=logging.getLogger("test.segments")
    )
    assert log.said("could not open another connection for a segment"), log.lines
    assert record.sha256 == digest and sha256_file(sftp_server.local_root / "big.bin") == digest
    assert leftovers(sftp_server.local_root) == []


def test_cut_then_retry_resends_only_what_the_segments_lack(sftp_server: SFTPServer, big: tuple[Path, str]) -> None:
    src, digest = big
    final = sftp_server.local_root / "big.bin"
    target = remote(sftp_server, "big.bin")
    watcher = FinalPathWatcher(final, SIZE)
    try:
        with CutProxy("127.0.0.1") as proxy:
            port = proxy.add_route(sftp_server.port)
            factory = CountingFactory(settings_for(sftp_server, port=port))
            proxy.arm(SIZE // 2)
            with pytest.raises(TransportError) as info:
                upload(factory, str(src), target, max_connections=4)
            assert info.value.retryable and proxy.cut.is_set()
            assert not final.exists()
            pieces = _seg_files(sftp_server.local_root)
            assert len(pieces) >= 2
            left = sum(settled_size(p) for p in pieces)
            assert 0 < left < SIZE
            proxy.disarm()
            proxy.arm(1 << 40)  # count what the retry sends (never cut)
            (record,) = upload(factory, str(src), target, max_connections=4)
            sent_on_wire = proxy.forwarded
    finally:
        watcher.stop()
    assert record.resumed is True
    assert record.bytes == SIZE - left and record.bytes < SIZE
    assert sent_on_wire < SIZE  # the completed segments did not cross the network again
    assert record.sha256 == digest and sha256_file(final) == digest
    assert leftovers(sftp_server.local_root) == []
    assert watcher.samples > 10 and watcher.partial_sizes == []


def test_unfinished_assembly_is_assembled_again(sftp_server: SFTPServer, big: tuple[Path, str]) -> None:
    """Complete segment files and a full-size assembly of garbage (a cut copy): nothing is sent, all is right."""
    src, digest = big
    target = remote(sftp_server, "big.bin")
    (local,) = expand_local(str(src))[0]
    part = partial_name(target, local)
    layout = segments.layout(SIZE, 4, part)
    assert len(layout) == 4
    data = src.read_bytes()
    root = sftp_server.local_root
    prefix = sftp_server.writable_dir.rstrip("/") + "/"
    for s in layout:
        path = root / s.path.removeprefix(prefix)
        path.write_bytes(data[s.start : s.start + s.length])
        _as_server_user(sftp_server, path)
    garbage = root / segments.assembly_path(part, len(layout)).removeprefix(prefix)
    garbage.write_bytes(b"\0" * SIZE)
    _as_server_user(sftp_server, garbage)
    (record,) = upload(CountingFactory(settings_for(sftp_server)), str(src), target, max_connections=4)
    assert record.bytes == 0 and record.resumed and record.sha256 == digest
    assert sha256_file(root / "big.bin") == digest
    assert leftovers(root) == []


def test_server_without_copy_data_gets_one_stream(
    sftp_server: SFTPServer, big: tuple[Path, str], log: Messages, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SFTPClient, "can_assemble", property(lambda self: False))
    src, digest = big
    factory = CountingFactory(settings_for(sftp_server))
    (record,) = upload(
        factory, str(src), remote(sftp_server, "big.bin"), max_connections=4, log=logging.getLogger("test.segments")
    )
    assert factory.opened == 1 and not log.said("segments")
    assert record.sha256 == digest and sha256_file(sftp_server.local_root / "big.bin") == digest


def test_room_for_the_file_once_but_not_twice_sends_it_as_one_stream(
    tmp_path: Path, client_keys: ClientKeys, big: tuple[Path, str], log: Messages
) -> None:
    """A split holds the file twice until the rename (segments + assembly): a server with room for 1.5x the
    file runs out while assembling; the segments and the assembly are removed and one stream delivers it."""
    src, digest = big
    root = tmp_path / "tight"
    with run_custom_sftp(root, client_keys, sftp_server=disk_quota_sftp_server(SIZE + SIZE // 2, root)) as server:
        factory = CountingFactory(sftp_settings(server))
        (record,) = upload(
            factory, str(src), "/inbox/big.bin", max_connections=4, log=logging.getLogger("test.segments")
        )
        assert log.said("in 4 segments") and log.said("sending it as one stream"), log.lines
        assert record.sha256 == digest and record.size == SIZE and not record.resumed
        landed = [p for p in server.local_root.rglob("*") if p.is_file()]
        assert [p.name for p in landed] == ["big.bin"] and sha256_file(landed[0]) == digest


def test_full_disk_mid_segments_leaves_nothing(tmp_path: Path, client_keys: ClientKeys, big: tuple[Path, str]) -> None:
    """A full disk is no cut: as for one stream, every segment and the assembly are removed (they hold the space)."""
    src, _ = big
    with run_custom_sftp(tmp_path / "full", client_keys, sftp_server=quota_sftp_server(SIZE // 2)) as server:
        settings = sftp_settings(server)
        factory = CountingFactory(settings)
        with pytest.raises(RemoteStorageFullError):
            upload(factory, str(src), "/inbox/big.bin", max_connections=4)
        assert factory.opened > 1  # it was split
        assert sorted(p.name for p in server.local_root.rglob("*") if p.is_file()) == []
