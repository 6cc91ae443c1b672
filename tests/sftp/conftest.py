"""Fixtures and helpers of the SFTP tests (the shared servers come from ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.security.policy import SFTPSettings, parse_sftp_settings
from tests.servers import SFTPServer, write_random
from tests.servers.sftp_asyncssh import ClientKeys
from tests.sftp._servers import CustomServer, run_custom_asyncssh

#: How a test authenticates: password, or the unencrypted / encrypted client key as a file or as text.
AUTH_MODES = ("password", "key_file", "private_key", "key_file_passphrase", "private_key_passphrase")


def auth_extras(server: SFTPServer, auth: str) -> tuple[str | None, dict[str, Any]]:
    """Return (password, extras) for one of :data:`AUTH_MODES`."""
    if auth == "password":
        return server.password, {}
    if auth == "key_file":
        return None, {"key_file": str(server.client_key_path)}
    if auth == "private_key":
        return None, {"private_key": server.client_key_text}
    if auth == "key_file_passphrase":
        return None, {"key_file": str(server.encrypted_key_path), "private_key_passphrase": server.key_passphrase}
    if auth == "private_key_passphrase":
        return None, {"private_key": server.encrypted_key_text, "private_key_passphrase": server.key_passphrase}
    raise ValueError(auth)


def make_settings(
    server: SFTPServer,
    auth: str = "password",
    *,
    conn_type: str = "secure_sftp",
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    **extras: Any,
) -> SFTPSettings:
    """Settings that trust exactly *server* (``host_key`` pinned) unless *extras* say otherwise.

    An extra given as None is removed (e.g. ``host_key=None`` with ``known_hosts=...``).
    """
    pw, auth_ex = auth_extras(server, auth)
    merged: dict[str, Any] = {"host_key": server.host_key_line, "conn_timeout": 10, **auth_ex, **extras}
    merged = {k: v for k, v in merged.items() if v is not None}
    return parse_sftp_settings(
        conn_type=conn_type,
        host=server.host,
        port=port if port is not None else server.port,
        login=login or server.login,
        password=password if password is not None else pw,
        extras=merged,
    )


@pytest.fixture
def random_file(tmp_path: Path) -> Callable[[int], Path]:
    """Return ``make(size) -> Path``: a local file of *size* random bytes."""
    count = 0

    def make(size: int) -> Path:
        nonlocal count
        count += 1
        return write_random(tmp_path / f"src-{count}.bin", size)

    return make


@pytest.fixture
def custom_sshd(tmp_path: Path, client_keys: ClientKeys) -> Iterator[Callable[..., CustomServer]]:
    """Return ``start(**options) -> CustomServer`` (see :func:`tests.sftp._servers.run_custom_asyncssh`)."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> CustomServer:
            nonlocal count
            count += 1
            return stack.enter_context(run_custom_asyncssh(tmp_path / f"custom-{count}", client_keys, **options))

        yield start
