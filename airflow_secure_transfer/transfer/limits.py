"""Bounds on what a server may send us in one listing or one reply (everything from a server is untrusted).

A server that floods a listing or a multi-line reply would otherwise grow the worker's memory at network
speed, and one that drips a listing a byte at a time would hold it forever (every read is within the
socket timeout; the whole never ends). Past a bound the transports raise
:class:`~airflow_secure_transfer.exceptions.LimitExceededError` naming it.

The values are read at call time (``limits.LISTING_MAX_ENTRIES``), so a test may lower them.
"""

from __future__ import annotations

__all__ = ["LISTING_MAX_BYTES", "LISTING_MAX_ENTRIES", "MANIFEST_MAX_BYTES", "MANIFEST_MAX_FILES", "REPLY_MAX_BYTES"]

#: Entries in one directory listing (FTPS ``MLSD``/``LIST``/``NLST`` lines, SFTP ``readdir`` names).
#: A real drop box directory with more is better checked file by file (the engine's fallback).
LISTING_MAX_ENTRIES = 100_000

#: Bytes of one listing (FTPS: the data connection; SFTP: file names and long names). 32 MiB leaves
#: ~335 bytes for each of :data:`LISTING_MAX_ENTRIES` lines; an ``MLSD`` line is ~100.
LISTING_MAX_BYTES = 32 * 1024 * 1024

#: Bytes of one FTP control reply, all lines of a multi-line one (``FEAT``, ``HELP``, ``211``/``213``)
#: together. A genuine ``FEAT`` is under 1 KiB; ``ftplib`` already caps each line at 8 KiB.
REPLY_MAX_BYTES = 1024 * 1024

#: Bytes of one delivery manifest read from a server (:mod:`airflow_secure_transfer.transfer.manifest`).
#: An entry is ~150 bytes, so 16 MiB holds :data:`MANIFEST_MAX_FILES` entries with room to spare.
MANIFEST_MAX_BYTES = 16 * 1024 * 1024

#: Files listed in one manifest (as many as one listing may hold).
MANIFEST_MAX_FILES = LISTING_MAX_ENTRIES
