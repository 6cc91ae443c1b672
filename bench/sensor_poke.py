#!/usr/bin/env python
"""One sensor poke (connect, list a directory of 10,000 names, match) per protocol, beside the stock ``SFTPSensor``.

usage::

    bench/sensor_poke.py                  # 10,000 names, 5 repetitions; results in bench/results/<stamp>-sensor/
    bench/sensor_poke.py --names 500 --reps 1     # a quick look

Same loopback servers as ``bench/run.py`` (OpenSSH sshd, vsftpd, pyftpdlib; ``bench/servers.py``). Each
server gets one directory of *names* files (``data-00000.bin`` ...) plus ``report-1.csv``; each poke
waits for ``report-*.csv`` (``stable_for=0``, so one poke decides). Every poke runs in a fresh process
(``--child``), which reports:

* ``seconds``: the poke itself (connect, log in, list, match, disconnect), imports excluded;
* ``rss_before_mib``: the process's RSS before the poke (``VmRSS``), after a warm-up poke of a
  one-file directory (imports and first-connection work done, as in a worker that poked before);
* ``peak_mib``: the high-water mark after the poke (``VmHWM``); ``listing_mib`` = peak - before,
  the RSS the listing cost;
* ``traced_mib``: the peak of Python allocations (``tracemalloc``, all threads) during one more
  poke of the same directory (a separate, untimed poke: tracing slows it down).

Cases: ``SecureFileSensor.poke`` over SFTP (sshd), FTPS (vsftpd, pyftpdlib); the stock
``SFTPSensor(path=dir, file_pattern="report-*.csv").poke`` (sshd, the same key; stock FTP has no
sensor that speaks TLS).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
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


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(mode: str, conn_id: str, directory: str, warm: str) -> int:
    """Warm up on a one-file directory, then poke *directory* timed, then again traced; print JSON."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import tracemalloc

    def make(where: str) -> Any:
        if mode == "ours":
            from airflow_secure_transfer.sensors.file import SecureFileSensor

            return SecureFileSensor(
                task_id="poke", conn_id=conn_id, path=f"{where}/report-*.csv", stable_for=0, deferrable=False
            )
        from airflow.providers.sftp.sensors.sftp import SFTPSensor

        return SFTPSensor(task_id="poke", sftp_conn_id=conn_id, path=where, file_pattern="report-*.csv")

    make(warm).poke({})  # imports and first-connection work, as a worker that poked before
    sensor = make(directory)
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    result = sensor.poke({})
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    tracemalloc.start()
    make(directory).poke({})
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    found = getattr(result, "xcom_value", None) if not isinstance(result, bool) else None
    done = bool(getattr(result, "is_done", result))
    print(
        json.dumps(
            {
                "done": done,
                "matched": found,
                "seconds": seconds,
                "rss_before_mib": before / 1024,
                "peak_mib": peak / 1024,
                "listing_mib": max(0, peak - before) / 1024,
                "traced_mib": traced_peak / 2**20,
            },
            default=str,
        )
    )
    return 0 if done else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", help="results directory (default bench/results/<stamp>-sensor)")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "CONN_ID", "DIR", "WARM"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(*a.child)

    from cases import OURS_CONN, STOCK_SFTP, connection_env
    from servers import start_servers

    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = Path(a.out) if a.out else HERE / "results" / f"{stamp}-sensor"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with start_servers() as servers:
        env = {**os.environ, **connection_env(servers), "PYTHONPATH": str(ROOT)}
        env.setdefault("AIRFLOW_HOME", str(out / "airflow-home"))
        cases: list[tuple[str, str, str, str]] = []
        for name in ("sshd", "vsftpd", "pyftpd"):
            if servers.running(name):
                cases.append((f"ours SecureFileSensor, {name}", "ours", OURS_CONN[name], name))
        if servers.running("sshd"):
            cases.append(("stock SFTPSensor(file_pattern), sshd", "stock", STOCK_SFTP, "sshd"))
        dirs: dict[str, tuple[str, str]] = {}
        for _, _, _, name in cases:
            if name in dirs:
                continue
            view = servers.get(name).for_test(f"sensor-{a.names}")
            warm = servers.get(name).for_test("sensor-warm")
            for i in range(a.names):
                (view.local_root / f"data-{i:05d}.bin").touch()
            for root in (view.local_root, warm.local_root):
                (root / "report-1.csv").write_bytes(b"id\n1\n")
            dirs[name] = (view.writable_dir, warm.writable_dir)
        print(f"{len(cases)} cases x {a.reps} reps, {a.names + 1} names per directory", flush=True)
        for rep in range(a.reps):
            for label, mode, conn_id, name in cases[rep % len(cases) :] + cases[: rep % len(cases)]:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", mode, conn_id, *dirs[name]],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                lines = proc.stdout.strip().splitlines()
                row: dict[str, Any] = {"case": label, "rep": rep, "ok": proc.returncode == 0}
                if lines and lines[-1].startswith("{"):
                    row.update(json.loads(lines[-1]))
                if not row["ok"]:
                    row["error"] = (proc.stderr or proc.stdout)[-600:]
                rows.append(row)
                shown = (
                    f"{row['seconds'] * 1000:7.0f} ms  RSS +{row['listing_mib']:5.1f} MiB  "
                    f"traced {row['traced_mib']:5.1f} MiB  peak {row['peak_mib']:6.1f} MiB"
                    if row["ok"]
                    else "FAILED " + row.get("error", "")[-200:]
                )
                print(f"  r{rep} {label:<40} {shown}", flush=True)
    summary = []
    for label in dict.fromkeys(r["case"] for r in rows):
        ok = [r for r in rows if r["case"] == label and r["ok"]]
        if not ok:
            summary.append({"case": label, "ok": False})
            continue
        summary.append(
            {
                "case": label,
                "ok": True,
                "median_ms": statistics.median(r["seconds"] for r in ok) * 1000,
                "min_ms": min(r["seconds"] for r in ok) * 1000,
                "listing_mib": statistics.median(r["listing_mib"] for r in ok),
                "traced_mib": statistics.median(r["traced_mib"] for r in ok),
                "peak_mib": statistics.median(r["peak_mib"] for r in ok),
                "runs": len(ok),
            }
        )
    lines = [
        f"One poke: connect, list {a.names + 1:,} names, match `report-*.csv` (fresh process per poke, "
        f"median of {a.reps})",
        "",
        "| case | median | min | RSS growth (VmHWM - VmRSS before) | Python allocations, peak (tracemalloc) "
        "| peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        if s["ok"]:
            lines.append(
                f"| {s['case']} | {s['median_ms']:.0f} ms | {s['min_ms']:.0f} ms | "
                f"{s['listing_mib']:.1f} MiB | {s['traced_mib']:.1f} MiB | {s['peak_mib']:.1f} MiB |"
            )
        else:
            lines.append(f"| {s['case']} | failed | | | | |")
    table = "\n".join(lines)
    (out / "sensor.json").write_text(json.dumps({"names": a.names, "rows": rows, "summary": summary}, indent=1))
    (out / "sensor.md").write_text(table + "\n")
    print("\n" + table)
    return 0 if all(s["ok"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
