"""Many tasks, one server: the stock SFTPOperator under a real scheduler, for BENCHMARKS.md's "Many tasks" table.

The same deployment and server limits as ``tests/airflow/test_many_tasks.py`` (which measures ours):
``airflow scheduler`` with the LocalExecutor (parallelism 8), 24 groups of 84 files mapped to OpenSSH sshd
with ``MaxStartups 4:30:8`` / ``MaxSessions 4``, a session-counting proxy in front of it. Prints the figures
as JSON: files delivered (sha256-checked), task instances failed, wall time, peak sessions.

Run as root (sshd, the test user): ``.venv/bin/python bench/many_tasks.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import HOST, sha256_file  # noqa: E402
from tests.servers.airflow_stack import airflow_stack  # noqa: E402
from tests.servers.interop import ensure_test_user, interop_base, run_sshd  # noqa: E402
from tests.servers.proxy import CountingProxy  # noqa: E402
from tests.servers.sftp_asyncssh import make_client_keys  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=24)
    parser.add_argument("--files-per-group", type=int, default=84)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    login, password = ensure_test_user()
    with tempfile.TemporaryDirectory(prefix="many-tasks-") as tmp, interop_base() as base:
        work = Path(tmp)
        outbox = work / "outbox"
        for g in range(args.groups):
            group = outbox / f"group-{g:02d}"
            group.mkdir(parents=True)
            for i in range(args.files_per_group):
                (group / f"rec-{i:03d}.csv").write_bytes(os.urandom(500 + (g * 97 + i * 31) % 3500))
        keys = make_client_keys(work / "keys")
        options = {"MaxStartups": "4:30:8", "MaxSessions": "4"}
        with (
            run_sshd(base, keys, login=login, password=password, name="sshd_many", options=options) as (sshd, _),
            CountingProxy(HOST, sshd.port) as proxy,
        ):
            remote_dir = f"{sshd.writable_dir}/stock"
            conn = {
                "conn_type": "sftp",
                "host": HOST,
                "port": proxy.port,
                "login": login,
                "password": password,
                "extra": {"host_key": sshd.host_key_line, "look_for_keys": "false", "compress": "false"},
            }
            env = {
                "AIRFLOW_CONN_STOCK_PARTNER_SFTP": json.dumps(conn),
                "DELIVER_OUTBOX": str(outbox),
                "DELIVER_SFTP_DIR": remote_dir,
            }
            with airflow_stack(work / "airflow", dags_folder=ROOT / "bench" / "dags", env=env) as stack:
                stack.wait_for_dag("stock_many_partners")
                started = time.monotonic()
                run = stack.run_dag("stock_many_partners", timeout=args.timeout)
                seconds = time.monotonic() - started
                states = stack.cli_json("tasks", "states-for-dag-run", "stock_many_partners", run["run_id"])
            delivered = sum(
                1
                for src in outbox.rglob("*.csv")
                if (landed := sshd.local_path(f"{remote_dir}/{src.relative_to(outbox).as_posix()}")).is_file()
                and sha256_file(landed) == sha256_file(src)
            )
            failed = sum(1 for s in states if s.get("task_id") == "deliver_sftp" and s.get("state") != "success")
            print(
                json.dumps(
                    {
                        "operator": "stock SFTPOperator (apache-airflow-providers-sftp)",
                        "run_state": run["state"],
                        "files": args.groups * args.files_per_group,
                        "delivered_sha256_ok": delivered,
                        "task_instances_not_successful": failed,
                        "seconds": round(seconds, 1),
                        "files_per_second": round(delivered / seconds, 1),
                        "peak_sessions": proxy.peak,
                        "sessions_opened": proxy.connections,
                    }
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
