# ruff: noqa
"""The secure replacements, and settings that are safe. Nothing to report."""

from __future__ import annotations

import ssl
from datetime import datetime

import asyncssh
from airflow.sdk import dag

from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
from airflow_secure_transfer.operators.upload import SecureUploadOperator


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def partner_upload_secure():
    SecureUploadOperator(
        task_id="upload",
        conn_id="partner_ftps",
        local_path="/data/out/*.csv",
        remote_path="/inbound/",
    )


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_default_certs()
    return ctx


def client_context_2() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def server_context() -> ssl.SSLContext:
    return ssl.SSLContext(protocol=ssl.PROTOCOL_TLS_SERVER)


async def pinned() -> None:
    async with asyncssh.connect("sftp.partner.example", known_hosts="/etc/partner_known_hosts") as conn:
        await conn.run("true")


def unrelated(known_hosts=None) -> None:
    del known_hosts


def hook() -> SecureFTPSHook:
    unrelated(known_hosts=None)
    return SecureFTPSHook(ftps_conn_id="partner_ftps")


partner_upload_secure()
