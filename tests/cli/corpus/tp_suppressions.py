# ruff: noqa
"""Suppression comments: exact ids, a blanket ignore, and an id that does not match."""

import ftplib

PUBLIC_MIRROR = "ftp://ftp.debian.org/debian/"  # secure-transfer: ignore[STX020] public anonymous mirror
LEGACY = ftplib.FTP  # secure-transfer: ignore  (reviewed: unused legacy alias)
OTHER = "ftp://ftp.partner.example/in/"  # secure-transfer: ignore[STX001]  # expect: STX020
BOTH = ftplib.FTP_TLS("h")  # secure-transfer: ignore[STX002, STX003]
