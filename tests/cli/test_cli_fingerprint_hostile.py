"""``fingerprint`` against a server whose greeting and certificate carry terminal escape sequences
(issue #12, item 11): the text output shows every control character visibly, so a hostile server
cannot erase lines and draw a fake ``SHA-256:`` line on the screen where a person compares fingerprints.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import ssl
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_secure_transfer.cli.fingerprint import fingerprint_command
from airflow_secure_transfer.cli.output import visible
from airflow_secure_transfer.exceptions import TransportError
from tests.security.tools import ScriptServer, Session

FAKE = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"
# Move up, erase the line, back to column 0, and draw a line that looks like ours.
DRAW = f"\x1b[1A\x1b[2K\r      SHA-256:   {FAKE}"
GREETING = f"220-welcome\u202e\x1b[2J\x1b[H\x9b31m{DRAW}\r\n220 ready"


def _hostile_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate whose subject and issuer carry the escape sequences; (cert, key, sha256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"localhost{DRAW[:44]}"),  # 64 characters at most
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil\x1b]0;window title\x07\rCorp"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"localhost{DRAW}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "evil.crt", directory / "evil.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture
def hostile_ftps(tmp_path: Path) -> Iterator[tuple[int, str]]:
    cert_path, key_path, sha256 = _hostile_certificate(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)

    def script(s: Session) -> None:
        s.send(GREETING.encode("utf-8") + b"\r\n")
        line = s.readline()
        if line is None or not line.upper().startswith("AUTH"):
            return
        s.line("234 go ahead\x1b[2K")
        if s.start_tls():
            s.readline()  # QUIT

    with ScriptServer(script, tls_context=ctx) as server:
        yield server.port, sha256


def _run(port: int, output: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = argparse.Namespace(protocol="ftps", target=f"127.0.0.1:{port}", timeout=10.0, format=output)
    code = fingerprint_command(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _controls(text: str) -> list[str]:
    """Characters a terminal acts on instead of printing (newlines between our own lines excepted)."""
    return [repr(c) for c in text if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}]


def test_text_output_shows_the_servers_control_characters_visibly(
    hostile_ftps: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    port, sha256 = hostile_ftps
    code, out, err = _run(port, "text", capsys)
    assert code == 0, err
    assert not _controls(out), f"raw control characters reach the terminal: {_controls(out)[:10]}"
    sha_lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("SHA-256:")]
    real = ":".join(sha256[i : i + 2] for i in range(0, 64, 2)).upper()
    assert sha_lines == [f"SHA-256:   {real}"], sha_lines  # the fake line is not a line of its own
    assert "\\x1b[1A\\x1b[2K\\r      SHA-256:   " + FAKE in out  # ...but shown, escaped, where it came from
    assert "\\x9b31m" in out and "\\u202e" in out and "\\x07" in out
    assert real.replace(":", "").lower() in json.dumps(out).lower().replace(":", "")


def test_json_output_was_already_safe(hostile_ftps: tuple[int, str], capsys: pytest.CaptureFixture[str]) -> None:
    port, sha256 = hostile_ftps
    code, out, err = _run(port, "json", capsys)
    assert code == 0, err
    assert not _controls(out)
    doc = json.loads(out)
    assert doc["certificates"][0]["sha256"] == sha256
    assert "\x1b[2J" in doc["greeting"]  # JSON keeps the data exact; its encoding escapes it


def test_error_messages_are_shown_visibly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise TransportError(f"127.0.0.1:21: the server said {DRAW}")

    monkeypatch.setattr("airflow_secure_transfer.cli.fingerprint.fetch_ftps", refuse)
    code, _out, err = _run(21, "text", capsys)
    assert code == 1
    assert not _controls(err), err
    assert "\\x1b[2K\\r" in err


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain ascii, ünïcödé ☃", "plain ascii, ünïcödé ☃"),
        ("a\x1b[2Kb", "a\\x1b[2Kb"),
        ("cr\rlf\ntab\t", "cr\\rlf\\ntab\\t"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("bidi\u202eizz zw\u200b ls\u2028", "bidi\\u202eizz zw\\u200b ls\\u2028"),
        ("undecodable \udcff", "undecodable \\udcff"),
    ],
)
def test_visible(raw: str, shown: str) -> None:
    assert visible(raw) == shown


@pytest.mark.parametrize(("how", "expected"), [("endless", "reply size limit"), ("drip", "no complete reply")])
def test_greeting_that_floods_or_drips_is_bounded(how: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The fingerprint command's own reply reader has the client's bounds (issue #12, item 5)."""
    from tests.security.tools import ftp_script, run_bounded

    with ScriptServer(ftp_script(at="greeting", how=how)) as server:
        args = argparse.Namespace(protocol="ftps", target=f"127.0.0.1:{server.port}", timeout=1.5, format="text")
        outcome = run_bounded(lambda: fingerprint_command(args), 20.0)
        assert not outcome.hung, "the greeting never ended"
        assert outcome.result == 1
    assert expected in capsys.readouterr().err
