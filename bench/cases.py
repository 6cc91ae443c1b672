"""The benchmark cases: this project, the stock Airflow providers, OpenSSH, curl and lftp.

"Ours" is measured through :class:`SecureUploadOperator` (``op.execute(context={})``,
exactly what a task runs) when ``airflow_secure_transfer/operators/upload.py`` is
importable; otherwise through the same engine call the operator makes
(:func:`airflow_secure_transfer.transfer.engine.upload` with the hook's
``get_fs``). The table says which.

Connections are given as ``AIRFLOW_CONN_<ID>`` environment variables (Airflow 3
reads them outside a task), made from the fixture servers: ours trust exactly the
throwaway CA / pin the host key; the stock SFTP connection pins the host key
(``host_key`` extra) and leaves every other extra at its default (so the stock
``SSHHook`` default ``compress=True`` applies); the stock ``FTPSHook`` has no CA
option and trusts the CA through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Case, Target
from ours import ours_uploader
from servers import Servers

HOST = "127.0.0.1"

OURS_SFTP = "bench_ours_sftp"
OURS_VSFTPD = "bench_ours_vsftpd"
OURS_PYFTPD = "bench_ours_pyftpd"
STOCK_SFTP = "bench_stock_sftp"
STOCK_SFTP_NOCOMP = "bench_stock_sftp_nocomp"
STOCK_FTPS_VSFTPD = "bench_stock_ftps_vsftpd"
STOCK_FTPS_PYFTPD = "bench_stock_ftps_pyftpd"

OURS_CONN = {"sshd": OURS_SFTP, "vsftpd": OURS_VSFTPD, "pyftpd": OURS_PYFTPD}
STOCK_FTPS_CONN = {"vsftpd": STOCK_FTPS_VSFTPD, "pyftpd": STOCK_FTPS_PYFTPD}
LABEL = {"sshd": "OpenSSH sshd", "vsftpd": "vsftpd", "pyftpd": "pyftpdlib"}


def connection_env(s: Servers) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` (and the few other variables) every Airflow-side case needs."""
    env: dict[str, str] = {
        "SSL_CERT_FILE": str(s.ca_path),  # the stock FTPSHook's only way to trust a private CA
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    if s.sshd is not None:
        ours = s.sshd.conn_dict(fields={"password": None}, key_file=str(s.client_key))
        env["AIRFLOW_CONN_" + OURS_SFTP.upper()] = json.dumps(ours)
        stock = {
            "conn_type": "sftp",
            "host": HOST,
            "port": s.sshd.port,
            "login": s.login,
            "extra": {"key_file": str(s.client_key), "host_key": s.sshd.host_key_line, "look_for_keys": "false"},
        }
        env["AIRFLOW_CONN_" + STOCK_SFTP.upper()] = json.dumps(stock)
        stock["extra"] = {**stock["extra"], "compress": "false"}  # type: ignore[dict-item]
        env["AIRFLOW_CONN_" + STOCK_SFTP_NOCOMP.upper()] = json.dumps(stock)
    for name in ("vsftpd", "pyftpd"):
        server = getattr(s, name)
        if server is None:
            continue
        env["AIRFLOW_CONN_" + OURS_CONN[name].upper()] = server.conn_json()
        env["AIRFLOW_CONN_" + STOCK_FTPS_CONN[name].upper()] = json.dumps(
            {
                "conn_type": "ftp",
                "host": HOST,
                "port": server.port,
                "login": s.login,
                "password": s.password,
                "extra": {"passive": True},
            }
        )
    return env


def _pending_reply(ftp: Any) -> str | None:
    """The control connection's next reply, if one arrives within 2 s (else None)."""
    if ftp is None or ftp.sock is None:
        return None
    try:
        ftp.sock.settimeout(2)
        return str(ftp.getresp())
    except Exception as exc:
        text = str(exc)
        return text if text[:1].isdigit() else None


class Cases:
    """Factories for the case functions; each returns ``fn(target, source) -> info``."""

    def __init__(self, servers: Servers, scratch: Path) -> None:
        self.s = servers
        self.scratch = scratch
        self.ours_path, self._ours = ours_uploader()

    # ------------------------------------------------------------------ ours
    def ours_file(
        self, server: str, conn_id: str | None = None, **options: Any
    ) -> Callable[[Target, Path], dict[str, Any]]:
        conn_id = conn_id or OURS_CONN[server]

        def fn(t: Target, src: Path) -> dict[str, Any]:
            self._ours(conn_id, str(src), t.remote_file, **options)
            return {"path": self.ours_path}

        return fn

    def ours_dir(
        self, server: str, max_connections: int | None = None, conn_id: str | None = None, **options: Any
    ) -> Callable[[Target, Path], dict[str, Any]]:
        conn_id = conn_id or OURS_CONN[server]

        def fn(t: Target, src: Path) -> dict[str, Any]:
            self._ours(conn_id, str(src), t.remote_dir.rstrip("/") + "/", max_connections, **options)
            return {"path": self.ours_path}

        return fn

    # ------------------------------------------------------------------ stock providers
    def stock_sftp_store_file(self, conn_id: str = STOCK_SFTP) -> Callable[[Target, Path], dict[str, Any]]:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        def fn(t: Target, src: Path) -> dict[str, Any]:
            SFTPHook(ssh_conn_id=conn_id).store_file(t.remote_file, str(src))
            return {}

        return fn

    def stock_sftp_operator(self, conn_id: str = STOCK_SFTP) -> Callable[[Target, Path], dict[str, Any]]:
        from airflow.providers.sftp.operators.sftp import SFTPOperator

        def fn(t: Target, src: Path) -> dict[str, Any]:
            names = sorted(os.listdir(src))
            SFTPOperator(
                task_id="bench_stock_put",
                ssh_conn_id=conn_id,
                operation="put",
                local_filepath=[str(src / n) for n in names],
                remote_filepath=[f"{t.remote_dir}/{n}" for n in names],
            ).execute(context={})
            return {}

        return fn

    def stock_ftps_store_file(self, server: str) -> Callable[[Target, Path], dict[str, Any]]:
        # stock default block_size=8192
        return self.stock_ftps_call(server, lambda hook, t, src: hook.store_file(t.remote_file, str(src)))

    def stock_ftps_call(
        self, server: str, call: Callable[[Any, Target, Path], object]
    ) -> Callable[[Target, Path], dict[str, Any]]:
        """One ``call(hook, target, source)`` on a fresh stock ``FTPSHook``; a failure carries the server's reply."""
        from airflow.providers.ftp.hooks.ftp import FTPSHook

        conn_id = STOCK_FTPS_CONN[server]

        def fn(t: Target, src: Path) -> dict[str, Any]:
            hook = FTPSHook(ftp_conn_id=conn_id)
            try:
                try:
                    call(hook, t, src)
                except Exception as exc:
                    # For a big file the data connection dies first (SSLEOFError); the reason is the
                    # server's reply on the control connection: add it to the recorded error.
                    reply = _pending_reply(hook.conn)
                    if reply:
                        raise RuntimeError(f"{type(exc).__name__}: {exc}; then the server replied: {reply}") from exc
                    raise
                sock = hook.get_conn().sock
                return {"crypto": f"{sock.version()} {sock.cipher()[0]}"}
            finally:
                try:
                    hook.close_conn()
                except Exception:
                    pass

        return fn

    def stock_ftps_loop(self, server: str) -> Callable[[Target, Path], dict[str, Any]]:
        from airflow.providers.ftp.hooks.ftp import FTPSHook

        conn_id = STOCK_FTPS_CONN[server]

        def fn(t: Target, src: Path) -> dict[str, Any]:
            hook = FTPSHook(ftp_conn_id=conn_id)
            try:
                for n in sorted(os.listdir(src)):
                    hook.store_file(f"{t.remote_dir}/{n}", str(src / n))
            finally:
                hook.close_conn()
            return {}

        return fn

    # ------------------------------------------------------------------ command-line tools
    def _sh(self, cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"{what} exited {p.returncode}: {p.stderr.strip()[-400:]}")
        return p

    @staticmethod
    def _ssh_cipher(stderr: str) -> str:
        m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)", stderr)
        return f"{m.group(1)}" + ("" if not m or m.group(2) == "<implicit>" else f"/{m.group(2)}") if m else "?"

    def _batch(self, lines: list[str]) -> Path:
        fd, path = tempfile.mkstemp(prefix="batch-", dir=self.scratch)
        with os.fdopen(fd, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        return Path(path)

    def sftp_b(self, cipher: str | None = None, host: str = "bench-sshd") -> Callable[[Target, Path], dict[str, Any]]:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            if src.is_dir():
                lines = [f'put "{src / n}" "{t.remote_dir}/{n}"' for n in sorted(os.listdir(src))]
            else:
                lines = [f'put "{src}" "{t.remote_file}"']
            return self.sftp_batch(lines, ["-c", cipher] if cipher else [], host)

        return fn

    def sftp_batch(self, lines: list[str], options: list[str], host: str = "bench-sshd") -> dict[str, Any]:
        """Run ``sftp -b`` with these batch *lines* in one session (*options* before ``-b``)."""
        batch = self._batch(lines)
        try:
            cmd = ["sftp", "-v", "-F", str(self.s.ssh_config), *options]
            p = self._sh([*cmd, "-b", str(batch), host], "sftp")
        finally:
            batch.unlink()
        return {"crypto": self._ssh_cipher(p.stderr)}

    def scp(self, host: str = "bench-sshd") -> Callable[[Target, Path], dict[str, Any]]:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            p = self._sh(["scp", "-v", "-F", str(self.s.ssh_config), str(src), f"{host}:{t.remote_file}"], "scp")
            return {"crypto": self._ssh_cipher(p.stderr)}

        return fn

    def curl(self, server: str, via: tuple[str, int] | None = None) -> Callable[[Target, Path], dict[str, Any]]:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            return self.curl_run(server, ["-T", str(src)], t.remote_file, via)

        return fn

    def curl_run(self, server: str, args: list[str], remote: str, via: tuple[str, int] | None = None) -> dict[str, Any]:
        """``curl --ssl-reqd`` with *args* on ``ftp://server/remote`` (``-T file``: upload, ``-o file``: download)."""
        host, port = via or (HOST, self.s.get(server).port)
        p = self._sh(
            [
                "curl", "-v", "-sS", "--ssl-reqd", "--cacert", str(self.s.ca_path),
                "--netrc-file", str(self.s.netrc), *args, f"ftp://{host}:{port}{remote}",
            ],
            "curl",
        )  # fmt: skip
        m = re.search(r"SSL connection using (\S+) / (\S+)", p.stderr)
        return {"crypto": f"{m.group(1)} {m.group(2)}" if m else "?"}

    def _lftp(self, server: str, command: str, via: tuple[str, int] | None = None) -> None:
        host, port = via or (HOST, self.s.get(server).port)
        # through the delay proxy, the data connection must go where the control connection goes (the
        # PASV reply names the server's own address): the same round trips, another address
        settings = ["set ftp:ignore-pasv-address yes"] if via else []
        script = self._batch(
            [
                f"set ssl:ca-file {self.s.ca_path}",
                "set ssl:verify-certificate yes",
                "set ftp:ssl-force yes",
                "set ftp:ssl-protect-data yes",
                "set ftp:ssl-protect-list yes",
                "set net:max-retries 1",
                "set cmd:fail-exit yes",
                *settings,
                f"open -u {self.s.login},{self.s.password} -p {port} ftp://{host}",
                command,
            ]
        )
        try:
            self._sh(["lftp", "-f", str(script)], "lftp")
        finally:
            script.unlink()

    def lftp_put(self, server: str, via: tuple[str, int] | None = None) -> Callable[[Target, Path], dict[str, Any]]:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            self._lftp(server, f'put "{src}" -o "{t.remote_file}"', via)
            return {"crypto": "GnuTLS"}

        return fn

    def lftp_mirror(
        self, server: str, parallel: int = 4, via: tuple[str, int] | None = None
    ) -> Callable[[Target, Path], dict[str, Any]]:
        def fn(t: Target, src: Path) -> dict[str, Any]:
            self._lftp(server, f'mirror -R --parallel={parallel} --no-perms "{src}" "{t.remote_dir}"', via)
            return {}

        return fn


def ours_case(cases: Cases, name: str, server: str, src: Path, nbytes: int, nfiles: int, ref: str | None,
              warm: Path | None, max_connections: int | None = None, conn_id: str | None = None,
              **tags: Any) -> Case:  # fmt: skip
    if nfiles == 1 and src.is_file():
        fn = cases.ours_file(server, conn_id)
    else:
        fn = cases.ours_dir(server, max_connections, conn_id)
    return Case(name, fn, server, src, nbytes, nfiles, ref=ref, inproc=True, warm_source=warm, tags=tags)
