"""Real FTPS and SFTP servers on loopback, for the test suite.

Import as ``tests.servers`` (the conftest puts the project root on ``sys.path``);
do not import it as a bare ``servers`` module (two copies of the dataclasses
would not be ``isinstance``-compatible).

Every server listens on ``127.0.0.1`` and a port chosen at start (port 0 for
in-process servers; a probed free port for the external daemons), and is
described by one of two dataclasses, :class:`FTPSServer` and
:class:`SFTPServer` (the fixture contract in ``HELPERS-CONTEXT.md``). The
session-scoped server is shared by all tests; each test receives a *view* of it
(:func:`dataclasses.replace`) whose ``writable_dir`` / ``local_root`` is a fresh
empty directory of its own.

How each server is configured
-----------------------------

PKI (:mod:`tests.servers.pki`)
    One throwaway ``trustme`` CA per test session; one leaf certificate issued
    by it with SANs ``localhost`` and ``127.0.0.1``, used by every FTPS server
    (pyftpdlib and vsftpd). ``ca_pem`` is the CA, ``cert_fingerprint`` the
    SHA-256 of the leaf (lower-case hex, no colons).

pyftpdlib explicit / implicit (:mod:`tests.servers.pyftpd`), kind ``pyftpdlib``
    ``TLS_FTPHandler`` subclass in a background thread with its own IOLoop,
    ``tls_control_required`` and ``tls_data_required`` (USER/PASS before
    ``AUTH TLS`` and PASV/EPSV before ``PROT P`` get ``550``), TLS >= 1.2.
    Like vsftpd's ``require_ssl_reuse=YES``, a data connection whose TLS
    session is not a resumption of the control connection's is refused with
    ``522`` (``require_session_reuse``; stock ``ftplib`` fails here, a client
    passing ``session=control.session`` succeeds, also under TLS 1.3). Passive
    ports are ephemeral (no range). The user root is a temp dir; remote ``/``
    = ``server_root``; each test's dir is ``/<test-name>-<n>``, writable.

    The ``pyftpd_factory`` fixture starts private variants for negative
    tests: ``offer_tls=False`` (a plain FTP server: AUTH unknown, login in
    clear accepted; ``command_log`` shows whether a client sent USER/PASS),
    ``allow_prot_p=False`` (``PROT P`` -> ``536``), ``max_tls_version=
    "TLSv1.2"``, ``require_session_reuse=False``, ``with_hash=False``, another
    ``pki`` (e.g. ``make_pki(dir, identities=("localhost",))``: no IP SAN).

    Implicit TLS: pyftpdlib has no implicit mode, so :class:`ImplicitTLSHandler`
    starts the TLS handshake in ``handle()`` (right after accept) and sends the
    ``220`` greeting from ``handle_ssl_established()``; ``AUTH`` then answers
    ``503 Already using TLS``.

    Checksums (``with_hash``, on for ``pyftpd_explicit``/``pyftpd_implicit``,
    off for ``pyftpd_explicit_nohash``): ``HASH <path>`` per
    draft-bryan-ftpext-hash (FEAT ``HASH SHA-1*;SHA-256;SHA-512;MD5``, the
    ``*`` marks the session's current algorithm; ``OPTS HASH SHA-256`` selects;
    the reply is ``213 SHA-256 0-<size> <hex> <path>``). The *default* is SHA-1,
    like FileZilla Server, so a client that forgets ``OPTS HASH`` gets a SHA-1
    and must notice. Also ``XSHA256 <path>`` / ``XSHA1`` / ``XMD5`` (proftpd
    mod_digest style: ``250 <hex>``), advertised in FEAT. Without ``with_hash``
    the commands are unknown (``500``) and not in FEAT.

    ``command_log`` records every command line received (``PASS ******``
    masked); the per-test fixture clears it.

asyncssh SFTP (:mod:`tests.servers.sftp_asyncssh`), kind ``asyncssh``
    ``asyncssh.listen`` in a thread running its own event loop; a fresh
    ed25519 host key per session; ``asyncssh.SFTPServer`` chrooted to a temp
    root, so remote ``/`` = ``server_root``. One login that accepts either its
    password or either client key (``client_key_path``: unencrypted OpenSSH
    ed25519; ``encrypted_key_path``: the same kind, encrypted with
    ``key_passphrase``). Keys are generated at run time into a temp dir (mode
    600). ``auth_log`` records ``(username, method)`` for each successful login
    (``"password"`` or ``"publickey"``).

vsftpd explicit / explicit-TLS-1.2 / implicit (:mod:`tests.servers.interop`), kind ``vsftpd``, marker ``interop``
    ``/usr/sbin/vsftpd <conf>`` as a child process (own session, killed with
    all its descendants at teardown). Debian 12 vsftpd 3.0.3 quirks:
    ``seccomp_sandbox=NO``, our own ``secure_chroot_dir``, ``chroot_local_user``
    with a root-owned chroot (``local_root``) and a writable ``upload/`` below
    it (each test's dir is ``/upload/<test>-<n>``, owned by the test user),
    ``require_ssl_reuse=YES`` (data connections must resume the control TLS
    session), ``force_local_logins_ssl`` / ``force_local_data_ssl``, PAM
    service ``vsftpd`` (the user's shell ``/bin/bash`` is in ``/etc/shells``),
    startup errors on fd 0 (captured in a log). PASV range: a random block of
    ports below the kernel's ephemeral range, each port verified bindable.

    TLS 1.2 cap: vsftpd 3.0.3 has no ``ssl_tlsv1_2``/``ssl_tlsv1_3`` options,
    and ``ssl_ciphers`` cannot exclude TLS 1.3 (its suites are configured
    separately by OpenSSL). What works: start that vsftpd with
    ``OPENSSL_CONF`` pointing at a private file whose
    ``system_default`` section says ``MaxProtocol = TLSv1.2`` (libssl 3 loads
    it at init and applies it to every ``SSL_CTX``; vsftpd does not clear its
    environment before initialising OpenSSL). Verified by
    ``test_vsftpd_tls12_variant_is_capped``: a client that requires TLS 1.3
    fails against this server and succeeds against ``vsftpd_explicit``; a
    normal client negotiates TLS 1.2, and data transfers (session reuse)
    work. See :func:`tests.servers.interop.write_tls12_openssl_conf`.

OpenSSH sshd (:mod:`tests.servers.interop`), kind ``openssh``, marker ``interop``
    ``/usr/sbin/sshd -D -e -f <own config>``, own ed25519 host key, ``UsePAM
    no``, ``StrictModes yes``, ``AllowUsers`` the test user only, password and
    public-key auth, ``Subsystem sftp internal-sftp`` with
    ``ChrootDirectory`` = ``server_root`` (so remote ``/`` = ``server_root``, as
    for asyncssh; the chroot path and all its parents are root-owned and not
    group/world-writable, which is why the interop base lives under
    ``/var/lib/sectransfer-test`` and not ``/tmp``), authorized_keys in a
    root-owned file outside the chroot. ``/run/sshd`` is created.

The system user (interop only) is ``sectransfer-test`` with shell
``/bin/bash``, created idempotently under a file lock; its random password
is made once and kept in ``/var/lib/sectransfer-test/password`` (root only),
so parallel test sessions agree on it. Each session works in
``/var/lib/sectransfer-test/run/s-XXXX`` (configs, host key, logs
``vsftpd.out``/``vsftpd.log``/``sshd.out``, chroots), removed at the end; a
session that was killed is cleaned up (daemons killed, directory removed)
by the next one.

Stopping: in-process servers stop their thread (the port is closed and
open sessions dropped); vsftpd/sshd get SIGTERM with every descendant
(listener, per-connection processes), SIGKILL after 3 s. The daemons'
ports are probed free just before start and the listening socket is
checked to belong to the started process (a lost race is retried on
another port). Start-up is polled by connecting with a deadline, never by
sleeping a fixed time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "STARTUP_TIMES",
    "FTPSServer",
    "SFTPServer",
    "free_port",
    "settled_size",
    "sha256_file",
    "wait_listening",
    "write_random",
]

#: Start-up durations measured by the fixtures, {server name: seconds}; printed in the terminal summary.
STARTUP_TIMES: dict[str, float] = {}

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (for external daemons that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll-connect until ``host:port`` accepts a TCP connection (no fixed sleep).

    :param alive: called between attempts; when it returns False (the server process died) give up at once.
    :raises TimeoutError: when nothing listens within ``timeout`` seconds.
    :raises RuntimeError: when ``alive()`` turns False.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} exited before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")
        # Back-off between connect attempts, bounded by the deadline above; not a wait for a fixed time.
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def write_random(path: Path, size: int) -> Path:
    """Write *size* random bytes to *path* (its parents created); return *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 22)
            f.write(os.urandom(n))
            left -= n
    return path


def sha256_file(path: Path) -> str:
    """SHA-256 of a local file, lower-case hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def settled_size(path: Path, *, deadline: float = 15.0, quiet: float = 0.6) -> int:
    """Return *path*'s size once it has not changed for *quiet* seconds.

    After a cut the client gives up at once, but the server (OpenSSH sftp-server, the in-process
    asyncssh server) may still apply WRITE requests it had queued before it noticed the cut. A
    resume starts from what is really on disk, and so must a test's expectation of it.
    """
    end = time.monotonic() + deadline
    size = path.stat().st_size
    stable_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = path.stat().st_size
        if now != size:
            size, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return size
    raise AssertionError(f"{path} kept changing for {deadline} s after the cut")


def _map_local(server_root: Path, writable_dir: str, remote_path: str) -> Path:
    if not remote_path.startswith("/"):
        remote_path = posixpath.join(writable_dir, remote_path)
    norm = posixpath.normpath(remote_path)
    local = (server_root / norm.lstrip("/")).resolve()
    root = server_root.resolve()
    if local != root and root not in local.parents:
        raise ValueError(f"remote path {remote_path!r} is outside the server root")
    return local


def _apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


class _ConnMixin:
    """Airflow connection rendering shared by both server kinds."""

    host: str
    port: int
    login: str
    password: str
    default_conn_type: str

    def extras(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def conn_dict(
        self,
        conn_type: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        **extra_overrides: Any,
    ) -> dict[str, Any]:
        """Return the Airflow JSON connection form as a dict.

        :param conn_type: default ``secure_ftps`` / ``secure_sftp``.
        :param fields: overrides of the top-level fields (``host``, ``port``, ``login``, ``password``,
            ``schema``); a value of None removes the field.
        :param extra_overrides: extras to add or replace; a value of None removes that extra.
        """
        conn: dict[str, Any] = {
            "conn_type": conn_type or self.default_conn_type,
            "host": self.host,
            "port": self.port,
            "login": self.login,
            "password": self.password,
        }
        conn = _apply_overrides(conn, fields or {})
        conn["extra"] = _apply_overrides(self.extras(), extra_overrides)
        return conn

    def conn_json(
        self,
        conn_type: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        **extra_overrides: Any,
    ) -> str:
        """Return the connection as Airflow's JSON form (for ``AIRFLOW_CONN_<ID>``); see :meth:`conn_dict`."""
        return json.dumps(self.conn_dict(conn_type, fields=fields, **extra_overrides))

    def conn_uri(
        self,
        conn_type: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        **extra_overrides: Any,
    ) -> str:
        """Return the connection as an Airflow URI (``secure-ftps://user:pw@host:port?extra=...``).

        The scheme uses ``-`` for ``_`` (an underscore is not valid in a URI scheme; Airflow maps it back).
        Every extra value becomes a string, as it would from a real URI connection.
        """
        d = self.conn_dict(conn_type, fields=fields, **extra_overrides)
        scheme = d["conn_type"].replace("_", "-")
        auth = ""
        if d.get("login") is not None:
            auth = quote(str(d["login"]), safe="")
            if d.get("password") is not None:
                auth += ":" + quote(str(d["password"]), safe="")
            auth += "@"
        netloc = f"{auth}{d.get('host', '')}"
        if d.get("port") is not None:
            netloc += f":{d['port']}"
        query = urlencode(
            {
                k: (json.dumps(v) if isinstance(v, (bool, int, float)) and not isinstance(v, str) else str(v))
                for k, v in d["extra"].items()
            }
        )
        return f"{scheme}://{netloc}" + (f"?{query}" if query else "")

    def local_path(self, remote_path: str) -> Path:
        """Map a remote POSIX path (absolute, or relative to ``writable_dir``) to the file on this machine."""
        return _map_local(self.server_root, self.writable_dir, remote_path)  # type: ignore[attr-defined]

    def for_test(self, name: str) -> Any:
        """Return a view of this server whose writable dir is a fresh empty directory ``name``."""
        raise NotImplementedError


@dataclass
class FTPSServer(_ConnMixin):
    """A running FTPS server on loopback (see the module docstring for each kind's configuration)."""

    kind: str  # "pyftpdlib" | "vsftpd"
    host: str
    port: int
    tls_mode: str  # "explicit" | "implicit"
    login: str
    password: str = field(repr=False)
    ca_pem: str = field(repr=False)
    cert_fingerprint: str
    #: Remote POSIX directory uploads may go to (the test's own fresh directory in a per-test view).
    writable_dir: str
    #: Local directory that *is* ``writable_dir`` on disk.
    local_root: Path
    #: Local directory that is the remote ``/``.
    server_root: Path
    #: Whether the server implements HASH / XSHA256 (pyftpdlib only).
    with_hash: bool = False
    #: Highest TLS version the server negotiates ("TLSv1.2" for vsftpd_explicit_tls12), None = TLS 1.3.
    max_tls_version: str | None = None
    #: Seconds the server took to start (until it accepted TCP connections).
    start_seconds: float = 0.0
    #: Fixture name (``pyftpd_explicit``...).
    name: str = ""
    #: Command lines received (pyftpdlib only; PASS masked). Cleared for each test.
    command_log: list[str] = field(default_factory=list, repr=False)
    #: Hook to create a test directory (owned by the right user); set by the server factory.
    _mkdir: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)

    default_conn_type = "secure_ftps"

    def extras(self) -> dict[str, Any]:
        """Extras that make our hook trust exactly this server: ``tls_mode`` and ``ca_bundle`` (PEM text)."""
        return {"tls_mode": self.tls_mode, "ca_bundle": self.ca_pem}

    def for_test(self, name: str) -> FTPSServer:
        return dataclasses.replace(self, **_fresh_dir(self, name))


@dataclass
class SFTPServer(_ConnMixin):
    """A running SFTP server on loopback (see the module docstring for each kind's configuration)."""

    kind: str  # "asyncssh" | "openssh"
    host: str
    port: int
    login: str
    password: str = field(repr=False)
    #: The server's public host key, ``"ssh-ed25519 AAAA..."`` (no comment).
    host_key_line: str
    #: known_hosts lines for ``[127.0.0.1]:port`` and ``[localhost]:port``.
    known_hosts_text: str
    client_key_path: Path
    client_key_text: str = field(repr=False)
    encrypted_key_path: Path
    encrypted_key_text: str = field(repr=False)
    key_passphrase: str = field(repr=False)
    writable_dir: str
    local_root: Path
    server_root: Path
    start_seconds: float = 0.0
    name: str = ""
    #: (username, method) of successful logins (asyncssh only). Cleared for each test.
    auth_log: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _mkdir: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)

    default_conn_type = "secure_sftp"

    def extras(self) -> dict[str, Any]:
        """Extras that make our hook trust exactly this server: ``host_key`` pinned."""
        return {"host_key": self.host_key_line}

    @property
    def client_public_key_line(self) -> str:
        """The public half of ``client_key_path`` as an OpenSSH line."""
        return Path(str(self.client_key_path) + ".pub").read_text().strip()

    def for_test(self, name: str) -> SFTPServer:
        return dataclasses.replace(self, **_fresh_dir(self, name))


_counter = 0


def _fresh_dir(server: FTPSServer | SFTPServer, name: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "test"
    dirname = f"{safe}-{_counter}"
    # Per-test dirs go under the session's base writable dir (vsftpd: /upload, pyftpdlib/asyncssh: /).
    remote = posixpath.join(server.writable_dir, dirname)
    local = _map_local(server.server_root, server.writable_dir, remote)
    if server._mkdir is not None:
        server._mkdir(local)
    else:
        local.mkdir(mode=0o755)
    return {"writable_dir": remote, "local_root": local}


def ci_required() -> bool:
    """True when interop servers must run (``CI=true``): missing prerequisites then fail instead of skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
