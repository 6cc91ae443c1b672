"""Recursive ``**`` globs walk with the directory walker: same matches as ``glob``, but loops are refused."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import LocalPathError
from airflow_secure_transfer.transfer.local import _glob_regex, expand_local

TREE = [
    "a.csv",
    "b.txt",
    ".hidden.csv",
    "sub/c.csv",
    "sub/d.txt",
    "sub/.e.csv",
    "sub/deep/f.csv",
    "sub/deep/g.CSV",
    ".git/h.csv",
    "other/x1.csv",
    "other/y[1].csv",
    "other/deep/z.csv",
]

PATTERNS = [
    "**",
    "**/*.csv",
    "**/*",
    "sub/**",
    "sub/**/*.csv",
    "**/deep/*.csv",
    "**/deep",
    "*/**/*.csv",
    "**/x?.csv",
    "**/[a-c].csv",
    "**/[!a-c].csv",
    "**/.*.csv",
    "**/sub",
    "other/**/z.csv",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "t"
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    return root


def _by_glob(root: Path, pattern: str) -> list[str]:
    """What the glob-based expansion produced (glob, then every matched directory walked whole),
    named relative to the pattern's fixed leading directories."""
    static = []
    for part in pattern.split("/")[:-1]:
        if glob.has_magic(part):
            break
        static.append(part)
    base = root.joinpath(*static)
    out: set[str] = set()
    for match in glob.glob(str(root / pattern), recursive=True):
        if os.path.isdir(match):
            for dirpath, _, names in os.walk(match):
                for name in names:
                    out.add(os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/"))
        else:
            out.add(os.path.relpath(match, base).replace(os.sep, "/"))
    return sorted(out)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_recursive_glob_selects_what_glob_selects(tree: Path, pattern: str) -> None:
    expected = _by_glob(tree, pattern)
    if not expected:
        with pytest.raises(LocalPathError, match="matches no file"):
            expand_local(str(tree / pattern))
        return
    files, single = expand_local(str(tree / pattern))
    assert sorted(f.relpath for f in files) == expected
    assert not single


def test_regex_never_crosses_a_directory() -> None:
    assert _glob_regex("*.csv").fullmatch("a/b.csv") is None
    assert _glob_regex("**/*.csv").fullmatch("a/b.csv") is not None
    assert _glob_regex("a?c").fullmatch("a/c") is None


def test_recursive_glob_refuses_a_symlink_loop(tmp_path: Path) -> None:
    """One loop made glob.glob list the same file under ever longer names (uploaded many times)."""
    (tmp_path / "out" / "d").mkdir(parents=True)
    (tmp_path / "out" / "d" / "f.csv").write_bytes(b"f")
    (tmp_path / "out" / "d" / "back").symlink_to(tmp_path / "out")
    with pytest.raises(LocalPathError, match="symlink loop"):
        expand_local(str(tmp_path / "out" / "**" / "*.csv"))


def test_two_loops_fail_before_expanding_exponentially(tmp_path: Path) -> None:
    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "f.csv").write_bytes(b"f")
    (tmp_path / "out" / "a" / "x").symlink_to(tmp_path / "out")
    (tmp_path / "out" / "a" / "y").symlink_to(tmp_path / "out")
    with pytest.raises(LocalPathError, match="symlink loop"):
        expand_local(str(tmp_path / "out" / "**"))


def test_recursive_glob_skips_unmatched_special_files(tmp_path: Path) -> None:
    """A FIFO the pattern does not match is not even stat'ed (a matched one is refused)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.csv").write_bytes(b"a")
    os.mkfifo(tmp_path / "out" / "pipe")
    (files, _) = expand_local(str(tmp_path / "out" / "**" / "*.csv"))
    assert [f.relpath for f in files] == ["a.csv"]
    with pytest.raises(LocalPathError, match="FIFO"):
        expand_local(str(tmp_path / "out" / "**" / "pipe"))


def test_recursive_glob_follows_a_link_that_is_not_a_loop(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "k.csv").write_bytes(b"k")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "linked").symlink_to(tmp_path / "elsewhere")
    (files, _) = expand_local(str(tmp_path / "out" / "**" / "*.csv"))
    assert [f.relpath for f in files] == ["linked/k.csv"]
    assert files[0].root == str((tmp_path / "out").resolve())
