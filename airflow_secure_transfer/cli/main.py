"""The ``airflow-secure-transfer`` console script: ``audit`` and ``fingerprint``.

It runs without a running Airflow: ``audit PATH...`` imports no Airflow at all;
Airflow is imported only for ``--connections`` and to find the DAGs folder when
no path is given. The same commands are offered as ``airflow secure-transfer ...``
(see :mod:`airflow_secure_transfer.cli.airflow_cli`), built from the argument
specifications below so that both stay identical.

Exit codes: 0 nothing at or above ``--fail-on``, 1 findings at or above it, 2 a
usage error (bad option, missing path, Airflow not importable for
``--connections``). ``fingerprint``: 0 shown, 1 the server could not be reached
or described, 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_secure_transfer import __version__
from airflow_secure_transfer.cli.rules import RULES, Finding, Severity

__all__ = ["AUDIT_ARGS", "FINGERPRINT_ARGS", "ArgSpec", "build_parser", "main", "run_audit", "run_fingerprint"]

#: One argument: its flags and the keyword arguments of ``add_argument``. Only the keywords that
#: Airflow's ``Arg`` accepts are used (help, action, default, nargs, type, choices, required, metavar, dest).
ArgSpec = tuple[tuple[str, ...], dict[str, Any]]

SEVERITIES = ("low", "medium", "high")


class UsageError(Exception):
    """A wrong invocation: printed and exit code 2."""


def _rule_list(value: str) -> list[str]:
    return [item.strip().upper() for item in value.split(",") if item.strip()]


AUDIT_ARGS: list[ArgSpec] = [
    (
        ("paths",),
        {
            "nargs": "*",
            "metavar": "PATH",
            "help": "Python files or directories to audit (default: the configured DAGs folder)",
        },
    ),
    (
        ("--connections",),
        {
            "action": "store_true",
            "help": "also audit the connection store (AIRFLOW_CONN_* variables, secrets backends, metadata "
            "database); imports Airflow",
        },
    ),
    (
        ("--conn-id",),
        {
            "action": "append",
            "default": [],
            "metavar": "CONN_ID",
            "dest": "conn_ids",
            "help": "with --connections: also look this id up in backends that cannot list their connections "
            "(repeatable; ids used in the audited DAG files are looked up anyway)",
        },
    ),
    (
        ("--format",),
        {
            "choices": ("table", "json", "sarif"),
            "default": "table",
            "help": "output format (default: table); sarif is SARIF 2.1.0 for code-scanning tools",
        },
    ),
    (
        ("--fail-on",),
        {
            "choices": SEVERITIES,
            "default": "medium",
            "help": "exit with 1 when a finding of this severity or higher exists (default: medium)",
        },
    ),
    (
        ("--ignore",),
        {
            "action": "append",
            "default": [],
            "type": _rule_list,
            "metavar": "RULE[,RULE]",
            "help": "rule ids not to report (repeatable), e.g. --ignore STX104",
        },
    ),
    (
        ("--output",),
        {"metavar": "FILE", "help": "write the report to FILE instead of standard output"},
    ),
    (
        ("--list-rules",),
        {"action": "store_true", "help": "print the rules and exit"},
    ),
]

FINGERPRINT_ARGS: list[ArgSpec] = [
    (
        ("target",),
        {"metavar": "HOST[:PORT]", "help": "the server, e.g. ftps.example.com:21 or [::1]:2222"},
    ),
    (
        ("--protocol",),
        {
            "choices": ("ftps", "ftps-implicit", "sftp"),
            "required": True,
            "help": "ftps (AUTH TLS, port 21), ftps-implicit (port 990) or sftp (port 22)",
        },
    ),
    (
        ("--timeout",),
        {"type": float, "default": 15.0, "metavar": "SECONDS", "help": "connect and read timeout (default: 15)"},
    ),
    (
        ("--format",),
        {"choices": ("text", "json"), "default": "text", "help": "output format (default: text)"},
    ),
]


def _add_args(parser: argparse.ArgumentParser, specs: Sequence[ArgSpec]) -> None:
    for flags, kwargs in specs:
        parser.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The console script's parser."""
    parser = argparse.ArgumentParser(
        prog="airflow-secure-transfer",
        description="Find plain FTP and unverified TLS/SSH in Airflow DAGs and connections; "
        "print the certificate or host key of an FTPS/SFTP server to pin it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    audit = sub.add_parser(
        "audit",
        help="report plain FTP and weak TLS/SSH settings in DAG files (and connections)",
        description="Read DAG files with Python's ast module (never importing them) and report plain FTP, "
        "unverified TLS and unverified SSH host keys; with --connections, also the connection store.",
    )
    _add_args(audit, AUDIT_ARGS)
    audit.set_defaults(handler=run_audit)
    fingerprint = sub.add_parser(
        "fingerprint",
        help="show a server's certificate or host keys and the extras that pin them",
        description="Connect without logging in (no credential is sent), show the server's certificate chain "
        "or host keys with their SHA-256 fingerprints, and print the connection extras that pin them. "
        "Compare the fingerprint with one obtained out of band before trusting it.",
    )
    _add_args(fingerprint, FINGERPRINT_ARGS)
    fingerprint.set_defaults(handler=run_fingerprint)
    return parser


def _dags_folder() -> Path:
    try:
        from airflow.configuration import conf
    except Exception as exc:
        raise UsageError(f"no PATH given and Airflow's configuration cannot be read ({exc}); name the paths") from exc
    return Path(conf.get("core", "dags_folder"))


def run_audit(args: argparse.Namespace) -> int:
    """Run ``audit`` with parsed arguments; return the exit code."""
    from airflow_secure_transfer.cli.audit import audit_paths
    from airflow_secure_transfer.cli.output import render_json, render_rules, render_sarif, render_table

    if args.list_rules:
        _emit(render_rules(), args.output)
        return 0
    ignored = {rule for group in args.ignore for rule in group}
    unknown = sorted(ignored - set(RULES))
    if unknown:
        raise UsageError(f"--ignore: unknown rule id(s) {', '.join(unknown)}; see --list-rules")
    if args.conn_ids and not args.connections:
        raise UsageError("--conn-id needs --connections")
    paths = [Path(p) for p in args.paths] or [_dags_folder()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")

    findings, files = audit_paths(paths)
    connections: int | None = None
    if args.connections:
        conn_findings, connections = _audit_connections(paths, args.conn_ids)
        findings.extend(conn_findings)
    findings = [f for f in findings if f.rule.id not in ignored]

    render = {"table": render_table, "json": render_json, "sarif": render_sarif}[args.format]
    _emit(render(findings, files=files, connections=connections), args.output)
    threshold = Severity(args.fail_on).rank
    return 1 if any(f.severity.rank >= threshold for f in findings) else 0


def _audit_connections(paths: Sequence[Path], conn_ids: Sequence[str]) -> tuple[list[Finding], int]:
    from airflow_secure_transfer.cli.audit import iter_python_files
    from airflow_secure_transfer.cli.connections import audit_connection, collect_connections, conn_ids_in_source

    wanted = set(conn_ids)
    for file in iter_python_files(paths):
        try:
            wanted |= conn_ids_in_source(file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    try:
        # Airflow 3.1 logs some connection-parsing lines to stdout: keep stdout for the report alone.
        with contextlib.redirect_stdout(sys.stderr):
            records, findings = collect_connections(sorted(wanted))
    except ImportError as exc:
        raise UsageError(f"--connections needs Airflow, which cannot be imported: {exc}") from exc
    for record in records:
        findings.extend(audit_connection(record))
    return sorted(findings, key=Finding.sort_key), len(records)


def run_fingerprint(args: argparse.Namespace) -> int:
    """Run ``fingerprint`` with parsed arguments; return the exit code."""
    from airflow_secure_transfer.cli.fingerprint import fingerprint_command

    return fingerprint_command(args)


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def dispatch(args: argparse.Namespace, handler: Any) -> int:
    """Run a handler, turning usage errors into exit code 2."""
    try:
        code: int = handler(args)
    except UsageError as exc:
        print(f"airflow-secure-transfer: error: {exc}", file=sys.stderr)
        return 2
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``airflow-secure-transfer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return dispatch(args, args.handler)


if __name__ == "__main__":
    sys.exit(main())
