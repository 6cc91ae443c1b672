"""Audit of the connection store: plain ``ftp`` connections, unverified SSH, settings the policy refuses.

Connections are read the way Airflow reads them, through its configured
secrets backends in their search order (a custom backend from ``[secrets]
backend``, then ``AIRFLOW_CONN_*`` environment variables, then the metadata
database). Backends that can be listed are listed: environment variables, the
local-filesystem backend's file and the metadata database. Other backends
(Vault, cloud secret managers...) can only be asked for a connection by id, so
the ids given with ``--conn-id`` and those found in the audited DAG files
(``*_conn_id="..."``) are looked up in them.

Airflow is imported only here, and only when ``--connections`` is given.

Nothing in a finding comes from a password, a private key, a passphrase or an
extra's value other than the flags being reported; policy messages are passed
through a redaction step that removes the connection's secret values anyway.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_secure_transfer.cli.rules import RULES, Finding

__all__ = ["ConnectionRecord", "audit_connection", "collect_connections", "conn_ids_in_source"]

_SSH_TYPES = ("sftp", "ssh")
_SECRET_EXTRAS = ("private_key", "private_key_passphrase", "client_key", "key_file_passphrase", "password")


@dataclass
class ConnectionRecord:
    """One connection as read from one source. Secrets stay out of ``repr``."""

    conn_id: str
    conn_type: str | None
    source: str
    host: str | None = None
    port: Any = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    extra: str | None = field(default=None, repr=False)


def _record(conn: Any, conn_id: str, source: str) -> ConnectionRecord:
    return ConnectionRecord(
        conn_id=conn_id,
        conn_type=getattr(conn, "conn_type", None),
        source=source,
        host=getattr(conn, "host", None),
        port=getattr(conn, "port", None),
        login=getattr(conn, "login", None),
        password=getattr(conn, "password", None),
        extra=getattr(conn, "extra", None),
    )


def conn_ids_in_source(source: str) -> set[str]:
    """Connection ids named in DAG code: string literals passed as ``*conn_id=`` keywords."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    ids: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg and node.arg.endswith("conn_id"):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) and node.value.value:
                if "{{" not in node.value.value:
                    ids.add(node.value.value)
    return ids


def _warn(message: str) -> None:
    print(f"airflow-secure-transfer audit: {message}", file=sys.stderr)


def _logs_to_stderr() -> None:
    # Airflow's console log handler writes to stdout; JSON/SARIF on stdout must stay clean
    # (what "airflow ... -o json" does too).
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _sqlite_file_missing() -> str | None:
    """The path of a configured SQLite metadata database that does not exist (connecting would create it)."""
    from airflow.configuration import conf
    from sqlalchemy.engine import make_url

    url = make_url(conf.get("database", "sql_alchemy_conn"))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return None if Path(url.database).exists() else url.database


def collect_connections(lookup_ids: Iterable[str] = ()) -> tuple[list[ConnectionRecord], list[Finding]]:
    """Read the connection store; return the connections and findings for entries that could not be read.

    :param lookup_ids: connection ids to ask the backends that cannot list their connections for.
    """
    # Airflow is imported here only: about 2 s, and it needs a configured AIRFLOW_HOME.
    from airflow.configuration import ensure_secrets_loaded
    from airflow.secrets.environment_variables import CONN_ENV_PREFIX, EnvironmentVariablesBackend
    from airflow.secrets.local_filesystem import LocalFilesystemBackend
    from airflow.secrets.metastore import MetastoreBackend

    _logs_to_stderr()
    records: list[ConnectionRecord] = []
    problems: list[Finding] = []
    unlisted: list[Any] = []

    def unreadable(conn_id: str, source: str, exc: BaseException) -> None:
        # The exception text of a failed URI/JSON parse could quote the value: name only its class.
        problems.append(
            Finding(
                rule=RULES["STX100"],
                message=f"cannot be read ({type(exc).__name__})",
                fix=RULES["STX100"].fix,
                conn_id=conn_id,
                source=source,
            )
        )

    for backend in ensure_secrets_loaded():
        if isinstance(backend, EnvironmentVariablesBackend):
            for key in sorted(os.environ):
                if not key.startswith(CONN_ENV_PREFIX) or key == CONN_ENV_PREFIX:
                    continue
                conn_id = key[len(CONN_ENV_PREFIX) :].lower()
                source = f"environment variable {key}"
                try:
                    conn = backend.get_connection(conn_id)
                except Exception as exc:  # malformed URI or JSON
                    unreadable(conn_id, source, exc)
                    continue
                if conn is not None:
                    records.append(_record(conn, conn_id, source))
        elif isinstance(backend, MetastoreBackend):
            missing = _sqlite_file_missing()
            if missing:
                _warn(f"no metadata database at {missing}; only the other sources were audited")
                continue
            try:
                from airflow.models import Connection
                from airflow.utils.session import create_session
                from sqlalchemy import select

                with create_session() as session:
                    for conn in session.scalars(select(Connection)).all():
                        records.append(_record(conn, conn.conn_id, "metadata database"))
            except Exception as exc:
                first_line = (str(exc).splitlines() or [""])[0][:200]
                _warn(
                    f"the metadata database could not be read ({type(exc).__name__}: {first_line}); "
                    "its connections were not audited"
                )
        elif isinstance(backend, LocalFilesystemBackend):
            path = backend.connections_file
            if path:
                try:
                    from airflow.secrets.local_filesystem import load_connections_dict

                    for conn_id, conn in sorted(load_connections_dict(path).items()):
                        records.append(_record(conn, conn_id, f"connections file {path}"))
                except Exception as exc:
                    unreadable("*", f"connections file {path}", exc)
        else:
            unlisted.append(backend)

    # Backends that cannot list (Vault, cloud secret managers...): ask for the wanted ids.
    wanted = sorted(set(lookup_ids))
    for backend in unlisted:
        kind = type(backend).__name__
        if not wanted:
            _warn(
                f"secrets backend {kind} cannot list its connections; name the ones to check with --conn-id "
                "(ids used in the audited DAG files are looked up automatically)"
            )
        for conn_id in wanted:
            try:
                conn = backend.get_connection(conn_id)
            except Exception as exc:
                unreadable(conn_id, f"secrets backend {kind}", exc)
                continue
            if conn is not None:
                records.append(_record(conn, conn_id, f"secrets backend {kind}"))
    return records, problems


def _redact(text: str, record: ConnectionRecord, extras: Mapping[str, Any]) -> str:
    secrets = [record.password] + [extras.get(k) for k in _SECRET_EXTRAS]
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 3:
            text = text.replace(secret, "***")
            for line in secret.splitlines():
                if len(line.strip()) >= 8:
                    text = text.replace(line.strip(), "***")
    return text


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return False


def audit_connection(record: ConnectionRecord) -> list[Finding]:
    """Check one connection; see the module docstring."""
    findings: list[Finding] = []
    conn_type = (record.conn_type or "").strip().lower()

    def add(rule_id: str, message: str, fix: str | None = None) -> None:
        rule = RULES[rule_id]
        findings.append(
            Finding(
                rule=rule,
                message=message,
                fix=fix or rule.fix,
                conn_id=record.conn_id,
                source=record.source,
            )
        )

    extras: dict[str, Any] = {}
    if record.extra not in (None, ""):
        try:
            parsed = json.loads(record.extra or "")
        except ValueError:
            add("STX100", "its extra is not valid JSON")
            return findings
        if not isinstance(parsed, dict):
            add("STX100", "its extra is not a JSON object")
            return findings
        extras = parsed

    if conn_type == "ftp":
        add("STX101", "type 'ftp': the stock FTPHook/FTPFileTransmitOperator send the password and files in clear")
    elif conn_type in _SSH_TYPES:
        if _truthy(extras.get("no_host_key_check")):
            add("STX102", f"type {conn_type!r} with no_host_key_check = true: any server is trusted")
        if _truthy(extras.get("allow_host_key_change")):
            add("STX103", f"type {conn_type!r} with allow_host_key_change = true: a changed host key is accepted")
        if extras.get("host_key") in (None, "") and extras.get("known_hosts") in (None, ""):
            add(
                "STX104",
                f"type {conn_type!r} without host_key: trust depends on the worker's ~/.ssh/known_hosts",
            )
    elif conn_type in ("secure_ftps", "secure_sftp"):
        from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
        from airflow_secure_transfer.security.policy import parse_ftps_settings, parse_sftp_settings

        parse = parse_ftps_settings if conn_type == "secure_ftps" else parse_sftp_settings
        try:
            parse(
                conn_type=conn_type,
                host=record.host,
                port=record.port,
                login=record.login,
                password=record.password,
                extras=extras,
            )
        except SecurityPolicyError as exc:
            add("STX105", f"refused by the security policy: {_redact(str(exc), record, extras)}")
        except ConfigurationError as exc:
            add("STX106", f"not usable: {_redact(str(exc), record, extras)}")
    return findings
