"""Planning: local source expansion, remote path mapping and the temporary name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, LocalPathError, RemotePathError
from airflow_secure_transfer.transfer.engine import partial_name, plan_upload, validate_options
from airflow_secure_transfer.transfer.local import LocalFile, expand_local


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.csv").write_bytes(b"a")
    (root / "b.txt").write_bytes(b"bb")
    (root / "sub" / "c.csv").write_bytes(b"ccc")
    (root / "sub" / "deeper" / "d.csv").write_bytes(b"dddd")
    return root


def _pairs(plan):  # type: ignore[no-untyped-def]
    return sorted((Path(p.local.path).name, p.remote) for p in plan.files)


def test_single_file_goes_to_the_named_target(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_bytes(b"x")
    plan = plan_upload(str(src), "/in/renamed.csv")
    assert [(p.local.path, p.remote) for p in plan.files] == [(str(src), "/in/renamed.csv")]
    assert plan.target_may_be_dir is True


def test_single_file_with_trailing_slash_goes_into_the_directory(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_bytes(b"x")
    plan = plan_upload(src, "/in/")
    assert [p.remote for p in plan.files] == ["/in/a.csv"]
    assert plan.target_may_be_dir is False


def test_directory_keeps_its_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out")
    plan = plan_upload(str(root), "/in")
    assert sorted(p.remote for p in plan.files) == ["/in/a.csv", "/in/b.txt", "/in/sub/c.csv", "/in/sub/deeper/d.csv"]
    assert plan.total_bytes == 10


def test_glob_matches_relative_to_its_fixed_prefix(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out")
    assert _pairs(plan_upload(f"{root}/*.csv", "/in")) == [("a.csv", "/in/a.csv")]
    recursive = plan_upload(f"{root}/**/*.csv", "/in")
    assert sorted(p.remote for p in recursive.files) == ["/in/a.csv", "/in/sub/c.csv", "/in/sub/deeper/d.csv"]
    # A glob that matches a directory sends the directory's tree under its name.
    assert sorted(p.remote for p in plan_upload(f"{root}/s*", "/in").files) == ["/in/sub/c.csv", "/in/sub/deeper/d.csv"]


def test_a_single_glob_match_is_still_a_directory_target(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out")
    plan = plan_upload(f"{root}/*.txt", "/in")
    assert [p.remote for p in plan.files] == ["/in/b.txt"]
    assert plan.target_may_be_dir is False


def test_list_of_sources(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out")
    plan = plan_upload([str(root / "a.csv"), str(root / "sub")], "in/", remote_root="/home/u")
    assert sorted(p.remote for p in plan.files) == [
        "/home/u/in/a.csv",
        "/home/u/in/c.csv",
        "/home/u/in/deeper/d.csv",
    ]


def test_the_same_file_twice_is_sent_once_but_two_files_on_one_name_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "out")
    assert len(plan_upload([str(root / "a.csv"), str(root / "a.csv")], "/in").files) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.csv").write_bytes(b"different")
    with pytest.raises(ConfigurationError, match=r"would both be uploaded as 'a\.csv'"):
        plan_upload([str(root / "a.csv"), str(other / "a.csv")], "/in")


def test_a_literal_name_with_glob_characters_is_not_a_pattern(tmp_path: Path) -> None:
    src = tmp_path / "report[1].csv"
    src.write_bytes(b"x")
    (tmp_path / "report1.csv").write_bytes(b"y")
    plan = plan_upload(str(src), "/in/")
    assert [p.remote for p in plan.files] == ["/in/report[1].csv"]


def test_missing_source_and_empty_glob_are_local_path_errors(tmp_path: Path) -> None:
    with pytest.raises(LocalPathError, match="does not exist") as info:
        plan_upload(str(tmp_path / "nope.csv"), "/in/")
    assert info.value.retryable is False
    assert info.value.path == str(tmp_path / "nope.csv")
    with pytest.raises(LocalPathError, match="matches no file"):
        plan_upload(str(tmp_path / "*.nothing"), "/in/")


def test_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(LocalPathError, match="FIFO"):
        plan_upload(str(fifo), "/in/")
    # also inside a tree, instead of blocking forever when read
    with pytest.raises(LocalPathError, match="FIFO"):
        plan_upload(str(tmp_path), "/in/")


def test_device_is_refused() -> None:
    with pytest.raises(LocalPathError, match="character device"):
        plan_upload("/dev/null", "/in/")


def test_symlink_to_a_file_is_followed_and_reported_under_its_own_name(tmp_path: Path) -> None:
    target = tmp_path / "real.bin"
    target.write_bytes(b"12345")
    link = tmp_path / "dir" / "link.bin"
    link.parent.mkdir()
    link.symlink_to(target)
    plan = plan_upload(str(tmp_path / "dir"), "/in")
    assert [(p.local.path, p.remote, p.local.size) for p in plan.files] == [(str(link), "/in/link.bin", 5)]


def test_symlink_loops_are_errors(tmp_path: Path) -> None:
    (tmp_path / "self").symlink_to(tmp_path / "self")
    with pytest.raises(LocalPathError, match="symlink loop"):
        plan_upload(str(tmp_path / "self"), "/in/")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"f")
    (tree / "sub" / "up").symlink_to(tree)
    with pytest.raises(LocalPathError, match="symlink loop"):
        plan_upload(str(tree), "/in/")


def test_dangling_symlink_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(LocalPathError, match="does not exist"):
        plan_upload(str(tmp_path / "dangling"), "/in/")


def test_remote_paths_stay_inside_remote_root(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_bytes(b"x")
    assert plan_upload(str(src), "sub/../x.csv", remote_root="/r").files[0].remote == "/r/x.csv"
    with pytest.raises(RemotePathError, match="outside remote_root"):
        plan_upload(str(src), "../../etc/", remote_root="/r")
    with pytest.raises(RemotePathError, match="outside remote_root"):
        plan_upload(str(src), "/etc/passwd", remote_root="/r")


@pytest.mark.parametrize("bad", ["evil\r\nDELE x.csv", "nul\x00.csv", "lf\n.csv"])
def test_control_characters_in_local_names_are_refused_naming_the_file(tmp_path: Path, bad: str) -> None:
    if "\x00" in bad:
        with pytest.raises(RemotePathError, match="NUL"):
            plan_upload(str(tmp_path / "a"), f"/in/{bad}")
        return
    (tmp_path / bad).write_bytes(b"x")
    with pytest.raises(RemotePathError) as info:
        plan_upload(str(tmp_path), "/in/")
    assert repr(str(tmp_path / bad)) in str(info.value)


def test_unicode_names_are_kept(tmp_path: Path) -> None:
    (tmp_path / "données été.csv").write_bytes(b"x")
    (tmp_path / "数据.txt").write_bytes(b"y")
    assert sorted(p.remote for p in plan_upload(str(tmp_path), "/in").files) == ["/in/données été.csv", "/in/数据.txt"]


def test_empty_directory_plans_nothing(tmp_path: Path) -> None:
    files, single = expand_local(str(tmp_path))
    assert files == [] and single is False


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="empty list"):
        expand_local([])
    with pytest.raises(ConfigurationError, match="must be strings"):
        expand_local([1])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="remote_path"):
        plan_upload("/etc/hostname", "")
    with pytest.raises(ConfigurationError, match="overwrite must be one of"):
        validate_options(overwrite="yes", verify="size", max_connections=None)
    with pytest.raises(ConfigurationError, match="verify must be one of"):
        validate_options(overwrite="replace", verify="md5", max_connections=None)
    for bad in (0, 65, True, 2.5):
        with pytest.raises(ConfigurationError, match="max_connections"):
            validate_options(overwrite="replace", verify="size", max_connections=bad)  # type: ignore[arg-type]


def test_partial_name_is_hidden_stable_and_tied_to_the_source_identity() -> None:
    f = LocalFile("/data/a.csv", "a.csv", 10, 1_000)
    name = partial_name("/in/a.csv", f)
    assert name.startswith("/in/.a.csv.") and name.endswith(".part")
    assert partial_name("/in/a.csv", LocalFile("/data/a.csv", "a.csv", 10, 1_000)) == name
    assert partial_name("/in/a.csv", LocalFile("/data/a.csv", "a.csv", 10, 2_000)) != name  # touched
    assert partial_name("/in/a.csv", LocalFile("/data/a.csv", "a.csv", 11, 1_000)) != name  # grown
    assert partial_name("/in/a.csv", LocalFile("/other/a.csv", "a.csv", 10, 1_000)) != name
    long = "é" * 200
    assert len(partial_name(f"/in/{long}", f).rsplit("/", 1)[1].encode()) <= 255
