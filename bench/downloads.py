"""The download cases of issue #13: ours vs OpenSSH ``sftp -b get``, ``lftp get`` / ``mirror``, ``curl``, and
the stock ``SFTPHook.retrieve_file``, ``SFTPOperator(operation="get")`` and ``FTPSHook.retrieve_file``.

* D1: one big file (``--size-mib``) from OpenSSH sshd, vsftpd and pyftpdlib;
* D3: ``--small-count`` files of ``--small-kib`` from the same servers.

What the runs download is staged once per server before the groups run: the upload cases' own source
files, hard-linked (copied across file systems) into a directory of the server's
(``server.for_test("dl-src")``), readable by the user it serves as. Each run downloads into a fresh
empty local directory (``Case.download_to``); the harness then checks it against the staged copy
(size, file count, no leftover temporary file, byte for byte on the first repetition) and deletes it,
as it does for uploads.

Durability is not the same for all rows: ours fsyncs each file and its directory before the rename
(a downloaded file is on disk when the task succeeds); the tools at their defaults do not, and the
harness deletes their files before the kernel writes them back. The rows "``sftp -f``" (OpenSSH's own
"fsync each file") and "then fsync" (the files fsynced after the tool, inside the timed run) show the
tools at equal durability.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cases import OURS_CONN, STOCK_SFTP, Cases
from harness import Case, Group, Target
from ours import ours_downloader
from servers import Servers

#: The groups this module adds to ``bench/run.py`` (``dl_small`` brings ``dl_small_stock_operator`` along).
DOWNLOAD_GROUPS = ("dl_sftp_large", "dl_ftps_large", "dl_small")
#: What is staged on each server (keys of run.py's ``src``) and under which relative path.
STAGED = {"big": "big/big.bin", "small": "small", "warm_file": "warm/big.bin", "warm_dir": "warm-dir"}

Fn = Callable[[Target, Path], dict[str, Any]]


# --------------------------------------------------------------------------- staging


@dataclass(frozen=True)
class Staged:
    """A directory on a server's disk (``local_dir``) that the server shows as ``remote_dir``."""

    remote_dir: str
    local_dir: Path

    def remote(self, local: Path) -> str:
        """The remote path of *local*, a path under ``local_dir``.

        :raises ValueError: when *local* is not under ``local_dir``.
        """
        rel = local.relative_to(self.local_dir).as_posix()
        return self.remote_dir if rel == "." else posixpath.join(self.remote_dir, rel)


def place(src: Path, dest: Path) -> Path:
    """Put *src* (a file, or a directory of files) at *dest*, readable by every user; return *dest*.

    Files are hard-linked when *src* and *dest* share a file system, else copied (no byte is written
    again for a 256 MiB source). Directories made here are 0755; a directory *src* must hold files only.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        _link_or_copy(src, dest)
        return dest
    dest.mkdir()
    os.chmod(dest, 0o755)
    for child in sorted(src.iterdir()):
        if not child.is_file() or child.is_symlink():
            raise ValueError(f"{src} holds {child.name!r}, which is not a regular file")
        _link_or_copy(child, dest / child.name)
    return dest


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def stage(servers: Servers, src: dict[str, Path], first: int) -> dict[str, tuple[Staged, dict[str, Path]]]:
    """Stage ``src[key]`` for every key of :data:`STAGED` on every running server, and ``small_first``: a
    directory of the first *first* files of ``small`` (for the stock ``SFTPOperator``).

    :returns: ``{server: (staged directory, {key: path on the server's disk})}``.
    """
    out: dict[str, tuple[Staged, dict[str, Path]]] = {}
    for name in ("sshd", "vsftpd", "pyftpd"):
        if not servers.running(name):
            continue
        view = servers.get(name).for_test("dl-src")
        paths = {key: place(src[key], view.local_root / rel) for key, rel in STAGED.items()}
        subset = view.local_root / f"small-first-{first}"
        subset.mkdir(mode=0o755)
        for p in sorted(paths["small"].iterdir())[:first]:
            place(p, subset / p.name)
        paths["small_first"] = subset
        out[name] = (Staged(view.writable_dir, view.local_root), paths)
    return out


def stage_files(
    servers: Servers, files: dict[str, Path], names: tuple[str, ...], label: str
) -> dict[str, tuple[Staged, dict[str, Path]]]:
    """Stage each of *files* (``{key: local file or directory}``) as ``<label>/<key>`` on the servers *names*
    that run (what the "wan" group downloads).

    :returns: ``{server: (staged directory, {key: path on the server's disk})}``.
    """
    out: dict[str, tuple[Staged, dict[str, Path]]] = {}
    for name in names:
        if not servers.running(name):
            continue
        view = servers.get(name).for_test(label)
        paths = {key: place(path, view.local_root / key / path.name) for key, path in files.items()}
        out[name] = (Staged(view.writable_dir, view.local_root), paths)
    return out


def fsync_tree(root: Path) -> None:
    """fsync every file under *root*, then every directory (what ours does before a download counts as done)."""
    dirs = [root]
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            dirs.append(p)
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- the cases


class DownloadCases:
    """Factories for download case functions ``fn(target, staged source) -> info``."""

    def __init__(self, cases: Cases, staged: dict[str, Staged]) -> None:
        self.c = cases
        self.staged = staged
        self.ours_path, self._ours = ours_downloader()

    def remote(self, server: str, src: Path) -> str:
        return self.staged[server].remote(src)

    # ------------------------------------------------------------------ ours
    def ours(self, server: str, max_connections: int | None = None, conn_id: str | None = None, **options: Any) -> Fn:
        conn_id = conn_id or OURS_CONN[server]

        def fn(t: Target, src: Path) -> dict[str, Any]:
            local = str(t.local_file) if src.is_file() else str(t.local_dir) + "/"
            self._ours(conn_id, self.remote(server, src), local, max_connections, **options)
            return {"path": self.ours_path}

        return fn

    # ------------------------------------------------------------------ stock providers
    def stock_sftp_retrieve_file(self, conn_id: str = STOCK_SFTP) -> Fn:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        def fn(t: Target, src: Path) -> dict[str, Any]:
            SFTPHook(ssh_conn_id=conn_id).retrieve_file(self.remote("sshd", src), str(t.local_file))
            return {}

        return fn

    def stock_sftp_operator_get(self, conn_id: str = STOCK_SFTP) -> Fn:
        """``SFTPOperator(operation="get")``: one file, or a list of the directory's files."""
        from airflow.providers.sftp.operators.sftp import SFTPOperator

        def fn(t: Target, src: Path) -> dict[str, Any]:
            remote = self.remote("sshd", src)
            if src.is_dir():
                names = sorted(os.listdir(src))
                local: str | list[str] = [str(t.local_dir / n) for n in names]
                remotes: str | list[str] = [f"{remote}/{n}" for n in names]
            else:
                local, remotes = str(t.local_file), remote
            SFTPOperator(
                task_id="bench_stock_get", ssh_conn_id=conn_id, operation="get", local_filepath=local,
                remote_filepath=remotes,
            ).execute(context={})  # fmt: skip
            return {}

        return fn

    def stock_ftps_retrieve_file(self, server: str) -> Fn:
        """``FTPSHook.retrieve_file`` (stock block_size=8192): the file, or each file of a directory, one hook."""

        def call(hook: Any, t: Target, src: Path) -> None:
            remote = self.remote(server, src)
            if src.is_file():
                hook.retrieve_file(remote, str(t.local_file))
                return
            for n in sorted(os.listdir(src)):
                hook.retrieve_file(f"{remote}/{n}", str(t.local_dir / n))

        return self.c.stock_ftps_call(server, call)

    # ------------------------------------------------------------------ command-line tools
    def sftp_b_get(self, *, fsync: bool = False, recursive: bool = False, host: str = "bench-sshd") -> Fn:
        """``sftp -b`` in one session: ``get`` per file (as upload case 3 puts per file), or one ``get -r``.

        ``fsync``: ``sftp -f`` (OpenSSH fsyncs each downloaded file). *host*: the ``ssh_config`` alias.
        """

        def fn(t: Target, src: Path) -> dict[str, Any]:
            remote = self.remote("sshd", src)
            if recursive:
                t.local_dir.rmdir()  # `get -r` into an existing directory would make <dir>/<name>
                lines = [f'get -r "{remote}" "{t.local_dir}"']
            elif src.is_dir():
                lines = [f'get "{remote}/{n}" "{t.local_dir / n}"' for n in sorted(os.listdir(src))]
            else:
                lines = [f'get "{remote}" "{t.local_file}"']
            return self.c.sftp_batch(lines, ["-f"] if fsync else [], host=host)

        return fn

    def curl_get(self, server: str, via: tuple[str, int] | None = None) -> Fn:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            return self.c.curl_run(server, ["-o", str(t.local_file)], self.remote(server, src), via)

        return fn

    def lftp_get(self, server: str, via: tuple[str, int] | None = None) -> Fn:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            self.c._lftp(server, f'get "{self.remote(server, src)}" -o "{t.local_file}"', via)
            return {"crypto": "GnuTLS"}

        return fn

    def lftp_mirror(self, server: str, parallel: int = 4, via: tuple[str, int] | None = None) -> Fn:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            remote = self.remote(server, src)
            self.c._lftp(server, f'mirror --parallel={parallel} --no-perms "{remote}" "{t.local_dir}"', via)
            return {}

        return fn


def then_fsync(fn: Fn) -> Fn:
    """*fn*, then every file it wrote and its directory fsynced (inside the timed run)."""

    def wrapped(t: Target, src: Path) -> dict[str, Any]:
        info = fn(t, src)
        fsync_tree(t.local_dir)
        return info

    return wrapped


# --------------------------------------------------------------------------- the groups


def build_download_groups(
    a: argparse.Namespace, dc: DownloadCases, staged: dict[str, dict[str, Path]], download_to: Path
) -> list[Group]:
    """D1 (one big file; SFTP and FTPS groups) and D3 (many small files), and the stock operator on D3's first files.

    :param staged: ``{server: {key: path on its disk}}`` from :func:`stage`.
    :param download_to: the local directory under which each run gets a fresh one to download into.
    """
    MiB = 1 << 20
    nb = a.size_mib * MiB
    ns = a.small_count
    sb = ns * a.small_kib * 1024
    groups: list[Group] = []

    def case(name: str, fn: Fn, server: str, key: str, ref: str, *, inproc: bool = False, files: int = 1,
             nbytes: int = nb, expect_error: bool = False, tool: str) -> Case:  # fmt: skip
        paths = staged[server]
        warm = paths["warm_file" if key == "big" else "warm_dir"]
        return Case(name, fn, server, paths[key], nbytes, files, ref=ref, expect_error=expect_error, inproc=inproc,
                    warm_source=warm if inproc else None, tags={"tool": tool}, download_to=download_to)  # fmt: skip

    if "sshd" in staged:
        ref = "SFTP: OpenSSH sftp -b get (defaults)"
        groups.append(
            Group(
                "dl_sftp_large",
                f"case D1, one {a.size_mib} MiB file downloaded over SFTP from OpenSSH sshd",
                [
                    case("SFTP: ours", dc.ours("sshd"), "sshd", "big", ref, inproc=True, tool="ours"),
                    case(ref, dc.sftp_b_get(), "sshd", "big", ref, tool="openssh"),
                    case("SFTP: OpenSSH sftp -f -b get (fsync, as ours)", dc.sftp_b_get(fsync=True), "sshd", "big",
                         ref, tool="openssh"),
                    case("SFTP: stock SFTPHook.retrieve_file", dc.stock_sftp_retrieve_file(), "sshd", "big", ref,
                         inproc=True, tool="stock"),
                    case('SFTP: stock SFTPOperator(operation="get")', dc.stock_sftp_operator_get(), "sshd", "big",
                         ref, inproc=True, tool="stock"),
                ],
                a.reps,
            )
        )  # fmt: skip
    ftps: list[Case] = []
    for server, ref_tool in (("vsftpd", "lftp get"), ("pyftpd", "curl --ssl-reqd")):
        if server not in staged:
            continue
        label = "vsftpd" if server == "vsftpd" else "pyftpdlib"
        ref = f"{label}: {ref_tool}"
        ftps += [
            case(f"{label}: ours", dc.ours(server), server, "big", ref, inproc=True, tool="ours"),
            case(f"{label}: curl --ssl-reqd", dc.curl_get(server), server, "big", ref, tool="curl"),
            case(f"{label}: lftp get", dc.lftp_get(server), server, "big", ref, tool="lftp"),
            case(f"{label}: stock FTPSHook.retrieve_file", dc.stock_ftps_retrieve_file(server), server, "big", ref,
                 inproc=True, expect_error=server == "vsftpd", tool="stock"),
        ]  # fmt: skip
        if server == "vsftpd":
            ftps.insert(-1, case(f"{label}: lftp get, then fsync (as ours)", then_fsync(dc.lftp_get(server)), server,
                                 "big", ref, tool="lftp"))  # fmt: skip
    if ftps:
        groups.append(Group("dl_ftps_large", f"case D1, one {a.size_mib} MiB file downloaded over FTPS", ftps, a.reps))

    small: list[Case] = []
    sref = "SFTP: OpenSSH sftp -b, get per file, one session"
    if "sshd" in staged:
        small += [
            case("SFTP: ours (default 4 connections)", dc.ours("sshd"), "sshd", "small", sref, inproc=True, files=ns,
                 nbytes=sb, tool="ours"),
            case(sref, dc.sftp_b_get(), "sshd", "small", sref, files=ns, nbytes=sb, tool="openssh"),
            case("SFTP: OpenSSH sftp -b get -r, one session", dc.sftp_b_get(recursive=True), "sshd", "small", sref,
                 files=ns, nbytes=sb, tool="openssh"),
            case("SFTP: OpenSSH sftp -f -b, get per file (fsync, as ours)", dc.sftp_b_get(fsync=True), "sshd",
                 "small", sref, files=ns, nbytes=sb, tool="openssh"),
        ]  # fmt: skip
    for server in ("vsftpd", "pyftpd"):
        if server not in staged:
            continue
        label = "vsftpd" if server == "vsftpd" else "pyftpdlib"
        ref = f"FTPS {label}: lftp mirror --parallel=4"
        small += [
            case(f"FTPS {label}: ours (default 4 connections)", dc.ours(server), server, "small", ref, inproc=True,
                 files=ns, nbytes=sb, tool="ours"),
            case(ref, dc.lftp_mirror(server, 4), server, "small", ref, files=ns, nbytes=sb, tool="lftp"),
        ]  # fmt: skip
        if server == "vsftpd":
            small.append(case(f"{ref}, then fsync (as ours)", then_fsync(dc.lftp_mirror(server, 4)), server, "small",
                              ref, files=ns, nbytes=sb, tool="lftp"))  # fmt: skip
        else:
            small.append(case(f"FTPS {label}: stock FTPSHook.retrieve_file loop, one hook",
                              dc.stock_ftps_retrieve_file(server), server, "small", ref, inproc=True, files=ns,
                              nbytes=sb, tool="stock"))  # fmt: skip
    if small:
        groups.append(Group("dl_small", f"case D3, {ns} files of {a.small_kib} KiB downloaded", small, a.small_reps,
                            "files/s"))  # fmt: skip
    if "sshd" in staged:
        # one SSH connection per file (as for uploads): timed on the first files only, in a group of its own
        op_dir = staged["sshd"]["small_first"]
        op_count = len(os.listdir(op_dir))
        groups.append(
            Group(
                "dl_small_stock_operator",
                f'case D3 (cont.), stock SFTPOperator(operation="get") with a list of {op_count} of the {ns} files '
                "(one SSH connection per file, so files/s does not depend on the count)",
                [
                    Case('SFTP: stock SFTPOperator(operation="get"), list of files', dc.stock_sftp_operator_get(),
                         "sshd", op_dir, op_count * a.small_kib * 1024, op_count, ref=sref, inproc=True,
                         warm_source=staged["sshd"]["warm_dir"], tags={"tool": "stock"}, download_to=download_to),
                ],
                a.stock_operator_reps,
                "files/s",
            )
        )  # fmt: skip
    return groups
