"""UI tier: a real ``airflow api-server`` and Debian's Chromium, driven headless by Playwright.

Fixtures
--------
``airflow_ui`` (session)
    One ``airflow api-server`` on ``127.0.0.1`` and a free port for the whole session, in a throwaway
    ``AIRFLOW_HOME`` with its own SQLite database (``airflow db migrate`` first), the simple auth manager with
    everybody admin, ``[core] test_connection = Enabled`` (the Test button runs ``hook.test_connection()``
    inside the api-server process), a random 64-byte JWT secret and no example DAGs. Ready when ``GET /``
    answers 200 (polled until a deadline); stopped by signalling its whole process group, so nothing is left
    behind. The fixture servers (pyftpdlib, asyncssh) run in the pytest process; the api-server reaches them
    over loopback like any client.
``ui_browser`` (session)
    Headless ``/usr/bin/chromium`` (Debian's package; ``playwright install`` is never run) launched by the
    Python ``playwright`` package. A missing browser or package skips the tier locally and *fails* it under
    ``CI=true``.
``ui_context`` (session) / ``ui_page`` (function)
    One browser context whose ``base_url`` is the api-server (its HTTP cache spares each test reloading the
    UI's scripts), and a fresh tab per test. Names other than loopback do not resolve in this Chromium, and a
    test whose page requested anything beyond loopback fails. On a failed test a screenshot goes to
    ``test-artifacts/ui/FAILED-<test>.png``.
``ui_artifacts``
    ``test-artifacts/ui/`` (gitignored): screenshots of every form and result.

Environment knobs: ``SECURE_TRANSFER_CHROMIUM`` (another Chromium binary), ``SECURE_TRANSFER_UPDATE_DOCS_IMG=1``
(also write the README screenshot ``docs/img/secure-ftps-connection.png``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.servers import STARTUP_TIMES, ci_required

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
DOCS_IMG = ROOT / "docs" / "img"

#: Flags for Debian's Chromium in a container (no sandbox, no GPU) that also keep it off the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Belt and braces: no DNS name resolves except loopback's.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

# Both bound the first UI test's setup; together they stay below pytest-timeout's 300 s per test.
MIGRATE_TIMEOUT = 120.0
START_TIMEOUT = 150.0
STOP_TIMEOUT = 30.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _unavailable(reason: str) -> None:
    """Skip the UI tier locally; fail it under ``CI=true`` (where it must run)."""
    if ci_required():
        pytest.fail(f"UI tier cannot run: {reason} (CI=true: the UI tier must run, not skip)", pytrace=False)
    pytest.skip(f"UI tier skipped: {reason}")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- api-server


@dataclass(frozen=True)
class AirflowUI:
    """A running ``airflow api-server``."""

    base_url: str
    home: Path
    log_path: Path
    pid: int
    #: Seconds from spawning the api-server until ``GET /`` answered (``db migrate`` not included).
    start_seconds: float
    migrate_seconds: float


def _airflow_env(home: Path) -> dict[str, str]:
    # Start from the caller's environment without any Airflow setting or connection, so the server is the
    # same wherever the suite runs (another tier's AIRFLOW_HOME or AIRFLOW_CONN_* must not leak in).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),  # 64 random bytes (86 characters)
        AIRFLOW__API__WORKERS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    """True while any process of process group *pgid* exists (Linux ``/proc``)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses, split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            return True
    return False


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the api-server and everything in its process group: SIGTERM, then SIGKILL after a deadline."""
    pgid = proc.pid  # start_new_session=True: the server leads its own group
    if proc.poll() is None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    # The group id cannot be reused while any member lives, so signalling it after this check is safe.
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"airflow api-server not answering {url} after {START_TIMEOUT} s:\n{_log_tail(log_path)}"
            )
        # Poll interval (doubles as the exit check), bounded by the deadline; not a wait for a fixed time.
        try:
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="session")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory, ui_browser: Browser) -> Iterator[AirflowUI]:
    """Start one ``airflow api-server`` for the session (after the browser is known to be available)."""
    airflow = Path(sys.executable).with_name("airflow")
    if not airflow.exists():
        found = shutil.which("airflow")
        if found is None:
            pytest.fail("the airflow command is not installed next to this Python", pytrace=False)
        airflow = Path(found)

    home = tmp_path_factory.mktemp("airflow-ui-home")
    (home / "dags").mkdir()
    env = _airflow_env(home)
    migrate_log = home / "db-migrate.log"
    t0 = time.monotonic()
    with migrate_log.open("wb") as out:
        rc = subprocess.run(
            [str(airflow), "db", "migrate"], env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
            timeout=MIGRATE_TIMEOUT, check=False,
        ).returncode
    if rc != 0:
        pytest.fail(f"airflow db migrate failed ({rc}):\n{_log_tail(migrate_log)}", pytrace=False)
    migrate_seconds = time.monotonic() - t0

    # The port is probed free, then handed to the server: another process could take it in between, so a
    # server that dies with "address already in use" is retried on a new port.
    for attempt in range(3):
        port = _free_port()
        log_path = home / f"api-server-{attempt}.log"
        t1 = time.monotonic()
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [str(airflow), "api-server", "-H", "127.0.0.1", "-p", str(port)],
                env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, base_url + "/", log_path)
        except RuntimeError:
            _stop_group(proc)
            if attempt < 2 and re.search(r"address already in use|Errno 98", _log_tail(log_path, 200), re.I):
                continue
            raise
        except BaseException:
            _stop_group(proc)
            raise
        break
    server = AirflowUI(
        base_url=base_url, home=home, log_path=log_path, pid=proc.pid,
        start_seconds=time.monotonic() - t1, migrate_seconds=migrate_seconds,
    )
    # Printed with the test servers' start-up times in the terminal summary.
    STARTUP_TIMES["airflow db migrate"] = migrate_seconds
    STARTUP_TIMES["airflow api-server"] = server.start_seconds
    try:
        yield server
    finally:
        _stop_group(proc)
        assert not _group_alive(proc.pid), "api-server processes left behind"


# --------------------------------------------------------------------------- browser


def _chromium_candidates() -> list[str]:
    configured = os.environ.get("SECURE_TRANSFER_CHROMIUM")
    if configured:
        return [configured]
    found = shutil.which("chromium")
    return ["/usr/bin/chromium"] + ([found] if found and found != "/usr/bin/chromium" else [])


def _chromium_path() -> Path | None:
    for c in _chromium_candidates():
        if Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def ui_browser() -> Iterator[Browser]:
    """Headless Debian Chromium via Playwright (skip locally / fail under CI=true when either is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the Python package 'playwright' is not installed ({exc}); pip install playwright")
        raise  # unreachable: _unavailable raises
    chromium = _chromium_path()
    if chromium is None:
        _unavailable(f"no Chromium at {' or '.join(_chromium_candidates())} (apt-get install chromium)")
        raise AssertionError("unreachable")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken browser is an environment problem: same rule as a missing one
            _unavailable(f"{chromium} does not start under Playwright: {exc}")
            raise
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def ui_artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def ui_context(ui_browser: Browser, airflow_ui: AirflowUI) -> Iterator[BrowserContext]:
    """One browser context for the session, so the UI's scripts are fetched and compiled once (HTTP cache).

    No request interception here: Playwright's routing disables the HTTP cache. Names other than loopback
    do not resolve (``--host-resolver-rules``) and ``ui_page`` fails a test whose page asked for anything else.
    """
    context = ui_browser.new_context(base_url=airflow_ui.base_url, viewport={"width": 1280, "height": 1200})
    context.set_default_timeout(30_000)
    # The simple auth manager signs the browser in on its first visit; Airflow 3.1 then lands on Home, not on
    # the page asked for. Signing in here lets every test open its page directly on every minor.
    page = context.new_page()
    page.goto("/")
    page.get_by_role("button", name="Admin").wait_for()
    page.close()
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def ui_page(ui_context: BrowserContext, ui_artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab on the api-server; a request beyond loopback fails the test; a failure leaves a screenshot."""
    from playwright.sync_api import Request

    outside: list[str] = []

    def only_loopback(req: Request) -> None:
        url = req.url
        if not url.startswith(("data:", "blob:")) and (urlsplit(url).hostname or "") not in LOOPBACK_HOSTS:
            outside.append(url)

    page = ui_context.new_page()
    page.on("request", only_loopback)
    try:
        yield page
        if request.node.stash.get(_FAILED, False):
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            page.screenshot(path=ui_artifacts / f"FAILED-{name}.png", full_page=True)
    finally:
        page.close()
    assert not outside, f"the UI tried to reach beyond loopback: {outside}"
