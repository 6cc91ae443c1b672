"""Many tasks, one server (#17): a real scheduler maps uploads over 24 file groups to session-limited servers.

``example_dags/deliver_to_many_partners.py`` runs under ``airflow scheduler`` with the LocalExecutor
(parallelism 8), against vsftpd limited to 6 sessions per IP (``max_per_ip=6``) and OpenSSH sshd with
``MaxStartups 4:30:8`` / ``MaxSessions 4``, each behind a proxy that counts simultaneous sessions.

* with ``server_pool`` (pools of 6 and 4 slots, tasks of 2 connections): the proxies never see more
  sessions than the pool's size;
* without a pool: more sessions are attempted than the servers take; the busy-server back-off still
  delivers every file.

Either way every file arrives whole (sha256), and no temporary file is left. The figures (wall time,
files/s, peak sessions, busy waits) are printed and written to ``test-artifacts/many_tasks.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import FTPSServer, SFTPServer, sha256_file
from tests.servers.airflow_stack import airflow_stack
from tests.servers.pki import ServerPKI
from tests.servers.proxy import CountingProxy

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.interop, pytest.mark.scale]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
GROUPS = 24
FILES_PER_GROUP = 84  # 2,016 files
FTPS_SESSIONS = 6  # vsftpd max_per_ip
SFTP_SESSIONS = 4  # sshd MaxStartups 4:30:8 starts dropping beyond 4 unauthenticated connections
MAX_CONNECTIONS = 2


@dataclass
class Partners:
    ftps: FTPSServer
    sftp: SFTPServer


@pytest.fixture(scope="module")
def partners(
    _interop_base: Path, test_pki: ServerPKI, client_keys: Any, _interop_user: tuple[str, str]
) -> Iterator[Partners]:
    from tests.servers.interop import run_sshd, run_vsftpd

    user, password = _interop_user
    with (
        run_vsftpd(
            _interop_base, test_pki, login=user, password=password, name="vsftpd_many",
            options={"max_per_ip": str(FTPS_SESSIONS), "max_clients": "50"},
        ) as (ftps, _),
        run_sshd(
            _interop_base, client_keys, login=user, password=password, name="sshd_many",
            options={"MaxStartups": "4:30:8", "MaxSessions": "4"},
        ) as (sftp, _),
    ):
        yield Partners(ftps.for_test("many"), sftp.for_test("many"))


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outbox")
    for g in range(GROUPS):
        group = root / f"group-{g:02d}"
        group.mkdir()
        for i in range(FILES_PER_GROUP):
            (group / f"rec-{i:03d}.csv").write_bytes(os.urandom(500 + (g * 97 + i * 31) % 3500))
    return root


def _check_delivered(outbox: Path, server: FTPSServer | SFTPServer, remote_dir: str) -> int:
    delivered = 0
    for src in sorted(outbox.rglob("*.csv")):
        rel = src.relative_to(outbox)
        landed = server.local_path(f"{remote_dir}/{rel.as_posix()}")
        assert landed.is_file(), f"missing on {server.kind}: {rel}"
        assert sha256_file(landed) == sha256_file(src), f"content differs on {server.kind}: {rel}"
        delivered += 1
    target = server.local_path(remote_dir)
    assert sorted(p.name for p in target.rglob(".*")) == [], "temporary files left behind"
    return delivered


@pytest.mark.parametrize("mode", ["server_pool", "no_pool"])
def test_mapped_deliveries_under_a_real_scheduler(
    partners: Partners, outbox: Path, tmp_path: Path, mode: str
) -> None:
    pooled = mode == "server_pool"
    ftps_dir = f"{partners.ftps.writable_dir}/{mode}"
    sftp_dir = f"{partners.sftp.writable_dir}/{mode}"
    with (
        CountingProxy(partners.ftps.host, partners.ftps.port) as ftps_proxy,
        CountingProxy(partners.sftp.host, partners.sftp.port) as sftp_proxy,
    ):
        env = {
            "AIRFLOW_CONN_PARTNER_FTPS": partners.ftps.conn_json(fields={"port": ftps_proxy.port}),
            "AIRFLOW_CONN_PARTNER_SFTP": partners.sftp.conn_json(fields={"port": sftp_proxy.port}),
            "DELIVER_OUTBOX": str(outbox),
            "DELIVER_FTPS_CONN_ID": "partner_ftps",
            "DELIVER_SFTP_CONN_ID": "partner_sftp",
            "DELIVER_FTPS_DIR": ftps_dir,
            "DELIVER_SFTP_DIR": sftp_dir,
            "DELIVER_FTPS_POOL": "partner_ftps_sessions" if pooled else "",
            "DELIVER_SFTP_POOL": "partner_sftp_sessions" if pooled else "",
            "DELIVER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        }
        pools = {"partner_ftps_sessions": FTPS_SESSIONS, "partner_sftp_sessions": SFTP_SESSIONS} if pooled else {}
        with airflow_stack(tmp_path / "airflow", dags_folder=REPO / "example_dags", env=env, pools=pools) as stack:
            stack.wait_for_dag("deliver_to_many_partners")
            started = time.monotonic()
            run = stack.run_dag("deliver_to_many_partners", timeout=900)
            seconds = time.monotonic() - started
            logs = stack.task_logs()
        assert run["state"] == "success", f"run {run}:\n{stack.log_tail('scheduler')}\n{logs[-6000:]}"
        ftps_files = _check_delivered(outbox, partners.ftps, ftps_dir)
        sftp_files = _check_delivered(outbox, partners.sftp, sftp_dir)
        assert ftps_files == sftp_files == GROUPS * FILES_PER_GROUP
        if pooled:
            assert ftps_proxy.peak <= FTPS_SESSIONS, f"FTPS sessions at once: {ftps_proxy.peak}"
            assert sftp_proxy.peak <= SFTP_SESSIONS, f"SFTP sessions at once: {sftp_proxy.peak}"
        for secret in (partners.ftps.password, partners.sftp.password):
            assert secret not in logs
        figures = {
            "mode": mode,
            "files": ftps_files + sftp_files,
            "seconds": round(seconds, 1),
            "files_per_second": round((ftps_files + sftp_files) / seconds, 1),
            "peak_sessions": {"ftps": ftps_proxy.peak, "sftp": sftp_proxy.peak},
            "sessions_opened": {"ftps": ftps_proxy.connections, "sftp": sftp_proxy.connections},
            "busy_waits": logs.count(" is busy ("),
            "pool_size": {"ftps": FTPS_SESSIONS, "sftp": SFTP_SESSIONS} if pooled else None,
        }
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "many_tasks.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous[mode] = figures
    path.write_text(json.dumps(previous, indent=2))
    print(f"\nmany tasks ({mode}): {json.dumps(figures)}")
