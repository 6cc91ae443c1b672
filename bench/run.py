#!/usr/bin/env python
"""Benchmarks side by side: this provider vs OpenSSH, curl, lftp and the stock Airflow hooks.

usage::

    bench/run.py            # the full run (``make bench``): results in bench/results/<timestamp>/,
                            # and the tables in BENCHMARKS.md regenerated
    bench/run.py --smoke    # tiny sizes, one repetition (``make bench-smoke``, CI): fails if a case
                            # errors unexpectedly, asserts nothing about speed, leaves BENCHMARKS.md alone

Every case runs against the same loopback servers, started once by the test suite's
own code (``tests/servers``): OpenSSH sshd, vsftpd (explicit FTPS,
``require_ssl_reuse=YES``) and pyftpdlib (TLS required). sshd and vsftpd need root
and the Debian packages (``make bench`` installs them); without them those cases are
skipped, except under ``CI=true`` where that is an error.

Cases (see BENCHMARKS.md for the tables):

1. one big file over SFTP: ours, stock ``SFTPHook.store_file``, ``sftp -b`` (defaults and
   ``-c aes128-gcm@openssh.com``), ``scp``;
2. one big file over FTPS, to vsftpd and to pyftpdlib: ours, ``curl --ssl-reqd -T``,
   ``lftp put``, stock ``FTPSHook.store_file`` (fails on vsftpd: recorded);
3. many small files: ours, ``sftp -b`` in one session, stock ``SFTPOperator`` with a list,
   ``lftp mirror -R --parallel=4``, stock ``FTPSHook`` in a loop;
4. peak RSS of a 2 GiB upload vs a 1 MiB upload, fresh process each (ours and stock);
5. import / DAG-parse cost in fresh processes;
6. scaling: 1/2/4/8 connections on case 3; 100/1,000/10,000 files;
7. the cost of ``verify="checksum"`` on servers without a hash command (the file is read back):
   one big file, ``verify="size"`` vs ``"checksum"``, to sshd and vsftpd; and the cost of
   ``preserve_mtime`` (one more command per file over FTPS, none over SFTP) on case 3's small files;
8. "wan": cases 1-3 (uploads, OpenSSH sshd and vsftpd) and the same files downloaded (ours against
   ``sftp -b get``, ``lftp get``/``mirror --parallel=4``, ``curl``) at 50 and 150 ms round-trip time through a
   user-space delay proxy (bench/delay_proxy.py, bench/wan.py), with the round trips each run spent
   (``--wan-parts``: large, small, operator, dl_large, dl_small);

D1. one big file downloaded (bench/downloads.py), from sshd: ours, ``sftp -b get`` (and ``-f``: fsync),
   stock ``SFTPHook.retrieve_file`` and ``SFTPOperator(operation="get")``; from vsftpd and pyftpdlib:
   ours, ``curl --ssl-reqd -o``, ``lftp get``, stock ``FTPSHook.retrieve_file`` (fails on vsftpd: recorded);
D3. many small files downloaded: ours, ``sftp -b`` (a ``get`` per file in one session; ``get -r``; ``-f``),
   ``lftp mirror --parallel=4``, stock ``FTPSHook.retrieve_file`` in a loop, stock ``SFTPOperator`` with a list.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

MiB = 1 << 20

FULL = {
    "size_mib": 256,
    "reps": 5,
    "small_count": 500,
    "small_kib": 8,
    "small_reps": 5,
    "stock_operator_reps": 5,
    "stock_operator_count": 100,
    "mem_big_mib": 2048,
    "mem_small_mib": 1,
    "mem_reps": 2,
    "import_reps": 5,
    "conns": "1,2,4,8",
    "counts": "100,1000,10000",
    "ftps_counts": "100,1000",
    "scale_reps": 3,
    "count_reps": 3,
    "wan_rtts": "50,150",
    "wan_size_mib": 64,
    "wan_small_count": 100,
    "wan_stock_operator_count": 10,
    "wan_reps": 3,
    "wan_rate_mbit": 0.0,
    "wan_window_kib": 0,
    "wan_protocols": "sftp,ftps",
    "wan_parts": "large,small,operator,dl_large,dl_small",
    "wan_tools": "ours,openssh,stock,lftp,curl",
}
SMOKE = {
    "size_mib": 4,
    "reps": 1,
    "small_count": 12,
    "small_kib": 8,
    "small_reps": 1,
    "stock_operator_reps": 1,
    "stock_operator_count": 6,
    "mem_big_mib": 8,
    "mem_small_mib": 1,
    "mem_reps": 1,
    "import_reps": 1,
    "conns": "1,2",
    "counts": "5,20",
    "ftps_counts": "5",
    "scale_reps": 1,
    "count_reps": 1,
    "wan_rtts": "5",
    "wan_size_mib": 1,
    "wan_small_count": 4,
    "wan_stock_operator_count": 2,
    "wan_reps": 1,
    "wan_rate_mbit": 0.0,
    "wan_window_kib": 0,
    "wan_protocols": "sftp,ftps",
    "wan_parts": "large,small,operator,dl_large,dl_small",
    "wan_tools": "ours,openssh,stock,lftp,curl",
}
GROUPS = (
    "import", "sftp_large", "ftps_large", "small", "scale_conns", "scale_counts", "memory", "verify", "mtime", "wan",
    "dl_sftp_large", "dl_ftps_large", "dl_small",
)  # fmt: skip
#: groups that run when the first one is asked for
FOLLOWERS = {"small_stock_operator": "small", "dl_small_stock_operator": "dl_small"}


class Tee:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "a")

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.f.write(msg + "\n")
        self.f.flush()


# --------------------------------------------------------------------------- inputs


def make_file(path: Path, nbytes: int) -> Path:
    if path.exists() and path.stat().st_size == nbytes:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = nbytes
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    tmp.rename(path)
    return path


def make_dir(path: Path, count: int, kib: int) -> Path:
    if path.is_dir() and len(os.listdir(path)) == count:
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    width = max(4, len(str(count)))
    for i in range(count):
        (path / f"f{i:0{width}d}.bin").write_bytes(os.urandom(kib * 1024))
    return path


def warm_page_cache(path: Path) -> None:
    paths = [path] if path.is_file() else sorted(path.iterdir())
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 * MiB):
                pass


# --------------------------------------------------------------------------- groups


def build_groups(a: argparse.Namespace, cases: Any, src: dict[str, Path]) -> list[Any]:
    from cases import ours_case
    from harness import Case, Group

    big, small, warm_file, warm_dir = src["big"], src["small"], src["warm_file"], src["warm_dir"]
    nb = big.stat().st_size
    sb = a.small_count * a.small_kib * 1024
    ns = a.small_count
    groups: list[Group] = []

    ref1 = "OpenSSH sftp -b (defaults)"
    groups.append(
        Group(
            "sftp_large",
            f"case 1, one {a.size_mib} MiB file over SFTP to OpenSSH sshd",
            [
                ours_case(cases, "ours", "sshd", big, nb, 1, ref1, warm_file, tool="ours"),
                Case("stock SFTPHook.store_file", cases.stock_sftp_store_file(), "sshd", big, nb, ref=ref1,
                     inproc=True, warm_source=warm_file, tags={"tool": "stock"}),
                Case(ref1, cases.sftp_b(), "sshd", big, nb, ref=ref1, tags={"tool": "openssh"}),
                Case("OpenSSH sftp -b -c aes128-gcm@openssh.com", cases.sftp_b("aes128-gcm@openssh.com"), "sshd",
                     big, nb, ref=ref1, tags={"tool": "openssh"}),
                Case("scp (defaults)", cases.scp(), "sshd", big, nb, ref=ref1, tags={"tool": "openssh"}),
            ],
            a.reps,
        )
    )  # fmt: skip
    ftps: list[Case] = []
    for server, ref_tool in (("vsftpd", "lftp put"), ("pyftpd", "curl --ssl-reqd -T")):
        label = "vsftpd" if server == "vsftpd" else "pyftpdlib"
        ref = f"{label}: {ref_tool}"
        ftps += [
            ours_case(cases, f"{label}: ours", server, big, nb, 1, ref, warm_file, tool="ours"),
            Case(f"{label}: curl --ssl-reqd -T", cases.curl(server), server, big, nb, ref=ref, tags={"tool": "curl"}),
            Case(f"{label}: lftp put", cases.lftp_put(server), server, big, nb, ref=ref, tags={"tool": "lftp"}),
            Case(f"{label}: stock FTPSHook.store_file", cases.stock_ftps_store_file(server), server, big, nb,
                 ref=ref, expect_error=server == "vsftpd", inproc=True, warm_source=warm_file,
                 tags={"tool": "stock"}),
        ]  # fmt: skip
    groups.append(Group("ftps_large", f"case 2, one {a.size_mib} MiB file over FTPS", ftps, a.reps))

    sref = "SFTP: OpenSSH sftp -b, one session"
    small_cases = [
        ours_case(cases, "SFTP: ours (default 4 connections)", "sshd", small, sb, ns, sref, warm_dir, tool="ours"),
        Case(sref, cases.sftp_b(), "sshd", small, sb, ns, ref=sref, tags={"tool": "openssh"}),
    ]
    for server in ("vsftpd", "pyftpd"):
        label = "vsftpd" if server == "vsftpd" else "pyftpdlib"
        ref = f"FTPS {label}: lftp mirror -R --parallel=4"
        small_cases += [
            ours_case(cases, f"FTPS {label}: ours (default 4 connections)", server, small, sb, ns, ref, warm_dir,
                      tool="ours"),
            Case(ref, cases.lftp_mirror(server, 4), server, small, sb, ns, ref=ref, tags={"tool": "lftp"}),
        ]  # fmt: skip
    small_cases.append(
        Case("FTPS pyftpdlib: stock FTPSHook.store_file loop, one hook", cases.stock_ftps_loop("pyftpd"), "pyftpd",
             small, sb, ns, ref="FTPS pyftpdlib: lftp mirror -R --parallel=4", inproc=True, warm_source=warm_dir,
             tags={"tool": "stock"})
    )  # fmt: skip
    groups.append(Group("small", f"case 3, {ns} files of {a.small_kib} KiB", small_cases, a.small_reps, "files/s"))
    # The stock SFTPOperator opens one SSH connection per file (~7 files/s): timed on the first
    # `stock_operator_count` files only (its files/s does not depend on the count), in a group of its own.
    op_count = min(a.stock_operator_count, ns)
    op_src = src["small"] if op_count == ns else src[f"count{op_count}"]
    groups.append(
        Group(
            "small_stock_operator",
            f"case 3 (cont.), stock SFTPOperator with a list of {op_count} of the {ns} files "
            "(one SSH connection per file, so files/s does not depend on the count)",
            [
                Case("SFTP: stock SFTPOperator, list of files", cases.stock_sftp_operator(), "sshd", op_src,
                     op_count * a.small_kib * 1024, op_count, ref=sref, inproc=True, warm_source=warm_dir,
                     tags={"tool": "stock"}),
            ],
            a.stock_operator_reps,
            "files/s",
        )
    )  # fmt: skip

    conns = [int(x) for x in a.conns.split(",")]
    scale: list[Case] = []
    for server, proto in (("sshd", "SFTP"), ("vsftpd", "FTPS vsftpd")):
        ref = f"{proto}: ours, {conns[0]} connection{'s' if conns[0] > 1 else ''}"
        for m in conns:
            scale.append(
                ours_case(cases, f"{proto}: ours, {m} connection{'s' if m > 1 else ''}", server, small, sb, ns, ref,
                          warm_dir, max_connections=m, tool="ours", connections=m)
            )  # fmt: skip
    groups.append(Group("scale_conns", f"case 6a, {ns} files x {a.small_kib} KiB by connections", scale,
                        a.scale_reps, "files/s"))  # fmt: skip

    counts = [int(x) for x in a.counts.split(",")]
    ftps_counts = [int(x) for x in a.ftps_counts.split(",")]
    bycount: list[Case] = []
    for server, proto, cs in (("sshd", "SFTP", counts), ("vsftpd", "FTPS vsftpd", ftps_counts)):
        ref = f"{proto}: ours, {cs[0]:,} files"
        for c in cs:
            d = src[f"count{c}"]
            bycount.append(
                ours_case(cases, f"{proto}: ours, {c:,} files", server, d, c * a.small_kib * 1024, c, ref, warm_dir,
                          tool="ours", files=c)
            )  # fmt: skip
    verify: list[Case] = []
    for server, label in (("sshd", "SFTP sshd"), ("vsftpd", "FTPS vsftpd")):
        for mode in ("size", "checksum"):
            name = f"{label}: verify={mode!r}" + (" (read back)" if mode == "checksum" else "")
            verify.append(Case(name, cases.ours_file(server, verify=mode), server, big, nb,
                               ref=f"{label}: verify='size'", inproc=True, warm_source=warm_file,
                               tags={"tool": "ours"}))  # fmt: skip
    groups.append(Group("verify", f"case 7, one {a.size_mib} MiB file: verify='size' vs 'checksum' (read back)",
                        verify, a.reps))  # fmt: skip
    mtime: list[Case] = []
    for server, label in (("sshd", "SFTP sshd"), ("vsftpd", "FTPS vsftpd")):
        for keep in (False, True):
            mtime.append(Case(f"{label}: preserve_mtime={keep}", cases.ours_dir(server, preserve_mtime=keep), server,
                              small, sb, ns, ref=f"{label}: preserve_mtime=False", inproc=True, warm_source=warm_dir,
                              tags={"tool": "ours"}))  # fmt: skip
    groups.append(Group("mtime", f"case 7b, {ns} files of {a.small_kib} KiB: preserve_mtime off vs on", mtime,
                        a.small_reps, "files/s"))  # fmt: skip
    groups.append(Group("scale_counts", f"case 6b, {'/'.join(f'{c:,}' for c in counts)} files (default connections)",
                        bycount, a.count_reps, "files/s"))  # fmt: skip
    return groups


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in (
        "airflow-provider-secure-transfer", "apache-airflow", "apache-airflow-task-sdk",
        "apache-airflow-providers-sftp", "apache-airflow-providers-ssh", "apache-airflow-providers-ftp",
        "paramiko", "asyncssh", "cryptography", "pyftpdlib", "pyOpenSSL",
    ):  # fmt: skip
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "-"
    import ssl

    out["openssl (python)"] = ssl.OPENSSL_VERSION
    return out


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "mem_mib": mem, "kernel": platform.release(), "os": os_name}


def git_rev() -> str:
    try:
        p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
        return p.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if p.returncode == 0 else "?"
    except OSError:
        return "?"


def _cross_group_ratios(summary: list[dict[str, Any]], done: dict[str, Any], unit: str) -> None:
    """Ratios against a reference that ran in another (earlier) group with the same unit."""
    metric = "mb_s" if unit == "MB/s" else "files_s"
    refs = {r["case"]: r for g in done.values() if g.get("unit") == unit for r in g["summary"]}
    for row in summary:
        ref = refs.get(row.get("ref") or "")
        if row.get("ratio") is None and ref and row.get(metric) and ref.get(metric):
            row["ratio"] = row[metric] / ref[metric]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition; does not touch BENCHMARKS.md")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated subset of {', '.join(GROUPS)}")
    for key, val in FULL.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(val), default=None, help=f"full run: {val}")
    ap.add_argument("--out", help="results directory (default bench/results/<timestamp>)")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp/sectransfer-bench"),
                    help="where the source files are generated and kept between runs")  # fmt: skip
    ap.add_argument("--no-md", action="store_true", help="do not regenerate BENCHMARKS.md")
    ap.add_argument("--md", default=str(ROOT / "BENCHMARKS.md"), help="the markdown file to regenerate")
    ap.add_argument("--from-json", help="only re-render RESULTS.json (of an earlier run) into --md; run nothing")
    a = ap.parse_args(argv)
    profile = SMOKE if a.smoke else FULL
    a.custom = []
    for key, val in profile.items():
        if getattr(a, key) is None:
            setattr(a, key, val)
        elif not a.smoke and getattr(a, key) != val:
            a.custom.append(f"{key}={getattr(a, key)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.from_json:
        from report import render, update_benchmarks_md

        src = Path(a.from_json).resolve()
        md = render(json.loads(src.read_text()))
        (src.parent / "results.md").write_text(md)
        update_benchmarks_md(Path(a.md), md, src.parent.relative_to(ROOT) if src.is_relative_to(ROOT) else src.parent)
        print(f"re-rendered {src} into {a.md}")
        return 0
    started = time.time()
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S") + ("-smoke" if a.smoke else "")
    out = Path(a.out) if a.out else HERE / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    log = Tee(out / "run.log")
    groups_wanted = [g.strip() for g in a.groups.split(",") if g.strip()]
    unknown = set(groups_wanted) - set(GROUPS)
    if unknown:
        log(f"unknown groups: {sorted(unknown)}")
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / f"scratch-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    log(f"bench: {'smoke' if a.smoke else 'full'} run -> {out}; load average {load_before}")

    # ---- inputs (kept in --work between runs)
    t_in = time.perf_counter()
    src: dict[str, Path] = {
        "big": make_file(work / f"big-{a.size_mib}MiB.bin", a.size_mib * MiB),
        "small": make_dir(work / f"small-{a.small_count}x{a.small_kib}KiB", a.small_count, a.small_kib),
        "warm_file": make_file(work / "warm-1MiB.bin", MiB),
        "warm_dir": make_dir(work / "warm-4x8KiB", 4, 8),
    }
    all_counts = {int(x) for x in f"{a.counts},{a.ftps_counts},{a.stock_operator_count}".split(",")}
    for c in sorted(all_counts - {a.small_count}):
        src[f"count{c}"] = make_dir(work / f"small-{c}x{a.small_kib}KiB", c, a.small_kib)
    src[f"count{a.small_count}"] = src["small"]
    if "wan" in groups_wanted:
        src["wan_big"] = make_file(work / f"big-{a.wan_size_mib}MiB.bin", a.wan_size_mib * MiB)
        src["wan_small"] = make_dir(work / f"small-{a.wan_small_count}x{a.small_kib}KiB", a.wan_small_count,
                                    a.small_kib)  # fmt: skip
        src["wan_op"] = make_dir(work / f"small-{a.wan_stock_operator_count}x{a.small_kib}KiB",
                                 a.wan_stock_operator_count, a.small_kib)  # fmt: skip
    if "memory" in groups_wanted:
        src["mem_small"] = make_file(work / f"mem-{a.mem_small_mib}MiB.bin", a.mem_small_mib * MiB)
        src["mem_big"] = make_file(work / f"mem-{a.mem_big_mib}MiB.bin", a.mem_big_mib * MiB)
    warm_page_cache(src["big"])
    warm_page_cache(src["small"])
    log(f"inputs ready in {time.perf_counter() - t_in:.1f}s ({work})")

    from servers import start_servers

    results: dict[str, Any] = {"groups": {}, "notes": []}
    unexpected: list[str] = []
    with start_servers() as servers:
        from cases import Cases, connection_env

        os.environ.update(connection_env(servers))
        os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow-home"))
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        from airflow.sdk.bases.operator import ExecutorSafeguard
        from harness import Runner

        # operators run with op.execute(context={}), as in provider unit tests; without this every run
        # logs "cannot be called outside of the Task Runner!" (the only difference)
        ExecutorSafeguard.test_mode = True

        cases = Cases(servers, scratch)
        logging.getLogger("airflow_secure_transfer").setLevel(logging.WARNING)
        logging.getLogger("airflow").setLevel(logging.ERROR)
        logging.getLogger("paramiko").setLevel(logging.WARNING)
        meta: dict[str, Any] = {
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": "smoke" if a.smoke else ("reduced" if a.custom else "full"),
            "custom": a.custom,
            "params": {k: getattr(a, k) for k in FULL},
            "machine": machine(),
            "versions": {**versions(), **servers.versions},
            "git": git_rev(),
            "ours_path": cases.ours_path,
            "server_cpu": servers.cpu.kind,
            "servers_skipped": servers.unavailable,
            "load_before": load_before,
        }
        log(json.dumps(meta, indent=1))
        runner = Runner(servers, log)
        groups = build_groups(a, cases, src)
        if any(g.startswith("dl_") for g in groups_wanted):
            from downloads import DownloadCases, build_download_groups, stage

            staged = stage(servers, src, min(a.stock_operator_count, a.small_count))
            dcases = DownloadCases(cases, {k: v[0] for k, v in staged.items()})
            meta["ours_download_path"] = dcases.ours_path
            groups += build_download_groups(a, dcases, {k: v[1] for k, v in staged.items()}, scratch / "downloads")
        for group in groups:
            if group.key not in groups_wanted and FOLLOWERS.get(group.key) not in groups_wanted:
                continue
            g0 = time.perf_counter()
            runner.run_group(group)
            summary = runner.summary(group)
            _cross_group_ratios(summary, results["groups"], group.unit)
            results["groups"][group.key] = {
                "title": group.title,
                "unit": group.unit,
                "reps": group.reps,
                "seconds": time.perf_counter() - g0,
                "summary": summary,
            }
            log(f"  ({group.key}: {time.perf_counter() - g0:.0f}s)")
        if "wan" in groups_wanted:
            from wan import run_wan

            run_wan(a, servers, cases, src, runner, results, log,
                    lambda summary, unit: _cross_group_ratios(summary, results["groups"], unit))  # fmt: skip
        unexpected += runner.unexpected
        results["runs"] = runner.rows

        from extra_groups import import_group, memory_group

        if "memory" in groups_wanted:
            g0 = time.perf_counter()
            rows, summary, bad = memory_group(servers, src["mem_small"], src["mem_big"], a.mem_reps, log)
            results["groups"]["memory"] = {"title": "case 4, peak RSS", "reps": a.mem_reps, "summary": summary,
                                           "runs": rows, "seconds": time.perf_counter() - g0}  # fmt: skip
            unexpected += bad
        if "import" in groups_wanted:
            g0 = time.perf_counter()
            rows, summary, bad, notes = import_group(work, out, a.import_reps, log, warmup=not a.smoke, smoke=a.smoke)
            results["groups"]["import"] = {"title": "case 5, import / DAG-parse cost", "reps": a.import_reps,
                                           "summary": summary, "runs": rows,
                                           "seconds": time.perf_counter() - g0}  # fmt: skip
            results["notes"] += notes
            unexpected += bad
    shutil.rmtree(scratch, ignore_errors=True)
    meta["load_after"] = os.getloadavg()
    meta["elapsed_s"] = round(time.time() - started, 1)
    results["meta"] = meta
    results["unexpected"] = unexpected

    from report import render, update_benchmarks_md

    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = render(results)
    (out / "results.md").write_text(md)
    log("\n" + md)
    if not a.smoke and not a.no_md:
        update_benchmarks_md(Path(a.md), md, out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
        log(f"updated {a.md}")
    log(f"\nbench: done in {meta['elapsed_s']:.0f}s; results in {out}")
    if unexpected:
        log("bench: UNEXPECTED FAILURES:\n  " + "\n  ".join(unexpected))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
