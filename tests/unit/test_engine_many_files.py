"""Many small files into one directory: one listing instead of two stats per file, and ``put_small``.

The listing and the fused small-file upload are optimisations; these tests pin down that they
never skip a check that protects data (see the engine's module docstring).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

import pytest
from engine_fakes import FakeServer, PutSmallManyFS

from airflow_secure_transfer.exceptions import IntegrityError, RemotePathError, TransportError
from airflow_secure_transfer.transfer import engine
from airflow_secure_transfer.transfer.engine import partial_name, upload
from airflow_secure_transfer.transfer.local import expand_local

N = 20


@pytest.fixture(params=["put_small", "put_small_many"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> FakeServer:
    root = tmp_path / "remote"
    root.mkdir()
    (root / "in").mkdir()
    return FakeServer(root, put_small=True, put_small_many=request.param == "put_small_many")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    for i in range(N):
        (d / f"f{i:02d}").write_bytes(f"file {i}\n".encode() * (i + 1))
    return d


def _parts(server: FakeServer) -> list[Path]:
    return sorted(server.root.rglob("*.part"))


def _landed(server: FakeServer, src: Path) -> None:
    for f in src.iterdir():
        assert (server.root / "in" / f.name).read_bytes() == f.read_bytes()
    assert _parts(server) == []


@pytest.mark.parametrize("connections", [1, 4])
def test_one_listing_and_one_put_small_per_file_no_stat(server: FakeServer, src: Path, connections: int) -> None:
    records = upload(server.connect, str(src), "/in/", max_connections=connections)
    _landed(server, src)
    assert server.listings == ["/in"]  # one listing for the directory, shared by every connection
    assert server.stats == []  # neither the targets nor the partials were stat'ed one by one
    assert sorted(t for _, t, _ in server.put_smalls) == sorted(f"/in/{f.name}" for f in src.iterdir())
    for r in records:
        data = Path(r.local_path).read_bytes()
        assert (r.bytes, r.sha256, r.verified, r.resumed) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            "size",
            False,
        )


def test_few_files_are_stated_not_listed(server: FakeServer, src: Path) -> None:
    few = sorted(src.iterdir())[: engine._LIST_MIN_FILES - 1]
    upload(server.connect, [str(f) for f in few], "/in/")
    assert server.listings == []
    assert len(server.stats) == 2 * len(few)  # target + partial, each file


def test_overwrite_fail_stats_what_the_listing_does_not_show(server: FakeServer, src: Path) -> None:
    """A listing that misses an existing file must not lead to replacing it."""
    (server.root / "in" / "f03").write_bytes(b"precious")
    server.hide_from_listing = {"f03"}
    with pytest.raises(RemotePathError, match="exists and overwrite='fail'"):
        upload(server.connect, str(src), "/in/", overwrite="fail", max_connections=1)
    assert (server.root / "in" / "f03").read_bytes() == b"precious"
    assert "/in/f03" in server.stats


def test_overwrite_fail_trusts_a_listed_file_without_a_stat(server: FakeServer, src: Path) -> None:
    (server.root / "in" / "f05").write_bytes(b"there")
    with pytest.raises(RemotePathError, match="exists and overwrite='fail'"):
        upload(server.connect, str(src), "/in/", overwrite="fail", max_connections=1)
    assert "/in/f05" not in server.stats
    assert (server.root / "in" / "f05").read_bytes() == b"there"


def test_a_listed_directory_in_the_way_is_a_clear_error(server: FakeServer, src: Path) -> None:
    (server.root / "in" / "f07").mkdir()
    with pytest.raises(RemotePathError, match="is a directory"):
        upload(server.connect, str(src), "/in/", max_connections=1)
    assert (server.root / "in" / "f07").is_dir()


def test_skip_identical_uses_the_listed_size_and_time(server: FakeServer, src: Path) -> None:
    (server.root / "in" / "f02").write_bytes((src / "f02").read_bytes())
    for path in (server.root / "in" / "f02", *src.iterdir()):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    records = upload(server.connect, str(src), "/in/", overwrite="skip_identical", max_connections=1)
    skipped = [r.remote_path for r in records if r.skipped]
    assert skipped == ["/in/f02"]
    assert "/in/f02" not in [t for _, t, _ in server.put_smalls]
    _landed(server, src)


def test_a_listed_partial_is_stated_again_and_resumed(server: FakeServer, src: Path) -> None:
    big = src / "big"
    data = os.urandom(3 * 1024 * 1024)  # not a small file: streamed, resumable
    big.write_bytes(data)
    local = next(f for f in expand_local(str(big))[0])
    part = server.local(partial_name("/in/big", local))
    part.write_bytes(data[:1_000_000])
    records = upload(server.connect, str(src), "/in/", max_connections=1)
    (rec,) = [r for r in records if r.remote_path == "/in/big"]
    assert rec.resumed and rec.bytes == len(data) - 1_000_000
    assert (server.root / "in" / "big").read_bytes() == data
    # The partial was in the listing, and was stat'ed for its current size before the resume
    # (and once more after it, the size check of a streamed file).
    assert server.stats == [partial_name("/in/big", local)] * 2


def test_a_partial_missing_from_the_listing_is_sent_again_from_byte_zero(server: FakeServer, src: Path) -> None:
    big = src / "big"
    data = os.urandom(3 * 1024 * 1024)
    big.write_bytes(data)
    local = next(f for f in expand_local(str(big))[0])
    part_path = partial_name("/in/big", local)
    server.local(part_path).write_bytes(b"stale bytes that must not be kept")
    server.hide_from_listing = {posixpath.basename(part_path)}
    records = upload(server.connect, str(src), "/in/", max_connections=1)
    (rec,) = [r for r in records if r.remote_path == "/in/big"]
    assert not rec.resumed and rec.bytes == len(data)
    assert (server.root / "in" / "big").read_bytes() == data


def test_an_unlistable_directory_falls_back_to_stats(server: FakeServer, src: Path) -> None:
    server.hide_from_listing = {"*"}  # listdir: 550 permission denied (a write-only drop box)
    upload(server.connect, str(src), "/in/", max_connections=2)
    _landed(server, src)
    assert len(server.stats) == 2 * N


def test_a_short_small_upload_is_retryable_and_renames_nothing(server: FakeServer, src: Path) -> None:
    server.truncate_after = 3
    with pytest.raises(IntegrityError, match="after the upload") as info:
        upload(server.connect, str(src), "/in/", max_connections=1)
    assert info.value.retryable
    assert [p.name for p in (server.root / "in").iterdir() if not p.name.endswith(".part")] == []
    server.truncate_after = None
    upload(server.connect, str(src), "/in/", max_connections=1)
    _landed(server, src)


def test_a_cut_during_put_small_fails_the_file_and_a_retry_lands_it(server: FakeServer, src: Path) -> None:
    server.fail_after = 5  # the smallest file has 7 bytes: every file is cut
    with pytest.raises(TransportError):
        upload(server.connect, str(src), "/in/", max_connections=1)
    assert [p.name for p in (server.root / "in").iterdir() if not p.name.endswith(".part")] == []
    server.fail_after = None
    upload(server.connect, str(src), "/in/", max_connections=1)
    _landed(server, src)


def test_verify_checksum_does_not_use_put_small(server: FakeServer, src: Path) -> None:
    server.checksum_algorithm = "sha256"
    upload(server.connect, str(src), "/in/", verify="checksum", max_connections=1)
    assert server.put_smalls == []
    _landed(server, src)


def test_a_small_source_changed_while_read_is_not_sent(
    server: FakeServer, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = os.stat

    def stat_after_a_write(path: object, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)  # type: ignore[arg-type]
        if str(path).endswith("f04"):
            return os.stat_result((*st[:8], st.st_mtime + 1, st.st_ctime))
        return st

    monkeypatch.setattr(engine.os, "stat", stat_after_a_write)
    with pytest.raises(IntegrityError, match="changed while it was being read; nothing was sent"):
        upload(server.connect, str(src / "f04"), "/in/f04")
    assert server.writes == [] and server.put_smalls == []


@pytest.fixture
def batching(tmp_path: Path) -> FakeServer:
    root = tmp_path / "remote"
    (root / "in").mkdir(parents=True)
    return FakeServer(root, put_small=True, put_small_many=True)


def test_small_files_go_in_batches_of_16_files_or_4_mib(batching: FakeServer, tmp_path: Path) -> None:
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        (src / f"s{i:02d}").write_bytes(b"s" * 100)
    for i in range(6):
        (src / f"m{i}").write_bytes(b"m" * 1_000_000)  # 1 MB each: four fill a batch by bytes
    upload(batching.connect, str(src), "/in/", max_connections=1)
    # Largest first: the fifth 1 MB file makes the first batch reach 4 MiB; then 16, 16 and the rest.
    assert batching.batches == [5, 16, 16, 9]
    assert sum(batching.batches) == 46 and batching.put_smalls and len(batching.put_smalls) == 46
    _landed(batching, src)


def test_one_file_failing_in_a_batch_does_not_fail_the_others(batching: FakeServer, src: Path) -> None:
    (batching.root / "in" / "f06").mkdir()
    batching.hide_from_listing = {"f06"}  # so the engine does not see the directory before sending
    with pytest.raises(RemotePathError, match="f06") as info:
        upload(batching.connect, str(src), "/in/", max_connections=1)
    assert not info.value.retryable
    landed = sorted(p.name for p in (batching.root / "in").iterdir() if p.is_file() and not p.name.endswith(".part"))
    # Largest first: f19..f04 are the first batch; all but f06 land. The error is not retryable,
    # so the run stops there: f03..f00 are not sent.
    assert landed == sorted(f"f{i:02d}" for i in range(4, N) if i != 6)
    assert _parts(batching) == []  # the failed file's partial was removed


def test_files_taken_before_a_failing_one_are_sent(batching: FakeServer, src: Path) -> None:
    (batching.root / "in" / "f10").mkdir()  # listed: fails in the worker, before the batch is sent
    with pytest.raises(RemotePathError, match="is a directory"):
        upload(batching.connect, str(src), "/in/", max_connections=1)
    landed = {p.name for p in (batching.root / "in").iterdir() if p.is_file()}
    # Largest first: f19..f11 were taken before f10 and are sent; the run stops after f10's error.
    assert landed == {f"f{i:02d}" for i in range(11, N)}


def test_delete_source_after_each_landed_file_of_a_batch(batching: FakeServer, src: Path) -> None:
    (batching.root / "in" / "f03").mkdir()
    batching.hide_from_listing = {"f03"}
    with pytest.raises(RemotePathError):
        upload(batching.connect, str(src), "/in/", delete_source=True, max_connections=1)
    assert sorted(p.name for p in src.iterdir()) == ["f03"]


def test_a_client_naming_its_batch_size_gets_it_and_a_share_of_the_last_files(
    batching: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTPS sends a batch's files one after the other (``put_small_batch``): no worker takes more than its
    share of what is left, so the workers finish together."""
    monkeypatch.setattr(PutSmallManyFS, "put_small_batch", 4, raising=False)
    src = tmp_path / "ten"
    src.mkdir()
    for i in range(10):
        (src / f"t{i}").write_bytes(b"t" * 100)
    upload(batching.connect, str(src), "/in/", max_connections=1)
    assert batching.batches == [4, 4, 2]
    batching.batches.clear()
    upload(batching.connect, str(src), "/in/", max_connections=4)
    assert sum(batching.batches) == 10
    assert max(batching.batches) <= 3  # ceil(10 files / 4 workers), never the batch size of 4
    _landed(batching, src)


def test_a_single_file_target_is_stated_once(tmp_path: Path) -> None:
    """The stat that decides whether ``remote_path`` is a directory also answers the file's lookup (and proves
    an existing target's directory): one round trip each, over a long distance."""
    root = tmp_path / "remote"
    (root / "in").mkdir(parents=True)
    server = FakeServer(root)
    local = tmp_path / "one.bin"
    local.write_bytes(b"1" * 1000)
    upload(server.connect, str(local), "/in/one.bin")
    assert server.stats.count("/in/one.bin") == 1
    server.stats.clear()
    local.write_bytes(b"2" * 1000)  # again: the target exists now, so its directory does too
    upload(server.connect, str(local), "/in/one.bin")
    assert server.stats.count("/in/one.bin") == 1
    assert "/in" not in server.stats
    assert (root / "in" / "one.bin").read_bytes() == b"2" * 1000
