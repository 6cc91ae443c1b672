"""Case 4 (peak memory, a fresh process per upload) and case 5 (import / DAG-parse cost, fresh processes)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cases import OURS_PYFTPD, OURS_SFTP, STOCK_FTPS_PYFTPD, STOCK_SFTP_NOCOMP
from servers import Servers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1 << 20

# --------------------------------------------------------------------------- case 4: memory

#: (name, rss_child mode, connection id, server)
MEMORY_CASES = [
    ("ours, SFTP (OpenSSH sshd)", "ours", OURS_SFTP, "sshd"),
    ("ours, FTPS (pyftpdlib)", "ours", OURS_PYFTPD, "pyftpd"),
    ("stock SFTPHook.store_file (compress=false)", "stock-sftp", STOCK_SFTP_NOCOMP, "sshd"),
    ("stock FTPSHook.store_file (pyftpdlib)", "stock-ftps", STOCK_FTPS_PYFTPD, "pyftpd"),
]


def memory_group(
    servers: Servers, small: Path, big: Path, reps: int, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Peak RSS (VmHWM) of one upload of *small* and of *big*, each in a fresh process."""
    cases = [c for c in MEMORY_CASES if servers.running(c[3])]
    rows: list[dict[str, Any]] = []
    unexpected: list[str] = []
    log(
        f"\n== case 4, peak memory: {len(cases)} cases x {{{small.stat().st_size // MiB} MiB, "
        f"{big.stat().st_size // MiB} MiB}} x {reps} reps"
    )
    n = 0
    for rep in range(reps):
        k = rep % len(cases) if cases else 0
        for name, mode, conn_id, server_name in cases[k:] + cases[:k]:
            for src in (small, big):
                n += 1
                view = servers.get(server_name).for_test(f"mem{n}-r{rep}")
                remote = f"{view.writable_dir}/upload.bin"
                t0 = time.perf_counter()
                p = subprocess.run(
                    [sys.executable, str(HERE / "rss_child.py"), mode, "--conn-id", conn_id,
                     "--local", str(src), "--remote", remote],
                    capture_output=True, text=True,
                )  # fmt: skip
                wall = time.perf_counter() - t0
                landed = view.local_root / "upload.bin"
                size = landed.stat().st_size if landed.exists() else None
                ok = p.returncode == 0 and size == src.stat().st_size
                info: dict[str, Any] = {}
                if p.returncode == 0:
                    info = json.loads(p.stdout.strip().splitlines()[-1])
                err = None if ok else (p.stderr.strip()[-400:] or f"landed {size} bytes")
                shutil.rmtree(view.local_root, ignore_errors=True)
                row = {"case": name, "rep": rep, "bytes": src.stat().st_size, "ok": ok, "error": err,
                       "wall_s": wall, **info}  # fmt: skip
                rows.append(row)
                if not ok:
                    unexpected.append(f"memory / {name} {src.name} rep {rep} failed: {err}")
                peak = f"{info.get('vmhwm_kib', 0) / 1024:7.1f} MiB" if ok else f"FAILED: {err}"
                log(f"  r{rep} {name:<44} {src.stat().st_size / MiB:7.0f} MiB  peak {peak}  {wall:6.2f}s")
    summary = []
    for name, _mode, _c, server in cases:
        out: dict[str, Any] = {"case": name, "server": server}
        for label, src in (("small", small), ("big", big)):
            good = [r for r in rows if r["case"] == name and r["ok"] and r["bytes"] == src.stat().st_size]
            if good:
                out[f"{label}_mib"] = statistics.median(r["vmhwm_kib"] for r in good) / 1024
                out[f"{label}_all"] = [round(r["vmhwm_kib"] / 1024, 1) for r in good]
                out[f"{label}_import_mib"] = statistics.median(r["vmhwm_after_import_kib"] for r in good) / 1024
                out[f"{label}_upload_s"] = statistics.median(r["upload_s"] for r in good)
                out["path"] = good[-1].get("path")
        if "small_mib" in out and "big_mib" in out:
            out["delta_mib"] = out["big_mib"] - out["small_mib"]
        summary.append(out)
    return rows, summary, unexpected


# --------------------------------------------------------------------------- case 5: import / DAG parse

OURS_DAG = """\
import datetime

from airflow.sdk import DAG
from airflow_secure_transfer.operators.upload import SecureUploadOperator

with DAG(dag_id="bench_parse_ours", schedule=None,
         start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)) as dag:
    SecureUploadOperator(task_id="put", conn_id="partner_sftp", local_path="/data/out/*.csv",
                         remote_path="/inbound/")
"""

STOCK_DAG = """\
import datetime

from airflow.sdk import DAG
from airflow.providers.sftp.operators.sftp import SFTPOperator

with DAG(dag_id="bench_parse_stock", schedule=None,
         start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)) as dag:
    SFTPOperator(task_id="put", ssh_conn_id="partner_sftp", operation="put",
                 local_filepath="/data/out/a.csv", remote_filepath="/inbound/a.csv")
"""

EMPTY_DAG = """\
import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="bench_parse_empty", schedule=None,
         start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)) as dag:
    EmptyOperator(task_id="put")
"""

_PEAK = textwrap.dedent("""
    import pathlib as _p
    print([l for l in _p.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0].split()[1])
""")


def _parse(path: Path) -> str:
    """Code that executes a DAG file as the DAG processor does (a module import) and checks it made a DAG."""
    return (
        "import sys, importlib.util as u\n"
        "from airflow.sdk.definitions._internal.contextmanager import DagContext as C\n"
        f"s = u.spec_from_file_location('bench_dag_module', {str(path)!r})\n"
        "m = u.module_from_spec(s); sys.modules['bench_dag_module'] = m\n"
        "C.current_autoregister_module_name = 'bench_dag_module'  # as the DagBag does, for @dag functions\n"
        "s.loader.exec_module(m)\n"
        "from airflow.sdk import DAG\n"
        "assert any(isinstance(v, DAG) for v in vars(m).values()) or C.autoregistered_dags, 'no DAG'\n"
    )


_INCR = """
import json as _j, time as _t
{baseline}
_c0, _w0 = _t.process_time(), _t.perf_counter()
{code}
print(_j.dumps({{"incr_cpu_s": _t.process_time() - _c0, "incr_wall_s": _t.perf_counter() - _w0}}))
"""

SDK = "import airflow.sdk"


def import_group(
    work: Path, out_dir: Path, reps: int, log: Callable[[str], None], warmup: bool = True, smoke: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], list[str]]:
    """Fresh-process import costs (``total``) and what a module / DAG file adds in-process (``incr``).

    The incremental figures are measured inside one fresh process, after the baseline import
    (``import airflow.sdk``), with ``time.process_time``: much less noisy than the difference of
    two whole-process timings (each ~2-3 s of CPU, with +-10 % from run to run).
    """
    dags = work / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "bench_ours_dag.py").write_text(OURS_DAG)
    (dags / "bench_stock_dag.py").write_text(STOCK_DAG)
    (dags / "bench_empty_dag.py").write_text(EMPTY_DAG)
    have_ours = (ROOT / "airflow_secure_transfer" / "operators" / "upload.py").exists()
    example = ROOT / "example_dags" / "secure_upload_example.py"
    ours_mod = "import airflow_secure_transfer.operators.upload"
    stock_mod = "import airflow.providers.sftp.operators.sftp"
    notes: list[str] = []
    # (kind, name, baseline, code)
    commands: list[tuple[str, str, str, str]] = [
        ("total", "python -c pass", "", "pass"),
        ("total", SDK, "", SDK),
        ("incr", f"parse a DAG file with one EmptyOperator after `{SDK}` (what any DAG file costs)", SDK,
         _parse(dags / "bench_empty_dag.py")),
    ]  # fmt: skip
    if have_ours:
        commands += [
            ("incr", f"`{ours_mod}` after `{SDK}`", SDK, ours_mod),
            ("incr", f"parse a DAG file with one SecureUploadOperator after `{SDK}`", SDK,
             _parse(dags / "bench_ours_dag.py")),
        ]  # fmt: skip
        if example.exists():
            commands.append(("incr", f"parse example_dags/{example.name} after `{SDK}`", SDK, _parse(example)))
    else:
        notes.append(
            "airflow_secure_transfer/operators/upload.py does not exist yet: case 5 measured the stock side only"
        )
    commands += [
        ("incr", f"`{stock_mod}` after `{SDK}`", SDK, stock_mod),
        (
            "incr",
            f"parse a DAG file with one stock SFTPOperator after `{SDK}`",
            SDK,
            _parse(dags / "bench_stock_dag.py"),
        ),
    ]
    if smoke:  # each kind of measurement once, on the fewest fresh processes
        keep = (
            SDK,
            f"`{ours_mod}` after `{SDK}`",
            "SecureUploadOperator after",
            "example_dags",
            f"`{stock_mod}` after",
        )
        commands = [c for c in commands if c[1] == SDK or any(k in c[1] for k in keep[1:])]
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files are used, as on a scheduler
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")

    def one(kind: str, baseline: str, code: str) -> dict[str, Any]:
        # the child's CPU: RUSAGE_CHILDREN grows by exactly this child's usage when it is reaped (runs are
        # sequential; the only other child, the pyftpdlib server, is never reaped during the group)
        src = _INCR.format(baseline=baseline, code=code) if kind == "incr" else code
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", src + _PEAK], env=env, capture_output=True, text=True, cwd=work)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out: dict[str, Any] = {
            "wall_s": wall,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "rc": p.returncode,
            "err": p.stderr[-400:] if p.returncode else "",
        }
        lines = p.stdout.strip().splitlines()
        try:
            out["peak_mib"] = int(lines[-1]) / 1024
            if kind == "incr":
                out.update(json.loads(lines[-2]))
        except (ValueError, IndexError):
            out["peak_mib"] = None
            if p.returncode == 0:
                out["rc"], out["err"] = -1, f"unexpected output: {p.stdout[-300:]!r}"
        return out

    log(
        f"\n== case 5, import / DAG-parse cost: {len(commands)} commands x {reps} reps"
        f"{' (+1 warm-up)' if warmup else ''}, fresh processes"
    )
    if warmup:
        one("total", "", SDK)  # warm-up: page cache and .pyc files
    rows: list[dict[str, Any]] = []
    unexpected: list[str] = []
    for rep in range(reps):
        k = rep % len(commands)
        for kind, name, baseline, code in commands[k:] + commands[:k]:
            r = one(kind, baseline, code)
            r.update(case=name, kind=kind, rep=rep)
            rows.append(r)
            if r["rc"] != 0:
                unexpected.append(f"import / {name} rep {rep}: rc={r['rc']} {r['err']}")
                log(f"  r{rep} {name}: FAILED rc={r['rc']} {r['err']}")
    summary = []
    for kind, name, _, _ in commands:
        good = [r for r in rows if r["case"] == name and r["rc"] == 0]
        if not good:
            summary.append({"case": name, "kind": kind, "error": "all runs failed"})
            continue
        row = {
            "case": name,
            "kind": kind,
            "n": len(good),
            "wall_s": statistics.median(r["wall_s"] for r in good),
            "cpu_s": statistics.median(r["cpu_s"] for r in good),
            "peak_mib": statistics.median(r["peak_mib"] for r in good if r["peak_mib"] is not None),
            "cpu_all": [round(r["cpu_s"], 3) for r in good],
        }
        if kind == "incr":
            row["incr_cpu_s"] = statistics.median(r["incr_cpu_s"] for r in good)
            row["incr_wall_s"] = statistics.median(r["incr_wall_s"] for r in good)
            row["incr_cpu_all"] = [round(r["incr_cpu_s"] * 1000, 1) for r in good]
        summary.append(row)
    for row in summary:
        what = "FAILED"
        if "incr_cpu_s" in row:
            what = f"adds {row['incr_cpu_s'] * 1000:.0f} ms CPU ({row['incr_wall_s'] * 1000:.0f} ms wall)"
        elif "cpu_s" in row:
            what = f"cpu {row['cpu_s']:.3f}s wall {row['wall_s']:.3f}s"
        log(f"  {row['case']:<90} {what}")
    # one -X importtime of our module after the baseline, for the record
    mod = "airflow_secure_transfer.operators.upload" if have_ours else "airflow_secure_transfer.hooks.sftp"
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", f"{SDK}; import {mod}"], env=env,
                       capture_output=True, text=True)  # fmt: skip
    (out_dir / f"importtime-{mod}.txt").write_text(p.stderr)
    return rows, summary, unexpected, notes
