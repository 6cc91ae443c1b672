"""Migrating from the stock ``FTPFileTransmitOperator`` to ``SecureUploadOperator``.

Two DAGs side by side:

* ``migrate_from_ftp_operator__before``: what many deployments run today. The stock
  operator on an ``ftp`` connection speaks plain FTP: the password and every file cross
  the network in clear. It is paused on creation and must never be enabled against a
  real server; it is here to be compared with the one below.
* ``migrate_from_ftp_operator__after``: the same upload with ``SecureUploadOperator``
  and the *same connection id*. An ``ftp`` connection is always upgraded to TLS
  (``AUTH TLS`` before the login, ``PROT P`` before any data), the certificate is
  verified (add the ``ca_bundle`` or ``cert_fingerprint`` extra for a private
  server), the file lands atomically and verified, and the task returns its records.

What changes in the task::

    FTPFileTransmitOperator(                      SecureUploadOperator(
        task_id="put_report",                         task_id="put_report",
        ftp_conn_id="partner_ftp",                    conn_id="partner_ftp",
        local_filepath="/data/out/report.csv",        local_path="/data/out/report.csv",
        remote_filepath="/inbound/report.csv",        remote_path="/inbound/report.csv",
        operation="put",                              # uploads only
        create_intermediate_dirs=True,                create_dirs=True,
    )                                             )

The connection id is read from ``MIGRATE_FTP_CONN_ID`` (default ``partner_ftp``).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.upload import SecureUploadOperator

CONN_ID = os.environ.get("MIGRATE_FTP_CONN_ID", "partner_ftp")
REMOTE_DIR = os.environ.get("MIGRATE_FTP_REMOTE_DIR", "/inbound").rstrip("/")
LOCAL_FILE = os.path.join(tempfile.gettempdir(), "migrate-from-ftp-report.csv")


@task
def write_report() -> str:
    Path(LOCAL_FILE).write_text("id,amount\n1,10.00\n2,20.00\n")
    return LOCAL_FILE


try:
    from airflow.providers.ftp.operators.ftp import FTPFileTransmitOperator
except ImportError:  # the stock FTP provider is not installed: only the replacement is shown
    FTPFileTransmitOperator = None


if FTPFileTransmitOperator is not None:

    @dag(
        dag_id="migrate_from_ftp_operator__before",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=True,
        tags=["secure-transfer", "example", "insecure-legacy"],
        doc_md="The stock operator over plain FTP: credentials and data in clear. Do not enable.",
    )
    def migrate_from_ftp_operator__before() -> None:
        report = write_report()
        put = FTPFileTransmitOperator(
            task_id="put_report",
            ftp_conn_id=CONN_ID,
            local_filepath=LOCAL_FILE,
            remote_filepath=f"{REMOTE_DIR}/report.csv",
            operation="put",
            create_intermediate_dirs=True,
        )
        report >> put

    migrate_from_ftp_operator__before()


@dag(
    dag_id="migrate_from_ftp_operator__after",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "example"],
    doc_md=__doc__,
)
def migrate_from_ftp_operator__after() -> None:
    report = write_report()
    put = SecureUploadOperator(
        task_id="put_report",
        conn_id=CONN_ID,
        local_path=LOCAL_FILE,
        remote_path=f"{REMOTE_DIR}/report.csv",
        create_dirs=True,
    )
    report >> put


migrate_from_ftp_operator__after()
