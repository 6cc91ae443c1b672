"""``airflow secure-transfer ...``: the CLI group Airflow 3.3 loads from the provider info's ``cli`` entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_secure_transfer import get_provider_info

pytestmark = pytest.mark.airflow

CORPUS = Path(__file__).parent / "corpus"
AIRFLOW = Path(sys.executable).parent / "airflow"
CLI_ENTRY = "airflow_secure_transfer.cli.airflow_cli.get_cli_commands"


def _env(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    return {**base, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}


def test_cli_commands_parse_and_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Build the group with Airflow's own parser code and run ``audit`` through it."""
    from airflow.cli.cli_config import ActionCommand, DefaultHelpParser, GroupCommand
    from airflow.cli.cli_parser import _add_command

    from airflow_secure_transfer.cli.airflow_cli import get_cli_commands

    (group,) = get_cli_commands()
    assert isinstance(group, GroupCommand) and group.name == "secure-transfer"
    subcommands = {c.name: c for c in group.subcommands}
    assert set(subcommands) == {"audit", "fingerprint"}
    assert all(isinstance(c, ActionCommand) for c in subcommands.values())

    parser = DefaultHelpParser(prog="airflow")
    subparsers = parser.add_subparsers(dest="subcommand")
    _add_command(subparsers, group)
    args = parser.parse_args(["secure-transfer", "audit", str(CORPUS / "tp_uris.py"), "--format", "json"])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    assert exc.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert {f["rule"] for f in doc["findings"]} == {"STX020"}

    args = parser.parse_args(["secure-transfer", "audit", str(CORPUS / "la_names.py")])
    args.func(args)  # no finding: returns without SystemExit
    assert "no findings" in capsys.readouterr().out

    args = parser.parse_args(["secure-transfer", "fingerprint", "h:x", "--protocol", "sftp"])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    assert exc.value.code == 2


def test_provider_info_declares_the_cli() -> None:
    assert CLI_ENTRY in get_provider_info().get("cli", []), (
        f'add "cli": ["{CLI_ENTRY}"] to get_provider_info() in airflow_secure_transfer/__init__.py'
    )


def _airflow_loads_provider_clis() -> bool:
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    return "cli" in schema["properties"]


def test_airflow_secure_transfer_audit_end_to_end(tmp_path: Path) -> None:
    """``airflow secure-transfer audit`` through the real providers manager and ``airflow`` entry point."""
    if not _airflow_loads_provider_clis():
        pytest.skip("this Airflow (3.1) does not load CLI commands from providers: use airflow-secure-transfer")
    proc = subprocess.run(
        [str(AIRFLOW), "secure-transfer", "audit", str(CORPUS / "tp_ftplib_plain.py"), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(tmp_path),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert {f["rule"] for f in doc["findings"]} == {"STX001"}
    help_proc = subprocess.run(
        [str(AIRFLOW), "secure-transfer", "--help"], capture_output=True, text=True, timeout=300, env=_env(tmp_path)
    )
    assert help_proc.returncode == 0 and "audit" in help_proc.stdout and "fingerprint" in help_proc.stdout
