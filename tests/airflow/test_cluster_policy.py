"""The cluster policy (``airflow_secure_transfer.policy``).

Two parts:

* detection and modes, on real instances of the stock FTP/SFTP/SSH operators (in process, fast);
* the ``airflow`` tier: Airflow's own policy loading from this distribution's ``airflow.policy`` entry
  point and its real DAG processor (``airflow dag-processor -n 1``) parsing ``policy_dags/`` (a plain-FTP DAG
  and a secure one) in a throwaway ``AIRFLOW_HOME``, in each mode; the results are read back with
  ``airflow dags list-import-errors`` / ``airflow dags list`` and from the DAG processor's per-file logs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.providers.ftp.hooks.ftp import FTPHook, FTPSHook
from airflow.providers.ftp.operators.ftp import FTPFileTransmitOperator, FTPSFileTransmitOperator
from airflow.providers.ftp.sensors.ftp import FTPSensor, FTPSSensor
from airflow.providers.sftp.hooks.sftp import SFTPHook
from airflow.providers.sftp.operators.sftp import SFTPOperator
from airflow.providers.sftp.sensors.sftp import SFTPSensor
from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.sdk import DAG, BaseOperator

from airflow_secure_transfer import get_provider_info
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from airflow_secure_transfer.policy import Violation, find_violation, task_policy

REPO = Path(__file__).resolve().parents[2]
POLICY_DAGS = Path(__file__).resolve().parent / "policy_dags"
ENV_VAR = "AIRFLOW__SECURE_TRANSFER__CLUSTER_POLICY"
FIX = (
    'FTPFileTransmitOperator(ftp_conn_id="partner") -> '
    'SecureUploadOperator(conn_id="partner", local_path=..., remote_path=...)'
)


@pytest.fixture
def dag() -> Iterator[DAG]:
    with DAG("d", schedule=None) as d:
        yield d


def _ftp_put(**kwargs: Any) -> FTPFileTransmitOperator:
    args: dict[str, Any] = {
        "task_id": "push",
        "ftp_conn_id": "partner",
        "local_filepath": "/out/a.csv",
        "remote_filepath": "/in/a.csv",
        "operation": "put",
    }
    args.update(kwargs)
    return FTPFileTransmitOperator(**args)


def _violation(task: object) -> Violation:
    found = find_violation(task)
    assert found is not None, f"{task!r} was not flagged"
    return found


# --------------------------------------------------------------------------- detection


def test_the_issue_example_names_task_class_connection_and_fix(dag: DAG) -> None:
    found = _violation(_ftp_put())
    assert (found.task, found.class_name, found.conn_id, found.rule) == (
        "d.push",
        "FTPFileTransmitOperator",
        "partner",
        "STX010",
    )
    message = found.message()
    assert message.startswith("task 'd.push' (FTPFileTransmitOperator, connection 'partner') sends the password")
    assert FIX in message
    assert "the stock 'ftp' connection works unchanged" in message


def test_a_download_and_a_sensor_get_their_own_replacement(dag: DAG) -> None:
    get = _violation(_ftp_put(task_id="pull", operation="get")).fix
    assert get.startswith('FTPFileTransmitOperator(ftp_conn_id="partner") -> a @task that calls ')
    assert 'SecureFTPSHook(ftps_conn_id="partner").retrieve_file(remote_path, local_path)' in get
    sensor = _violation(FTPSensor(task_id="wait", path="/in/a.csv"))
    assert sensor.conn_id == "ftp_default"  # the sensor's default connection is named too
    assert 'SecureFTPSHook(ftps_conn_id="ftp_default").path_exists(path)' in sensor.fix


def test_subclasses_and_mapped_tasks_are_flagged(dag: DAG) -> None:
    class Wrapped(FTPFileTransmitOperator):
        pass

    assert _violation(Wrapped(task_id="w", ftp_conn_id="p", local_filepath="/a", remote_filepath="/b")).class_name == (
        "Wrapped"
    )
    mapped = FTPFileTransmitOperator.partial(
        task_id="many", ftp_conn_id="partner", local_filepath="/out/a.csv", operation="put"
    ).expand(remote_filepath=["/in/a.csv", "/in/b.csv"])
    found = _violation(mapped)
    assert (found.task, found.class_name, found.conn_id) == ("d.many", "FTPFileTransmitOperator", "partner")
    assert FIX in found.fix


def test_classes_of_providers_that_are_not_installed_are_known_by_name(dag: DAG) -> None:
    """The Amazon provider's FTP transfers are matched by module and name, so nothing needs importing."""

    def __init__(self: BaseOperator, *, ftp_conn_id: str, **kwargs: Any) -> None:
        BaseOperator.__init__(self, **kwargs)
        self.ftp_conn_id = ftp_conn_id  # type: ignore[attr-defined]

    for module, name, new in [
        ("airflow.providers.amazon.aws.transfers.ftp_to_s3", "FTPToS3Operator", "a @task that calls SecureFTPSHook"),
        ("airflow.providers.amazon.aws.transfers.s3_to_ftp", "S3ToFTPOperator", "SecureUploadOperator("),
    ]:
        cls = type(name, (BaseOperator,), {"__module__": module, "__init__": __init__})
        found = _violation(cls(task_id=name.lower(), ftp_conn_id="partner"))
        assert (found.class_name, found.conn_id) == (name, "partner")
        assert found.fix.startswith(f'{name}(ftp_conn_id="partner") -> {new}')


def test_the_hook_factory_decides_for_a_subclass(dag: DAG) -> None:
    class DeclaresFTPS(FTPFileTransmitOperator):
        @property
        def hook(self) -> FTPSHook:
            return FTPSHook(ftp_conn_id=self.ftp_conn_id)

    class Undeclared(FTPFileTransmitOperator):
        @property
        def hook(self):  # type: ignore[no-untyped-def]  # the case under test: no return type
            return FTPSHook(ftp_conn_id=self.ftp_conn_id)

    class BackToPlain(FTPSSensor):
        def _create_hook(self) -> FTPHook:
            return FTPHook(ftp_conn_id=self.ftp_conn_id)

    args = {"ftp_conn_id": "p", "local_filepath": "/a", "remote_filepath": "/b"}
    assert find_violation(DeclaresFTPS(task_id="ok", **args)) is None
    assert (
        "overrides hook without declaring an FTPSHook return type"
        in _violation(Undeclared(task_id="unknown", **args)).problem
    )
    assert _violation(BackToPlain(task_id="plain", path="/x")).class_name == "BackToPlain"


def test_a_task_holding_a_plain_ftp_hook_is_flagged(dag: DAG) -> None:
    class Custom(BaseOperator):
        def __init__(self, hook: FTPHook, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ftp = hook

    found = _violation(Custom(task_id="custom", hook=FTPHook(ftp_conn_id="legacy")))
    assert (found.class_name, found.conn_id) == ("Custom", "legacy")
    assert 'FTPHook(ftp_conn_id="legacy") -> SecureFTPSHook(ftps_conn_id="legacy")' in found.fix
    assert find_violation(Custom(task_id="tls", hook=FTPSHook(ftp_conn_id="legacy"))) is None


def test_ssh_hooks_that_skip_host_key_checks_are_flagged(dag: DAG, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hook the DAG file builds itself resolves its connection there (the DAG's own lookup, not the
    # policy's): what the connection's extras turned off is then visible on the hook.
    monkeypatch.setenv(
        "AIRFLOW_CONN_PARTNER_SFTP",
        json.dumps({"conn_type": "sftp", "host": "sftp.partner.example", "extra": {"no_host_key_check": "true"}}),
    )
    sftp = _violation(
        SFTPOperator(
            task_id="sftp_put",
            sftp_hook=SFTPHook(ssh_conn_id="partner_sftp"),
            local_filepath="/out/a.csv",
            remote_filepath="/in/a.csv",
        )
    )
    assert (sftp.class_name, sftp.conn_id, sftp.rule) == ("SFTPOperator", "partner_sftp", "STX031")
    assert "no_host_key_check=True: any server is trusted" in sftp.problem
    assert sftp.fix.startswith(
        'SFTPOperator(ssh_conn_id="partner_sftp") -> SecureUploadOperator(conn_id="partner_sftp", '
        "local_path=..., remote_path=...), and pin the server's key"
    )

    hook = SSHHook(remote_host="build.example", no_host_key_check=True)
    hook.allow_host_key_change = True  # what the connection extra allow_host_key_change=true resolves to
    ssh = _violation(SSHOperator(task_id="run", ssh_hook=hook, command="ls"))
    assert (ssh.class_name, ssh.conn_id, ssh.host, ssh.rule) == ("SSHOperator", None, "build.example", "STX031")
    assert "no connection, host 'build.example'" in ssh.message()
    assert ssh.fix.startswith("remove no_host_key_check=True and allow_host_key_change=True and pin the server's key")
    assert "extra 'host_key'" in ssh.fix

    hook = SSHHook(remote_host="build.example")
    hook.allow_host_key_change = True
    assert _violation(SSHOperator(task_id="run2", ssh_hook=hook, command="ls")).rule == "STX032"


def test_secure_and_unrelated_tasks_pass(dag: DAG) -> None:
    tasks = [
        FTPSFileTransmitOperator(task_id="ftps", ftp_conn_id="p", local_filepath="/a", remote_filepath="/b"),
        FTPSSensor(task_id="ftps_wait", path="/x"),
        SecureUploadOperator(task_id="ours", conn_id="p", local_path="/a", remote_path="/in/"),
        # Only named connections: their extras are not read at parse time (no database, no secrets backend).
        SFTPOperator(task_id="sftp", ssh_conn_id="p", local_filepath="/a", remote_filepath="/b"),
        SSHOperator(task_id="ssh", ssh_conn_id="p", command="ls"),
        SFTPSensor(task_id="sftp_wait", path="/x"),
        # A hook built in the DAG with the checks on.
        SSHOperator(task_id="ssh_hook", ssh_hook=SSHHook(remote_host="build.example"), command="ls"),
        BaseOperator(task_id="plain_base"),
    ]
    assert [find_violation(task) for task in tasks] == [None] * len(tasks)


def test_this_providers_tasks_are_never_flagged(dag: DAG) -> None:
    class Extended(SecureUploadOperator):
        pass

    op = Extended(task_id="ext", conn_id="p", local_path="/a", remote_path="/in/")
    op.legacy = FTPHook(ftp_conn_id="x")  # would be flagged on any other task
    assert find_violation(op) is None


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["off", "OFF "])
def test_off_checks_nothing(
    dag: DAG, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    monkeypatch.setenv(ENV_VAR, mode)
    with caplog.at_level(logging.DEBUG, logger="airflow_secure_transfer.policy"):
        task_policy(_ftp_put())
    assert [r for r in caplog.records if r.name == "airflow_secure_transfer.policy"] == []


@pytest.mark.parametrize("mode", ["warn", None])
def test_warn_names_the_task_and_lets_it_load(
    dag: DAG, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str | None
) -> None:
    if mode is None:
        monkeypatch.delenv(ENV_VAR, raising=False)  # the default
    else:
        monkeypatch.setenv(ENV_VAR, mode)
    with caplog.at_level(logging.WARNING, logger="airflow_secure_transfer.policy"):
        task_policy(_ftp_put())
        task_policy(SecureUploadOperator(task_id="ours", conn_id="p", local_path="/a", remote_path="/in/"))
    records = [r for r in caplog.records if r.name == "airflow_secure_transfer.policy"]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "task 'd.push' (FTPFileTransmitOperator, connection 'partner')" in records[0].getMessage()
    assert FIX in records[0].getMessage()


def test_enforce_raises_the_cluster_policy_violation(dag: DAG, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "enforce")
    with pytest.raises(AirflowClusterPolicyViolation) as info:
        task_policy(_ftp_put())
    assert str(info.value).startswith(
        "refused by the airflow-secure-transfer cluster policy ([secure_transfer] cluster_policy = enforce): "
        "task 'd.push' (FTPFileTransmitOperator, connection 'partner')"
    )
    assert FIX in str(info.value)
    task_policy(SecureUploadOperator(task_id="ours", conn_id="p", local_path="/a", remote_path="/in/"))


def test_an_invalid_mode_is_reported_and_enforced(
    dag: DAG, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_VAR, "enforced")
    with caplog.at_level(logging.ERROR, logger="airflow_secure_transfer.policy"):
        with pytest.raises(AirflowClusterPolicyViolation, match=r"cluster_policy = 'enforced' is not one of off, warn"):
            task_policy(_ftp_put())
        task_policy(SecureUploadOperator(task_id="ours", conn_id="p", local_path="/a", remote_path="/in/"))
    errors = [r.getMessage() for r in caplog.records if r.name == "airflow_secure_transfer.policy"]
    assert len(errors) <= 1  # once per process (an earlier test in this process may have logged it already)
    assert all("AIRFLOW__SECURE_TRANSFER__CLUSTER_POLICY" in e for e in errors)


def test_a_task_the_policy_cannot_check_is_logged_in_warn_and_refused_in_enforce(
    dag: DAG, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import airflow_secure_transfer.policy as policy

    def broken(task: object) -> None:
        raise RuntimeError("unexpected task shape")

    task = _ftp_put()
    monkeypatch.setattr(policy, "find_violation", broken)
    monkeypatch.setenv(ENV_VAR, "warn")
    with caplog.at_level(logging.WARNING, logger="airflow_secure_transfer.policy"):
        task_policy(task)  # the DAG still loads
    assert any("could not check a task" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv(ENV_VAR, "enforce")
    with pytest.raises(AirflowClusterPolicyViolation, match=r"task 'push' could not be checked \(RuntimeError: unexp"):
        task_policy(task)


def test_the_option_is_declared_in_the_provider_info() -> None:
    option = get_provider_info()["config"]["secure_transfer"]["options"]["cluster_policy"]
    assert (option["type"], option["default"], option["example"]) == ("string", "warn", "enforce")
    assert all(mode in option["description"] for mode in ("off:", "warn:", "enforce:"))


def test_the_hookimpl_is_airflows_policy_hook() -> None:
    """The module builds Airflow's marker itself (so it never imports Airflow): it must be the same project."""
    from airflow.policies import hookimpl

    from airflow_secure_transfer.policy import hookimpl as ours

    assert ours.project_name == hookimpl.project_name == "airflow.policy"
    assert hasattr(task_policy, "airflow.policy_impl")


def test_calling_the_policy_imports_nothing() -> None:
    """Parse-time cost: the policy consults provider modules through sys.modules only, never imports one."""
    code = (
        "import sys\n"
        "from airflow.sdk import DAG\n"
        "from airflow import settings\n"
        "from airflow_secure_transfer.operators.upload import SecureUploadOperator\n"
        "with DAG('d', schedule=None):\n"
        "    op = SecureUploadOperator(task_id='t', conn_id='c', local_path='/a', remote_path='/in/')\n"
        "before = set(sys.modules)\n"
        "settings.task_policy(op)\n"
        "import airflow_secure_transfer.policy as p\n"
        "p.find_violation(op)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), ENV_VAR: "enforce"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- Airflow's own loading (airflow tier)


def _airflow() -> list[str]:
    script = Path(sys.executable).parent / "airflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow"]


def _env(home: Path, mode: str | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(POLICY_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),  # the worktree's package; the entry point itself comes from the installed metadata
    }
    if mode is not None:
        env[ENV_VAR] = mode
    return env


def _run(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode in ok, f"{' '.join(cmd[-3:])} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _json(stdout: str) -> list[dict[str, Any]]:
    """Return the JSON list the command printed (log lines such as the graphviz warning may precede it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("["):
            try:
                rows = json.loads(line)
            except ValueError:
                continue
            assert isinstance(rows, list)
            return rows
    raise AssertionError(f"no JSON list in the output:\n{stdout[-2000:]}")


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registered = {ep.value for ep in entry_points(group="airflow.policy")}
    assert "airflow_secure_transfer.policy" in registered, (
        "the airflow.policy entry point is not installed in this environment: reinstall the package "
        f"(pip install -e .); found {sorted(registered)}"
    )
    home = tmp_path_factory.mktemp("policy-template")
    _run([*_airflow(), "db", "migrate"], _env(home, None))
    return home / "airflow.db"


def _parse(tmp_path: Path, migrated_db: Path, mode: str | None) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Run Airflow's DAG processor once over ``policy_dags``: return import errors, loaded DAG ids, per-file logs."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(migrated_db, home / "airflow.db")
    env = _env(home, mode)
    _run([*_airflow(), "dag-processor", "--num-runs", "1"], env)
    errors = {
        Path(row["filepath"]).name: row["error"]
        for row in _json(_run([*_airflow(), "dags", "list-import-errors", "--output", "json"], env, ok=(0, 1)))
        if row.get("filepath")
    }
    dags = {row["dag_id"] for row in _json(_run([*_airflow(), "dags", "list", "--output", "json"], env))}
    logs = {p.name: p.read_text() for p in (home / "logs" / "dag_processor").rglob("*.py.log")}
    return errors, dags, logs


@pytest.mark.airflow
def test_enforce_the_plain_ftp_dag_is_an_import_error_and_the_secure_one_loads(
    tmp_path: Path, migrated_db: Path
) -> None:
    errors, dags, _ = _parse(tmp_path, migrated_db, "enforce")
    assert set(errors) == {"plain_ftp.py"}
    assert errors["plain_ftp.py"].startswith("AirflowClusterPolicyViolation: refused by the airflow-secure-transfer")
    assert (
        "task 'policy_plain_ftp.push_report' (FTPFileTransmitOperator, connection 'partner')" in errors["plain_ftp.py"]
    )
    assert FIX in errors["plain_ftp.py"]
    assert dags == {"policy_secure_upload"}


@pytest.mark.airflow
def test_warn_by_default_both_load_and_the_processor_log_names_the_task(tmp_path: Path, migrated_db: Path) -> None:
    errors, dags, logs = _parse(tmp_path, migrated_db, None)
    assert errors == {}
    assert dags == {"policy_plain_ftp", "policy_secure_upload"}
    warnings = [
        json.loads(line)
        for line in logs["plain_ftp.py.log"].splitlines()
        if line.startswith("{") and "airflow_secure_transfer.policy" in line
    ]
    assert [w["level"] for w in warnings] == ["warning"]
    assert "task 'policy_plain_ftp.push_report' (FTPFileTransmitOperator, connection 'partner')" in warnings[0]["event"]
    assert FIX in warnings[0]["event"]
    assert "airflow_secure_transfer.policy" not in logs["secure_upload.py.log"]


@pytest.mark.airflow
def test_off_both_load_and_nothing_is_logged(tmp_path: Path, migrated_db: Path) -> None:
    errors, dags, logs = _parse(tmp_path, migrated_db, "off")
    assert errors == {}
    assert dags == {"policy_plain_ftp", "policy_secure_upload"}
    assert set(logs) == {"plain_ftp.py.log", "secure_upload.py.log"}
    assert not any("airflow_secure_transfer.policy" in text for text in logs.values())
