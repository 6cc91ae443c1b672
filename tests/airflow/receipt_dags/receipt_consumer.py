"""Scheduled on the producer's directory asset: writes the asset events' extras to RECEIPT_RESULT."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from airflow.sdk import Asset, dag, task

ENDPOINT = os.environ.get("RECEIPT_ENDPOINT", "sftp://127.0.0.1:22")
REMOTE_DIR = os.environ.get("RECEIPT_REMOTE_DIR", "/upload/receipts")


@dag(schedule=[Asset(f"{ENDPOINT}{REMOTE_DIR}/")], start_date=datetime(2026, 1, 1), catchup=False)
def receipt_consumer() -> None:
    @task
    def read_receipts(triggering_asset_events: Any = None) -> None:
        extras = [
            {"asset": asset.uri, "extra": dict(event.extra)}
            for asset, events in triggering_asset_events.items()
            for event in events
        ]
        with open(os.environ["RECEIPT_RESULT"], "w") as fh:
            json.dump(extras, fh)

    read_receipts()


receipt_consumer()
