"""Render audit findings as a table, JSON, or SARIF 2.1.0; make untrusted text safe for a terminal."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_secure_transfer import __version__
from airflow_secure_transfer.cli.rules import RULES, Finding, Rule, Severity

__all__ = ["render_json", "render_rules", "render_sarif", "render_table", "visible"]

#: Unicode categories that a terminal does not print as a glyph: controls (C0, DEL, C1: ESC starts
#: cursor movement and erasure, CR returns to the line start), format characters (bidirectional
#: overrides, zero-width), line and paragraph separators, surrogates (undecodable bytes).
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """Return *text* with every character a terminal would not print as a glyph written as an escape.

    For text from a server (an FTP greeting, a certificate's subject, an SSH disconnect reason) shown
    on a screen where a person compares fingerprints: ESC, CR and friends could otherwise erase lines
    and draw a fake ``SHA-256:`` line. An ESC becomes the four characters ``\\x1b``, a CR ``\\r``, a newline
    ``\\n``, any other such character ``\\xNN`` or ``\\uNNNN``. JSON output needs none of this
    (``json.dumps`` escapes control characters).
    """
    out: list[str] = []
    for char in text:
        if unicodedata.category(char) in _INVISIBLE:
            code = ord(char)
            out.append(_NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(char)
    return "".join(out)


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "airflow-secure-transfer"
INFORMATION_URI = "https://pypi.org/project/airflow-provider-secure-transfer/"

# SARIF levels and GitHub's numeric "security-severity" (high >= 7.0, medium 4.0-6.9, low < 4.0).
_LEVEL = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
_SECURITY_SEVERITY = {Severity.HIGH: "8.0", Severity.MEDIUM: "5.0", Severity.LOW: "2.0"}


def _summary(findings: Sequence[Finding]) -> dict[str, int]:
    counts = Counter(f.severity.value for f in findings)
    return {s.value: counts.get(s.value, 0) for s in (Severity.HIGH, Severity.MEDIUM, Severity.LOW)}


def render_table(findings: Sequence[Finding], *, files: int, connections: int | None) -> str:
    """A readable listing: one finding per block, then a summary line."""
    lines: list[str] = []
    for f in findings:
        lines.append(f"{f.location}: {f.severity.value.upper():<6} {f.rule.id} {f.message}")
        lines.append(f"    fix: {f.fix}")
    s = _summary(findings)
    scope = f"{files} file{'s' if files != 1 else ''}"
    if connections is not None:
        scope += f" and {connections} connection{'s' if connections != 1 else ''}"
    if findings:
        lines.append("")
        lines.append(
            f"{len(findings)} finding{'s' if len(findings) != 1 else ''} "
            f"({s['high']} high, {s['medium']} medium, {s['low']} low) in {scope}"
        )
    else:
        lines.append(f"no findings in {scope}")
    return "\n".join(lines) + "\n"


def _finding_json(f: Finding) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rule": f.rule.id,
        "name": f.rule.name,
        "severity": f.severity.value,
        "message": f.message,
        "fix": f.fix,
    }
    if f.path is not None:
        data.update(
            {"path": f.path, "line": f.line, "column": f.column, "end_line": f.end_line, "end_column": f.end_column}
        )
    else:
        data.update({"connection": f.conn_id, "source": f.source})
    return data


def render_json(findings: Sequence[Finding], *, files: int, connections: int | None) -> str:
    """A JSON document: ``{"tool", "version", "findings": [...], "summary": {...}}``."""
    doc = {
        "tool": TOOL_NAME,
        "version": __version__,
        "findings": [_finding_json(f) for f in findings],
        "summary": {**_summary(findings), "total": len(findings), "files": files, "connections": connections},
    }
    return json.dumps(doc, indent=2) + "\n"


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.help},
        "help": {"text": f"{rule.help} Fix: {rule.fix}."},
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {
            "tags": ["security"],
            "precision": "high",
            "security-severity": _SECURITY_SEVERITY[rule.severity],
        },
    }


def render_sarif(findings: Sequence[Finding], *, files: int, connections: int | None) -> str:
    """A SARIF 2.1.0 log with one run; file paths relative to ``%SRCROOT%`` (the working directory)."""
    rule_ids = list(RULES)
    results: list[dict[str, Any]] = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.rule.id,
            "ruleIndex": rule_ids.index(f.rule.id),
            "level": _LEVEL[f.severity],
            "message": {"text": f"{f.message}. Fix: {f.fix}."},
        }
        if f.path is not None:
            region: dict[str, Any] = {"startLine": f.line or 1, "startColumn": f.column or 1}
            if f.end_line is not None and f.end_column is not None:
                region.update({"endLine": f.end_line, "endColumn": f.end_column})
            absolute = Path(f.path).is_absolute()
            artifact: dict[str, Any] = (
                {"uri": Path(f.path).as_uri()} if absolute else {"uri": f.path, "uriBaseId": "%SRCROOT%"}
            )
            result["locations"] = [{"physicalLocation": {"artifactLocation": artifact, "region": region}}]
        else:
            # A connection has no file: a logical location names it.
            result["locations"] = [
                {
                    "logicalLocations": [
                        {"name": f.conn_id, "fullyQualifiedName": f"connection:{f.conn_id}", "kind": "resource"}
                    ],
                    "message": {"text": f"read from {f.source}"},
                }
            ]
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_sarif_rule(RULES[r]) for r in rule_ids],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}},
                "results": results,
                "properties": {"files": files, "connections": connections},
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def render_rules() -> str:
    """The rule list (``audit --list-rules``)."""
    lines = []
    for rule in RULES.values():
        lines.append(f"{rule.id}  {rule.severity.value:<6}  {rule.name}: {rule.title}")
        lines.append(f"        fix: {rule.fix}")
    return "\n".join(lines) + "\n"
