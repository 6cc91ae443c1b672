# ruff: noqa
"""SSH without host key verification."""

import json

import asyncssh
import paramiko
from paramiko.client import WarningPolicy
from airflow.providers.sftp.hooks.sftp import SFTPHook
from airflow.sdk import Connection


def paramiko_client() -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # expect: STX030
    client.connect("sftp.partner.example", username="etl", password="secret")


def paramiko_warning() -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(WarningPolicy())  # expect: STX030


def stock_hook_flags() -> None:
    SFTPHook(ssh_conn_id="partner_sftp", no_host_key_check=True).list_directory("/")  # expect: STX031


EXTRA = {
    "no_host_key_check": True,  # expect: STX031
    "allow_host_key_change": "true",  # expect: STX032
}
CONN = Connection(
    conn_id="partner_sftp",
    conn_type="sftp",
    extra=json.dumps({"no_host_key_check": "yes"}),  # expect: STX031
)
EXTRA_JSON = '{"key_file": "/keys/id", "allow_host_key_change": true}'  # expect: STX032
URI = "sftp://etl@sftp.partner.example:22?no_host_key_check=true"  # expect: STX031


async def asyncssh_unverified() -> None:
    async with asyncssh.connect("sftp.partner.example", known_hosts=None) as conn:  # expect: STX033
        await conn.run("true")
    options = asyncssh.SSHClientConnectionOptions(known_hosts=None)  # expect: STX033
    del options
