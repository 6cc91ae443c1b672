"""Expand local sources (files, directory trees, globs, lists of these) into files to send.

Rules, all checked before a single byte goes out:

* a missing source, a glob that matches nothing, a dangling symlink and an
  unreadable directory raise :class:`~airflow_secure_transfer.exceptions.LocalPathError`
  (not retryable: running again will not make the file appear... unless it does,
  which is the scheduler's business, not a retry's);
* FIFOs, character and block devices and sockets are refused: reading a FIFO
  blocks forever and a device never ends;
* symlinks to files and directories are followed; a symlink loop (``a -> b -> a``,
  or a directory link pointing at one of its own ancestors) is an error rather
  than an endless walk;
* two different local files that would land on the same remote name are an error
  (one would silently overwrite the other).
"""

from __future__ import annotations

import errno
import glob
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from airflow_secure_transfer.exceptions import ConfigurationError, IntegrityError, LocalPathError

__all__ = ["LocalFile", "LocalSource", "delete_uploaded_source", "expand_local", "glob_regex", "under_root"]

#: What callers may pass as ``local_path``.
LocalSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

#: Deeper trees than this are almost certainly a loop that the inode check missed (bind mounts).
_MAX_DEPTH = 256


@dataclass(frozen=True, slots=True)
class LocalFile:
    """One regular file to send."""

    #: Absolute path as listed (symlinks not resolved, so records show what the user named).
    path: str
    #: POSIX path relative to the target directory (``"sub/a.csv"``).
    relpath: str
    size: int
    mtime_ns: int
    #: Real path of the source the user named (the directory walked, the glob's fixed base, or the
    #: file itself): ``delete_source`` deletes only files whose real path lies under it.
    root: str = ""


def under_root(local: LocalFile) -> bool:
    """Whether *local*'s real path is its named source's real path or lies under it.

    ``delete_source`` deletes only such files: a directory symlink planted in an outbox
    (``outbox/x -> /home/airflow/dags``) leads the walk outside the source, and what lies
    there is uploaded but never deleted. A file without a known root is never under one.
    """
    if not local.root:
        return False
    real = os.path.realpath(local.path)
    return real == local.root or real.startswith(local.root.rstrip(os.sep) + os.sep)


def open_unchanged(local: LocalFile, outcome: str) -> io.BufferedReader:
    """Open *local* for reading, refusing it when its size or mtime are no longer the planned ones.

    :param outcome: what the refusal means for the transfer, e.g. ``"nothing was sent"``.
    :raises LocalPathError: it cannot be opened.
    :raises IntegrityError: it changed since it was planned (retryable).
    """
    try:
        f = open(local.path, "rb")  # returned open: the caller closes it
    except OSError as exc:
        raise LocalPathError(f"cannot open local file {local.path!r}: {exc.strerror}", path=local.path) from None
    try:
        st = os.fstat(f.fileno())
        if st.st_size != local.size or st.st_mtime_ns != local.mtime_ns:
            raise IntegrityError(f"local file {local.path!r} changed after it was planned; {outcome}")
    except BaseException:
        f.close()
        raise
    return f


def delete_uploaded_source(local: LocalFile, log: Any) -> bool:
    """Delete *local* once its bytes are proven on the server (``delete_source``); return whether it was.

    Only a file whose real path lies under the real path of the source the user named: one reached
    through a symlink to elsewhere is kept, with a warning on *log*.

    :raises LocalPathError: the file could not be deleted.
    """
    if not under_root(local):
        log.warning(
            "kept %s (delete_source=True): its real path %s is outside the named source %s "
            "(reached through a symlink); uploaded, not deleted",
            local.path,
            os.path.realpath(local.path),
            local.root or "(unknown)",
        )
        return False
    try:
        os.unlink(local.path)
    except OSError as exc:
        raise LocalPathError(
            f"uploaded {local.path!r} but could not delete it (delete_source=True): {exc.strerror}",
            path=local.path,
        ) from None
    return True


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat(path: str) -> os.stat_result:
    """``os.stat`` (following symlinks) with errors turned into :class:`LocalPathError`."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LocalPathError(f"local path {path!r} is a symlink loop", path=path) from None
        if exc.errno == errno.ENOENT:
            if os.path.islink(path):
                target = os.readlink(path)
                raise LocalPathError(
                    f"local path {path!r} is a symlink to {target!r}, which does not exist", path=path
                ) from None
            raise LocalPathError(f"local path {path!r} does not exist", path=path) from None
        raise LocalPathError(f"cannot stat local path {path!r}: {exc.strerror}", path=path) from None


def _walk(
    top: str,
    prefix: str,
    ancestors: tuple[tuple[int, int], ...],
    out: list[LocalFile],
    root: str,
    match: re.Pattern[str] | None = None,
) -> None:
    """Append every regular file under directory *top* (symlinks followed) to *out*.

    :param root: the real path of the source the user named (see :attr:`LocalFile.root`).
    :param match: a recursive glob's pattern (see :func:`glob_regex`): only files whose relative
        name matches it, or that lie in a directory whose name matches it, are taken; the other
        directories are still walked (with the same loop checks) for matches further down.
    """
    if len(ancestors) > _MAX_DEPTH:
        raise LocalPathError(f"directory tree under {top!r} is deeper than {_MAX_DEPTH} levels", path=top)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise LocalPathError(f"cannot list local directory {top!r}: {exc.strerror}", path=top) from None
    for entry in entries:
        path = os.path.join(top, entry.name)
        rel = f"{prefix}{entry.name}"
        wanted = match is None or match.fullmatch(rel) is not None
        if not wanted and not _is_dir(entry):
            continue  # neither matched nor a directory that could hold a match: not even stat'ed
        st = _stat(path)
        if stat.S_ISDIR(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                raise LocalPathError(f"symlink loop: {path!r} leads back to one of its parent directories", path=path)
            # A directory the pattern matches is sent whole, like any directory source.
            _walk(path, rel + "/", (*ancestors, ident), out, root, None if wanted else match)
        elif stat.S_ISREG(st.st_mode):
            out.append(LocalFile(path, rel, st.st_size, st.st_mtime_ns, root))
        else:
            raise LocalPathError(f"local path {path!r} is {_kind(st.st_mode)}; only regular files are sent", path=path)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a dangling one is not a directory
    except OSError:
        return False


def _glob_component(part: str) -> str:
    """Translate one glob path component (``*``, ``?``, ``[...]``) into a regex that never crosses ``/``."""
    # A name is never empty; like glob, wildcards do not match a name that starts with ".".
    out = [r"(?=[^/])"] if part.startswith(".") else [r"(?=[^/])(?!\.)"]
    i = 0
    while i < len(part):
        c = part[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = part.find("]", i + 1 if part[i : i + 1] in ("!", "]") else i)
            if end < 0:
                out.append(re.escape(c))
                continue
            body = part[i:end]
            i = end + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a relative recursive glob (``sub/**/*.csv``) into a regex over ``/``-separated names.

    ``**`` as a whole component matches zero or more directories (and, last, everything below);
    as in :func:`glob.glob`, no wildcard matches a name that starts with ``.``.
    """
    parts = pattern.split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**" and not last:
            regex += r"(?:(?!\.)[^/]+/)*"
        elif part == "**":
            tail = r"(?!\.)[^/]+(?:/(?!\.)[^/]+)*"
            regex = regex[:-1] + f"(?:/{tail})?" if regex.endswith("/") else regex + f"(?:{tail})?"
        else:
            regex += _glob_component(part) + ("" if last else "/")
    return re.compile(regex, re.DOTALL)


#: The name this had before downloads shared it.
_glob_regex = glob_regex


def _expand_recursive(item: str, path: str, out: list[LocalFile]) -> None:
    """Expand a pattern with ``**`` by walking its fixed base with :func:`_walk` (and its loop checks).

    ``glob.glob(recursive=True)`` follows directory symlinks without noticing a loop: one loop
    yields the same file under ever longer names, two expand exponentially.
    """
    base = os.path.abspath(_glob_base(path))
    rest = os.path.relpath(path, base).replace(os.sep, "/")
    try:
        st = os.stat(base)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise LocalPathError(f"local pattern {item!r} matches no file", path=item)
    regex = glob_regex(rest)
    found: list[LocalFile] = []
    root = os.path.realpath(base)
    _walk(base, "", ((st.st_dev, st.st_ino),), found, root, None if regex.fullmatch("") else regex)
    if not found:
        raise LocalPathError(f"local pattern {item!r} matches no file", path=item)
    out.extend(found)


def _glob_base(pattern: str) -> str:
    """Return the leading part of *pattern* that has no glob magic (the base of relative names)."""
    parts = PurePosixPath(pattern).parts if os.sep == "/" else tuple(pattern.split(os.sep))
    static: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        static.append(part)
    return os.path.join(*static) if static else "."


def _expand_one(item: str, out: list[LocalFile]) -> bool:
    """Expand one source into *out*; return whether it was a single plain file."""
    path = os.path.abspath(os.path.expanduser(item))
    if glob.has_magic(item) and not os.path.lexists(path) and "**" in PurePosixPath(path).parts:
        _expand_recursive(item, path, out)
        return False
    if glob.has_magic(item) and not os.path.lexists(path):
        base = os.path.abspath(_glob_base(os.path.expanduser(item)))
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise LocalPathError(f"local pattern {item!r} matches no file", path=item)
        root = os.path.realpath(base)
        for match in matches:
            st = _stat(match)
            rel = os.path.relpath(match, base).replace(os.sep, "/")
            if stat.S_ISDIR(st.st_mode):
                _walk(match, rel + "/", ((st.st_dev, st.st_ino),), out, root)
            elif stat.S_ISREG(st.st_mode):
                out.append(LocalFile(match, rel, st.st_size, st.st_mtime_ns, root))
            else:
                raise LocalPathError(
                    f"local path {match!r} is {_kind(st.st_mode)}; only regular files are sent", path=match
                )
        return False
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        _walk(path, "", ((st.st_dev, st.st_ino),), out, os.path.realpath(path))
        return False
    if stat.S_ISREG(st.st_mode):
        out.append(LocalFile(path, os.path.basename(path), st.st_size, st.st_mtime_ns, os.path.realpath(path)))
        return True
    raise LocalPathError(f"local path {path!r} is {_kind(st.st_mode)}; only regular files are sent", path=path)


def _items(local_path: LocalSource) -> tuple[list[str], bool]:
    if isinstance(local_path, (str, os.PathLike)):
        return [os.fspath(local_path)], True
    if isinstance(local_path, Iterable) and not isinstance(local_path, (bytes, bytearray)):
        items = []
        for item in local_path:
            if not isinstance(item, (str, os.PathLike)):
                raise ConfigurationError(f"local_path items must be strings, got {type(item).__name__}")
            items.append(os.fspath(item))
        return items, False
    raise ConfigurationError(f"local_path must be a path or a list of paths, got {type(local_path).__name__}")


def expand_local(local_path: LocalSource) -> tuple[list[LocalFile], bool]:
    """Expand *local_path* into the regular files to send.

    :param local_path: a file, a directory (sent recursively, its *contents* land
        in the target directory), a glob (``*``, ``?``, ``[...]``, ``**`` recursive;
        names keep their path relative to the pattern's fixed leading directories),
        or a list of these. A path that exists literally is never read as a glob.
    :returns: the files in a stable order, and whether *local_path* named exactly one
        plain file (then ``remote_path`` may name the target file itself).
    :raises LocalPathError: missing source, special file, symlink loop.
    :raises ConfigurationError: a list item of the wrong type, or two files that
        would land on the same remote name.
    """
    items, single_item = _items(local_path)
    if not items:
        raise ConfigurationError("local_path is an empty list")
    files: list[LocalFile] = []
    single = False
    for item in items:
        if not item:
            raise ConfigurationError("local_path contains an empty path")
        single = _expand_one(item, files)
    unique: dict[str, LocalFile] = {}
    for f in files:
        seen = unique.get(f.relpath)
        if seen is None:
            unique[f.relpath] = f
        elif os.path.realpath(seen.path) != os.path.realpath(f.path):
            raise ConfigurationError(
                f"local files {seen.path!r} and {f.path!r} would both be uploaded as {f.relpath!r}; "
                "upload them to different remote directories"
            )
    return list(unique.values()), single_item and single and len(unique) == 1
