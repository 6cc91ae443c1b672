"""vsftpd and OpenSSH sshd as child processes on loopback, for the ``interop`` tests (root only).

See the package docstring for the configuration of each server and the Debian 12 quirks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncssh
import psutil

from tests.servers import HOST, FTPSServer, SFTPServer, free_port, wait_listening
from tests.servers.pki import ServerPKI
from tests.servers.sftp_asyncssh import ClientKeys, describe_sftp_server, host_key_line

VSFTPD = "/usr/sbin/vsftpd"
SSHD = "/usr/sbin/sshd"
TEST_USER = "sectransfer-test"
#: Root-owned, 0755 (not /tmp: sshd's ChrootDirectory refuses a world-writable parent such as /tmp).
STATE_DIR = Path(os.environ.get("SECTRANSFER_TEST_STATE", "/var/lib/sectransfer-test"))
START_TIMEOUT = 10.0


class InteropUnavailable(Exception):
    """A prerequisite of the interop servers is missing (binary, root)."""


def missing_prerequisites(*binaries: str) -> list[str]:
    """Return what is missing to run the interop servers (empty when all is there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the interop servers need a system user and run vsftpd/sshd)")
    for b in binaries:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            missing.append(f"{b} (apt-get install {'vsftpd' if 'vsftpd' in b else 'openssh-server'})")
    if shutil.which("useradd") is None or shutil.which("chpasswd") is None:
        missing.append("useradd/chpasswd (passwd package)")
    return missing


# --------------------------------------------------------------------------- system user


def _mkdir_root(path: Path, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, mode)


def ensure_test_user() -> tuple[str, str]:
    """Create the system user once (idempotent, under a lock) and return ``(login, password)``.

    The password is random, made once and kept in ``STATE_DIR/password`` (mode 600), so concurrent test
    sessions (several pytest runs at once) agree on it. The shell is ``/bin/bash``: vsftpd's PAM stack
    (``pam_shells``) refuses users whose shell is not in ``/etc/shells``.
    """
    _mkdir_root(STATE_DIR)
    home = STATE_DIR / "home"
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pw_file = STATE_DIR / "password"
        if not pw_file.exists() or not pw_file.read_text().strip():
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(16))
        password = pw_file.read_text().strip()
        try:
            pwd.getpwnam(TEST_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "-M",
                    "-d",
                    str(home),
                    "-s",
                    "/bin/bash",
                    "-U",
                    "-c",
                    "airflow-secure-transfer tests",
                    TEST_USER,
                ],
                check=True,
                capture_output=True,
            )
        # chpasswd every session: the password file may have been recreated
        subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True, capture_output=True)
        pw = pwd.getpwnam(TEST_USER)
        home.mkdir(exist_ok=True)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        os.chmod(home, 0o700)
    return TEST_USER, password


def _chown_user(path: Path) -> None:
    pw = pwd.getpwnam(TEST_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def user_mkdir(path: Path) -> None:
    """Create a directory owned by the test user (a per-test upload dir)."""
    path.mkdir(mode=0o755)
    _chown_user(path)


def _owner_alive(base: Path) -> bool:
    try:
        pid_s, created_s = (base / "owner").read_text().split()
        return bool(abs(psutil.Process(int(pid_s)).create_time() - float(created_s)) < 1.0)
    except (OSError, ValueError, psutil.Error):
        return False


def reap_stale(run: Path) -> None:
    """Kill the daemons of test sessions that died without cleaning up (SIGKILLed pytest), remove their dirs."""
    for old in run.iterdir():
        if not old.is_dir() or _owner_alive(old):
            continue
        # an owner file is written right after mkdtemp; give a session that is just starting a minute
        with contextlib.suppress(OSError):
            if not (old / "owner").exists() and time.time() - old.stat().st_mtime < 60:
                continue
        marker = str(old) + "/"
        victims: list[psutil.Process] = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(marker in arg for arg in proc.info["cmdline"] or ()):
                    victims += [proc, *proc.children(recursive=True)]
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _wait_dead(victims, timeout=3)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def interop_base() -> Iterator[Path]:
    """A fresh root-owned 0755 directory under ``STATE_DIR/run`` for one test session; removed afterwards.

    Directories (and daemons) of earlier sessions whose pytest process is gone are cleaned up first.
    """
    run = STATE_DIR / "run"
    _mkdir_root(run)
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reap_stale(run)
        base = Path(tempfile.mkdtemp(prefix="s-", dir=run))
        os.chmod(base, 0o755)
        me = psutil.Process()
        (base / "owner").write_text(f"{me.pid} {me.create_time()}\n")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- processes


class DaemonProcess:
    """A server child process in its own session; ``stop()`` kills it and everything it forked."""

    def __init__(
        self, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None, stdin_is_log: bool = False
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        log = open(log_path, "ab")
        self._log = log
        # vsftpd writes its startup errors ("500 OOPS: ...") to fd 0, so give it the log as stdin.
        stdin = log if stdin_is_log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        self.pid = self.proc.pid
        #: every pid seen in this server's process tree (for the no-leftover check)
        self.seen_pids: set[int] = {self.pid}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def listens_on(self, port: int) -> bool:
        try:
            conns = psutil.Process(self.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        try:
            procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        # Session processes of sshd/vsftpd may have been re-parented; they stay in our session (setsid above)
        # unless they called setsid() themselves, so also collect by session id.
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid != os.getpid() and os.getsid(p.pid) == self.pid and p not in procs:
                    procs.append(p)
        self.seen_pids.update(p.pid for p in procs)
        return procs

    def stop(self) -> None:
        """SIGTERM the server and all its descendants, SIGKILL what is left after 3 s, reap."""
        procs = self.descendants()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=3)  # reap our direct child
        alive = _wait_dead(procs, timeout=3)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        alive = _wait_dead(alive, timeout=3)
        self._log.close()
        if alive:
            raise RuntimeError(f"server processes survived SIGKILL: {[p.pid for p in alive]}")


def is_dead(p: psutil.Process) -> bool:
    """Exited (a zombie counts: orphans are reaped by init, which may take its time in a container)."""
    try:
        return bool(p.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _wait_dead(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Poll until every process has exited; return those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        alive = [p for p in procs if not is_dead(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(delay)  # bounded polling for process exit
        delay = min(delay * 2, 0.05)


def _start_listening(make: object, what: str, attempts: int = 5) -> tuple[DaemonProcess, int]:
    """Start a daemon on a probed free port; retry on a lost race for the port."""
    last = ""
    for _ in range(attempts):
        port = free_port()
        proc: DaemonProcess = make(port)  # type: ignore[operator]
        try:
            wait_listening(HOST, port, timeout=START_TIMEOUT, alive=proc.alive)
            if proc.alive() and proc.listens_on(port):
                return proc, port
            last = f"port {port} answered, but not from {what}"
        except (RuntimeError, TimeoutError) as exc:
            last = f"{exc}; log:\n{proc.log_tail()}"
        proc.stop()
    raise RuntimeError(f"{what} did not start: {last}")


def pick_pasv_range(size: int = 16) -> tuple[int, int]:
    """Pick a block of ``size`` ports below the kernel's ephemeral range, each verified bindable now."""
    try:
        lo_eph = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo_eph = 32768
    low, high = 10000, max(10000 + size, lo_eph - size)
    rng = random.SystemRandom()
    for _ in range(50):
        start = rng.randrange(low, high)
        ok = True
        for port in range(start, start + size):
            with socket.socket() as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return start, start + size - 1
    raise RuntimeError("no free passive port range found")


# --------------------------------------------------------------------------- vsftpd


def write_tls12_openssl_conf(path: Path) -> Path:
    """Write an OpenSSL config that caps every SSL_CTX of the process at TLS 1.2.

    vsftpd 3.0.3 (Debian 12) has no ``ssl_tlsv1_2``/``ssl_tlsv1_3`` options and ``ssl_ciphers`` only sets
    the TLS <= 1.2 cipher list (TLS 1.3 suites are configured separately in OpenSSL), so neither can cap the
    version. libssl 3 loads ``$OPENSSL_CONF`` at initialisation and applies the ``system_default`` section to
    every new ``SSL_CTX``; ``MaxProtocol = TLSv1.2`` there is honoured by vsftpd (verified by a test).
    """
    path.write_text(
        "openssl_conf = sectransfer_init\n"
        "[sectransfer_init]\n"
        "ssl_conf = sectransfer_ssl\n"
        "[sectransfer_ssl]\n"
        "system_default = sectransfer_tls\n"
        "[sectransfer_tls]\n"
        "MinProtocol = TLSv1.2\n"
        "MaxProtocol = TLSv1.2\n"
        "CipherString = DEFAULT:@SECLEVEL=2\n"
    )
    return path


def _override(conf: str, options: Mapping[str, str] | None, sep: str) -> str:
    """Replace (or append) ``key<sep>value`` lines of a generated server config."""
    lines = conf.splitlines()
    for key, value in (options or {}).items():
        line = f"{key}{sep}{value}"
        found = [i for i, old in enumerate(lines) if old.split(sep, 1)[0] == key]
        if found:
            lines[found[0]] = line
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _vsftpd_conf(*, port: int, implicit: bool, root: Path, work: Path, pki: ServerPKI, pasv: tuple[int, int]) -> str:
    return f"""# generated by tests/servers/interop.py -- private vsftpd on loopback
listen=YES
listen_ipv6=NO
listen_address={HOST}
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
userlist_enable=NO
chroot_local_user=YES
local_root={root}
allow_writeable_chroot=NO
secure_chroot_dir={work}/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
connect_from_port_20=NO
port_enable=NO
pasv_enable=YES
pasv_address={HOST}
pasv_min_port={pasv[0]}
pasv_max_port={pasv[1]}
ssl_enable=YES
implicit_ssl={"YES" if implicit else "NO"}
rsa_cert_file={pki.cert_path}
rsa_private_key_file={pki.key_path}
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=NO
ssl_request_cert=NO
ssl_ciphers=HIGH
max_clients=200
max_per_ip=100
idle_session_timeout=300
data_connection_timeout=120
xferlog_enable=YES
log_ftp_protocol=YES
debug_ssl=YES
vsftpd_log_file={work}/vsftpd.log
"""


@contextlib.contextmanager
def run_vsftpd(
    base: Path,
    pki: ServerPKI,
    *,
    login: str,
    password: str,
    implicit: bool = False,
    tls12: bool = False,
    name: str = "vsftpd",
    options: Mapping[str, str] | None = None,
) -> Iterator[tuple[FTPSServer, DaemonProcess]]:
    """Start vsftpd on 127.0.0.1:<free port> under ``base/name``; stop it (and its sessions) on exit.

    :param options: vsftpd.conf settings that replace the generated ones (e.g. ``{"max_per_ip": "6"}``).
    """
    t0 = time.monotonic()
    work = base / name
    _mkdir_root(work)
    _mkdir_root(work / "empty")
    root = work / "root"  # the chroot: root-owned, not writable by the user
    _mkdir_root(root)
    upload = root / "upload"
    upload.mkdir(exist_ok=True)
    _chown_user(upload)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    if tls12:
        env["OPENSSL_CONF"] = str(write_tls12_openssl_conf(work / "openssl-tls12.cnf"))

    def make(port: int) -> DaemonProcess:
        conf = work / "vsftpd.conf"
        text = _vsftpd_conf(port=port, implicit=implicit, root=root, work=work, pki=pki, pasv=pick_pasv_range())
        conf.write_text(_override(text, options, "="))
        return DaemonProcess([VSFTPD, str(conf)], log_path=work / "vsftpd.out", env=env, stdin_is_log=True)

    proc, port = _start_listening(make, "vsftpd")
    try:
        info = FTPSServer(
            kind="vsftpd",
            host=HOST,
            port=port,
            tls_mode="implicit" if implicit else "explicit",
            login=login,
            password=password,
            ca_pem=pki.ca_pem,
            cert_fingerprint=pki.cert_fingerprint,
            writable_dir="/upload",
            local_root=upload,
            server_root=root,
            with_hash=False,
            max_tls_version="TLSv1.2" if tls12 else None,
            start_seconds=time.monotonic() - t0,
            name=name,
            _mkdir=user_mkdir,
        )
        yield info, proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- sshd


@contextlib.contextmanager
def run_sshd(
    base: Path,
    keys: ClientKeys,
    *,
    login: str,
    password: str,
    name: str = "sshd",
    options: Mapping[str, str] | None = None,
) -> Iterator[tuple[SFTPServer, DaemonProcess]]:
    """Start OpenSSH sshd (SFTP only, chrooted) on 127.0.0.1:<free port>; stop it (and its sessions) on exit.

    :param options: sshd_config settings that replace the generated ones (e.g. ``{"MaxStartups": "4:30:8"}``).
    """
    t0 = time.monotonic()
    work = base / name
    _mkdir_root(work)
    root = work / "root"  # ChrootDirectory: root-owned, not group/world-writable, nor any parent
    _mkdir_root(root)
    upload = root / "upload"
    upload.mkdir(exist_ok=True)
    _chown_user(upload)
    # sshd's compiled-in privilege separation directory
    _mkdir_root(Path("/run/sshd"))
    host_key = asyncssh.generate_private_key("ssh-ed25519", comment="sectransfer-test-sshd")
    host_key_path = work / "ssh_host_ed25519_key"
    fd = os.open(host_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(host_key.export_private_key("openssh"))
    # StrictModes: authorized_keys and every parent must be owned by root or the user, not group/world-writable.
    auth_keys = work / "authorized_keys"
    auth_keys.write_text(keys.authorized_keys)
    os.chmod(auth_keys, 0o644)

    def make(port: int) -> DaemonProcess:
        conf = work / "sshd_config"
        text = f"""# generated by tests/servers/interop.py -- private sshd on loopback, not the system one
Port {port}
ListenAddress {HOST}
HostKey {host_key_path}
PidFile none
AllowUsers {TEST_USER}
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile {auth_keys}
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes yes
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTunnel no
PermitTTY no
PrintMotd no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 50
MaxAuthTries 6
LoginGraceTime 30
Subsystem sftp internal-sftp
ForceCommand internal-sftp
ChrootDirectory {root}
"""
        conf.write_text(_override(text, options, " "))
        return DaemonProcess(
            [SSHD, "-D", "-e", "-f", str(conf)],
            log_path=work / "sshd.out",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
        )

    proc, port = _start_listening(make, "sshd")
    try:
        info = describe_sftp_server(
            SFTPServer,
            port=port,
            key_line=host_key_line(host_key),
            keys=keys,
            started=t0,
            kind="openssh",
            login=login,
            password=password,
            writable_dir="/upload",
            local_root=upload,
            server_root=root,
            name=name,
            _mkdir=user_mkdir,
        )
        yield info, proc
    finally:
        proc.stop()
