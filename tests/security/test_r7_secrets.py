"""R7 Secrets: passwords, private keys and passphrases appear in no log, XCom, exception text or repr.

Two tests:

* ``test_dag_run_leaves_no_secret_in_logs_xcom_or_db`` runs ``tests/security/dags/security_secrets_dag.py``
  with ``airflow dags test`` in a throwaway ``AIRFLOW_HOME`` (``airflow db migrate`` first): three
  uploads that succeed (FTPS password, SFTP password, SFTP encrypted key + passphrase) and four that fail
  (wrong FTPS password, an FTPS server that echoes the password in its ``530`` reply, a wrong SFTP host
  key, a wrong key passphrase), plus a task that prints and returns the repr of every hook, settings
  object and client. Then every file under ``AIRFLOW_HOME`` (task logs, the metadata DB with its XCom
  table) and the command's output are searched for every secret, including each line of the keys.
  Airflow's masker is allowed to help here -- but only where it really masks (the search is on the files).
* ``test_exception_texts_and_reprs_hold_no_secret`` does the same failures in process, where no masker
  helps, and searches the exception *chains* (``__cause__``/``__context__`` and the formatted traceback,
  which error reporters such as Sentry send as they are) and the reprs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import SecureTransferError
from tests.security.tools import ScriptServer, ftp_script, leaks_in, secret_needles, tls_server_context
from tests.servers import FTPSServer, SFTPServer
from tests.servers.pki import ServerPKI

DAGS = Path(__file__).parent / "dags"
WRONG_FTPS_PASSWORD = "Wrong-Ftps-Pw-5c1e9a"
ECHOED_PASSWORD = "Echoed-Secret-Pw-77d2"
WRONG_PASSPHRASE = "Wrong-Passphrase-3b8f"


def _other_host_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _connections(ftps: FTPSServer, sftp: SFTPServer, echo_port: int, ca_pem: str) -> dict[str, str]:
    enc_key = {"private_key": sftp.encrypted_key_text, "private_key_passphrase": sftp.key_passphrase}
    return {
        "sec_ftps_ok": ftps.conn_json(),
        "sec_ftps_bad_password": ftps.conn_json(fields={"password": WRONG_FTPS_PASSWORD}),
        "sec_ftps_echo": json.dumps(
            {
                "conn_type": "secure_ftps",
                "host": "127.0.0.1",
                "port": echo_port,
                "login": "victim",
                "password": ECHOED_PASSWORD,
                "extra": {"ca_bundle": ca_pem, "conn_timeout": 10},
            }
        ),
        "sec_sftp_password": sftp.conn_json(),
        "sec_sftp_key": sftp.conn_json(fields={"password": None}, **enc_key),
        "sec_sftp_wrong_host_key": sftp.conn_json(host_key=_other_host_key()),
        "sec_sftp_wrong_passphrase": sftp.conn_json(
            fields={"password": None}, private_key=sftp.encrypted_key_text, private_key_passphrase=WRONG_PASSPHRASE
        ),
    }


def _needles(ftps: FTPSServer, sftp: SFTPServer) -> dict[str, bytes]:
    return secret_needles(
        ftps_password=ftps.password,
        sftp_password=sftp.password,
        wrong_ftps_password=WRONG_FTPS_PASSWORD,
        echoed_password=ECHOED_PASSWORD,
        private_key=sftp.client_key_text,
        encrypted_private_key=sftp.encrypted_key_text,
        passphrase=sftp.key_passphrase,
        wrong_passphrase=WRONG_PASSPHRASE,
    )


def _echo_server(pki: ServerPKI) -> ScriptServer:
    return ScriptServer(ftp_script(at="NEVER", echo_password=True), tls_context=tls_server_context(pki))


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_run_leaves_no_secret_in_logs_xcom_or_db(
    pyftpd_explicit: FTPSServer,
    asyncssh_server: SFTPServer,
    test_pki: ServerPKI,
    tmp_path: Path,
) -> None:
    home = tmp_path / "airflow-home"
    home.mkdir()
    source = tmp_path / "report.csv"
    source.write_text("id,value\n1,42\n")
    airflow = str(Path(sys.executable).with_name("airflow"))
    with _echo_server(test_pki) as echo:
        conns = _connections(pyftpd_explicit, asyncssh_server, echo.port, test_pki.ca_pem)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "SECTEST_SOURCE": str(source),
            **{f"AIRFLOW_CONN_{k.upper()}": v for k, v in conns.items()},
            **{
                f"SECTEST_REMOTE_{k.upper()}": f"{asyncssh_server.writable_dir.rstrip('/')}/r7/"
                for k in conns
                if "sftp" in k
            },
            "SECTEST_REMOTE_SEC_FTPS_OK": f"{pyftpd_explicit.writable_dir.rstrip('/')}/r7/",
        }
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        run = subprocess.run(
            [airflow, "dags", "test", "security_secrets"], env=env, capture_output=True, text=True, timeout=400
        )
    output = run.stdout + run.stderr

    # The run really exercised successes and failures.
    db = sqlite3.connect(home / "airflow.db")
    try:
        rows = db.execute("SELECT task_id, state, try_number FROM task_instance WHERE dag_id='security_secrets'")
        tries = {task_id: try_number for task_id, _, try_number in rows.fetchall()}
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id='security_secrets'"))
        xcoms = db.execute("SELECT task_id, key, value FROM xcom WHERE dag_id='security_secrets'").fetchall()
    finally:
        db.close()
    assert states.get("ftps_ok") == "success", (states, output[-4000:])
    assert states.get("sftp_password") == "success" and states.get("sftp_key") == "success", states
    assert states.get("reprs") == "success", states
    for failing in ("ftps_bad_password", "ftps_echo", "sftp_wrong_host_key", "sftp_wrong_passphrase"):
        assert states.get(failing) == "failed", states
        assert tries.get(failing) == 1, f"{failing} was retried although it cannot succeed: {tries}"
    assert (pyftpd_explicit.local_root / "r7" / "report.csv").read_text() == source.read_text()
    xcom_text = "\n".join(f"{t} {k} {v!r}" for t, k, v in xcoms)
    assert "reprs" in xcom_text and "sha256" in xcom_text, xcom_text[:500]

    needles = _needles(pyftpd_explicit, asyncssh_server)
    findings: list[str] = []
    # `airflow dags test` runs the tasks in its own process: their log lines are in its output (and any
    # file under AIRFLOW_HOME/logs). The failing tasks' errors must be there, or nothing was searched.
    for expected in ("AuthenticationError", "VerificationError", "ConfigurationError"):
        assert expected in output, f"{expected} not in the task logs:\n{output[-3000:]}"
    Path(os.environ.get("SECTEST_KEEP_OUTPUT", os.devnull)).write_text(output)
    for path in [p for p in home.rglob("*") if p.is_file()]:
        for name in leaks_in(path.read_bytes(), needles):
            findings.append(f"{name} in {path.relative_to(home)}")
    findings += [f"{name} in XCom" for name in leaks_in(xcom_text, needles)]
    findings += [f"{name} in the output of airflow dags test" for name in leaks_in(output, needles)]
    assert not findings, "secrets found:\n" + "\n".join(findings)


# ------------------------------------------------------------------------------- in process


def _exception_texts(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "args", ()))]
        parts += [str(n) for n in getattr(current, "__notes__", [])]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_exception_texts_and_reprs_hold_no_secret(
    pyftpd_explicit: FTPSServer,
    asyncssh_server: SFTPServer,
    test_pki: ServerPKI,
    airflow_conn: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
    from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
    from tests.security.conftest import run_upload_task

    source = tmp_path / "report.csv"
    source.write_text("a,b\n")
    texts: dict[str, str] = {}
    with _echo_server(test_pki) as echo:
        for conn_id, value in _connections(pyftpd_explicit, asyncssh_server, echo.port, test_pki.ca_pem).items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        for conn_id in (
            "sec_ftps_bad_password",
            "sec_ftps_echo",
            "sec_sftp_wrong_host_key",
            "sec_sftp_wrong_passphrase",
        ):
            remote = f"{asyncssh_server.writable_dir}/x/" if "sftp" in conn_id else "/x/"
            with pytest.raises((AirflowFailException, SecureTransferError)) as err:
                run_upload_task(conn_id, source, remote)
            texts[f"exception of {conn_id}"] = _exception_texts(err.value)
            hook: Any = SecureSFTPHook(conn_id) if "sftp" in conn_id else SecureFTPSHook(conn_id)
            ok, message = hook.test_connection()
            assert not ok
            texts[f"test_connection of {conn_id}"] = message
    for conn_id in ("sec_ftps_ok", "sec_ftps_bad_password", "sec_ftps_echo"):
        fhook = SecureFTPSHook(conn_id)
        texts[f"repr of {conn_id}"] = f"{fhook!r} {fhook.get_settings()!r} {vars(fhook)!r}"
    for conn_id in ("sec_sftp_password", "sec_sftp_key", "sec_sftp_wrong_passphrase"):
        shook = SecureSFTPHook(conn_id)
        texts[f"repr of {conn_id}"] = f"{shook!r} {shook.get_settings()!r} {vars(shook)!r}"
    with SecureFTPSHook("sec_ftps_ok").get_fs() as ftps:
        texts["ftps client"] = f"{ftps!r} {ftps.tls_info!r}"
    with SecureSFTPHook("sec_sftp_key").get_fs() as sftp:
        texts["sftp client"] = f"{sftp!r} {sftp.info!r}"
    needles = _needles(pyftpd_explicit, asyncssh_server)
    findings = [f"{name} in {where}" for where, text in texts.items() for name in leaks_in(text, needles)]
    assert not findings, "secrets found:\n" + "\n".join(findings)
