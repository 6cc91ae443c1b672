"""The benchmark's loopback servers, started with the test suite's own code, and their CPU accounting.

* OpenSSH ``sshd`` and ``vsftpd`` (explicit FTPS, ``require_ssl_reuse=YES``) come from
  :mod:`tests.servers.interop` (root only; same configs, chroots, system user and
  throwaway PKI as the ``interop`` test tier).
* pyftpdlib (``TLS_FTPHandler``, TLS required on control and data) comes from
  :mod:`tests.servers.pyftpd`, but runs in a child process (``bench/pyftpd_server.py``)
  so that its CPU is not the client's. It does *not* require TLS session reuse on the
  data channel, like a stock pyftpdlib, so that the stock ``FTPSHook`` has a server
  it works with.

Server CPU is counted per server, including every session process it forks, with a
``cpuacct`` (cgroup v1) or a cgroup v2 group made for the run when ``/sys/fs/cgroup``
is writable; otherwise from ``/proc`` (each process of the server's tree: its own
time plus that of the children it has reaped).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import HOST, FTPSServer, SFTPServer, ci_required  # noqa: E402
from tests.servers.pki import make_pki  # noqa: E402
from tests.servers.sftp_asyncssh import make_client_keys  # noqa: E402

CGROUP_PREFIX = "sectransfer-bench-"


# --------------------------------------------------------------------------- CPU accounting


class CpuAccounting:
    """CPU seconds used by each server (and all it forks) since it started."""

    def __init__(self) -> None:
        self.kind = "process tree (/proc)"
        self._base: Path | None = None
        self._groups: dict[str, Path] = {}
        self._roots: dict[str, int] = {}
        self._v2 = False
        self._find_cgroup_root()

    def _find_cgroup_root(self) -> None:
        candidates = [
            (Path("/sys/fs/cgroup/cpuacct"), False),
            (Path("/sys/fs/cgroup"), True),
            (Path("/sys/fs/cgroup/unified"), True),
        ]
        for root, v2 in candidates:
            marker = root / ("cgroup.controllers" if v2 else "cpuacct.usage")
            if not marker.exists() or not os.access(root, os.W_OK):
                continue
            self._reap_stale(root)
            base = root / f"{CGROUP_PREFIX}{os.getpid()}"
            try:
                base.mkdir(exist_ok=True)
            except OSError:
                continue
            self._base, self._v2 = base, v2
            self.kind = f"cgroup {'v2' if v2 else 'v1 cpuacct'} ({base})"
            return

    @staticmethod
    def _reap_stale(root: Path) -> None:
        """Remove the (empty) groups of benchmark runs whose process is gone."""
        for d in root.glob(CGROUP_PREFIX + "*"):
            with contextlib.suppress(ValueError):
                if psutil.pid_exists(int(d.name[len(CGROUP_PREFIX) :])):
                    continue
            for sub in d.iterdir():
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()

    def add(self, name: str, pid: int) -> None:
        """Account server *name* whose main process is *pid* (call before it forks any session)."""
        self._roots[name] = pid
        if self._base is None:
            return
        group = self._base / name
        try:
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            print(f"bench: cannot use cgroups ({exc}); counting server CPU from /proc", flush=True)
            self.kind = "process tree (/proc)"
            self._base = None
            return
        self._groups[name] = group

    def cpu(self, name: str) -> float:
        group = self._groups.get(name)
        if group is not None:
            if self._v2:
                for line in (group / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int((group / "cpuacct.usage").read_text()) / 1e9
        return _tree_cpu(self._roots.get(name))

    def nprocs(self, name: str) -> int:
        group = self._groups.get(name)
        if group is not None:
            return len((group / "cgroup.procs").read_text().split())
        return len(_tree(self._roots.get(name)))

    def wait_idle(self, name: str, baseline: int, timeout: float = 5.0) -> None:
        """Wait (bounded) until the server's session processes have exited, so their CPU is all counted."""
        deadline = time.monotonic() + timeout
        while self.nprocs(name) > baseline and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        if self._base is None:
            return
        top = self._base.parent / "cgroup.procs"
        for group in self._groups.values():
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        top.write_text(pid + "\n")
                group.rmdir()
        with contextlib.suppress(OSError):
            self._base.rmdir()


def _tree(pid: int | None) -> list[psutil.Process]:
    if not pid:
        return []
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    # sshd/vsftpd session processes stay in the daemon's session even when re-parented
    seen = {p.pid for p in procs}
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid not in seen and os.getsid(p.pid) == pid:
                procs.append(p)
    return procs


def _tree_cpu(pid: int | None) -> float:
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


# --------------------------------------------------------------------------- servers


@dataclass
class Servers:
    """What the cases need to reach the servers."""

    work: Path
    cpu: CpuAccounting
    login: str
    password: str = field(repr=False)
    ca_path: Path
    client_key: Path
    sshd: SFTPServer | None = None
    vsftpd: FTPSServer | None = None
    pyftpd: FTPSServer | None = None
    ssh_config: Path | None = None
    netrc: Path | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> FTPSServer | SFTPServer:
        server = getattr(self, name)
        if server is None:
            raise RuntimeError(f"server {name} is not running: {self.unavailable.get(name, '?')}")
        return server  # type: ignore[no-any-return]

    def running(self, name: str) -> bool:
        return getattr(self, name) is not None


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def ssh_host_block(alias: str, host: str, port: int, login: str, key: Path, known_hosts: Path) -> str:
    """An ``ssh_config`` entry for the OpenSSH tools: key only, the pinned host key, no prompt."""
    return (
        f"Host {alias}\n  HostName {host}\n  Port {port}\n  User {login}\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        "  PasswordAuthentication no\n  LogLevel ERROR\n"
    )


@contextlib.contextmanager
def _pyftpd_child(root: Path, pki: Any, login: str, password: str, log: Path) -> Iterator[tuple[FTPSServer, int]]:
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BENCH_FTP_LOGIN=login, BENCH_FTP_PASSWORD=password)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("pyftpd_server.py")),
            "--root",
            str(root),
            "--ca",
            str(pki.ca_path),
            "--cert",
            str(pki.cert_path),
            "--key",
            str(pki.key_path),
            "--fingerprint",
            pki.cert_fingerprint,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pyftpdlib server did not start: {log.read_text()[-800:]}")
        port = int(json.loads(line)["port"])
        server = FTPSServer(
            kind="pyftpdlib",
            host=HOST,
            port=port,
            tls_mode="explicit",
            login=login,
            password=password,
            ca_pem=pki.ca_pem,
            cert_fingerprint=pki.cert_fingerprint,
            writable_dir="/",
            local_root=root,
            server_root=root,
            with_hash=True,
            name="pyftpd",
        )
        yield server, proc.pid
    finally:
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tool_version(cmd: list[str], stderr: bool = False) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    out = (p.stderr if stderr else p.stdout) or p.stdout or p.stderr
    return out.strip().splitlines()[0] if out.strip() else "?"


def _vsftpd_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        p = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], capture_output=True, text=True, timeout=10
        )
        if p.returncode == 0:
            return "vsftpd " + p.stdout.strip()
    return "vsftpd ?"


@contextlib.contextmanager
def start_servers(*, need_interop: bool = True) -> Iterator[Servers]:
    """Start sshd, vsftpd (when root and installed) and pyftpdlib; stop them on exit.

    Without root or the Debian packages, sshd/vsftpd are left out (their cases are
    skipped), unless ``CI=true``: then that is an error.
    """
    from tests.servers.interop import SSHD, VSFTPD, missing_prerequisites

    cpu = CpuAccounting()
    missing = missing_prerequisites(VSFTPD, SSHD) if need_interop else ["not requested"]
    for tool in ("sftp", "scp", "curl", "lftp"):
        if need_interop and subprocess.run(["which", tool], capture_output=True).returncode != 0:
            missing.append(f"{tool} (apt-get install {'openssh-client' if tool in ('sftp', 'scp') else tool})")
    if missing and need_interop and ci_required():
        raise RuntimeError("benchmark prerequisites missing under CI=true: " + "; ".join(missing))
    with contextlib.ExitStack() as stack:
        stack.callback(cpu.close)
        if not missing:
            from tests.servers.interop import ensure_test_user, interop_base, run_sshd, run_vsftpd

            login, password = ensure_test_user()
            base = stack.enter_context(interop_base())
        else:
            import tempfile

            login, password = "bench", secrets.token_urlsafe(16)
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sectransfer-bench-")))
        # 127.0.0.2: where the WAN group's delay proxy fronts the servers (bench/delay_proxy.py)
        pki = make_pki(base / "pki", identities=("localhost", "127.0.0.1", "127.0.0.2"))
        keys = make_client_keys(base / "client-keys")
        servers = Servers(
            work=base, cpu=cpu, login=login, password=password, ca_path=pki.ca_path, client_key=keys.key_path
        )
        servers.netrc = _write_private(
            base / "netrc",
            "".join(f"machine {h} login {login} password {password}\n" for h in (HOST, "127.0.0.2")),
        )
        if missing:
            reason = "; ".join(missing)
            servers.unavailable = {"sshd": reason, "vsftpd": reason}
            print(f"bench: sshd/vsftpd cases skipped: {reason}", flush=True)
        else:
            sshd, sshd_proc = stack.enter_context(run_sshd(base, keys, login=login, password=password, name="sshd"))
            cpu.add("sshd", sshd_proc.pid)
            servers.sshd = sshd
            vsftpd, vs_proc = stack.enter_context(run_vsftpd(base, pki, login=login, password=password, name="vsftpd"))
            cpu.add("vsftpd", vs_proc.pid)
            servers.vsftpd = vsftpd
            known = _write_private(base / "known_hosts", sshd.known_hosts_text)
            servers.ssh_config = _write_private(
                base / "ssh_config", ssh_host_block("bench-sshd", HOST, sshd.port, login, keys.key_path, known)
            )
        pyftpd, pid = stack.enter_context(
            _pyftpd_child(base / "pyftpd-root", pki, login, password, base / "pyftpd.log")
        )
        cpu.add("pyftpd", pid)
        servers.pyftpd = pyftpd
        servers.versions = {
            "OpenSSH": _tool_version(["ssh", "-V"], stderr=True),
            "curl": _tool_version(["curl", "-V"]),
            "lftp": _tool_version(["lftp", "--version"]),
            "vsftpd": _vsftpd_version(),
        }
        yield servers
