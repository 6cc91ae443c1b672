"""Engine behaviour against a local-directory RemoteFS: atomicity, overwrite modes, resume, parallelism."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import FakeServer

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    IntegrityError,
    LocalPathError,
    RemotePathError,
    RemoteStorageFullError,
    TransportError,
)
from airflow_secure_transfer.transfer.engine import partial_name, upload
from airflow_secure_transfer.transfer.local import expand_local


@pytest.fixture(params=["steps", "put_small", "put_small_many"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> FakeServer:
    """Every engine test runs with the step-by-step client, one with ``put_small``, one that batches too."""
    root = tmp_path / "remote"
    root.mkdir()
    return FakeServer(root, put_small=request.param != "steps", put_small_many=request.param == "put_small_many")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parts(server: FakeServer) -> list[Path]:
    return sorted(p for p in server.root.rglob("*.part"))


def test_single_file_upload_lands_atomically_with_a_full_record(server: FakeServer, src: Path) -> None:
    data = os.urandom(300_000)
    (src / "a.bin").write_bytes(data)
    (record,) = upload(server.connect, str(src / "a.bin"), "/in/b.bin")
    assert (server.root / "in" / "b.bin").read_bytes() == data
    assert record.as_dict() | {"seconds": 0} == {
        "local_path": str(src / "a.bin"),
        "remote_path": "/in/b.bin",
        "bytes": len(data),
        "sha256": _sha(data),
        "seconds": 0,
        "resumed": False,
        "skipped": False,
        "verified": "size",
        "size": len(data),
        "source_deleted": False,
        "encrypted": False,
        "remote_sha256": None,
    }
    # Bytes only ever went to the hidden temporary name, which was renamed once it had the full size.
    ((_, written, offset),) = server.writes
    assert written.startswith("/in/.b.bin.") and written.endswith(".part") and offset == 0
    assert server.renames == [(written, "/in/b.bin", len(data))]
    assert _parts(server) == []
    assert server.active == 0


def test_single_file_onto_an_existing_remote_directory_goes_inside(server: FakeServer, src: Path) -> None:
    (server.root / "in").mkdir()
    (src / "a.bin").write_bytes(b"abc")
    (record,) = upload(server.connect, str(src / "a.bin"), "/in")
    assert record.remote_path == "/in/a.bin"
    assert (server.root / "in" / "a.bin").read_bytes() == b"abc"


def test_relative_remote_paths_start_at_the_login_directory(server: FakeServer, src: Path) -> None:
    server.home = "/home/alice"
    (src / "a").write_bytes(b"a")
    (record,) = upload(server.connect, str(src / "a"), "in/a")
    assert record.remote_path == "/home/alice/in/a"
    assert (server.root / "home" / "alice" / "in" / "a").read_bytes() == b"a"
    # With a remote_root, relative paths start there instead (and may not leave it).
    (record,) = upload(server.connect, str(src / "a"), "x/a", remote_root="/srv")
    assert record.remote_path == "/srv/x/a"


def test_tree_and_empty_and_unicode_files(server: FakeServer, src: Path) -> None:
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {
        "empty": b"",
        "données.csv": b"1,2\n",
        "sub/数据.txt": b"x" * 5000,
        "sub/deeper/big.bin": os.urandom(2_500_000),
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    records = upload(server.connect, str(src), "/in/", max_connections=2)
    assert {r.remote_path: r.sha256 for r in records} == {f"/in/{k}": _sha(v) for k, v in files.items()}
    for rel, data in files.items():
        assert (server.root / "in" / rel).read_bytes() == data
    assert [r.local_path for r in records] == [f.path for f in expand_local(str(src))[0]]  # plan order


def test_create_dirs_false_does_not_create_parents(server: FakeServer, src: Path) -> None:
    (src / "a").write_bytes(b"a")
    with pytest.raises(RemotePathError, match="no such directory"):
        upload(server.connect, str(src / "a"), "/missing/a", create_dirs=False)
    assert list(server.root.iterdir()) == []


def test_overwrite_fail_refuses_before_any_byte(server: FakeServer, src: Path) -> None:
    (server.root / "in").mkdir()
    (server.root / "in" / "a").write_bytes(b"old")
    (src / "a").write_bytes(b"new content")
    with pytest.raises(RemotePathError, match="exists and overwrite='fail'") as info:
        upload(server.connect, str(src / "a"), "/in/", overwrite="fail")
    assert info.value.retryable is False
    assert server.writes == []
    assert (server.root / "in" / "a").read_bytes() == b"old"


def test_overwrite_replace_replaces(server: FakeServer, src: Path) -> None:
    (server.root / "in").mkdir()
    (server.root / "in" / "a").write_bytes(b"old")
    (src / "a").write_bytes(b"new content")
    (record,) = upload(server.connect, str(src / "a"), "/in/")
    assert not record.skipped
    assert (server.root / "in" / "a").read_bytes() == b"new content"


_HOUR_AGO = int(time.time()) - 3600


def _settled(path: Path, data: bytes, mtime: int = _HOUR_AGO) -> Path:
    """Write *data* with a modification time well in the past (not 'racily' recent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def test_skip_identical_never_skips_on_size_alone(server: FakeServer, src: Path) -> None:
    """Same size, other bytes, no checksum: the remote file's time is not ours, so it is uploaded (failed before)."""
    _settled(server.root / "in" / "same-size", b"AAAAA", _HOUR_AGO - 86400)  # yesterday's export
    _settled(src / "same-size", b"BBBBB")
    (record,) = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert not record.skipped and record.bytes == 5 and record.size == 5 and record.verified == "size"
    assert (server.root / "in" / "same-size").read_bytes() == b"BBBBB"


def test_skip_identical_skips_on_size_and_the_mtime_an_upload_set(server: FakeServer, src: Path) -> None:
    _settled(src / "a", b"12345")
    _settled(src / "b", b"x" * 2_000_000)
    first = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert not any(r.skipped for r in first)
    assert sorted(server.mtimes_set) == sorted(
        (partial_name(f"/in/{n}", expand_local(str(src / n))[0][0]), _HOUR_AGO) for n in ("a", "b")
    )
    assert (server.root / "in" / "a").stat().st_mtime == _HOUR_AGO
    writes = len(server.writes)
    second = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert all(r.skipped and r.verified == "size+mtime" and r.bytes == 0 for r in second)
    assert [r.size for r in second] == [5, 2_000_000]
    assert second[0].sha256 == _sha(b"12345")
    assert len(server.writes) == writes  # nothing written


def test_skip_identical_does_not_trust_a_fresh_file_or_a_server_without_times(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(time.time())
    _settled(server.root / "in" / "fresh", b"AAAA", now)  # written on the server in the same second...
    _settled(src / "fresh", b"BBBB", now)  # ...as the local file: same size, same time, other bytes
    with caplog.at_level(logging.INFO):
        (record,) = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert not record.skipped and (server.root / "in" / "fresh").read_bytes() == b"BBBB"
    assert "modified in the last 2 s" in caplog.text

    server.no_mtime = True
    _settled(src / "fresh", b"BBBB")
    _settled(server.root / "in" / "fresh", b"AAAA")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        (record,) = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert not record.skipped and (server.root / "in" / "fresh").read_bytes() == b"BBBB"
    assert caplog.text.count("reports no modification time") == 1


def test_skip_identical_distrusts_times_that_do_not_round_trip(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server answering in local time: what it reports after the set is not what was set."""
    server.mtime_skew = 3600
    _settled(src / "a", b"x" * 2_000_000)  # streamed: the size check's stat reads the time back
    with caplog.at_level(logging.INFO):
        upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert caplog.text.count("do not round-trip") == 1
    (record,) = upload(server.connect, str(src), "/in", overwrite="skip_identical")
    assert not record.skipped  # the time it reports is not the local file's


def test_preserve_mtime_false_sets_no_time(server: FakeServer, src: Path) -> None:
    _settled(src / "a", b"abc")
    upload(server.connect, str(src), "/in", preserve_mtime=False)
    assert server.mtimes_set == []
    assert (server.root / "in" / "a").stat().st_mtime != _HOUR_AGO


def test_a_server_that_cannot_set_times_still_gets_the_file(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.settable_mtime = False
    _settled(src / "a", b"abc")
    _settled(src / "b", b"y" * 2_000_000)
    with caplog.at_level(logging.INFO):
        upload(server.connect, str(src), "/in")
    assert (server.root / "in" / "a").read_bytes() == b"abc"
    assert caplog.text.count("cannot set modification times") == 1


def test_skip_identical_compares_checksums_where_available(server: FakeServer, src: Path) -> None:
    server.checksum_algorithm = "md5"
    (server.root / "in").mkdir()
    (server.root / "in" / "same").write_bytes(b"abcde")
    (server.root / "in" / "differs").write_bytes(b"abcdX")
    (src / "same").write_bytes(b"abcde")
    (src / "differs").write_bytes(b"abcde")
    records = {Path(r.local_path).name: r for r in upload(server.connect, str(src), "/in", overwrite="skip_identical")}
    assert records["same"].skipped
    assert not records["differs"].skipped
    assert (server.root / "in" / "differs").read_bytes() == b"abcde"


@pytest.mark.parametrize("algorithm", ["sha256", "md5", "sha512"])
def test_verify_checksum_with_the_servers_algorithm(server: FakeServer, src: Path, algorithm: str) -> None:
    server.checksum_algorithm = algorithm
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(70_000 + i))
    records = upload(server.connect, str(src), "/in", verify="checksum", max_connections=1)
    assert all(r.verified for r in records)
    assert len(list((server.root / "in").iterdir())) == 3


def test_verify_checksum_reads_back_without_server_support(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No server checksum: the part is read back and its SHA-256 compared (a ConfigurationError before)."""
    (src / "a").write_bytes(b"data")
    with caplog.at_level(logging.INFO):
        (record,) = upload(server.connect, str(src / "a"), "/in/", verify="checksum")
    assert record.verified == "checksum"
    assert (server.root / "in" / "a").read_bytes() == b"data"
    assert len(server.reads) == 1 and server.reads[0].endswith(".part")
    assert "read back" in caplog.text


def test_a_read_back_that_differs_is_an_integrity_error_and_nothing_lands(server: FakeServer, src: Path) -> None:
    (src / "a").write_bytes(b"data" * 1000)

    def corrupt(remote: str, written: int, source: object) -> None:
        with open(server.local(remote), "r+b") as f:
            f.write(b"X")  # the server stored other bytes than were sent

    server.on_write = corrupt
    with pytest.raises(IntegrityError, match="read back") as info:
        upload(server.connect, str(src / "a"), "/in/", verify="checksum")
    assert info.value.retryable is True
    assert not (server.root / "in" / "a").exists()


def test_checksum_mismatch_is_an_integrity_error_and_nothing_lands(server: FakeServer, src: Path) -> None:
    server.checksum_algorithm = "sha256"
    server.wrong_checksum = True
    (src / "a").write_bytes(b"data")
    with pytest.raises(IntegrityError, match="sha256") as info:
        upload(server.connect, str(src / "a"), "/in/", verify="checksum")
    assert info.value.retryable is True
    assert not (server.root / "in" / "a").exists()
    assert _parts(server) == []


def test_a_cut_transfer_resumes_from_the_partial(server: FakeServer, src: Path) -> None:
    data = os.urandom(1_000_000)
    (src / "big").write_bytes(data)
    server.fail_after = 300_000
    with pytest.raises(TransportError):
        upload(server.connect, str(src / "big"), "/in/")
    (part,) = _parts(server)
    assert part.stat().st_size == 300_000
    assert not (server.root / "in" / "big").exists()  # the final name never held a partial

    server.fail_after = None
    (record,) = upload(server.connect, str(src / "big"), "/in/")
    assert record.resumed is True
    assert record.bytes == 700_000
    assert record.sha256 == _sha(data)
    assert (server.root / "in" / "big").read_bytes() == data
    assert server.writes[-1][2] == 300_000  # the second try wrote from the offset
    assert _parts(server) == []


def test_resume_with_checksum_hashes_the_already_sent_prefix_locally(server: FakeServer, src: Path) -> None:
    data = os.urandom(500_000)
    (src / "big").write_bytes(data)
    server.checksum_algorithm = "sha256"
    server.fail_after = 123_456
    with pytest.raises(TransportError):
        upload(server.connect, str(src / "big"), "/in/", verify="checksum")
    server.fail_after = None
    (record,) = upload(server.connect, str(src / "big"), "/in/", verify="checksum")
    assert record.resumed and record.bytes == 500_000 - 123_456 and record.sha256 == _sha(data)


def test_an_upload_that_ended_early_keeps_its_partial_for_a_resume(server: FakeServer, src: Path) -> None:
    """FTP: a data connection closed early can end in "226"; the size check catches it, the retry resumes."""
    data = os.urandom(400_000)
    (src / "f").write_bytes(data)
    server.truncate_after = 150_000
    with pytest.raises(IntegrityError, match="after the upload, expected 400000 bytes") as info:
        upload(server.connect, str(src / "f"), "/in/")
    assert info.value.retryable
    (part,) = _parts(server)
    assert part.stat().st_size == 150_000 and not (server.root / "in" / "f").exists()
    server.truncate_after = None
    (record,) = upload(server.connect, str(src / "f"), "/in/")
    assert record.resumed and record.bytes == 250_000
    assert (server.root / "in" / "f").read_bytes() == data


def test_errors_name_the_file_and_a_full_disk_leaves_no_partial(server: FakeServer, src: Path) -> None:
    (src / "report.csv").write_bytes(b"x" * 1000)
    server.write_error = RemoteStorageFullError("127.0.0.1:21: transfer: 452 insufficient storage space")
    with pytest.raises(RemoteStorageFullError) as info:
        upload(server.connect, str(src / "report.csv"), "/in/")
    assert str(info.value).startswith("127.0.0.1:21: transfer: 452 insufficient storage space")
    assert "/in/report.csv" in str(info.value) and str(src / "report.csv") in str(info.value)
    assert info.value.retryable
    assert _parts(server) == []  # the space a retry needs is given back


def test_a_partial_larger_than_the_source_is_discarded(server: FakeServer, src: Path) -> None:
    (src / "a").write_bytes(b"short")
    (server.root / "in").mkdir()
    local = expand_local(str(src / "a"))[0][0]
    bogus = server.local(partial_name("/in/a", local))
    bogus.write_bytes(b"much longer than the source")
    (record,) = upload(server.connect, str(src / "a"), "/in/")
    assert record.resumed is False and record.bytes == 5
    assert (server.root / "in" / "a").read_bytes() == b"short"
    assert not bogus.exists()


def test_a_complete_partial_is_verified_and_renamed_without_resending(server: FakeServer, src: Path) -> None:
    (src / "a").write_bytes(b"complete")
    (server.root / "in").mkdir()
    local = expand_local(str(src / "a"))[0][0]
    server.local(partial_name("/in/a", local)).write_bytes(b"complete")
    (record,) = upload(server.connect, str(src / "a"), "/in/")
    assert record.resumed and record.bytes == 0 and record.sha256 == _sha(b"complete")
    assert server.writes == []


def test_a_changed_source_never_continues_an_old_partial(server: FakeServer, src: Path) -> None:
    path = src / "a"
    path.write_bytes(b"A" * 100_000)
    server.fail_after = 50_000
    with pytest.raises(TransportError):
        upload(server.connect, str(path), "/in/")
    path.write_bytes(b"B" * 100_000)
    os.utime(path, ns=(1, 1))
    server.fail_after = None
    (record,) = upload(server.connect, str(path), "/in/")
    assert record.resumed is False
    assert (server.root / "in" / "a").read_bytes() == b"B" * 100_000


def test_a_source_modified_during_upload_is_not_renamed(server: FakeServer, src: Path) -> None:
    path = src / "a"
    path.write_bytes(b"x" * 2_000_000)  # larger than a small file: streamed, not read at once

    def touch(remote: str, written: int, source: object) -> None:
        if written >= 65536:
            os.utime(path, ns=(5, 5))

    server.on_write = touch
    with pytest.raises(IntegrityError, match="changed while it was being uploaded"):
        upload(server.connect, str(path), "/in/")
    assert not (server.root / "in" / "a").exists()
    assert _parts(server) == []


def test_delete_source_only_after_a_verified_upload(server: FakeServer, src: Path) -> None:
    (src / "ok").write_bytes(b"ok")
    (upload_record,) = upload(server.connect, str(src / "ok"), "/in/", delete_source=True)
    assert not (src / "ok").exists()
    assert (server.root / "in" / "ok").read_bytes() == b"ok"
    assert upload_record.verified

    (src / "cut").write_bytes(b"z" * 200_000)
    server.fail_after = 1000
    with pytest.raises(TransportError):
        upload(server.connect, str(src / "cut"), "/in/", delete_source=True)
    assert (src / "cut").exists()


def test_delete_source_deletes_a_file_skipped_on_a_checksum_match(server: FakeServer, src: Path) -> None:
    server.checksum_algorithm = "sha256"
    (server.root / "in").mkdir()
    (server.root / "in" / "a").write_bytes(b"same")
    (src / "a").write_bytes(b"same")
    (record,) = upload(server.connect, str(src / "a"), "/in/", overwrite="skip_identical", delete_source=True)
    assert record.skipped and record.verified == "checksum" and record.source_deleted
    assert not (src / "a").exists()


def test_delete_source_keeps_a_file_skipped_on_size_and_mtime(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same size and time prove nothing about the bytes: the source stays (deleted before)."""
    _settled(src / "a", b"same")
    upload(server.connect, str(src / "a"), "/in/")
    with caplog.at_level(logging.INFO):
        (record,) = upload(server.connect, str(src / "a"), "/in/", overwrite="skip_identical", delete_source=True)
    assert record.skipped and record.verified == "size+mtime" and not record.source_deleted
    assert (src / "a").read_bytes() == b"same"
    assert "kept" in caplog.text and "size+mtime" in caplog.text


def test_many_files_reuse_a_few_connections(server: FakeServer, src: Path) -> None:
    for i in range(200):
        (src / f"f{i:03d}.txt").write_bytes(str(i).encode() * (i + 1))
    records = upload(server.connect, str(src), "/in", max_connections=4)
    assert len(records) == 200
    assert server.opened <= 4
    assert server.max_active <= 4
    assert server.active == 0 and server.closed == server.opened
    assert sum(server.files_per_conn.values()) == 200
    assert max(server.files_per_conn.values()) > 1
    assert len(list((server.root / "in").iterdir())) == 200


def test_fewer_connections_than_asked_when_the_server_limits_them(server: FakeServer, src: Path) -> None:
    server.max_sessions = 2
    for i in range(30):
        (src / f"f{i}").write_bytes(b"x" * 1000)
    records = upload(server.connect, str(src), "/in", max_connections=6)
    assert len(records) == 30 and server.max_active <= 2 and server.active == 0


def test_a_file_given_back_after_the_other_workers_finished_is_still_uploaded(server: FakeServer, src: Path) -> None:
    """Worker 2 cannot connect (session limit) only after worker 1 has emptied the queue and left."""
    for i in range(5):
        # Larger than a small file: each is sent as it is taken (a batch would let worker 1 take
        # all five before worker 2 starts, and then there is nothing to give back).
        (src / f"f{i}").write_bytes(b"x" * (1_100_000 + i))
    worker2_connecting = threading.Event()

    def before_connect(attempt: int) -> None:
        if attempt == 2:
            worker2_connecting.set()
            assert server.idle.wait(10), "worker 1 never finished"
            raise TransportError("421 too many sessions for this user")

    def on_write(remote: str, written: int, source: Any) -> None:
        assert worker2_connecting.wait(10), "worker 2 never tried to connect"

    server.before_connect = before_connect
    server.on_write = on_write
    records = upload(server.connect, str(src), "/in", max_connections=2)
    assert len(records) == 5 and len(list((server.root / "in").iterdir())) == 5
    assert server.attempts == 3 and server.opened == 2 and server.active == 0


def test_a_refused_first_connection_fails_once_and_sends_nothing(server: FakeServer, src: Path) -> None:
    server.connect_error = AuthenticationError("530 login incorrect")
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x")
    with pytest.raises(AuthenticationError):
        upload(server.connect, str(src), "/in", max_connections=4)
    assert server.opened == 0 and server.writes == []


def test_a_non_retryable_error_on_a_later_connection_stops_the_run(server: FakeServer, src: Path) -> None:
    server.connect_error = AuthenticationError("530 too many logins for this user")
    server.connect_error_after = 1
    # The first connection works only once a later one was tried: otherwise, on a busy machine, it can
    # send all 20 small files before the other workers look at the queue, and nothing is refused.
    later_tried = threading.Event()
    server.before_connect = lambda attempt: later_tried.set() if attempt >= 2 else None
    connect = server.connect

    def gated_connect() -> Any:
        fs = connect()
        if fs.conn_id == 1:
            for name in ("stat", "listdir", "makedirs", "write_from", "put_small", "put_small_many"):
                if hasattr(fs, name):
                    setattr(fs, name, _after(later_tried, getattr(fs, name)))
        return fs

    for i in range(20):
        (src / f"f{i:02d}").write_bytes(b"x" * 100)
    with pytest.raises(AuthenticationError):
        upload(gated_connect, str(src), "/in", max_connections=3)
    assert later_tried.is_set()
    assert server.active == 0


def _after(event: threading.Event, method: Callable[..., Any]) -> Callable[..., Any]:
    """*method*, called only once *event* is set (bounded: a test must not hang)."""

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert event.wait(60), "no later connection was tried"
        return method(*args, **kwargs)

    return gated


def test_a_non_retryable_error_stops_before_the_remaining_files(server: FakeServer, src: Path) -> None:
    (server.root / "in" / "c_is_a_dir").mkdir(parents=True)
    # Sizes order the queue (largest first): a, b, then the failing c, then d, e.
    for name, size in [("a", 500), ("b", 400), ("c_is_a_dir", 300), ("d", 200), ("e", 100)]:
        (src / name).write_bytes(b"x" * size)
    with pytest.raises(RemotePathError, match="is a directory"):
        upload(server.connect, str(src), "/in", max_connections=1)
    assert sorted(Path(t).name for _, t, _ in server.renames) == ["a", "b"]


def test_retryable_failures_do_not_stop_the_other_files(server: FakeServer, src: Path) -> None:
    (src / "big").write_bytes(b"x" * 2_000_000)  # not a small file: streamed on its own
    for i in range(5):
        (src / f"s{i}").write_bytes(b"y" * 100)
    server.fail_after = 1_500_000  # only "big" is long enough to be cut
    with pytest.raises(TransportError) as info:
        upload(server.connect, str(src), "/in", max_connections=1)
    assert sorted(Path(t).name for _, t, _ in server.renames) == [f"s{i}" for i in range(5)]
    assert not (server.root / "in" / "big").exists()
    assert len(_parts(server)) == 1
    assert isinstance(info.value, TransportError)


def test_every_error_is_logged_and_a_summary_is_printed(
    server: FakeServer, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * (10 + i))
    with caplog.at_level(logging.INFO, logger="airflow_secure_transfer"):
        upload(server.connect, str(src), "/in")
    summary = next(r.getMessage() for r in caplog.records if "upload summary" in r.getMessage())
    header, values = summary.splitlines()[1:]
    assert header.split() == ["files", "bytes", "sent", "seconds", "MB/s", "resumed", "skipped"]
    assert values.split()[0:2] == ["3", "33"]
    assert values.split()[-2:] == ["0", "0"]


def test_empty_directory_uploads_nothing_without_connecting(server: FakeServer, src: Path) -> None:
    assert upload(server.connect, str(src), "/in") == []
    assert server.opened == 0


def test_missing_local_source_fails_before_connecting(server: FakeServer, src: Path) -> None:
    with pytest.raises(LocalPathError):
        upload(server.connect, str(src / "nope"), "/in/")
    assert server.opened == 0


def test_interrupting_the_caller_stops_workers_and_closes_connections(server: FakeServer, src: Path) -> None:
    """An exception in the calling thread (Ctrl-C, an Airflow task timeout) ends the run and its workers."""
    for i in range(4):
        (src / f"f{i}").write_bytes(b"x" * 3_000_000)
    writing = threading.Event()

    def on_write(remote: str, written: int, source: Any) -> None:
        writing.set()
        # Hold every transfer until the engine cancels the run (the reader's stop flag).
        assert source._cancel.wait(10), "the engine never cancelled"

    server.on_write = on_write
    main = threading.get_ident()

    class InterruptedLog(logging.Logger):
        def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
            # The coordinating thread logs progress while it waits: interrupt it there.
            if threading.get_ident() == main and writing.is_set():
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upload(server.connect, str(src), "/in", max_connections=2, log=InterruptedLog("t"), progress_interval=0)
    assert server.active == 0 and server.closed == 2
    assert list((server.root / "in").glob("f*")) == []  # nothing half-sent was renamed
    assert len(_parts(server)) == 2  # one partial per worker, kept for a resume


def test_engine_imports_nothing_heavy() -> None:
    code = (
        "import sys, airflow_secure_transfer.transfer.engine\n"
        "bad = [m for m in ('airflow', 'paramiko', 'asyncssh', 'ftplib', 'ssl') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_delete_source_never_deletes_through_a_directory_symlink(
    server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A link planted in the outbox leads outside it: those files are uploaded and kept (deleted before)."""
    outside = tmp_path / "dags"
    (outside / "deep").mkdir(parents=True)
    (outside / "dag.py").write_bytes(b"precious")
    (outside / "deep" / "x.py").write_bytes(b"also precious")
    (tmp_path / "elsewhere.csv").write_bytes(b"a file link")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "mine.csv").write_bytes(b"to be moved")
    (outbox / "x").symlink_to(outside)
    (outbox / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    with caplog.at_level(logging.WARNING):
        records = {r.remote_path: r for r in upload(server.connect, str(outbox), "/in/", delete_source=True)}
    assert sorted(records) == ["/in/link.csv", "/in/mine.csv", "/in/x/dag.py", "/in/x/deep/x.py"]
    assert (server.root / "in" / "x" / "dag.py").read_bytes() == b"precious"  # uploaded...
    assert (outside / "dag.py").read_bytes() == b"precious"  # ...and kept
    assert (outside / "deep" / "x.py").exists() and (tmp_path / "elsewhere.csv").exists()
    assert (outbox / "link.csv").is_symlink()
    assert not (outbox / "mine.csv").exists() and records["/in/mine.csv"].source_deleted
    assert not records["/in/x/dag.py"].source_deleted
    assert caplog.text.count("outside the named source") == 3


def test_delete_source_through_a_symlinked_source_itself(server: FakeServer, tmp_path: Path) -> None:
    """The named source may itself be a link (``/data/outbox -> /mnt/outbox``): under its real path is fine."""
    real = tmp_path / "mnt" / "outbox"
    real.mkdir(parents=True)
    (real / "a.csv").write_bytes(b"a")
    (tmp_path / "outbox").symlink_to(real)
    (record,) = upload(server.connect, str(tmp_path / "outbox"), "/in/", delete_source=True)
    assert record.source_deleted and not (real / "a.csv").exists()


def test_delete_source_with_a_glob_keeps_what_a_link_leads_to(server: FakeServer, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "k.csv").write_bytes(b"k")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.csv").write_bytes(b"a")
    (tmp_path / "out" / "sub").symlink_to(outside)
    records = upload(server.connect, str(tmp_path / "out" / "**" / "*.csv"), "/in/", delete_source=True)
    assert sorted(r.remote_path for r in records) == ["/in/a.csv", "/in/sub/k.csv"]
    assert (outside / "k.csv").exists() and not (tmp_path / "out" / "a.csv").exists()
