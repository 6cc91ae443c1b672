"""Remote path normalisation and the checks that keep paths inside ``remote_root``.

One set of rules for every remote name, in both directions: a path we send and a
name a server lists pass :func:`name_problem` alike (a server's listing is as
untrusted as a user's argument, and a name we accept from a listing is one we may
send back in the next command).
"""

from __future__ import annotations

import posixpath
import re

from airflow_secure_transfer.exceptions import RemotePathError

__all__ = ["check_name", "listed_child", "name_problem", "resolve_remote"]

_LABELS = {"\x00": "NUL", "\r": "CR", "\n": "LF"}
#: C0 controls, DEL, C1 controls (a C1 CSI, U+009B, starts a terminal escape sequence like ESC [).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: A Windows drive prefix at the start of a component: ``C:``, ``c:x`` (drive-relative).
_DRIVE = re.compile(r"[A-Za-z]:")


def name_problem(path: str) -> str | None:
    """Say why *path* must not be sent to a server or accepted from one, or return ``None``.

    Refused, anywhere in *path*:

    * NUL, CR, LF and every other control character (C0, DEL, C1). In FTP a CR or LF ends
      the command line, so a name carrying one could inject a second command
      (``"a\\r\\nDELE b"``); NUL truncates names in C servers; the others are terminal
      escapes in logs and never part of an honest file name.
    * ``\\`` and a drive prefix (``C:``) at the start of a component: harmless names on a
      POSIX server, but path separators and absolute paths on Windows servers (IIS FTP,
      FileZilla Server, Win32-OpenSSH), where ``..\\..\\etc`` escapes ``remote_root``,
      which is checked with POSIX rules. The one drive prefix allowed is the first
      component of an absolute path (``/C:/data``): Win32-OpenSSH's own notation for an
      absolute path (its home is ``/C:/Users/...``), compared with ``remote_root`` as it is.
    """
    match = _CONTROL.search(path)
    if match:
        char = match.group()
        label = _LABELS.get(char, f"control U+{ord(char):04X}")
        return f"contains a {label} character"
    if "\\" in path:
        return "contains a backslash (a path separator on Windows servers)"
    parts = path.split("/")
    for index, part in enumerate(parts):
        if index == 1 and not parts[0]:
            continue  # "/C:/..." - see above
        if _DRIVE.match(part):
            return f"contains the drive prefix {part[:2]!r} (an absolute path on Windows servers)"
    return None


def check_name(path: str) -> None:
    """Refuse *path* if :func:`name_problem` finds anything.

    :raises RemotePathError: with ``.path`` set to *path*.
    """
    problem = name_problem(path)
    if problem is not None:
        raise RemotePathError(f"remote path {path!r} {problem}; refused", path=path)


def listed_child(directory: str, name: str, *, where: str = "") -> str:
    """Return ``directory/name`` for a *name* a server listed in *directory*, refusing unsafe names.

    A listed name is one component (no ``/``, not empty, ``.`` or ``..``) and passes the
    same rules as a path we send (:func:`name_problem`).

    :param where: ``host:port`` for the message.
    :raises RemotePathError: with ``.path`` set to *directory* (the listing is refused as a whole).
    """
    problem = name_problem(name)
    if problem is None and (not name or "/" in name or name in (".", "..")):
        problem = "is not a single name"
    if problem is not None:
        prefix = f"{where}: " if where else ""
        raise RemotePathError(
            f"{prefix}the listing of {directory} contains the name {name[:80]!r}, which {problem}; refused",
            path=directory,
        )
    return posixpath.join(directory, name)


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
    if remote_root:
        check_name(remote_root)
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
