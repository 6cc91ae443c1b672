"""Deliver many file groups at once: one mapped upload task per group, bounded per partner server by a pool.

Each partner's server allows a few sessions per user. Every delivery task holds
``max_connections`` slots of that server's Airflow pool (``server_pool``), so all the
tasks together, on any number of workers, never open more connections to one server
than the pool's size. Create the pools once (size = the sessions the partner allows):

    airflow pools set partner_ftps_sessions 6 "partner FTPS server: 6 sessions per user"
    airflow pools set partner_sftp_sessions 4 "partner SFTP server: 4 sessions per user"

A server that still says "come back later" (FTP 421, sshd MaxStartups) is waited for
inside the task, with a bounded, jittered back-off.

Environment (all optional):

* ``DELIVER_OUTBOX``: a directory whose sub-directories are the file groups
  (default: a generated set of 24 groups).
* ``DELIVER_FTPS_CONN_ID`` / ``DELIVER_SFTP_CONN_ID``: the partners' connections
  (defaults ``secure_ftps_default`` / ``secure_sftp_default``).
* ``DELIVER_FTPS_DIR`` / ``DELIVER_SFTP_DIR``: remote directories (default ``/upload/deliveries``).
* ``DELIVER_FTPS_POOL`` / ``DELIVER_SFTP_POOL``: the pools (defaults above); an empty value
  runs without a pool (then only the back-off protects the server).
* ``DELIVER_MAX_CONNECTIONS``: connections per task (default 2).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.upload import SecureUploadOperator

FTPS_CONN_ID = os.environ.get("DELIVER_FTPS_CONN_ID", "secure_ftps_default")
SFTP_CONN_ID = os.environ.get("DELIVER_SFTP_CONN_ID", "secure_sftp_default")
FTPS_DIR = os.environ.get("DELIVER_FTPS_DIR", "/upload/deliveries").rstrip("/")
SFTP_DIR = os.environ.get("DELIVER_SFTP_DIR", "/upload/deliveries").rstrip("/")
FTPS_POOL = os.environ.get("DELIVER_FTPS_POOL", "partner_ftps_sessions") or None
SFTP_POOL = os.environ.get("DELIVER_SFTP_POOL", "partner_sftp_sessions") or None
MAX_CONNECTIONS = int(os.environ.get("DELIVER_MAX_CONNECTIONS", "2"))


@dag(
    dag_id="deliver_to_many_partners",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "example"],
    doc_md=__doc__,
)
def deliver_to_many_partners() -> None:
    @task
    def file_groups() -> list[str]:
        """Return one directory per group (generating 24 small groups when no outbox is given)."""
        outbox = os.environ.get("DELIVER_OUTBOX")
        if outbox is None:
            root = Path(tempfile.mkdtemp(prefix="deliveries-"))
            for g in range(24):
                group = root / f"group-{g:02d}"
                group.mkdir()
                for i in range(20):
                    (group / f"record-{i:03d}.csv").write_text(f"group,record\n{g},{i}\n")
            outbox = str(root)
        return sorted(str(p) for p in Path(outbox).iterdir() if p.is_dir())

    @task
    def deliveries(groups: list[str], remote_dir: str) -> list[dict[str, str]]:
        """One upload per group, each into its own remote directory."""
        return [{"local_path": g, "remote_path": f"{remote_dir}/{Path(g).name}/"} for g in groups]

    groups = file_groups()
    SecureUploadOperator.partial(
        task_id="deliver_ftps",
        conn_id=FTPS_CONN_ID,
        server_pool=FTPS_POOL,
        max_connections=MAX_CONNECTIONS,
    ).expand_kwargs(deliveries.override(task_id="ftps_deliveries")(groups, FTPS_DIR))
    SecureUploadOperator.partial(
        task_id="deliver_sftp",
        conn_id=SFTP_CONN_ID,
        server_pool=SFTP_POOL,
        max_connections=MAX_CONNECTIONS,
    ).expand_kwargs(deliveries.override(task_id="sftp_deliveries")(groups, SFTP_DIR))


deliver_to_many_partners()
