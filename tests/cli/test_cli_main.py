"""The console script: formats, exit codes, usage errors, no Airflow import for path audits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.cli.main import main
from airflow_secure_transfer.cli.rules import RULES

SCRIPT = Path(sys.executable).parent / "airflow-secure-transfer"
CORPUS = Path(__file__).parent / "corpus"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env={**base, **(env or {})}
    )


def test_console_script_is_installed() -> None:
    assert SCRIPT.exists(), "run .venv/bin/pip install -e . (the console script is declared in pyproject.toml)"
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("airflow-secure-transfer ")


def test_table_output_and_exit_code() -> None:
    proc = run_cli("audit", "tp_ftplib_plain.py", cwd=CORPUS)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    first_line = next(
        n for n, text in enumerate((CORPUS / "tp_ftplib_plain.py").read_text().splitlines(), 1) if "expect:" in text
    )
    assert lines[0].startswith(f"tp_ftplib_plain.py:{first_line}:11: HIGH   STX001 ftplib.FTP is plain FTP")
    assert lines[1].startswith("    fix: use SecureUploadOperator(conn_id=...)")
    assert lines[-1] == "6 findings (6 high, 0 medium, 0 low) in 1 file"


def test_clean_file_exits_zero() -> None:
    proc = run_cli("audit", str(CORPUS / "la_names.py"), str(CORPUS / "la_ftp_tls_verified.py"))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout == "no findings in 2 files\n"


@pytest.mark.parametrize(
    ("fail_on", "expected"),
    [("low", 1), ("medium", 1), ("high", 0)],
)
def test_fail_on_thresholds(fail_on: str, expected: int) -> None:
    # tp_uris.py has only medium findings (STX020).
    assert main(["audit", str(CORPUS / "tp_uris.py"), "--fail-on", fail_on, "--output", os.devnull]) == expected


def test_default_fail_on_is_medium(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(CORPUS / "tp_uris.py")]) == 1
    assert "STX020" in capsys.readouterr().out


def test_ignore_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(CORPUS / "tp_uris.py"), "--ignore", "STX020,STX001", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["audit", "/nonexistent/dags"],
        ["audit", str(CORPUS), "--format", "xml"],
        ["audit", str(CORPUS), "--fail-on", "critical"],
        ["audit", str(CORPUS), "--ignore", "STX999"],
        ["audit", str(CORPUS), "--conn-id", "x"],
        ["bogus"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_json_output() -> None:
    proc = run_cli("audit", "tp_stock_providers.py", "--format", "json", cwd=CORPUS)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["tool"] == "airflow-secure-transfer"
    assert doc["summary"] == {"high": 5, "medium": 3, "low": 0, "total": 8, "files": 1, "connections": None}
    first = doc["findings"][0]
    sensor_line = next(
        n
        for n, text in enumerate((CORPUS / "tp_stock_providers.py").read_text().splitlines(), 1)
        if "wait = FTPSensor(" in text
    )
    assert first == {
        "rule": "STX010",
        "name": "stock-ftp-class",
        "severity": "high",
        "message": "FTPSensor (stock FTP provider) uses plain FTP: the password and the files are sent in clear",
        "fix": "poll with SecureFTPSHook (a secure_ftps connection) in a @task.sensor",
        "path": "tp_stock_providers.py",
        "line": sensor_line,
        "column": 12,
        "end_line": sensor_line,
        "end_column": 21,
    }


# A minimal SARIF 2.1.0 schema: the properties the specification requires, and the ones code-scanning
# tools read (ruleId, level, locations with 1-based regions).
SARIF_MINIMAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "minLength": 1},
                                    "version": {"type": "string"},
                                    "informationUri": {"type": "string", "format": "uri"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                },
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {"enum": ["none", "note", "warning", "error"]}
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message", "ruleId"],
                            "properties": {
                                "ruleId": {"type": "string", "pattern": "^STX[0-9]{3}$"},
                                "ruleIndex": {"type": "integer", "minimum": 0},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {"text": {"type": "string", "minLength": 1}},
                                },
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation"],
                                                "properties": {
                                                    "artifactLocation": {
                                                        "type": "object",
                                                        "required": ["uri"],
                                                        "properties": {"uri": {"type": "string"}},
                                                    },
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine"],
                                                        "properties": {
                                                            "startLine": {"type": "integer", "minimum": 1},
                                                            "startColumn": {"type": "integer", "minimum": 1},
                                                            "endLine": {"type": "integer", "minimum": 1},
                                                            "endColumn": {"type": "integer", "minimum": 1},
                                                        },
                                                    },
                                                },
                                            },
                                            "logicalLocations": {
                                                "type": "array",
                                                "items": {"type": "object", "required": ["name"]},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def check_sarif(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SARIF_MINIMAL_SCHEMA)
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    for result in run["results"]:
        # ruleIndex must point at the rule with the same id (viewers use the index).
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["locations"], "every result has a location"


def test_sarif_output(tmp_path: Path) -> None:
    out = tmp_path / "audit.sarif"
    proc = run_cli("audit", ".", "--format", "sarif", "--output", str(out), cwd=CORPUS)
    assert proc.returncode == 1 and proc.stdout == ""
    doc = json.loads(out.read_text(encoding="utf-8"))
    check_sarif(doc)
    run = doc["runs"][0]
    assert len(run["results"]) == 62
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == CORPUS.resolve().as_uri() + "/"
    by_rule = {r["ruleId"]: r for r in run["results"]}
    loc = by_rule["STX033"]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "tp_ssh.py", "uriBaseId": "%SRCROOT%"}
    last_expected = max(
        n for n, text in enumerate((CORPUS / "tp_ssh.py").read_text().splitlines(), 1) if "expect: STX033" in text
    )
    assert loc["region"]["startLine"] == last_expected
    assert by_rule["STX033"]["level"] == "error"
    assert by_rule["STX020"]["level"] == "warning"


def test_sarif_with_no_findings_is_valid() -> None:
    proc = run_cli("audit", str(CORPUS / "la_secure_dag.py"), "--format", "sarif")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    check_sarif(doc)
    assert doc["runs"][0]["results"] == []


def test_list_rules() -> None:
    proc = run_cli("audit", "--list-rules")
    assert proc.returncode == 0
    for rule_id in RULES:
        assert rule_id in proc.stdout


def test_path_audit_does_not_import_airflow() -> None:
    """The console script must work without Airflow being importable/configured for path audits."""
    code = (
        "import sys\n"
        "from airflow_secure_transfer.cli.main import main\n"
        f"rc = main(['audit', {str(CORPUS)!r}, '--format', 'sarif', '--output', {os.devnull!r}])\n"
        "assert rc == 1, rc\n"
        "leaked = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "assert not leaked, leaked\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_default_path_is_the_configured_dags_folder(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "legacy.py").write_text("import ftplib\nftplib.FTP('h')\n", encoding="utf-8")
    home = tmp_path / "airflow-home"
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = run_cli("audit", "--format", "json", env=env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(Path(f["path"]).name, f["rule"], f["line"]) for f in doc["findings"]] == [("legacy.py", "STX001", 2)]


def test_pre_commit_hook_definition() -> None:
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    by_id = {h["id"]: h for h in hooks}
    hook = by_id["airflow-secure-transfer-audit"]
    assert hook["entry"] == "airflow-secure-transfer audit"
    assert hook["language"] == "python" and hook["types"] == ["python"]
    # pre-commit passes the staged file names as arguments: that must be a valid invocation.
    files = [str(CORPUS / "la_names.py"), str(CORPUS / "tp_uris.py")]
    proc = run_cli(*hook["entry"].split()[1:], *hook.get("args", []), *files)
    assert proc.returncode == 1 and "tp_uris.py" in proc.stdout
