"""The upload contract: the same scenarios through the engine on every server fixture.

``any_server`` runs each test against pyftpdlib (explicit, implicit), asyncssh,
and, in the interop tier, vsftpd (explicit, explicit capped at TLS 1.2, implicit)
and OpenSSH sshd. The client trusts exactly that server's CA or host key.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import RemotePathError
from airflow_secure_transfer.transfer.engine import partial_name, upload
from airflow_secure_transfer.transfer.local import expand_local
from tests.servers import FTPSServer, SFTPServer, sha256_file

from ._support import AnyServer, CountingFactory, connect, has_checksum, leftovers, remote, settings_for


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _as_server_user(server: AnyServer, path: Path) -> None:
    """Give a file planted by the test to the user the server writes as (vsftpd/sshd run as a test user)."""
    st = server.local_root.stat()
    os.chown(path, st.st_uid, st.st_gid)


def test_single_file_to_a_named_target(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(777_777)
    src = _write(tmp_path / "a.bin", data)
    (record,) = upload(connect(any_server), str(src), remote(any_server, "renamed.bin"))
    landed = any_server.local_root / "renamed.bin"
    assert landed.read_bytes() == data
    assert record.remote_path == remote(any_server, "renamed.bin")
    assert record.bytes == len(data) and record.verified and not record.resumed and not record.skipped
    assert record.sha256 == sha256_file(src)
    assert leftovers(any_server.local_root) == []


def test_file_into_a_directory(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "report.csv", b"a,b\n1,2\n")
    (r1,) = upload(connect(any_server), str(src), remote(any_server, "new", ""))  # trailing "/": a directory
    assert r1.remote_path == remote(any_server, "new", "report.csv")
    (r2,) = upload(connect(any_server), str(src), remote(any_server, "new"))  # an existing directory
    assert r2.remote_path == r1.remote_path
    assert (any_server.local_root / "new" / "report.csv").read_bytes() == b"a,b\n1,2\n"


def test_glob(any_server: AnyServer, tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv", "c.txt"):
        _write(tmp_path / "out" / name, name.encode())
    records = upload(connect(any_server), str(tmp_path / "out" / "*.csv"), remote(any_server, "in"))
    assert sorted(Path(r.remote_path).name for r in records) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in (any_server.local_root / "in").iterdir()) == ["a.csv", "b.csv"]


def test_tree_with_subdirectories(any_server: AnyServer, tmp_path: Path) -> None:
    files = {
        "top.txt": os.urandom(10),
        "a/one.bin": os.urandom(300_000),
        "a/b/two.bin": os.urandom(5),
        "a/b/c/three.bin": os.urandom(2_000_000),
        "d/four.bin": os.urandom(1000),
    }
    for rel, data in files.items():
        _write(tmp_path / "tree" / rel, data)
    factory = connect(any_server)
    records = upload(factory, str(tmp_path / "tree"), remote(any_server, "dest"), max_connections=3)
    assert len(records) == len(files)
    for rel, data in files.items():
        assert (any_server.local_root / "dest" / rel).read_bytes() == data
    assert isinstance(factory, CountingFactory) and factory.max_open <= 3 and factory.open_now == 0
    assert leftovers(any_server.local_root) == []


def test_empty_file(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "empty", b"")
    (record,) = upload(connect(any_server), str(src), remote(any_server, "empty"))
    landed = any_server.local_root / "empty"
    assert landed.is_file() and landed.stat().st_size == 0
    assert record.bytes == 0 and record.verified


def test_unicode_names(any_server: AnyServer, tmp_path: Path) -> None:
    names = ["données été.csv", "数据.txt", "Ωmega ~ tilde.bin", "emoji 🚀.txt"]
    for name in names:
        _write(tmp_path / "u" / name, name.encode())
    records = upload(connect(any_server), str(tmp_path / "u"), remote(any_server, "ü"))
    assert sorted(Path(r.remote_path).name for r in records) == sorted(names)
    for name in names:
        assert (any_server.local_root / "ü" / name).read_bytes() == name.encode()


@pytest.mark.slow
def test_a_thousand_small_files_share_a_few_connections(any_server: AnyServer, tmp_path: Path) -> None:
    src = tmp_path / "many"
    src.mkdir()
    for i in range(1000):
        (src / f"f{i:04d}.txt").write_bytes(f"file {i}\n".encode() * (i % 7 + 1))
    factory = connect(any_server)
    started = time.monotonic()
    records = upload(factory, str(src), remote(any_server, "many"), max_connections=4)
    seconds = time.monotonic() - started
    assert len(records) == 1000
    assert isinstance(factory, CountingFactory) and factory.opened <= 4 and factory.open_now == 0
    landed = sorted((any_server.local_root / "many").iterdir())
    assert len(landed) == 1000
    assert all(p.read_bytes() == (src / p.name).read_bytes() for p in landed)
    print(
        f"\n{any_server.name}: 1000 files in {seconds:.1f} s ({1000 / seconds:.0f} files/s), "
        f"{factory.opened} connections"
    )


def test_overwrite_fail_refuses_before_any_byte(any_server: AnyServer, tmp_path: Path) -> None:
    existing = _write(any_server.local_root / "x.bin", b"old")
    _as_server_user(any_server, existing)
    src = _write(tmp_path / "x.bin", os.urandom(50_000))
    with pytest.raises(RemotePathError, match="exists and overwrite='fail'") as info:
        upload(connect(any_server), str(src), remote(any_server, ""), overwrite="fail")
    assert info.value.retryable is False
    assert existing.read_bytes() == b"old"
    assert leftovers(any_server.local_root) == []  # not even a temporary file was started


_HOUR_AGO = int(time.time()) - 3600


def _settled(path: Path, data: bytes, mtime: int = _HOUR_AGO) -> Path:
    """Write *data* with a modification time an hour ago (a file no longer being written)."""
    _write(path, data)
    os.utime(path, (mtime, mtime))
    return path


def test_overwrite_skip_identical(any_server: AnyServer, tmp_path: Path) -> None:
    same = os.urandom(4096)
    _settled(tmp_path / "s" / "same.bin", same)
    _write(tmp_path / "s" / "other.bin", b"longer content")
    upload(connect(any_server), str(tmp_path / "s" / "same.bin"), remote(any_server, ""))
    _as_server_user(any_server, _write(any_server.local_root / "other.bin", b"short"))
    records = {
        Path(r.remote_path).name: r
        for r in upload(connect(any_server), str(tmp_path / "s"), remote(any_server), overwrite="skip_identical")
    }
    assert records["same.bin"].skipped and records["same.bin"].bytes == 0 and records["same.bin"].size == 4096
    assert records["same.bin"].verified == ("checksum" if has_checksum(any_server) else "size+mtime")
    assert records["same.bin"].sha256 == sha256_file(tmp_path / "s" / "same.bin")
    assert not records["other.bin"].skipped and records["other.bin"].bytes == records["other.bin"].size == 14
    assert (any_server.local_root / "other.bin").read_bytes() == b"longer content"


@pytest.mark.parametrize("planted", ["now", "an hour ago", "yesterday"])
def test_skip_identical_never_skips_same_size_other_content(
    any_server: AnyServer, tmp_path: Path, planted: str
) -> None:
    """Same size, other bytes: never skipped, whatever the times (skipped on size alone before)."""
    now = int(time.time())
    when = {"now": now, "an hour ago": _HOUR_AGO, "yesterday": _HOUR_AGO - 86400}[planted]
    target = any_server.local_root / "f.bin"
    _as_server_user(any_server, _settled(target, b"AAAA" * 1000, when))
    # Written in the same second as the server's copy, or an hour before it / a day after it.
    src = _settled(tmp_path / "f.bin", b"BBBB" * 1000, now if planted == "now" else _HOUR_AGO - 3600)
    (record,) = upload(connect(any_server), str(src), remote(any_server, ""), overwrite="skip_identical")
    assert not record.skipped and record.bytes == 4000
    assert target.read_bytes() == b"BBBB" * 1000


def test_skip_identical_second_run_skips_every_file_without_writing(any_server: AnyServer, tmp_path: Path) -> None:
    files = {f"f{i:02d}.bin": os.urandom(100 * i + 1) for i in range(10)} | {"big.bin": os.urandom(2_500_000)}
    for name, data in files.items():
        _settled(tmp_path / "tree" / name, data)
    _settled(tmp_path / "tree" / "sub" / "one.bin", b"one")
    first = upload(connect(any_server), str(tmp_path / "tree"), remote(any_server, "t"), overwrite="skip_identical")
    assert not any(r.skipped for r in first)
    landed = sorted(p for p in (any_server.local_root / "t").rglob("*") if p.is_file())
    assert all(int(p.stat().st_mtime) == _HOUR_AGO for p in landed)  # preserve_mtime, on every server
    before = {p: p.stat().st_ctime_ns for p in landed}
    second = upload(connect(any_server), str(tmp_path / "tree"), remote(any_server, "t"), overwrite="skip_identical")
    assert len(second) == len(files) + 1
    expected = "checksum" if has_checksum(any_server) else "size+mtime"
    assert all(r.skipped and r.bytes == 0 and r.verified == expected for r in second)
    assert {p: p.stat().st_ctime_ns for p in landed} == before  # not one byte or attribute written
    assert leftovers(any_server.local_root) == []


def test_preserve_mtime_off_keeps_the_servers_time(any_server: AnyServer, tmp_path: Path) -> None:
    src = _settled(tmp_path / "m.bin", b"m" * 10)
    upload(connect(any_server), str(src), remote(any_server, ""), preserve_mtime=False)
    assert int((any_server.local_root / "m.bin").stat().st_mtime) > _HOUR_AGO + 60
    (record,) = upload(connect(any_server), str(src), remote(any_server, ""), overwrite="skip_identical")
    assert record.skipped == has_checksum(any_server)  # no time of ours to go by: only a checksum skips


def test_overwrite_replace(any_server: AnyServer, tmp_path: Path) -> None:
    _as_server_user(any_server, _write(any_server.local_root / "r.bin", b"old old old"))
    src = _write(tmp_path / "r.bin", b"new")
    (record,) = upload(connect(any_server), str(src), remote(any_server, "r.bin"), overwrite="replace")
    assert not record.skipped and (any_server.local_root / "r.bin").read_bytes() == b"new"


def test_delete_source(any_server: AnyServer, tmp_path: Path) -> None:
    for i in range(5):
        _write(tmp_path / "mv" / f"{i}.dat", os.urandom(1000 + i))
    digests = {p.name: sha256_file(p) for p in (tmp_path / "mv").iterdir()}
    records = upload(connect(any_server), str(tmp_path / "mv"), remote(any_server, "moved"), delete_source=True)
    assert len(records) == 5
    assert list((tmp_path / "mv").iterdir()) == []
    assert {p.name: sha256_file(p) for p in (any_server.local_root / "moved").iterdir()} == digests


def test_delete_source_only_for_bytes_proven_on_the_server(any_server: AnyServer, tmp_path: Path) -> None:
    """skip_identical + delete_source: same size, other bytes -> uploaded, then deleted (deleted unsent before);
    same size and time -> skipped and kept, unless a checksum proved the bytes."""
    _as_server_user(any_server, _settled(any_server.local_root / "other.bin", b"A" * 500, _HOUR_AGO - 86400))
    other = _settled(tmp_path / "mv" / "other.bin", b"B" * 500)
    same = _settled(tmp_path / "mv" / "same.bin", b"S" * 700)
    upload(connect(any_server), str(same), remote(any_server, ""))
    records = {
        Path(r.local_path).name: r
        for r in upload(
            connect(any_server),
            str(tmp_path / "mv"),
            remote(any_server),
            overwrite="skip_identical",
            delete_source=True,
        )
    }
    assert not records["other.bin"].skipped and records["other.bin"].source_deleted and not other.exists()
    assert (any_server.local_root / "other.bin").read_bytes() == b"B" * 500
    assert records["same.bin"].skipped
    if has_checksum(any_server):
        assert records["same.bin"].verified == "checksum" and not same.exists()
    else:
        assert records["same.bin"].verified == "size+mtime" and not records["same.bin"].source_deleted
        assert same.read_bytes() == b"S" * 700


def test_verify_checksum(any_server: AnyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every server: its own digest where offered, else a read-back (a ConfigurationError before)."""
    src = _write(tmp_path / "c.bin", os.urandom(1_234_567))
    with caplog.at_level(logging.INFO):
        (record,) = upload(connect(any_server), str(src), remote(any_server, "c.bin"), verify="checksum")
    assert record.verified == "checksum" and (any_server.local_root / "c.bin").read_bytes() == src.read_bytes()
    assert ("using the server's" if has_checksum(any_server) else "read back") in caplog.text
    assert leftovers(any_server.local_root) == []


def test_resume_continues_a_partial_left_by_an_earlier_try(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    src = _write(tmp_path / "big.bin", data)
    target = remote(any_server, "big.bin")
    (local,) = expand_local(str(src))[0]
    part = any_server.local_path(partial_name(target, local))
    _as_server_user(any_server, _write(part, data[:1_111_111]))
    verify = "checksum" if has_checksum(any_server) else "size"
    (record,) = upload(connect(any_server), str(src), target, verify=verify)
    assert record.resumed and record.bytes == len(data) - 1_111_111
    assert record.sha256 == sha256_file(src)
    assert (any_server.local_root / "big.bin").read_bytes() == data
    assert not part.exists()


def test_a_partial_that_cannot_be_continued_is_replaced(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "f.bin", os.urandom(1000))
    target = remote(any_server, "f.bin")
    (local,) = expand_local(str(src))[0]
    part = any_server.local_path(partial_name(target, local))
    _as_server_user(any_server, _write(part, os.urandom(5000)))  # larger than the source: not ours
    (record,) = upload(connect(any_server), str(src), target)
    assert not record.resumed and record.bytes == 1000
    assert (any_server.local_root / "f.bin").read_bytes() == src.read_bytes()


def test_create_dirs_false_needs_an_existing_directory(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "f", b"x")
    with pytest.raises(RemotePathError):
        upload(connect(any_server), str(src), remote(any_server, "missing", "f"), create_dirs=False)
    assert not (any_server.local_root / "missing").exists()


def test_remote_root_confines_every_path(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "f", b"x")
    root = any_server.writable_dir
    factory = connect(any_server, remote_root=root)
    (record,) = upload(factory, str(src), "inside/f", remote_root=root)
    assert record.remote_path == remote(any_server, "inside", "f")
    with pytest.raises(RemotePathError, match="outside remote_root"):
        upload(factory, str(src), "../escape/f", remote_root=root)
    assert isinstance(factory, CountingFactory) and factory.opened == 1  # refused before connecting


def test_relative_paths_start_at_the_login_directory(any_server: AnyServer, tmp_path: Path) -> None:
    src = _write(tmp_path / "rel.txt", b"relative")
    client = connect(any_server)()
    try:
        home = getattr(client, "home", "/")
    finally:
        client.close()
    if not any_server.writable_dir.startswith(home.rstrip("/") + "/"):
        pytest.skip(f"{any_server.name}: the test directory is not under the login directory {home}")
    relative = any_server.writable_dir[len(home.rstrip("/")) + 1 :] + "/rel.txt"
    (record,) = upload(connect(any_server), str(src), relative)
    assert record.remote_path == remote(any_server, "rel.txt")
    assert (any_server.local_root / "rel.txt").read_bytes() == b"relative"


def test_kinds_covered(any_server: AnyServer) -> None:
    """The suite runs on both protocols (guards against a fixture list that silently shrank)."""
    assert isinstance(any_server, (FTPSServer, SFTPServer))
    assert settings_for(any_server).host == any_server.host
