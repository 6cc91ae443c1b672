"""``make demo``: embedded FTPS and SFTP servers, the example DAG through Airflow, its transfer records.

Run as ``python -m airflow_secure_transfer.demo [--workdir .demo]``. It

1. starts an FTPS server (pyftpdlib, explicit TLS required on control and data
   connections, certificate issued by a throwaway ``trustme`` CA) and an SFTP
   server (asyncssh, freshly generated ed25519 host key), both on ``127.0.0.1``
   port 0, in threads of this process;
2. describes them to Airflow as ``AIRFLOW_CONN_SECURE_FTPS_DEFAULT`` and
   ``AIRFLOW_CONN_SECURE_SFTP_DEFAULT`` with the CA (``ca_bundle``) and the host key
   (``host_key``) *pinned* -- the secure way to trust a private server, instead of
   turning verification off;
3. runs ``airflow db migrate`` and ``airflow dags test secure_upload_example`` in a
   throwaway ``AIRFLOW_HOME`` under the work directory;
4. prints the records each upload and download task returned (XCom) and the files
   as they landed on each server's disk (the downloads fetch the uploads back).

Nothing needs root or system packages; everything listens on loopback only. The
servers need the ``demo`` (or ``test``) extra: ``pyftpdlib``, ``pyopenssl``, ``trustme``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main"]

DAG_ID = "secure_upload_example"
HOST = "127.0.0.1"
REMOTE_DIR = "/upload/secure_upload_example"


# --------------------------------------------------------------------------- embedded servers


@dataclass
class DemoServers:
    """What the demo started, for the connections and the report."""

    ftps_port: int
    ftps_root: Path
    ca_pem: str
    sftp_port: int
    sftp_root: Path
    host_key_line: str
    login: str
    password: str

    def connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` values (JSON) that trust exactly these servers."""
        ftps = {
            "conn_type": "secure_ftps",
            "host": HOST,
            "port": self.ftps_port,
            "login": self.login,
            "password": self.password,
            "extra": {"tls_mode": "explicit", "ca_bundle": self.ca_pem},
        }
        sftp = {
            "conn_type": "secure_sftp",
            "host": HOST,
            "port": self.sftp_port,
            "login": self.login,
            "password": self.password,
            "extra": {"host_key": self.host_key_line},
        }
        return {
            "AIRFLOW_CONN_SECURE_FTPS_DEFAULT": json.dumps(ftps),
            "AIRFLOW_CONN_SECURE_SFTP_DEFAULT": json.dumps(sftp),
        }


def _missing_extra(exc: ImportError) -> SystemExit:
    return SystemExit(
        f"the demo servers need {exc.name!r}: pip install 'airflow-provider-secure-transfer[demo]' "
        "(or run 'make demo', which installs it)"
    )


@contextlib.contextmanager
def _ftps_server(root: Path, pki_dir: Path, login: str, password: str) -> Iterator[tuple[int, str]]:
    """Run pyftpdlib with TLS required on control and data connections; yield (port, CA PEM)."""
    try:
        import trustme
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import TLS_FTPHandler
        from pyftpdlib.ioloop import IOLoop
        from pyftpdlib.servers import FTPServer
    except ImportError as exc:
        raise _missing_extra(exc) from exc

    ca = trustme.CA(organization_name="airflow-secure-transfer demo CA")
    leaf = ca.issue_cert("localhost", HOST)
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_file = pki_dir / "ftps-server.pem"
    fd = os.open(cert_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(leaf.private_key_and_cert_chain_pem.bytes())
    ca_pem = ca.cert_pem.bytes().decode("ascii")
    (pki_dir / "ca.pem").write_text(ca_pem)

    authorizer = DummyAuthorizer()
    authorizer.add_user(login, password, str(root), perm="elradfmwMT")

    class Handler(TLS_FTPHandler):  # type: ignore[misc] # pyftpdlib has no type hints
        pass

    Handler.authorizer = authorizer
    Handler.certfile = str(cert_file)
    Handler.keyfile = str(cert_file)
    Handler.tls_control_required = True  # no USER/PASS before AUTH TLS
    Handler.tls_data_required = True  # no data connection before PROT P
    Handler.banner = "airflow-secure-transfer demo FTPS server"
    server = FTPServer((HOST, 0), Handler, ioloop=IOLoop())
    port = int(server.socket.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        try:
            while not stop.is_set():
                server.ioloop.loop(timeout=0.05, blocking=False)
        finally:
            server.close_all()

    thread = threading.Thread(target=serve, name="demo-ftps", daemon=True)
    thread.start()
    try:
        yield port, ca_pem
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def _sftp_server(root: Path, login: str, password: str) -> Iterator[tuple[int, str]]:
    """Run an asyncssh SFTP server chrooted to *root*; yield (port, pinned host key line)."""
    import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    key_line = " ".join(host_key.export_public_key("openssh").decode("ascii").split()[:2])

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, pw: str) -> bool:
            return secrets.compare_digest(username, login) and secrets.compare_digest(pw, password)

    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def start() -> None:
        acceptor = await asyncssh.listen(
            HOST,
            0,
            server_host_keys=[host_key],
            server_factory=Server,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()),
            allow_scp=False,
        )
        ready["acceptor"] = acceptor
        ready["port"] = acceptor.sockets[0].getsockname()[1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the starting thread
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="demo-sftp", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in ready or "port" not in ready:
        raise RuntimeError(f"the demo SFTP server did not start: {ready.get('error')!r}")
    try:
        yield int(ready["port"]), key_line
    finally:

        def shutdown() -> None:
            ready["acceptor"].close()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        thread.join(timeout=10)


@contextlib.contextmanager
def demo_servers(workdir: Path) -> Iterator[DemoServers]:
    """Start both servers with fresh credentials under *workdir*."""
    login = "demo"
    password = secrets.token_urlsafe(18)
    ftps_root = workdir / "ftps-server-root"
    sftp_root = workdir / "sftp-server-root"
    for root in (ftps_root, sftp_root):
        (root / REMOTE_DIR.strip("/")).mkdir(parents=True, exist_ok=True)
    with (
        _ftps_server(ftps_root, workdir / "pki", login, password) as (ftps_port, ca_pem),
        _sftp_server(sftp_root, login, password) as (sftp_port, key_line),
    ):
        yield DemoServers(ftps_port, ftps_root, ca_pem, sftp_port, sftp_root, key_line, login, password)


# --------------------------------------------------------------------------- Airflow


def _airflow_command() -> list[str]:
    script = Path(sys.executable).parent / "airflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "airflow"]


def _example_dags_folder() -> Path:
    folder = Path(__file__).resolve().parent.parent / "example_dags"
    if not (folder / f"{DAG_ID}.py").is_file():
        raise SystemExit(f"example DAGs not found in {folder}; run the demo from a clone of the repository")
    return folder


def _run(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    started = time.monotonic()
    print(f"  {what} ...", flush=True)
    with open(log, "ab") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-60:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"{what} failed (exit {proc.returncode}); full log: {log}")
    print(f"  {what}: done in {time.monotonic() - started:.1f} s", flush=True)


def read_return_values(airflow_home: Path, dag_id: str) -> dict[str, Any]:
    """Return ``{task_id: return value}`` of the latest run of *dag_id* from the metadata database."""
    db = airflow_home / "airflow.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value' "
            "AND run_id = (SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        ).fetchall()
    values: dict[str, Any] = {}
    for task_id, raw in rows:
        value = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        values[task_id] = value
    return values


def _format_records(records: list[dict[str, Any]], side: str = "remote") -> str:
    key = f"{side}_path"
    width = max([len(f"{side} path"), *(len(r[key]) for r in records)])
    head = f"    {side + ' path':<{width}} {'bytes':>9} {'sec':>6}  verified resumed skipped  sha256"
    lines = [head]
    for r in records:
        lines.append(
            f"    {r[key]:<{width}} {r['bytes']:>9} {r['seconds']:>6.2f}  "
            f"{r['verified']!s:<8} {r['resumed']!s:<7} {r['skipped']!s:<7}  {r['sha256'][:16]}..."
        )
    return "\n".join(lines)


def _tree(root: Path) -> list[str]:
    return [f"    {p.relative_to(root)}  ({p.stat().st_size} bytes)" for p in sorted(root.rglob("*")) if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m airflow_secure_transfer.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=".demo", help="throwaway directory for everything (default: .demo)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    airflow_home = workdir / "airflow-home"
    airflow_home.mkdir()
    (workdir / "tmp").mkdir()
    log = workdir / "airflow.log"
    dags_folder = _example_dags_folder()

    print("airflow-secure-transfer demo")
    with demo_servers(workdir) as servers:
        print(f"  FTPS server: ftps://{HOST}:{servers.ftps_port} (explicit TLS, certificate from a throwaway CA)")
        print(f"  SFTP server: sftp://{HOST}:{servers.sftp_port} (host key {servers.host_key_line[:40]}...)")
        print("  connections: AIRFLOW_CONN_SECURE_FTPS_DEFAULT (CA pinned),")
        print("               AIRFLOW_CONN_SECURE_SFTP_DEFAULT (host key pinned)")
        env = {
            **os.environ,
            **servers.connections(),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "SECURE_UPLOAD_FTPS_DIR": REMOTE_DIR,
            "SECURE_UPLOAD_SFTP_DIR": REMOTE_DIR,
            "TMPDIR": str(workdir / "tmp"),
        }
        _run([*_airflow_command(), "db", "migrate"], env, log, "airflow db migrate")
        _run([*_airflow_command(), "dags", "test", DAG_ID], env, log, f"airflow dags test {DAG_ID}")
        values = read_return_values(airflow_home, DAG_ID)

        print()
        for task_id in ("upload_ftps", "upload_sftp", "move_sftp", "fetch_back_ftps", "fetch_back_sftp"):
            records = values.get(task_id)
            if not isinstance(records, list):
                print(f"  {task_id}: no records found", file=sys.stderr)
                return 1
            moved = sum(int(r["bytes"]) for r in records)
            verified = all(r["verified"] for r in records)
            how = "received" if task_id.startswith("fetch") else "sent"
            print(f"  {task_id}: {len(records)} files, {moved} bytes {how}, all verified: {verified}")
            print(_format_records(records, "local" if task_id.startswith("fetch") else "remote"))
        summaries = [
            ln.strip() for ln in log.read_text(errors="replace").splitlines() if "load summary" in ln
        ]  # upload and download summary tables
        print(f"\n  the task logs carry progress lines and {len(summaries)} summary tables (see {log})")
        print(f"\n  files on the FTPS server's disk ({servers.ftps_root}):")
        print("\n".join(_tree(servers.ftps_root)))
        print(f"\n  files on the SFTP server's disk ({servers.sftp_root}):")
        print("\n".join(_tree(servers.sftp_root)))
        moved_from = values.get("generate_outbox")
        if isinstance(moved_from, str):
            left = [p for p in Path(moved_from).rglob("*") if p.is_file()]
            print(f"\n  move_sftp deleted its sources after verified upload: {len(left)} files left in {moved_from}")
    print("\ndemo finished; servers stopped. Everything is under", workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
