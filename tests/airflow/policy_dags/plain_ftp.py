"""A DAG that uploads with the stock plain-FTP operator: the cluster policy names it (warn) or refuses it (enforce)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.ftp.operators.ftp import FTPFileTransmitOperator
from airflow.sdk import DAG

with DAG("policy_plain_ftp", start_date=datetime(2026, 1, 1), schedule=None):
    FTPFileTransmitOperator(
        task_id="push_report",
        ftp_conn_id="partner",
        local_filepath="/data/out/report.csv",
        remote_filepath="/inbox/report.csv",
        operation="put",
    )
