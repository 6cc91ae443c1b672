"""Remote path normalisation and remote_root confinement."""

from __future__ import annotations

import pytest

from airflow_secure_transfer.exceptions import RemotePathError
from airflow_secure_transfer.transfer.paths import resolve_remote


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
