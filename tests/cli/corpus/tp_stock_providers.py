# ruff: noqa
"""A DAG with the stock FTP provider's classes (plain FTP and its FTPS variants)."""

from datetime import datetime

import airflow.providers.ftp.hooks.ftp as ftp_hooks
from airflow.providers.ftp.hooks.ftp import FTPHook, FTPSHook
from airflow.providers.ftp.operators.ftp import (
    FTPFileTransmitOperator,
    FTPOperation,
    FTPSFileTransmitOperator,
)
from airflow.providers.ftp.sensors.ftp import FTPSensor, FTPSSensor
from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def stock_ftp():
    wait = FTPSensor(task_id="wait", path="/in/ready.flag", ftp_conn_id="partner_ftp")  # expect: STX010
    wait_tls = FTPSSensor(task_id="wait_tls", path="/in/ready.flag", ftp_conn_id="partner_ftp")  # expect: STX011
    put = FTPFileTransmitOperator(  # expect: STX010
        task_id="put",
        ftp_conn_id="partner_ftp",
        local_filepath="/data/out.csv",
        remote_filepath="/in/out.csv",
        operation=FTPOperation.PUT,
    )
    put_tls = FTPSFileTransmitOperator(  # expect: STX011
        task_id="put_tls",
        ftp_conn_id="partner_ftp",
        local_filepath="/data/out.csv",
        remote_filepath="/in/out.csv",
    )

    @task
    def listing() -> list[str]:
        return FTPHook(ftp_conn_id="partner_ftp").list_directory("/in")  # expect: STX010

    @task
    def listing_tls() -> list[str]:
        return FTPSHook(ftp_conn_id="partner_ftp").list_directory("/in")  # expect: STX011

    @task
    def via_module_alias() -> None:
        ftp_hooks.FTPHook(ftp_conn_id="partner_ftp").get_conn()  # expect: STX010

    wait >> wait_tls >> put >> put_tls >> listing() >> listing_tls() >> via_module_alias()


class MyFTPHook(FTPHook):  # expect: STX010
    pass


stock_ftp()
