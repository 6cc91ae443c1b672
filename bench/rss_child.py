#!/usr/bin/env python
"""One upload in a fresh process, for the peak-memory case; prints JSON with the process's peak RSS.

usage: rss_child.py {ours,stock-sftp,stock-ftps} --conn-id ID --local FILE --remote PATH

The peak is ``VmHWM`` from ``/proc/self/status`` (the high-water mark of this
process's own address space). ``ru_maxrss`` is not used: after a ``vfork`` + ``exec``
from a large parent, Linux keeps the parent's high-water mark in the child's
``ru_maxrss``. The connections come from ``AIRFLOW_CONN_*`` set by the parent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ours", "stock-sftp", "stock-ftps"])
    ap.add_argument("--conn-id", required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--remote", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.mode == "ours":
        from ours import ours_uploader

        path, upload = ours_uploader()

        def run() -> None:
            upload(a.conn_id, a.local, a.remote)

    elif a.mode == "stock-sftp":
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        path = "SFTPHook.store_file"

        def run() -> None:
            SFTPHook(ssh_conn_id=a.conn_id).store_file(a.remote, a.local)

    else:
        from airflow.providers.ftp.hooks.ftp import FTPSHook

        path = "FTPSHook.store_file"

        def run() -> None:
            hook = FTPSHook(ftp_conn_id=a.conn_id)
            hook.store_file(a.remote, a.local)
            hook.close_conn()

    t1 = time.perf_counter()
    hwm_imports = vm_hwm_kib()
    run()
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "path": path,
                "import_s": t1 - t0,
                "upload_s": t2 - t1,
                "vmhwm_after_import_kib": hwm_imports,
                "vmhwm_kib": vm_hwm_kib(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
