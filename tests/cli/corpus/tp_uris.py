# ruff: noqa
"""ftp:// URIs in strings: fetched or uploaded with plain FTP."""

import urllib.request

from airflow.sdk import Connection

SOURCE = "ftp://anonymous@ftp.partner.example/pub/data.csv"  # expect: STX020
MIRRORS = [
    "https://mirror.example/data.csv",
    "FTP://ftp.partner.example/data.csv",  # expect: STX020
]


def download(host: str) -> None:
    urllib.request.urlretrieve(f"ftp://{host}/pub/data.csv", "/tmp/data.csv")  # expect: STX020


uri_conn = Connection(conn_id="partner", uri="ftp://etl:secret@ftp.partner.example:21")  # expect: STX020
