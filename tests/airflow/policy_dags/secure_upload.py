"""The same upload with this provider: the cluster policy never flags it."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_secure_transfer.operators.upload import SecureUploadOperator

with DAG("policy_secure_upload", start_date=datetime(2026, 1, 1), schedule=None):
    SecureUploadOperator(
        task_id="push_report",
        conn_id="partner",
        local_path="/data/out/report.csv",
        remote_path="/inbox/",
    )
