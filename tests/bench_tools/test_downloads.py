"""The download benchmark's helpers (``bench/downloads.py``): staging on a server's disk, remote paths of
staged files, fsync of what a tool wrote, and that the targets table finds the rows the groups make.

No server runs here: the groups are built with stand-in case factories (the cases themselves run in
``make bench-smoke``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """``downloads`` and ``report`` imported the way ``bench/run.py`` imports them (bench/ on sys.path)."""
    added = str(BENCH) not in sys.path
    if added:
        sys.path.insert(0, str(BENCH))
    try:
        return {name: importlib.import_module(name) for name in ("downloads", "report")}
    finally:
        if added:
            sys.path.remove(str(BENCH))


def _tree(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for i, name in enumerate(names):
        (root / name).write_bytes(bytes([i]) * (100 + i))
    return root


def test_place_links_a_file_and_a_directory_readable_by_all(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    dl = bench["downloads"]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4096))
    os.chmod(big, 0o600)
    small = _tree(tmp_path / "small", ["a.bin", "b.bin", "c.bin"])
    server = tmp_path / "server"
    server.mkdir()

    placed = dl.place(big, server / "big" / "big.bin")
    assert placed.read_bytes() == big.read_bytes()
    assert os.path.samestat(placed.stat(), big.stat())  # a hard link: no copy of a 256 MiB file
    assert stat.S_IMODE(placed.stat().st_mode) == 0o644  # the server's user must read it

    placed_dir = dl.place(small, server / "small")
    assert sorted(p.name for p in placed_dir.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert stat.S_IMODE(placed_dir.stat().st_mode) == 0o755
    for p in placed_dir.iterdir():
        assert p.read_bytes() == (small / p.name).read_bytes()


def test_place_copies_when_a_link_is_refused(
    bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dl = bench["downloads"]
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)

    def no_link(a: Any, b: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(dl.os, "link", no_link)
    placed = dl.place(src, tmp_path / "other" / "f.bin")
    assert placed.read_bytes() == src.read_bytes()
    assert not os.path.samestat(placed.stat(), src.stat())


def test_place_refuses_a_directory_with_a_subdirectory(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", ["a.bin"])
    (src / "sub").mkdir()
    with pytest.raises(ValueError, match="'sub'"):
        bench["downloads"].place(src, tmp_path / "dest")


def test_staged_remote_paths(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    staged = bench["downloads"].Staged("/upload/dl-src-3", tmp_path / "upload" / "dl-src-3")
    assert staged.remote(staged.local_dir / "big" / "big.bin") == "/upload/dl-src-3/big/big.bin"
    assert staged.remote(staged.local_dir / "small") == "/upload/dl-src-3/small"
    assert staged.remote(staged.local_dir) == "/upload/dl-src-3"
    with pytest.raises(ValueError):
        staged.remote(tmp_path / "elsewhere.bin")


class _View:
    def __init__(self, root: Path, label: str) -> None:
        self.local_root = root / "upload" / label
        self.local_root.mkdir(parents=True)
        self.writable_dir = f"/upload/{label}"


class _Servers:
    """The two calls ``stage_files`` makes of ``bench/servers.Servers``: which run, and a per-test view."""

    def __init__(self, root: Path, running: set[str]) -> None:
        self.root, self.up = root, running

    def running(self, name: str) -> bool:
        return name in self.up

    def get(self, name: str) -> Any:
        root = self.root / name
        return type("Server", (), {"for_test": lambda _self, label: _View(root, label)})()


def test_stage_files_puts_each_source_under_its_key_on_the_running_servers_only(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    """What the "wan" group downloads: the big file and the small files' directory, on sshd and vsftpd."""
    dl = bench["downloads"]
    big = tmp_path / "big-256MiB.bin"
    big.write_bytes(b"x" * 1000)
    small = _tree(tmp_path / "small-3x8KiB", ["a", "b", "c"])
    servers = _Servers(tmp_path / "servers", {"vsftpd", "pyftpd"})
    out = dl.stage_files(servers, {"big": big, "small": small}, ("sshd", "vsftpd"), "wan-dl-src")
    assert list(out) == ["vsftpd"]  # sshd does not run; pyftpd was not asked for
    staged, paths = out["vsftpd"]
    assert staged.remote(paths["big"]) == "/upload/wan-dl-src/big/big-256MiB.bin"
    assert staged.remote(paths["small"]) == "/upload/wan-dl-src/small/small-3x8KiB"
    assert paths["big"].read_bytes() == big.read_bytes()
    assert sorted(p.name for p in paths["small"].iterdir()) == ["a", "b", "c"]
    assert stat.S_IMODE(paths["small"].stat().st_mode) == 0o755


def test_then_fsync_syncs_every_file_and_directory_the_tool_wrote(
    bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dl = bench["downloads"]
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def tool(t: Any, src: Path) -> dict[str, Any]:
        _tree(t.local_dir / "sub", ["x.bin", "y.bin"])
        (t.local_dir / "top.bin").write_bytes(b"t")
        return {"crypto": "TLS"}

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(dl.os, "fsync", counting_fsync)
    info = dl.then_fsync(tool)(argparse.Namespace(local_dir=out), tmp_path)
    assert info == {"crypto": "TLS"}
    files = {str(out / "top.bin"), str(out / "sub" / "x.bin"), str(out / "sub" / "y.bin")}
    assert set(synced[:3]) == files  # files first, then their directories
    assert set(synced[3:]) == {str(out), str(out / "sub")}


class _StandIn:
    """Any case factory of DownloadCases: returns a case function that does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: lambda t, src: {}


def test_the_targets_table_finds_every_target_row(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    """The case names in the targets of report.py are the ones the download groups make (a rename shows here)."""
    dl, report = bench["downloads"], bench["report"]
    staged: dict[str, dict[str, Path]] = {}
    for server in ("sshd", "vsftpd", "pyftpd"):
        root = tmp_path / server
        staged[server] = {
            "big": root / "big" / "big.bin",
            "small": _tree(root.parent / f"{server}-small", ["a.bin", "b.bin"]),
            "warm_file": root / "warm" / "big.bin",
            "warm_dir": root / "warm-dir",
        }
        staged[server]["small_first"] = _tree(root.parent / f"{server}-first", ["a.bin"])
    a = argparse.Namespace(size_mib=4, small_count=2, small_kib=8, reps=1, small_reps=1, stock_operator_count=1,
                           stock_operator_reps=1)  # fmt: skip
    groups = dl.build_download_groups(a, _StandIn(), staged, tmp_path / "downloads")
    assert [g.key for g in groups] == ["dl_sftp_large", "dl_ftps_large", "dl_small", "dl_small_stock_operator"]
    assert all(c.download_to == tmp_path / "downloads" for g in groups for c in g.cases)
    results: dict[str, Any] = {"groups": {}}
    for n, g in enumerate(groups):
        rows = [{"case": c.name, "mb_s": 10.0 + n, "files_s": 5.0 + n} for c in g.cases]
        results["groups"][g.key] = {"summary": rows}
    rows = [t for t in report.targets(results) if t[0].startswith("D")]
    assert len(rows) == 5
    assert all(measured != "not measured" for _, _, measured, _ in rows), rows


def test_a_download_case_gets_a_fresh_local_directory_and_is_checked_against_the_staged_copy(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    """``Case.download_to``: the harness makes an empty directory per run and checks what landed in it."""
    harness = importlib.import_module("harness")  # imported by the fixture's modules
    staged = _tree(tmp_path / "staged", ["a.bin", "b.bin"])
    nbytes = sum(p.stat().st_size for p in staged.iterdir())

    class OneServer:
        def get(self, name: str) -> object:
            return object()

    runner = harness.Runner(OneServer(), log=lambda msg: None)
    case = harness.Case("d", lambda t, s: {}, "sshd", staged, nbytes, 2, download_to=tmp_path / "downloads")
    first, _ = runner._target(case, 0)
    second, _ = runner._target(case, 1)
    assert first.local_dir != second.local_dir
    assert first.local_dir.parent == second.local_dir.parent == tmp_path / "downloads"
    assert list(first.local_dir.iterdir()) == [] and first.remote_dir == ""

    for p in staged.iterdir():
        (first.local_dir / p.name).write_bytes(p.read_bytes())
    assert runner.verify(case, first, 0) is None
    (first.local_dir / ".a.bin.0123456789abcdef.part").write_bytes(b"")
    assert "leftover" in (runner.verify(case, first, 0) or "")
    (first.local_dir / ".a.bin.0123456789abcdef.part").unlink()
    (first.local_dir / "b.bin").write_bytes(b"changed" + bytes(94))  # same size, other bytes
    assert "differs" in (runner.verify(case, first, 0) or "")
