"""Delivers a directory over SFTP with two outlets: the directory, and one file in it (test_asset_receipts)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Asset

from airflow_secure_transfer.operators.upload import SecureUploadOperator

ENDPOINT = os.environ.get("RECEIPT_ENDPOINT", "sftp://127.0.0.1:22")
REMOTE_DIR = os.environ.get("RECEIPT_REMOTE_DIR", "/upload/receipts")

with DAG("receipt_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SecureUploadOperator(
        task_id="deliver",
        conn_id="receipt_sftp",
        local_path=os.environ.get("RECEIPT_SOURCE", "/nonexistent"),
        remote_path=f"{REMOTE_DIR}/",
        outlets=[Asset(f"{ENDPOINT}{REMOTE_DIR}/"), Asset(f"{ENDPOINT}{REMOTE_DIR}/a.csv")],
    )
