#!/usr/bin/env python
"""Run one of our upload cases in a loop against the benchmark servers, for a profiler.

usage::

    .venv/bin/py-spy record -r 200 -f raw -o /tmp/small-sftp.txt -- \\
        .venv/bin/python bench/profile.py small-sftp --seconds 20
    .venv/bin/python bench/profile.py --top /tmp/small-sftp.txt      # where the samples went

Cases: ``big-sftp``, ``big-vsftpd``, ``big-pyftpd`` (one file of ``--size-mib``),
``small-sftp``, ``small-vsftpd``, ``small-pyftpd`` (``--count`` files of 8 KiB, default
connections). The servers, connections and inputs are the same as ``bench/run.py``'s.
``--download``: the same cases downloaded (cases D1, D3: the input staged on the server as
``bench/downloads.py`` does, each round into a fresh local directory).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def _name(frame: str) -> str:
    """``"func (path/to/file.py:12)"`` -> ``"func (file.py)"``."""
    func, sep, rest = frame.partition(" (")
    if not sep:
        return frame
    return f"{func} ({rest.split(':')[0].rsplit('/', 1)[-1].rstrip(')')})"


def top(path: str, n: int = 40) -> None:
    """Summarise a py-spy ``-f raw`` (collapsed stacks) file: inclusive and self samples per function."""
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        threads[frames[0]] += c
        seen = set()
        for f in frames[1:]:
            name = _name(f)
            if name not in seen:
                incl[name] += c
                seen.add(name)
        self_[_name(frames[-1])] += c
    print(f"{total} samples")
    print("\n-- threads")
    for t, c in threads.most_common(12):
        print(f"{100 * c / total:6.1f}%  {t}")
    print("\n-- self (leaf)")
    for f, c in self_.most_common(n):
        print(f"{100 * c / total:6.1f}%  {f}")
    print("\n-- inclusive")
    for f, c in incl.most_common(n):
        print(f"{100 * c / total:6.1f}%  {f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="?")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--max-connections", type=int, default=None)
    ap.add_argument("--download", action="store_true", help="download the input instead of uploading it")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp/sectransfer-bench"))
    ap.add_argument("--top", help="summarise a py-spy raw file instead")
    ap.add_argument("--each", action="store_true", help="print each round's wall time and this process's CPU")
    a = ap.parse_args()
    if a.top:
        top(a.top)
        return 0
    kind, _, server = (a.case or "").partition("-")
    server = {"sftp": "sshd"}.get(server, server)
    if kind not in ("big", "small") or server not in ("sshd", "vsftpd", "pyftpd"):
        ap.error("case must be big-|small- + sftp|vsftpd|pyftpd")
    from run import MiB, make_dir, make_file
    from servers import start_servers

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if kind == "big":
        src = make_file(work / f"big-{a.size_mib}MiB.bin", a.size_mib * MiB)
    else:
        src = make_dir(work / f"small-{a.count}x8KiB", a.count, 8)
    with start_servers() as servers:
        from cases import OURS_CONN, connection_env
        from ours import ours_uploader

        os.environ.update(connection_env(servers))
        os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow-home"))
        import logging

        logging.getLogger("airflow").setLevel(logging.ERROR)
        logging.getLogger("airflow_secure_transfer").setLevel(logging.WARNING)
        from airflow.sdk.bases.operator import ExecutorSafeguard

        ExecutorSafeguard.test_mode = True  # no "outside of the Task Runner" warning per run
        path, upload = ours_uploader()
        srv = servers.get(server)
        if a.download:
            from downloads import place
            from ours import ours_downloader

            path, download = ours_downloader()
            staged = srv.for_test("prof-src")
            place(src, staged.local_root / src.name)
            remote_src = f"{staged.writable_dir}/{src.name}"
        deadline = time.monotonic() + a.seconds
        n = 0
        t0 = time.perf_counter()
        while time.monotonic() < deadline:
            r0, c0 = time.perf_counter(), os.times()
            if a.download:
                local = work / f"prof-download-{n}"
                download(OURS_CONN[server], remote_src, str(local / "big.bin") if kind == "big" else f"{local}/",
                         a.max_connections)  # fmt: skip
                shutil.rmtree(local, ignore_errors=True)
            else:
                view = srv.for_test(f"prof{n}")
                remote = view.writable_dir + ("/big.bin" if kind == "big" else "/")
                upload(OURS_CONN[server], str(src), remote, a.max_connections)
                shutil.rmtree(view.local_root, ignore_errors=True)
            if a.each:
                c1 = os.times()
                print(f"round {n}: {time.perf_counter() - r0:.3f} s, CPU user {c1.user - c0.user:.3f} "
                      f"system {c1.system - c0.system:.3f} s", flush=True)  # fmt: skip
            n += 1
        dt = time.perf_counter() - t0
        what = "downloads" if a.download else "uploads"
        print(f"{n} {what} via {path} in {dt:.1f}s: {dt / n:.3f}s each", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
