"""R7 Secrets: no exception reachable from what the clients raise holds the password (issue #12, item 8).

A hostile server echoes the password in a refusal (``AUTH TLS``, ``PBSZ``, ``PROT P``, ``USER``/``PASS``,
a ``DELE``; an SFTP status message). The messages were scrubbed before; the chained library exceptions
(``ftplib.error_perm`` with the raw reply, asyncssh's ``SFTPError`` with its ``reason``) were not, and
tracebacks, Sentry and Airflow's task log print the whole chain. The walk below covers the whole graph:
message, ``args`` (nested), every attribute, ``__notes__``, ``__cause__`` and ``__context__`` (both, not
the first of them), group members, and the formatted traceback.
"""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import SecureTransferError, scrub_secrets
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import sftp_settings
from tests.security.tools import ScriptServer, Session, run_custom_sftp, tls_server_context
from tests.servers.pki import ServerPKI
from tests.servers.sftp_asyncssh import ClientKeys

PASSWORD = "Echoed-Secret-Pw-7c1d"


def exception_graph_texts(exc: BaseException) -> list[str]:
    """Every text reachable from *exc* (see the module docstring)."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        fields: dict[str, Any] = dict(vars(current)) if hasattr(current, "__dict__") else {}
        if isinstance(current, OSError):
            fields.update(strerror=current.strerror, filename=current.filename)
        for name, value in fields.items():
            texts.append(f"{name}={value!r}")
            if isinstance(value, BaseException):
                pending.append(value)
        pending += [a for a in current.args if isinstance(a, BaseException)]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    leaks = [t for t in exception_graph_texts(exc) for s in secrets if s in t or s.encode().hex() in t]
    assert not leaks, "secret reachable from the exception:\n" + "\n---\n".join(leaks[:5])


# ------------------------------------------------------------------------------- FTPS


def _echo_script(at: str, code: str, greeting: str = "220 echo server ready") -> Callable[[Session], None]:
    """An FTPS server that answers command *at* with a *code* refusal quoting the password."""

    def script(s: Session) -> None:
        s.line(greeting)
        while True:
            line = s.readline()
            if line is None:
                return
            verb = line.split(" ", 1)[0].upper()
            if verb == at:
                s.line(f"{code} refused for user victim with password {PASSWORD} (sic)")
                if verb in ("AUTH", "PBSZ", "PROT", "PASS", "USER"):
                    s.hold()
                    return
                continue
            if verb == "AUTH":
                s.line("234 AUTH TLS ok")
                if not s.start_tls():
                    return
            elif verb == "USER":
                s.line("331 Password required")
            elif verb == "PASS":
                s.line("230 Logged in")
            elif verb in ("PBSZ", "PROT", "TYPE", "OPTS", "NOOP"):
                s.line("200 OK")
            elif verb == "FEAT":
                s.send(b"211-Features:\r\n PBSZ\r\n PROT\r\n211 End\r\n")
            elif verb == "PWD":
                s.line('257 "/" is the current directory')
            elif verb == "QUIT":
                s.line("221 bye")
                return
            else:
                s.line("502 not implemented")

    return script


@pytest.mark.parametrize(
    ("at", "code"),
    [
        ("AUTH", "504"),  # the AUTH TLS refusal (SecurityPolicyError, raised outside the reply translation)
        ("PBSZ", "501"),
        ("PROT", "536"),  # the PROT P refusal seen in the wild
        ("USER", "530"),
        ("PASS", "530"),
        ("DELE", "550"),  # an operation's refusal
        ("TYPE", "504"),
    ],
)
@pytest.mark.parametrize("greeting", ["220 echo server ready", "220 (vsFTPd 3.0.3)"], ids=["one-by-one", "pipelined"])
def test_ftps_echoed_password_is_in_no_reachable_exception(
    test_pki: ServerPKI, at: str, code: str, greeting: str
) -> None:
    """Also where USER, PASS and the setup go out in one burst (to a server greeting as vsftpd)."""
    with ScriptServer(_echo_script(at, code, greeting), tls_context=tls_server_context(test_pki)) as server:
        settings = parse_ftps_settings(
            conn_type="secure_ftps",
            host="127.0.0.1",
            port=server.port,
            login="victim",
            password=PASSWORD,
            extras={"conn_timeout": 5, "ca_bundle": test_pki.ca_pem},
        )
        with pytest.raises(SecureTransferError) as info:
            with FTPSClient(settings) as client:
                client.remove("/victim.txt")
        assert "***" in str(info.value) or at == "TYPE", str(info.value)  # the reply is quoted, masked
        assert_no_secret(info.value, PASSWORD)


# ------------------------------------------------------------------------------- SFTP


class _EchoingSFTP(asyncssh.SFTPServer):
    """Every refusal quotes the password (a server that logs credentials into its replies)."""

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        raise asyncssh.SFTPPermissionDenied(f"denied: session password was {PASSWORD}")

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        raise asyncssh.SFTPFailure(f"cannot open, password {PASSWORD}")


@pytest.mark.parametrize("operation", ["stat", "write"])
def test_sftp_echoed_password_is_in_no_reachable_exception(
    tmp_path: Path, client_keys: ClientKeys, operation: str
) -> None:
    with run_custom_sftp(tmp_path / "srv", client_keys, sftp_server=_EchoingSFTP, password=PASSWORD) as server:
        settings = sftp_settings(server, key_file=None, private_key=None)
        with SFTPClient(settings) as client:
            with pytest.raises(SecureTransferError) as info:
                if operation == "stat":
                    client.stat("/x")
                else:
                    client.write_from("/x", io.BytesIO(b"data"))
        assert "***" in str(info.value), str(info.value)
        assert_no_secret(info.value, PASSWORD)


# ------------------------------------------------------------------------------- the scrubber itself


def test_scrub_secrets_walks_causes_contexts_args_attributes_and_groups() -> None:
    class WithReason(Exception):
        def __init__(self, reason: str) -> None:
            super().__init__(reason)
            self.reason = reason

    inner = WithReason(f"reason {PASSWORD}")
    os_error = OSError(5, f"io {PASSWORD}", f"/tmp/{PASSWORD}")
    try:
        try:
            raise inner
        except WithReason as exc:
            raise ValueError(("nested", [f"list {PASSWORD}", PASSWORD.encode()]), os_error) from exc
    except ValueError as exc:
        outer = ExceptionGroup("group", [exc, RuntimeError(PASSWORD)])
        outer.add_note(f"note {PASSWORD}")
    scrub_secrets(outer, [PASSWORD, None, "ab"])
    assert_no_secret(outer, PASSWORD)
    assert inner.reason == "reason ***"
    assert os_error.strerror == "io ***"
