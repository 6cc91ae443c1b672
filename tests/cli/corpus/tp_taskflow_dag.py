# ruff: noqa
"""A realistic TaskFlow DAG: the 'compliant' upload that is not."""

from __future__ import annotations

import ftplib
import ssl
from datetime import datetime

from airflow.sdk import BaseHook, dag, task


@dag(schedule="@daily", start_date=datetime(2025, 1, 1), catchup=False, tags=["partner"])
def partner_upload():
    @task
    def export() -> str:
        return "/data/out/report.csv"

    @task
    def upload(path: str) -> None:
        conn = BaseHook.get_connection("partner_ftp")
        # "FTPS": but FTP_TLS() without a context does not check the certificate.
        ftps = ftplib.FTP_TLS(conn.host, timeout=30)  # expect: STX002
        ftps.login(conn.login, conn.password)
        ftps.prot_p()
        with open(path, "rb") as fh:
            ftps.storbinary("STOR report.csv", fh)
        ftps.quit()

    @task
    def archive(path: str) -> None:
        conn = BaseHook.get_connection("archive_ftp")
        with ftplib.FTP(conn.host) as ftp:  # expect: STX001
            ftp.login(conn.login, conn.password)
            with open(path, "rb") as fh:
                ftp.storbinary("STOR report.csv", fh)

    @task
    def notify() -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False  # expect: STX042
        del ctx

    path = export()
    upload(path) >> archive(path) >> notify()


partner_upload()
