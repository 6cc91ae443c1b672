"""Remote path normalisation and the checks that keep paths inside ``remote_root``."""

from __future__ import annotations

import posixpath

from airflow_secure_transfer.exceptions import RemotePathError

_FORBIDDEN = {"\x00": "NUL", "\r": "CR", "\n": "LF"}


def check_name(path: str) -> None:
    """Refuse NUL, CR and LF anywhere in *path*.

    In FTP a CR or LF ends the command line, so a name carrying one could inject
    a second command (``"a\\r\\nDELE b"``); NUL truncates names in C servers.
    """
    for char, label in _FORBIDDEN.items():
        if char in path:
            raise RemotePathError(f"remote path {path!r} contains a {label} character; refused", path=path)


def resolve_remote(path: str, remote_root: str | None = None, cwd: str = "/") -> str:
    """Return *path* as a normalised absolute POSIX path, refusing escapes from *remote_root*.

    Relative paths are taken from *remote_root* when set, else from *cwd*.
    ``..`` is resolved lexically; a result outside *remote_root* raises
    :class:`RemotePathError`.

    :param path: the remote path as the user wrote it.
    :param remote_root: directory outside which nothing may resolve (``None``: no limit).
    :param cwd: directory that relative paths start from when there is no root.
    """
    check_name(path)
    if not path:
        raise RemotePathError("remote path is empty", path=path)
    root = posixpath.normpath("/" + remote_root.strip("/")) if remote_root else None
    base = root or cwd or "/"
    joined = path if path.startswith("/") else posixpath.join(base, path)
    resolved = posixpath.normpath(joined)
    if resolved.startswith("//"):  # normpath keeps a leading "//" (POSIX allows it)
        resolved = "/" + resolved.lstrip("/")
    if root is not None and root != "/" and resolved != root and not resolved.startswith(root + "/"):
        raise RemotePathError(
            f"remote path {path!r} resolves to {resolved!r}, outside remote_root {root!r}; refused",
            path=path,
        )
    return resolved
