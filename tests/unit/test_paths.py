"""Remote path normalisation and remote_root confinement."""

from __future__ import annotations

import pytest

from airflow_secure_transfer.exceptions import RemotePathError
from airflow_secure_transfer.security.paths import check_name, listed_child, name_problem, resolve_remote


@pytest.mark.parametrize(
    ("path", "root", "cwd", "expected"),
    [
        ("/inbound/a.csv", None, "/", "/inbound/a.csv"),
        ("inbound//a.csv", None, "/home/x", "/home/x/inbound/a.csv"),
        ("a.csv", "/srv/data", "/", "/srv/data/a.csv"),
        ("/srv/data/sub/../b.csv", "/srv/data", "/", "/srv/data/b.csv"),
        ("/srv/data", "/srv/data/", "/", "/srv/data"),
        ("//etc//x", None, "/", "/etc/x"),
        ("./x/./y/", None, "/base", "/base/x/y"),
    ],
)
def test_resolves(path: str, root: str | None, cwd: str, expected: str) -> None:
    assert resolve_remote(path, root, cwd) == expected


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("../etc/passwd", "/srv/data"),
        ("/srv/data/../../etc/passwd", "/srv/data"),
        ("/srv/database/x", "/srv/data"),  # a sibling sharing the prefix is outside
        ("/etc/passwd", "/srv/data"),
    ],
)
def test_refuses_escape_from_remote_root(path: str, root: str) -> None:
    with pytest.raises(RemotePathError, match="outside remote_root") as info:
        resolve_remote(path, root)
    assert info.value.path == path
    assert info.value.retryable is False


@pytest.mark.parametrize("bad", ["a\r\nDELE b", "a\nb", "a\x00b", "x\r"])
def test_refuses_control_characters(bad: str) -> None:
    with pytest.raises(RemotePathError, match=r"(CR|LF|NUL) character"):
        resolve_remote("/in/" + bad)


def test_unicode_names_pass_unchanged() -> None:
    assert resolve_remote("/in/Grüße ☃.csv") == "/in/Grüße ☃.csv"


def test_empty_path_is_an_error() -> None:
    with pytest.raises(RemotePathError, match="empty"):
        resolve_remote("")


@pytest.mark.parametrize(
    ("bad", "label"),
    [
        ("a\x1b[2Jb", "control U\\+001B"),
        ("tab\there", "control U\\+0009"),
        ("del\x7f", "control U\\+007F"),
        ("csi\x9b31m", "control U\\+009B"),
        ("bell\x07", "control U\\+0007"),
    ],
)
def test_refuses_every_control_character(bad: str, label: str) -> None:
    with pytest.raises(RemotePathError, match=label):
        resolve_remote("/in/" + bad)
    with pytest.raises(RemotePathError, match=label):
        check_name("/in/" + bad)


@pytest.mark.parametrize(
    "bad",
    [
        "..\\..\\etc\\passwd",
        "/srv/data/..\\..\\etc",
        "sub\\file.csv",
        "C:\\Windows\\win.ini",
        "C:/Windows/win.ini",
        "/srv/data/C:/Windows",
        "/srv/data/d:evil.txt",
        "/srv/data/../C:/x",
    ],
)
def test_refuses_windows_separators_and_drive_prefixes(bad: str) -> None:
    """Harmless names on vsftpd; path escapes on IIS FTP, FileZilla Server and Win32-OpenSSH."""
    with pytest.raises(RemotePathError, match=r"backslash|drive prefix") as info:
        resolve_remote(bad, "/srv/data")
    assert info.value.path == bad


@pytest.mark.parametrize(
    "good", ["/C:/data/x.csv", "/srv/data/log_12:00.csv", "/srv/data/ab:c", "/srv/data/2024:01.csv"]
)
def test_allows_colons_that_are_no_drive_prefix(good: str) -> None:
    """A leading ``/C:`` is Win32-OpenSSH's notation for an absolute path (its home is ``/C:/Users/...``)."""
    assert name_problem(good) is None
    assert resolve_remote(good) == good


def test_win32_openssh_home_with_a_drive_resolves_relative_paths() -> None:
    assert resolve_remote("inbound/a.csv", cwd="/C:/Users/partner") == "/C:/Users/partner/inbound/a.csv"
    assert resolve_remote("a.csv", "/C:/data") == "/C:/data/a.csv"
    with pytest.raises(RemotePathError, match="outside remote_root"):
        resolve_remote("/D:/x", "/C:/data")


def test_remote_root_obeys_the_same_rules() -> None:
    with pytest.raises(RemotePathError, match="backslash"):
        resolve_remote("a.csv", "/srv\\data")


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "",
        ".",
        "..",
        "a\rb",
        "a\nb",
        "e\x1b]0;title\x07",
        "..\\..\\x",
        "C:",
        "c:evil",
        "a:b.csv",
        "nul\x00",
    ],
)
def test_listed_names_obey_the_rules_for_names_we_send(name: str) -> None:
    """Names from a server pass the same rules as names sent to it (issue #12, items 9 and 10)."""
    with pytest.raises(RemotePathError, match="listing of /in contains the name") as info:
        listed_child("/in", name, where="host:21")
    assert info.value.path == "/in"
    assert str(info.value).startswith("host:21: ")
    assert "\x1b" not in str(info.value)  # the name is shown escaped (repr)


def test_listed_names_join_the_directory() -> None:
    assert listed_child("/in", "Grüße ☃.csv") == "/in/Grüße ☃.csv"
    assert listed_child("/", "ab:c") == "/ab:c"
