#!/usr/bin/env python
"""Single-file SFTP upload throughput, side by side, against a temporary OpenSSH sshd on loopback.

Cases (each repetition runs every case once; the starting case rotates, so slow
drifts of the machine hit all cases alike):

* ``ours``        -- ``SFTPClient(settings).write_from(path, file)`` (this package)
* ``sftp -b``     -- OpenSSH's ``sftp -b`` at its default settings (the reference, ratio 1.00)
* ``stock``       -- ``SFTPHook.store_file`` of apache-airflow-providers-sftp at its defaults
                     (paramiko, ``compress=True``), host key pinned
* ``stock nocomp``-- the same with the documented extra ``compress: false`` (``--with-nocomp``)

Every time covers the whole job as a user sees it: connect, authenticate, transfer,
close. Each upload is checked by size; the first repetition also by SHA-256. CPU
seconds of the client (this process for Python cases, the child for ``sftp``) are
printed beside the wall time; on a 2-core machine client and server share the CPUs.

Run as root (sshd needs it)::

    .venv/bin/python bench/sftp_throughput.py --size-mib 256 --reps 5

The sshd is started on a free port with its own host key, a client key made for
the run, ``PermitRootLogin prohibit-password`` and ``Subsystem sftp internal-sftp``;
it is stopped at exit. Nothing is written outside a temporary directory (``--work``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("sshd did not listen")


@dataclass
class Sshd:
    """A private OpenSSH sshd on loopback (root login with a run-time key)."""

    work: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    host_key_line: str = ""
    client_key: Path = field(default_factory=Path)
    ssh_config: Path = field(default_factory=Path)

    def start(self) -> None:
        w = self.work
        (w / "ssh").mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(w / "ssh/host_ed25519")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(w / "ssh/client")], check=True)
        shutil.copy(w / "ssh/client.pub", w / "ssh/authorized_keys")
        self.client_key = w / "ssh/client"
        self.host_key_line = " ".join((w / "ssh/host_ed25519.pub").read_text().split()[:2])
        self.port = free_port()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        cfg = w / "ssh/sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress {HOST}\nHostKey {w}/ssh/host_ed25519\nPidFile {w}/ssh/sshd.pid\n"
            f"PermitRootLogin prohibit-password\nAuthorizedKeysFile {w}/ssh/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "MaxStartups 100:30:200\nSubsystem sftp internal-sftp\n"
        )
        (w / "ssh/known_hosts").write_text(f"[{HOST}]:{self.port} {self.host_key_line}\n")
        self.ssh_config = w / "ssh/ssh_config"
        self.ssh_config.write_text(
            f"Host bench\n  HostName {HOST}\n  Port {self.port}\n  User root\n  IdentityFile {self.client_key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {w}/ssh/known_hosts\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  LogLevel ERROR\n"
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(w / "ssh/sshd.log", "wb"),
            start_new_session=True,
        )
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    return time.process_time()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work or tempfile.mkdtemp(prefix="sftp-bench-"))
        self.sshd = Sshd(self.work)
        self.dest_dir = self.work / "dest"
        self.src = self.work / "src.bin"
        self.results: list[dict[str, Any]] = []
        self.src_sha = ""

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        size = self.args.size_mib * MiB
        h = hashlib.sha256()
        with open(self.src, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 4 * MiB))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        self.src_sha = h.hexdigest()
        self.sshd.start()
        conn = {
            "conn_type": "sftp",
            "host": HOST,
            "port": self.sshd.port,
            "login": "root",
            "extra": {
                "key_file": str(self.sshd.client_key),
                "host_key": self.sshd.host_key_line,
                "look_for_keys": False,
            },
        }
        os.environ["AIRFLOW_CONN_BENCH_STOCK"] = json.dumps(conn)
        conn["extra"] = {**conn["extra"], "compress": False}  # type: ignore[dict-item]
        os.environ["AIRFLOW_CONN_BENCH_STOCK_NOCOMP"] = json.dumps(conn)
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

    # ------------------------------------------------------------------ cases
    def settings(self) -> Any:
        from airflow_secure_transfer.security.policy import parse_sftp_settings

        return parse_sftp_settings(
            conn_type="secure_sftp",
            host=HOST,
            port=self.sshd.port,
            login="root",
            extras={"host_key": self.sshd.host_key_line, "key_file": str(self.sshd.client_key)},
        )

    def case_ours(
        self, block_size: int | None = None, max_requests: int | None = None
    ) -> Callable[[Path], dict[str, Any]]:
        from airflow_secure_transfer.transfer import sftp as sftp_mod

        settings = self.settings()
        kwargs: dict[str, int] = {}
        if block_size:
            kwargs["block_size"] = block_size
        if max_requests:
            kwargs["max_requests"] = max_requests

        def run(dest: Path) -> dict[str, Any]:
            c0 = self_cpu()
            with sftp_mod.SFTPClient(settings, **kwargs) as client, open(self.src, "rb") as f:
                client.write_from(str(dest), f)
                crypto = f"{client.info.cipher} / {client.info.kex}"
            return {"cpu": self_cpu() - c0, "crypto": crypto}

        return run

    def case_sftp_b(self, extra: tuple[str, ...] = ()) -> Callable[[Path], dict[str, Any]]:
        def run(dest: Path) -> dict[str, Any]:
            c0 = child_cpu()
            p = subprocess.run(
                ["sftp", "-F", str(self.sshd.ssh_config), *extra, "-b", "-", "bench"],
                input=f"put {self.src} {dest}\n".encode(),
                capture_output=True,
                check=False,
            )
            if p.returncode != 0:
                raise RuntimeError(f"sftp failed: {p.stderr.decode(errors='replace')[-300:]}")
            crypto = " ".join(extra) or "OpenSSH default (chacha20-poly1305)"
            return {"cpu": child_cpu() - c0, "crypto": crypto}

        return run

    def case_engine(self) -> Callable[[Path], dict[str, Any]]:
        """The whole upload path of this package: engine (sha256 while reading, size check, rename)."""
        from airflow_secure_transfer.transfer.engine import upload
        from airflow_secure_transfer.transfer.sftp import SFTPClient

        settings = self.settings()

        def run(dest: Path) -> dict[str, Any]:
            c0 = self_cpu()
            upload(lambda: SFTPClient(settings), str(self.src), str(dest), max_connections=1, progress_interval=3600)
            return {"cpu": self_cpu() - c0, "crypto": "engine"}

        return run

    def case_stock(self, conn_id: str) -> Callable[[Path], dict[str, Any]]:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        def run(dest: Path) -> dict[str, Any]:
            c0 = self_cpu()
            hook = SFTPHook(ssh_conn_id=conn_id)
            hook.store_file(str(dest), str(self.src))
            hook.close_conn()
            if hook.client is not None:
                hook.client.close()
            return {"cpu": self_cpu() - c0, "crypto": "paramiko " + ("compress" if conn_id.endswith("STOCK") else "")}

        return run

    def cases(self) -> list[tuple[str, Callable[[Path], dict[str, Any]]]]:
        a = self.args
        cases: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
            ("sftp -b (OpenSSH default)", self.case_sftp_b()),
            ("ours SFTPClient.write_from", self.case_ours(a.block_size, a.max_requests)),
        ]
        if a.with_variants:
            cases.append(("ours max_requests=64", self.case_ours(a.block_size, 64)))
            cases.append(("ours max_requests=32", self.case_ours(a.block_size, 32)))
            cases.append(("sftp -b -c aes128-gcm", self.case_sftp_b(("-c", "aes128-gcm@openssh.com"))))
        if a.with_engine:
            cases.append(("ours engine upload (hash+verify)", self.case_engine()))
        if not a.no_stock:
            cases.append(("stock SFTPHook.store_file", self.case_stock("BENCH_STOCK")))
            if a.with_nocomp:
                cases.append(("stock store_file compress=false", self.case_stock("BENCH_STOCK_NOCOMP")))
        return cases

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        cases = self.cases()
        size = self.args.size_mib * MiB
        for rep in range(self.args.reps):
            k = rep % len(cases)
            for name, fn in cases[k:] + cases[:k]:
                dest = self.dest_dir / f"{rep}-{abs(hash(name)) % 10**8}.bin"
                subprocess.run(["sync"], check=False)
                t0 = time.perf_counter()
                try:
                    extra = fn(dest)
                    ok = True
                    err = ""
                except Exception as exc:  # a failing case is reported, the others go on
                    extra, ok, err = {}, False, f"{type(exc).__name__}: {exc}"
                wall = time.perf_counter() - t0
                if ok:
                    got = dest.stat().st_size
                    if got != size:
                        ok, err = False, f"size {got} != {size}"
                    elif rep == 0 and sha256_file(dest) != self.src_sha:
                        ok, err = False, "sha256 mismatch"
                dest.unlink(missing_ok=True)
                row = {"case": name, "rep": rep, "ok": ok, "seconds": wall, "mbps": size / wall / 1e6, **extra}
                if err:
                    row["error"] = err
                self.results.append(row)
                status = f"{row['mbps']:7.1f} MB/s" if ok else f"FAILED {err}"
                print(f"rep {rep} {name:34s} {wall:6.2f} s {status}  cpu {extra.get('cpu', 0):.2f} s", flush=True)

    def summary(self) -> dict[str, Any]:
        names = list(dict.fromkeys(r["case"] for r in self.results))
        med: dict[str, float] = {}
        for n in names:
            good = [r["mbps"] for r in self.results if r["case"] == n and r["ok"]]
            if good:
                med[n] = statistics.median(good)
        ref = med.get("sftp -b (OpenSSH default)")
        stock = med.get("stock SFTPHook.store_file")
        ours = med.get("ours SFTPClient.write_from")
        print(f"\n== medians over {self.args.reps} interleaved reps, {self.args.size_mib} MiB, load {os.getloadavg()}")
        print(f"{'case':36s} {'MB/s':>8s} {'vs sftp -b':>11s} {'vs stock':>9s} {'cpu s':>6s}  n")
        for n in names:
            rows = [r for r in self.results if r["case"] == n and r["ok"]]
            cpu = statistics.median([r.get("cpu", 0.0) for r in rows]) if rows else 0.0
            m = med.get(n)
            if m is None:
                print(f"{n:36s} {'FAILED':>8s}")
                continue
            r1 = f"{m / ref:.2f}x" if ref else "-"
            r2 = f"{m / stock:.2f}x" if stock else "-"
            print(f"{n:36s} {m:8.1f} {r1:>11s} {r2:>9s} {cpu:6.2f}  {len(rows)}")
        out = {
            "medians": med,
            "ratio_vs_sftp_b": (ours / ref) if ours and ref else None,
            "ratio_vs_stock": (ours / stock) if ours and stock else None,
        }
        if out["ratio_vs_sftp_b"] is not None:
            print(f"\nours / sftp -b = {out['ratio_vs_sftp_b']:.2f}x (target >= 1.0)")
        if out["ratio_vs_stock"] is not None:
            print(f"ours / stock store_file = {out['ratio_vs_stock']:.2f}x (target >= 1.6)")
        return out

    def cleanup(self) -> None:
        self.sshd.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--block-size", type=int, default=None, help="ours: bytes per request (default: the client's)")
    p.add_argument("--max-requests", type=int, default=None, help="ours: requests in flight (default: the client's)")
    p.add_argument("--no-stock", action="store_true", help="skip the stock provider case")
    p.add_argument("--with-nocomp", action="store_true", help="also run the stock hook with compress=false")
    p.add_argument("--with-variants", action="store_true", help="also run tuning variants")
    p.add_argument("--with-engine", action="store_true", help="also run the upload engine over SFTPClient")
    p.add_argument("--json", help="write all rows and the summary to this file")
    p.add_argument("--work", help="scratch directory (default: a new temp dir, removed at exit)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the temporary sshd needs it", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    bench = Bench(args)
    try:
        bench.setup()
        print(f"sshd on {HOST}:{bench.sshd.port}; file {args.size_mib} MiB; work {bench.work}", flush=True)
        bench.run()
        summary = bench.summary()
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": bench.results, "summary": summary}, indent=2))
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
