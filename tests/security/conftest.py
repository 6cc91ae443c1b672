"""Fixtures of the security tier: relayed servers, random files, settings builders, the task runner."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.security.policy import FTPSSettings, SFTPSettings, parse_ftps_settings, parse_sftp_settings
from tests.security.tools import Relay, run_relayed_pyftpd
from tests.servers import FTPSServer, SFTPServer, sha256_file, write_random
from tests.servers.pki import ServerPKI

#: 64 MiB, the size issue #6 R4 asks for.
BIG = 64 * 1024 * 1024


def ftps_settings(server: FTPSServer, *, password: str | None = None, **extras: Any) -> FTPSSettings:
    """Settings that trust exactly *server* (its CA); *extras* added (a None value removes one)."""
    merged = {**server.extras(), "conn_timeout": 10, **extras}
    return parse_ftps_settings(
        conn_type="secure_ftps",
        host=server.host,
        port=server.port,
        login=server.login,
        password=password or server.password,
        extras={k: v for k, v in merged.items() if v is not None},
    )


def sftp_settings(server: SFTPServer, *, password: str | bool | None = True, **extras: Any) -> SFTPSettings:
    """Settings that pin *server*'s host key; ``password=False`` for key-only auth."""
    merged = {**server.extras(), "conn_timeout": 10, **extras}
    pw = server.password if password is True else (None if password is False else password)
    return parse_sftp_settings(
        conn_type="secure_sftp",
        host=server.host,
        port=server.port,
        login=server.login,
        password=pw,  # type: ignore[arg-type]
        extras={k: v for k, v in merged.items() if v is not None},
    )


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 64 MiB random file and its sha256 (made once per session)."""
    path = write_random(tmp_path_factory.mktemp("big") / "payload-64MiB.bin", BIG)
    return path, sha256_file(path)


@pytest.fixture
def relayed_ftps(tmp_path: Path, test_pki: ServerPKI) -> Iterator[Callable[..., tuple[FTPSServer, Relay]]]:
    """``make(tls_mode="explicit", record=True, **options) -> (server, relay)``: pyftpdlib behind a relay
    that carries the control *and* the data connections (see :func:`tests.security.tools.run_relayed_pyftpd`)."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(
            tls_mode: str = "explicit", *, record: bool = True, pki: ServerPKI | None = None, **options: Any
        ) -> tuple[FTPSServer, Relay]:
            nonlocal count
            count += 1
            relay = stack.enter_context(Relay(record=record))
            root = tmp_path / f"ftproot-{count}"
            return stack.enter_context(
                run_relayed_pyftpd(root, pki or test_pki, tls_mode=tls_mode, relay=relay, **options)
            )

        yield make


@pytest.fixture
def relayed_sftp(asyncssh_server: SFTPServer) -> Iterator[Callable[..., tuple[SFTPServer, Relay]]]:
    """``make(record=True, server=None) -> (server as seen through the relay, relay)`` for the asyncssh server."""
    relays: list[Relay] = []

    def make(*, record: bool = True, server: SFTPServer | None = None) -> tuple[SFTPServer, Relay]:
        target = server or asyncssh_server
        relay = Relay(record=record)
        relays.append(relay)
        port = relay.add_route("ssh", (target.host, target.port))
        # The pinned host key is the real server's: the relay is transparent, as a network attacker is.
        return dataclasses.replace(target, port=port), relay

    yield make
    for r in relays:
        r.close()


def run_upload_task(conn_id: str, local_path: str | Path | list[str], remote_path: str, **kwargs: Any) -> Any:
    """Run :class:`SecureUploadOperator` the way provider tests do: ``execute(context={})``."""
    from airflow_secure_transfer.operators.upload import SecureUploadOperator

    op = SecureUploadOperator(
        task_id="upload",
        conn_id=conn_id,
        local_path=str(local_path) if isinstance(local_path, Path) else local_path,
        remote_path=remote_path,
        **kwargs,
    )
    return op.execute(context={})
