"""A real Airflow deployment on loopback: ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor``
and, on request, ``triggerer``.

For tests that need what ``airflow dags test`` does not do: a scheduler placing many (mapped) task
instances at once on parallel workers, pools, retries. Everything runs in a throwaway ``AIRFLOW_HOME``
with its own SQLite database; each process runs in its own process group and is stopped with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port

START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0


def airflow_cmd() -> list[str]:
    """The ``airflow`` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "airflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow"]


def stop_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM *proc*'s whole process group, then SIGKILL what is left after *timeout*."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Children (task runners) may outlive the leader for a moment.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class AirflowStack:
    """A running deployment; :meth:`cli` runs ``airflow ...`` against it."""

    home: Path
    env: dict[str, str]
    api_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run(
            [*airflow_cmd(), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def cli_json(self, *args: str) -> Any:
        """Run ``airflow ... -o json``; parse its JSON line (warnings may be printed before it)."""
        lines = [line for line in self.cli(*args, "-o", "json").splitlines() if line.startswith(("[", "{"))]
        return json.loads(lines[-1]) if lines else []

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.home / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited ({proc.returncode}):\n{self.log_tail(name)}")

    def wait_for_dag(self, dag_id: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until the dag-processor has stored *dag_id* (``dags list`` shows it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            listed = self.cli_json("dags", "list")
            if any(d.get("dag_id") == dag_id for d in listed):
                return
            errors = self.cli_json("dags", "list-import-errors")
            if errors:
                raise AssertionError(f"import errors in the DAG folder: {json.dumps(errors, indent=1)[-4000:]}")
            time.sleep(2)
        raise AssertionError(f"{dag_id} was not parsed within {timeout:.0f} s:\n{self.log_tail('dag-processor')}")

    def run_dag(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """Unpause and trigger *dag_id*; wait until the run ends; return its ``list-runs`` row."""
        self.cli("dags", "unpause", dag_id)
        run_id = f"test_{secrets.token_hex(4)}"
        self.cli("dags", "trigger", dag_id, "-r", run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            for row in self.cli_json("dags", "list-runs", dag_id):
                if row.get("run_id") == run_id and row.get("state") in ("success", "failed"):
                    return dict(row)
            time.sleep(3)
        raise AssertionError(
            f"{dag_id} run {run_id} did not finish within {timeout:.0f} s:\n{self.log_tail('scheduler')}"
        )

    def task_logs(self) -> str:
        """All task log files of this deployment, concatenated."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.home / "logs").rglob("*.log")))


def _wait_http(url: str, stack: AirflowStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack._check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{stack.log_tail('api-server')}")


@contextlib.contextmanager
def airflow_stack(
    home: Path,
    *,
    dags_folder: Path,
    env: Mapping[str, str] | None = None,
    pools: Mapping[str, int] | None = None,
    parallelism: int = 8,
    triggerer: bool = False,
) -> Iterator[AirflowStack]:
    """Start api-server, scheduler (LocalExecutor, *parallelism* workers) and dag-processor in *home*.

    :param env: more environment for every process (``AIRFLOW_CONN_*``, DAG settings).
    :param pools: pools to create before the scheduler starts (name -> slots).
    :param triggerer: also start ``airflow triggerer`` (for deferred tasks).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    full_env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism * 4),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    stack = AirflowStack(home=home, env=full_env, api_url=f"http://127.0.0.1:{port}")
    stack.cli("db", "migrate", timeout=180)
    for name, slots in (pools or {}).items():
        stack.cli("pools", "set", name, str(slots), f"test pool {name}")
    commands = {
        "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(port)],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
    }
    if triggerer:
        commands["triggerer"] = ["triggerer"]
    try:
        for name, args in commands.items():
            log = (home / f"{name}.log").open("wb")
            stack.procs[name] = subprocess.Popen(
                [*airflow_cmd(), *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
        _wait_http(f"{stack.api_url}/api/v2/monitor/health", stack, START_TIMEOUT)
        yield stack
    finally:
        for proc in stack.procs.values():
            stop_group(proc)
