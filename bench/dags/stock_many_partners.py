"""The stock way to do what example_dags/deliver_to_many_partners.py does (SFTP side), for bench/many_tasks.py.

One mapped ``SFTPOperator`` per file group, each with the group's list of files (the stock operator opens
one SSH connection per file). Environment as in the example DAG: ``DELIVER_OUTBOX``, ``DELIVER_SFTP_DIR``;
the connection is ``stock_partner_sftp`` (type ``sftp``, host key pinned).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.providers.sftp.operators.sftp import SFTPOperator
from airflow.sdk import dag, task

SFTP_DIR = os.environ.get("DELIVER_SFTP_DIR", "/upload/deliveries").rstrip("/")


@dag(dag_id="stock_many_partners", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def stock_many_partners() -> None:
    @task
    def deliveries() -> list[dict[str, object]]:
        out = []
        for group in sorted(p for p in Path(os.environ["DELIVER_OUTBOX"]).iterdir() if p.is_dir()):
            files = sorted(group.iterdir())
            out.append(
                {
                    "local_filepath": [str(f) for f in files],
                    "remote_filepath": [f"{SFTP_DIR}/{group.name}/{f.name}" for f in files],
                }
            )
        return out

    SFTPOperator.partial(
        task_id="deliver_sftp", ssh_conn_id="stock_partner_sftp", operation="put", create_intermediate_dirs=True
    ).expand_kwargs(deliveries())


stock_many_partners()
