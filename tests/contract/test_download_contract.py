"""The download contract: the same scenarios through the download engine on every server fixture.

``any_server`` runs each test against pyftpdlib (explicit, implicit), asyncssh, and, in the
interop tier, vsftpd (explicit, explicit capped at TLS 1.2, implicit) and OpenSSH sshd.
Files are planted in the server's directory (owned by the user it serves as), downloaded
into ``tmp_path``, and compared byte for byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import LocalPathError, RemotePathError
from airflow_secure_transfer.transfer.download import download, local_partial_name
from tests.servers import sha256_file

from ._support import AnyServer, CountingFactory, connect, has_checksum, remote

_HOUR_AGO = int(time.time()) - 3600


def _plant(server: AnyServer, rel: str, data: bytes, mtime: int = _HOUR_AGO) -> Path:
    """Write *data* at *rel* under the server's test directory, owned by the server's user, with *mtime*."""
    path = server.local_root / rel
    owner = server.local_root.stat()
    parent = path.parent
    made: list[Path] = []
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    for directory in made:
        os.chown(directory, owner.st_uid, owner.st_gid)
    path.write_bytes(data)
    os.chown(path, owner.st_uid, owner.st_gid)
    os.utime(path, (mtime, mtime))
    return path


def _partials(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.part"))


def test_single_file_to_a_named_target(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(777_777)
    _plant(any_server, "a.bin", data)
    target = tmp_path / "in" / "renamed.bin"
    (record,) = download(connect(any_server), remote(any_server, "a.bin"), str(target))
    assert target.read_bytes() == data
    assert record.local_path == str(target) and record.remote_path == remote(any_server, "a.bin")
    assert record.bytes == record.size == len(data) and record.verified == "size"
    assert not record.resumed and not record.skipped
    assert record.sha256 == sha256_file(target)
    assert int(target.stat().st_mtime) == _HOUR_AGO  # preserve_mtime
    assert _partials(tmp_path) == []


def test_file_into_a_directory(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "report.csv", b"a,b\n1,2\n")
    (r1,) = download(connect(any_server), remote(any_server, "report.csv"), str(tmp_path / "new") + "/")
    assert r1.local_path == str(tmp_path / "new" / "report.csv")
    (r2,) = download(connect(any_server), remote(any_server, "report.csv"), str(tmp_path / "new"))  # existing dir
    assert r2.local_path == r1.local_path
    assert (tmp_path / "new" / "report.csv").read_bytes() == b"a,b\n1,2\n"


def test_glob(any_server: AnyServer, tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv", "c.txt"):
        _plant(any_server, f"out/{name}", name.encode())
    records = download(connect(any_server), remote(any_server, "out", "*.csv"), str(tmp_path / "in"))
    assert sorted(Path(r.local_path).name for r in records) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.csv", "b.csv"]


def test_recursive_glob_and_a_list(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "g/x/1.csv", b"1")
    _plant(any_server, "g/x/y/2.csv", b"2")
    _plant(any_server, "g/x/y/3.txt", b"3")
    _plant(any_server, "h.bin", b"h")
    records = download(
        connect(any_server), [remote(any_server, "g", "**", "*.csv"), remote(any_server, "h.bin")], str(tmp_path)
    )
    assert sorted(os.path.relpath(r.local_path, tmp_path) for r in records) == ["h.bin", "x/1.csv", "x/y/2.csv"]


def test_tree_with_subdirectories(any_server: AnyServer, tmp_path: Path) -> None:
    files = {
        "top.txt": os.urandom(10),
        "a/one.bin": os.urandom(300_000),
        "a/b/two.bin": os.urandom(5),
        "a/b/c/three.bin": os.urandom(2_000_000),
        "d/four.bin": os.urandom(1000),
    }
    for rel, data in files.items():
        _plant(any_server, f"tree/{rel}", data)
    factory = connect(any_server)
    records = download(factory, remote(any_server, "tree"), str(tmp_path / "dest"), max_connections=3)
    assert len(records) == len(files)
    for rel, data in files.items():
        assert (tmp_path / "dest" / rel).read_bytes() == data
    assert isinstance(factory, CountingFactory) and factory.max_open <= 3 and factory.open_now == 0
    assert _partials(tmp_path) == []


def test_empty_file_and_empty_directory(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "e/empty", b"")
    (record,) = download(connect(any_server), remote(any_server, "e"), str(tmp_path / "d"))
    landed = tmp_path / "d" / "empty"
    assert landed.is_file() and landed.stat().st_size == 0 and record.verified == "size"
    (any_server.local_root / "nothing").mkdir()
    assert download(connect(any_server), remote(any_server, "nothing"), str(tmp_path / "n")) == []


def test_unicode_names(any_server: AnyServer, tmp_path: Path) -> None:
    names = ["données été.csv", "数据.txt", "Ωmega ~ tilde.bin", "emoji 🚀.txt"]
    for name in names:
        _plant(any_server, f"ü/{name}", name.encode())
    records = download(connect(any_server), remote(any_server, "ü"), str(tmp_path / "u"))
    assert sorted(Path(r.local_path).name for r in records) == sorted(names)
    for name in names:
        assert (tmp_path / "u" / name).read_bytes() == name.encode()


@pytest.mark.slow
def test_a_thousand_small_files_share_a_few_connections(any_server: AnyServer, tmp_path: Path) -> None:
    for i in range(1000):
        _plant(any_server, f"many/f{i:04d}.txt", f"file {i}\n".encode() * (i % 7 + 1))
    factory = connect(any_server)
    started = time.monotonic()
    records = download(factory, remote(any_server, "many"), str(tmp_path / "many"), max_connections=4)
    seconds = time.monotonic() - started
    assert len(records) == 1000
    assert isinstance(factory, CountingFactory) and factory.opened <= 4 and factory.open_now == 0
    landed = sorted((tmp_path / "many").iterdir())
    assert len(landed) == 1000
    assert all(p.read_bytes() == (any_server.local_root / "many" / p.name).read_bytes() for p in landed)
    print(f"\n{any_server.name}: 1000 files down in {seconds:.1f} s ({1000 / seconds:.0f} files/s)")


def test_overwrite_fail_refuses_before_any_byte(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "x.bin", os.urandom(50_000))
    existing = tmp_path / "x.bin"
    existing.write_bytes(b"old")
    with pytest.raises(LocalPathError, match="exists and overwrite='fail'") as info:
        download(connect(any_server), remote(any_server, "x.bin"), str(tmp_path) + "/", overwrite="fail")
    assert info.value.retryable is False
    assert existing.read_bytes() == b"old"
    assert _partials(tmp_path) == []


def test_overwrite_replace(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(4096)
    _plant(any_server, "r.bin", data)
    (tmp_path / "r.bin").write_bytes(b"old content")
    (record,) = download(connect(any_server), remote(any_server, "r.bin"), str(tmp_path / "r.bin"))
    assert (tmp_path / "r.bin").read_bytes() == data and not record.skipped


def test_skip_identical_skips_only_on_evidence(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "s/same.bin", b"S" * 700)
    _plant(any_server, "s/other.bin", b"A" * 700)
    first = download(connect(any_server), remote(any_server, "s"), str(tmp_path / "s"))
    assert not any(r.skipped for r in first)
    # Same size, other content, and the local time is not the remote one: never a skip.
    other = tmp_path / "s" / "other.bin"
    other.write_bytes(b"B" * 700)
    records = {
        Path(r.local_path).name: r
        for r in download(connect(any_server), remote(any_server, "s"), str(tmp_path / "s"), overwrite="skip_identical")
    }
    assert records["same.bin"].skipped
    assert records["same.bin"].verified == ("checksum" if has_checksum(any_server) else "size+mtime")
    assert not records["other.bin"].skipped and other.read_bytes() == b"A" * 700


def test_skip_identical_on_size_and_time_trusts_a_time_equal_to_the_remote_one(
    any_server: AnyServer, tmp_path: Path
) -> None:
    """The limit of size+mtime evidence, pinned: with a server checksum the content decides; without one, a
    local file of the same size whose mtime someone set to the remote one is taken for our earlier download
    (the same limit as the upload side's: a time anyone can set; documented in README)."""
    _plant(any_server, "t.bin", b"R" * 500)
    local = tmp_path / "t.bin"
    local.write_bytes(b"L" * 500)
    os.utime(local, (_HOUR_AGO, _HOUR_AGO))
    (record,) = download(connect(any_server), remote(any_server, "t.bin"), str(local), overwrite="skip_identical")
    if has_checksum(any_server):
        assert not record.skipped and local.read_bytes() == b"R" * 500
    else:
        # size+mtime: the local copy was made (ctime: now) long after the remote's last change (an hour ago),
        # which is exactly what an earlier download leaves; documented as the evidence this mode trusts.
        assert record.skipped and record.verified == "size+mtime"


def test_delete_source(any_server: AnyServer, tmp_path: Path) -> None:
    planted = [_plant(any_server, f"mv/{i}.dat", os.urandom(1000 + i)) for i in range(5)]
    contents = {p.name: p.read_bytes() for p in planted}
    records = download(connect(any_server), remote(any_server, "mv"), str(tmp_path / "mv"), delete_source=True)
    assert all(r.source_deleted for r in records) and len(records) == 5
    assert not any(p.exists() for p in planted)
    for name, data in contents.items():
        assert (tmp_path / "mv" / name).read_bytes() == data


def test_remote_archive_dir(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "ar/sub/a.csv", b"a")
    _plant(any_server, "ar/b.csv", b"b")
    archive = remote(any_server, "archive")
    records = download(connect(any_server), remote(any_server, "ar"), str(tmp_path / "ar"), remote_archive_dir=archive)
    assert {r.archived_to for r in records} == {f"{archive}/sub/a.csv", f"{archive}/b.csv"}
    assert (any_server.local_root / "archive" / "sub" / "a.csv").read_bytes() == b"a"
    assert not (any_server.local_root / "ar" / "b.csv").exists()
    assert (tmp_path / "ar" / "sub" / "a.csv").read_bytes() == b"a"
    assert all(r.as_dict()["archived_to"] == r.archived_to for r in records)


def test_verify_checksum(any_server: AnyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(1_234_567)
    _plant(any_server, "c.bin", data)
    with caplog.at_level(logging.INFO):
        (record,) = download(
            connect(any_server), remote(any_server, "c.bin"), str(tmp_path / "c.bin"), verify="checksum"
        )
    assert record.verified == "checksum" and (tmp_path / "c.bin").read_bytes() == data
    assert ("using the server's" if has_checksum(any_server) else "read a second time") in caplog.text


def test_resume_continues_a_partial_left_by_an_earlier_try(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    _plant(any_server, "big.bin", data)
    target = tmp_path / "big.bin"
    part = local_partial_name(str(target), remote(any_server, "big.bin"), len(data), _HOUR_AGO)
    assert part is not None
    Path(part).write_bytes(data[:1_111_111])
    (record,) = download(connect(any_server), remote(any_server, "big.bin"), str(target), verify="checksum")
    assert record.resumed and record.bytes == len(data) - 1_111_111
    assert target.read_bytes() == data and record.sha256 == sha256_file(target)
    assert not Path(part).exists()


def test_a_partial_of_another_version_is_never_continued(any_server: AnyServer, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    _plant(any_server, "v.bin", data)
    target = tmp_path / "v.bin"
    stale = local_partial_name(str(target), remote(any_server, "v.bin"), len(data), _HOUR_AGO - 60)  # older version
    assert stale is not None
    Path(stale).write_bytes(os.urandom(50_000))
    (record,) = download(connect(any_server), remote(any_server, "v.bin"), str(target))
    assert not record.resumed and record.bytes == len(data) and target.read_bytes() == data


def test_missing_remote_file(any_server: AnyServer, tmp_path: Path) -> None:
    with pytest.raises(RemotePathError, match="does not exist"):
        download(connect(any_server), remote(any_server, "nope.bin"), str(tmp_path / "nope.bin"))
    assert list(tmp_path.iterdir()) == []


def test_create_dirs_false_needs_an_existing_directory(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "f", b"x")
    with pytest.raises(LocalPathError, match="does not exist"):
        download(connect(any_server), remote(any_server, "f"), str(tmp_path / "missing" / "f"), create_dirs=False)
    assert not (tmp_path / "missing").exists()


def test_remote_root_confines_every_path(any_server: AnyServer, tmp_path: Path) -> None:
    _plant(any_server, "inside/f", b"x")
    root = any_server.writable_dir
    factory = connect(any_server, remote_root=root)
    (record,) = download(factory, "inside/f", str(tmp_path / "f"), remote_root=root)
    assert record.remote_path == remote(any_server, "inside", "f")
    with pytest.raises(RemotePathError, match="outside remote_root"):
        download(factory, "../escape/f", str(tmp_path / "g"), remote_root=root)


def test_small_file_batch_interrupted_between_write_and_landing_leaves_nothing_open(
    asyncssh_server: AnyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch writes every partial before landing any; an interrupt in between leaves none open or behind."""
    from airflow_secure_transfer.transfer import download as download_module

    for i in range(5):
        _plant(asyncssh_server, f"batch/f{i}.bin", os.urandom(1000 + i))
    landed: list[str] = []
    original = download_module._FileDownload.land_small

    def land_then_interrupt(self: download_module._FileDownload, *args: object) -> object:
        if landed:
            raise KeyboardInterrupt
        landed.append(self.item.local)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(download_module._FileDownload, "land_small", land_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        download(connect(asyncssh_server), remote(asyncssh_server, "batch"), str(tmp_path / "in"), max_connections=1)
    open_files = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert not [f for f in open_files if str(tmp_path) in f]  # no partial left open
    assert _partials(tmp_path) == []
    (first,) = landed
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [os.path.basename(first)]
    assert int(Path(first).stat().st_mtime) == _HOUR_AGO  # set through the open partial before its fsync
