"""Interleaved, side-by-side measurement with client / server / other CPU (the machinery of ``bench/run.py``).

Each group of cases runs in one process: for every repetition each case runs once,
and the starting case rotates from one repetition to the next, so a slow drift of
the machine (another workload, page-cache writeback) hits all cases alike. A run
is timed end to end as a user sees it: connect, authenticate, transfer, verify,
close. Around it the runner records

* client CPU: this process's CPU (in-process cases: ours and the stock hooks,
  all threads) plus the CPU of the child processes it waited for (``sftp``,
  ``ssh``, ``scp``, ``curl``, ``lftp``);
* server CPU: the server's cgroup (or process tree), session processes included;
* other CPU: the rest of the machine (kernel writeback, other workloads), and the
  hypervisor's steal.

After each run the upload is checked (size, file count, no leftover temporary
file; byte for byte on the first repetition) and deleted. A download case (``Case.download_to``)
is checked the same way: its *source* is the server-side copy of what it downloads, and each run
gets a fresh empty local directory to download into (a many-small-files download's directories are
removed when its group ends, see ``DEFER_REMOVAL_BYTES``).
"""

from __future__ import annotations

import filecmp
import os
import re
import resource
import shutil
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import Servers

MiB = 1 << 20


def sys_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz


@dataclass
class Target:
    """Where one run uploads to: a fresh, empty remote directory (and the same directory on disk)."""

    remote_dir: str
    local_dir: Path

    @property
    def remote_file(self) -> str:
        return f"{self.remote_dir.rstrip('/')}/big.bin"

    @property
    def local_file(self) -> Path:
        return self.local_dir / "big.bin"


@dataclass
class Case:
    """One line of a table: *fn(target, source)* uploads *source* (a file or a directory) into *target*."""

    name: str
    fn: Callable[[Target, Path], dict[str, Any] | None]
    server: str
    source: Path
    nbytes: int
    nfiles: int = 1
    #: name of the case this one's ratio is computed against (same group)
    ref: str | None = None
    #: a known failure (stock FTPSHook vs vsftpd): the row records the error; success would be the surprise
    expect_error: bool = False
    #: runs in this process (import and first-connection costs are paid once in a warm-up, not timed)
    inproc: bool = False
    warm_source: Path | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    #: a download case: each run downloads into a fresh empty directory under this local directory
    #: (``Target.local_dir``; ``remote_dir`` is empty), and *source* is the file or directory on the
    #: server's disk that the run downloads (bench/downloads.py)
    download_to: Path | None = None


@dataclass
class Group:
    key: str
    title: str
    cases: list[Case]
    reps: int
    unit: str = "MB/s"  # or "files/s"
    #: called once before the group's first run (e.g. to set the delay proxy's round-trip time)
    setup: Callable[[], None] | None = None


#: A download case of many files totalling less than this keeps its runs' files until the group ends.
DEFER_REMOVAL_BYTES = 64 * 1024 * 1024


class Runner:
    def __init__(self, servers: Servers, log: Callable[[str], None] = print) -> None:
        self.servers = servers
        self.rows: list[dict[str, Any]] = []
        self.unexpected: list[str] = []
        self.log = log
        self._n = 0
        self._deferred: list[Path] = []

    # ------------------------------------------------------------------ one run
    def _target(self, case: Case, rep: int) -> tuple[Target, Any]:
        server = self.servers.get(case.server)
        self._n += 1
        tag = re.sub(r"[^A-Za-z0-9]+", "-", case.name).strip("-")[:40]
        if case.download_to is not None:
            local = case.download_to / f"b{self._n}-{tag}-r{rep}"
            local.mkdir(parents=True)
            return Target("", local), None
        view = server.for_test(f"b{self._n}-{tag}-r{rep}")
        return Target(view.writable_dir, view.local_root), view

    def warm_up(self, case: Case) -> None:
        if not case.inproc or case.expect_error:
            return
        target, _ = self._target(case, -1)
        try:
            case.fn(target, case.warm_source or case.source)
        except Exception as exc:
            self.log(f"  warm-up of {case.name} failed: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(target.local_dir, ignore_errors=True)

    def run_one(self, group: Group, case: Case, rep: int) -> dict[str, Any]:
        target, _ = self._target(case, rep)
        cpu = self.servers.cpu
        baseline = cpu.nprocs(case.server)
        srv0 = cpu.cpu(case.server)
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me0 = time.process_time()
        busy0, steal0 = sys_busy()
        t0 = time.perf_counter()
        err = None
        info: dict[str, Any] = {}
        try:
            info = case.fn(target, case.source) or {}
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}".strip()
            if not case.expect_error:
                self.log(traceback.format_exc(limit=6))
        wall = time.perf_counter() - t0
        me1 = time.process_time()
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.wait_idle(case.server, baseline)
        srv1 = cpu.cpu(case.server)
        busy1, steal1 = sys_busy()
        client = (ch1.ru_utime - ch0.ru_utime + ch1.ru_stime - ch0.ru_stime) + (me1 - me0)
        server = srv1 - srv0
        other = max(0.0, (busy1 - busy0) - client - server)
        if err is None:
            err = self.verify(case, target, rep)
        if case.download_to is not None and case.nfiles > 1 and case.nbytes < DEFER_REMOVAL_BYTES:
            # Many small downloaded files are removed when the group ends, not between runs: on this VM's
            # ext4 (no journal) the inodes freed in the last ~30 s are skipped by the allocator, so deleting
            # 500 files and creating 500 more at once makes every create scan past them: a per-file kernel
            # cost of the harness, not of the client measured (BENCHMARKS.md, "Follow-up ... D3").
            self._deferred.append(target.local_dir)
        else:
            shutil.rmtree(target.local_dir, ignore_errors=True)
        ok = err is None
        row = {
            "group": group.key,
            "case": case.name,
            "rep": rep,
            "ok": ok,
            "error": err,
            "wall_s": wall,
            "bytes": case.nbytes,
            "files": case.nfiles,
            "client_cpu_s": client,
            "server_cpu_s": server,
            "other_cpu_s": other,
            "steal_s": steal1 - steal0,
            **case.tags,
            **info,
        }
        self.rows.append(row)
        if ok == case.expect_error:
            what = "succeeded although a failure was expected" if ok else f"failed: {err}"
            self.unexpected.append(f"{group.key} / {case.name} rep {rep} {what}")
        if ok:
            rate = (
                f"{case.nbytes / wall / 1e6:8.1f} MB/s"
                if group.unit == "MB/s"
                else f"{case.nfiles / wall:8.1f} files/s"
            )
        else:
            rate = ("expected error: " if case.expect_error else "FAILED: ") + (err or "")[:160]
        self.log(
            f"  r{rep} {case.name:<46} {wall:7.2f}s {rate}  cli {client / wall * 100:4.0f}% "
            f"srv {server / wall * 100:4.0f}% oth {other / wall * 100:3.0f}% st {(steal1 - steal0) / wall * 100:3.0f}%"
        )
        return row

    def verify(self, case: Case, target: Target, rep: int) -> str | None:
        if case.nfiles == 1 and case.source.is_file():
            entries = sorted(p.name for p in target.local_dir.iterdir())
            if entries != ["big.bin"]:
                return f"verify: remote directory holds {entries[:5]}, expected ['big.bin']"
            size = target.local_file.stat().st_size
            if size != case.nbytes:
                return f"verify: {size} bytes landed, {case.nbytes} expected"
            if rep == 0 and not filecmp.cmp(case.source, target.local_file, shallow=False):
                return "verify: content differs from the source"
            return None
        files = [p for p in target.local_dir.rglob("*") if p.is_file()]
        hidden = [p.name for p in files if p.name.startswith(".")]
        if hidden:
            return f"verify: {len(hidden)} leftover hidden/temporary file(s), e.g. {hidden[0]}"
        total = sum(p.stat().st_size for p in files)
        if len(files) != case.nfiles or total != case.nbytes:
            return f"verify: {len(files)} files / {total} bytes landed, {case.nfiles} / {case.nbytes} expected"
        if rep == 0:
            for p in files[:50]:
                if not filecmp.cmp(case.source / p.relative_to(target.local_dir), p, shallow=False):
                    return f"verify: {p.name} differs from the source"
        return None

    # ------------------------------------------------------------------ a group
    def run_group(self, group: Group) -> None:
        cases = [c for c in group.cases if self.servers.running(c.server)]
        skipped = [c.name for c in group.cases if not self.servers.running(c.server)]
        if skipped:
            self.log(f"  (skipped, server not running: {', '.join(skipped)})")
        group.cases = cases
        self.log(f"\n== {group.title}: {len(cases)} cases x {group.reps} reps, interleaved")
        if group.setup is not None:
            group.setup()
        os.sync()
        for case in cases:
            self.warm_up(case)
        try:
            for rep in range(group.reps):
                k = rep % len(cases) if cases else 0
                for case in cases[k:] + cases[:k]:
                    self.run_one(group, case, rep)
        finally:
            for directory in self._deferred:
                shutil.rmtree(directory, ignore_errors=True)
            self._deferred.clear()

    # ------------------------------------------------------------------ medians
    def summary(self, group: Group) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for case in group.cases:
            rs = [r for r in self.rows if r["group"] == group.key and r["case"] == case.name]
            good = [r for r in rs if r["ok"]]
            row: dict[str, Any] = {
                "case": case.name,
                "server": case.server,
                "ref": case.ref,
                "n": len(good),
                "runs": len(rs),
                "bytes": case.nbytes,
                "files": case.nfiles,
                "expect_error": case.expect_error,
                **case.tags,
            }
            if not good:
                errs = [r["error"] for r in rs if r["error"]]
                row["error"] = errs[0] if errs else "no run"
                out.append(row)
                continue

            def med(k: str, good: list[dict[str, Any]] = good) -> float:
                return float(statistics.median(r[k] for r in good))

            wall = med("wall_s")
            row.update(
                wall_s=wall,
                wall_all=[round(r["wall_s"], 3) for r in good],
                mb_s=statistics.median(r["bytes"] / r["wall_s"] / 1e6 for r in good),
                files_s=statistics.median(r["files"] / r["wall_s"] for r in good),
                client_cpu_s=med("client_cpu_s"),
                server_cpu_s=med("server_cpu_s"),
                client_cpu_pct=100 * med("client_cpu_s") / wall,
                server_cpu_pct=100 * med("server_cpu_s") / wall,
                other_cpu_pct=100 * med("other_cpu_s") / wall,
                steal_pct=100 * med("steal_s") / wall,
            )
            for key in ("crypto", "path"):
                vals = [r[key] for r in good if r.get(key)]
                if vals:
                    row[key] = vals[-1]
            errs = [r["error"] for r in rs if not r["ok"]]
            if errs:
                row["failures"] = errs
            out.append(row)
        by_name = {r["case"]: r for r in out}
        metric = "mb_s" if group.unit == "MB/s" else "files_s"
        for r in out:
            ref = by_name.get(r["ref"] or "")
            if ref and r.get(metric) and ref.get(metric):
                r["ratio"] = r[metric] / ref[metric]
        return out
