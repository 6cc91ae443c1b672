# ruff: noqa
"""Names and text that only look like plain FTP. Nothing to report.

See ftp://ftp.example.org/ for the legacy mirror (a docstring, not code).
"""

import ftplib
import ssl

import paramiko
from airflow.providers.sftp.operators.sftp import SFTPOperator

# The partner used to publish at ftp://ftp.partner.example/pub (a comment).

ftp = "sftp.partner.example"  # a variable named ftp
ftp_conn_id = "partner_sftp"
SECURE_URLS = ["sftp://sftp.partner.example/in", "ftps://ftps.partner.example/in", "https://x/ftp://y"]
CONN_TYPES = {"ftp": "never used", "secure_ftps": "used"}


class FTP:
    """Our own class called FTP (not ftplib's)."""

    def __init__(self, host: str) -> None:
        self.host = host


def ftp_upload(ftp: FTP) -> FTP:
    return FTP(ftp.host)


def refuse_plain(url: str) -> None:
    if url.startswith("ftp://"):
        raise ValueError("plain FTP is not allowed")
    if url.lower().startswith(("ftp://", "http://")):
        raise ValueError("no clear text")
    if "ftp://" in url:
        raise ValueError("no clear text")


def check_context(ctx: ssl.SSLContext) -> None:
    if ctx.verify_mode == ssl.CERT_NONE:
        raise ValueError("unverified context")
    if ctx.minimum_version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        raise ValueError("old TLS")


def strict_ssh() -> None:
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())


EXTRA = {"no_host_key_check": False, "allow_host_key_change": "false", "check_hostname": True}
EXTRA_JSON = '{"no_host_key_check": false, "host_key": "ssh-ed25519 AAAA"}'
op = SFTPOperator(task_id="put", ssh_conn_id="partner_sftp", local_filepath="/a", remote_filepath="/b")
flags = dict(no_host_key_check=False, check_hostname=True)
MESSAGES = [
    "extra 'no_host_key_check' = true is refused: pin the host key",
    "ftp:// URIs are not allowed; use ftps:// or sftp://",
    "allow_host_key_change is true: refusing",
    f"{'ftp'}:// is plain",
]


def annotated(hook: "FTPHookAlias", client: ftplib.FTP | None = None) -> ftplib.FTP:
    """Type annotations name a type; they do not use it (the caller that builds one is reported)."""
    conn: ftplib.FTP = hook.get_conn()
    del client
    return conn
