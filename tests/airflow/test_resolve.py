"""``resolve_connection``: one secrets-backend lookup turns a conn_id into settings and a client factory.

Connections are real ``AIRFLOW_CONN_*`` environment connections read by Airflow's own secrets
backends; ``BaseHook.get_connection`` is wrapped by a counter that passes every call through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseHook

from airflow_secure_transfer.exceptions import ConfigurationError
from airflow_secure_transfer.hooks import resolve as resolve_module
from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
from airflow_secure_transfer.hooks.resolve import ResolvedConnection, resolve_connection
from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from airflow_secure_transfer.security.policy import FTPSSettings, SFTPSettings
from tests.servers import FTPSServer, SFTPServer

AnyServer = FTPSServer | SFTPServer


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count ``BaseHook.get_connection`` calls (the hooks' ``self.get_connection`` included); each call goes through."""
    calls: list[str] = []
    original = BaseHook.__dict__["get_connection"].__func__

    def counting(cls: type[BaseHook], conn_id: str) -> Any:
        calls.append(conn_id)
        return original(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(counting))
    return calls


@pytest.mark.parametrize(
    ("server_fixture", "conn_type", "scheme", "settings_type"),
    [
        ("pyftpd_explicit", "secure_ftps", "ftps", FTPSSettings),
        ("pyftpd_explicit", "ftp", "ftps", FTPSSettings),
        ("asyncssh_server", "secure_sftp", "sftp", SFTPSettings),
        ("asyncssh_server", "ssh", "sftp", SFTPSettings),
    ],
)
def test_one_lookup_gives_settings_and_a_working_client_factory(
    request: pytest.FixtureRequest,
    airflow_conn: Callable[..., str],
    lookups: list[str],
    server_fixture: str,
    conn_type: str,
    scheme: str,
    settings_type: type,
) -> None:
    server: AnyServer = request.getfixturevalue(server_fixture)
    conn_id = airflow_conn("resolved", server, conn_type=conn_type, remote_root=server.writable_dir)
    resolved = resolve_connection(conn_id)
    assert lookups == [conn_id]
    assert resolved.conn_id == conn_id and resolved.scheme == scheme
    assert isinstance(resolved.settings, settings_type)
    assert (resolved.host, resolved.port) == (server.host, server.port)
    assert resolved.remote_root == server.writable_dir
    assert resolved.max_connections == resolved.settings.max_connections
    assert resolved.conn_timeout == resolved.settings.conn_timeout
    with resolved.connect() as fs:  # a real, verified session to the server
        names = {entry.path for entry in fs.listdir(server.writable_dir)}
    with resolved.connect() as fs:  # every call is a new client, still from the one lookup
        assert {entry.path for entry in fs.listdir(server.writable_dir)} == names
    assert lookups == [conn_id]
    assert server.password not in repr(resolved)


def test_resolving_registers_the_secrets_with_the_log_masker(
    asyncssh_server: SFTPServer, airflow_conn: Callable[..., str]
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    conn_id = airflow_conn("resolved_masked", asyncssh_server)
    resolve_connection(conn_id)
    assert asyncssh_server.password not in redact(f"password={asyncssh_server.password}")


def test_an_unaccepted_type_names_the_accepted_ones_after_one_lookup(
    monkeypatch: pytest.MonkeyPatch, lookups: list[str]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WEB_RESOLVE", json.dumps({"conn_type": "http", "host": "127.0.0.1"}))
    with pytest.raises(ConfigurationError) as info:
        resolve_connection("web_resolve", consumer="SecureUploadOperator")
    assert str(info.value) == (
        "connection 'web_resolve' has type 'http', which SecureUploadOperator does not accept; "
        "accepted types: secure_ftps, ftp, secure_sftp, sftp, ssh (ftp connections are always upgraded to TLS)"
    )
    assert lookups == ["web_resolve"]


@pytest.mark.parametrize(
    ("hook_type", "server_fixture"), [(SecureFTPSHook, "pyftpd_explicit"), (SecureSFTPHook, "asyncssh_server")]
)
def test_the_hooks_and_the_resolver_parse_a_connection_the_same_way(
    request: pytest.FixtureRequest,
    airflow_conn: Callable[..., str],
    lookups: list[str],
    hook_type: type[SecureFTPSHook] | type[SecureSFTPHook],
    server_fixture: str,
) -> None:
    server: AnyServer = request.getfixturevalue(server_fixture)
    conn_id = airflow_conn("resolved_same", server)
    assert resolve_connection(conn_id).settings == hook_type(conn_id).get_settings()
    assert lookups == [conn_id, conn_id]  # one each: the hook does not go through a second path


@pytest.mark.parametrize("server_fixture", ["pyftpd_explicit", "asyncssh_server"])
def test_the_operator_resolves_its_connection_once_through_the_resolver(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    airflow_conn: Callable[..., str],
    lookups: list[str],
    tmp_path: Path,
    server_fixture: str,
) -> None:
    """Fails on the code before the resolver: the operator read the connection, then its hook read it again."""
    server: AnyServer = request.getfixturevalue(server_fixture)
    conn_id = airflow_conn("resolved_op", server)
    resolved: list[ResolvedConnection] = []

    def recording(conn_id: str, **kwargs: Any) -> ResolvedConnection:
        result = resolve_connection(conn_id, **kwargs)
        resolved.append(result)
        return result

    monkeypatch.setattr(resolve_module, "resolve_connection", recording)
    (tmp_path / "a.csv").write_bytes(b"a,b\n1,2\n")
    op = SecureUploadOperator(
        task_id="up", conn_id=conn_id, local_path=str(tmp_path / "a.csv"), remote_path=f"{server.writable_dir}/a.csv"
    )
    (record,) = op.execute(context={})
    assert record["verified"] and (server.local_root / "a.csv").read_bytes() == b"a,b\n1,2\n"
    assert lookups == [conn_id]  # before: the operator's lookup, then its hook's
    assert [r.conn_id for r in resolved] == [conn_id]
    scheme = "ftps" if isinstance(server, FTPSServer) else "sftp"
    assert op._endpoint == (scheme, server.host, server.port)
