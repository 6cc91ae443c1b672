"""``airflow secure-transfer audit|fingerprint``: the console script's commands as an Airflow CLI group.

Airflow 3.3 loads a provider's CLI from the ``cli`` list of its provider info
(``"airflow_secure_transfer.cli.airflow_cli.get_cli_commands"``): the providers
manager imports this function and ``airflow.cli.cli_parser`` adds the commands
it returns. The arguments come from the same specifications as the console
script's (:data:`~airflow_secure_transfer.cli.main.AUDIT_ARGS`), and the command
bodies are imported only when a command runs.

Airflow ignores a command function's return value, so the exit code is raised
with :class:`SystemExit`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from airflow_secure_transfer.cli.main import AUDIT_ARGS, FINGERPRINT_ARGS, ArgSpec

__all__ = ["audit_command", "fingerprint_command", "get_cli_commands"]


def _airflow_args(specs: Sequence[ArgSpec]) -> list[Any]:
    from airflow.cli.cli_config import Arg

    # Airflow's Arg has no annotations.
    return [Arg(flags, **kwargs) for flags, kwargs in specs]  # type: ignore[no-untyped-call]


def audit_command(args: argparse.Namespace) -> None:
    """``airflow secure-transfer audit``."""
    from airflow_secure_transfer.cli.main import dispatch, run_audit

    code = dispatch(args, run_audit)
    if code:
        raise SystemExit(code)


def fingerprint_command(args: argparse.Namespace) -> None:
    """``airflow secure-transfer fingerprint``."""
    from airflow_secure_transfer.cli.main import dispatch, run_fingerprint

    code = dispatch(args, run_fingerprint)
    if code:
        raise SystemExit(code)


def get_cli_commands() -> list[Any]:
    """Return the ``secure-transfer`` command group (target of the provider info's ``cli`` entry)."""
    from airflow.cli.cli_config import ActionCommand, GroupCommand

    return [
        GroupCommand(
            name="secure-transfer",
            help="Audit DAGs and connections for plain FTP; fingerprint FTPS/SFTP servers",
            subcommands=[
                ActionCommand(
                    name="audit",
                    help="Report plain FTP and weak TLS/SSH settings in DAG files (and connections)",
                    description="Read DAG files with Python's ast module (never importing them) and report plain "
                    "FTP, unverified TLS and unverified SSH host keys; with --connections, also the connection "
                    "store. Exit code 1 when a finding at or above --fail-on exists.",
                    func=audit_command,
                    args=_airflow_args(AUDIT_ARGS),
                ),
                ActionCommand(
                    name="fingerprint",
                    help="Show a server's certificate or host keys and the extras that pin them",
                    description="Connect without logging in (no credential is sent), show the certificate chain "
                    "or host keys with SHA-256 fingerprints, and print the connection extras that pin them. "
                    "Compare the fingerprint with one obtained out of band before trusting it.",
                    func=fingerprint_command,
                    args=_airflow_args(FINGERPRINT_ARGS),
                ),
            ],
        )
    ]
