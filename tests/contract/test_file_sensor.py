"""SecureFileSensor and SecureFileTrigger on every server fixture.

The rules (match, stability, done marker, manifest) are checked through the watcher with an explicit
clock (no waiting); the sensor's poke loop and the trigger run for real, in real time, where time is
the point (a file growing from a thread, the trigger beside a 10 ms ticker on its loop).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.compat import airflow_fail_exception
from airflow_secure_transfer.exceptions import IntegrityError, RemotePathError, VerificationError
from airflow_secure_transfer.sensors.file import SecureFileSensor
from airflow_secure_transfer.transfer.base import RemoteEntry
from airflow_secure_transfer.transfer.watch import BlockingRemote, Watcher, WatchSpec, run_inline
from airflow_secure_transfer.triggers.file import SecureFileTrigger
from tests.servers import FTPSServer, sha256_file

from ._support import AnyServer, client_for, remote, settings_for

AirflowFailException = airflow_fail_exception()
OTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _put(server: AnyServer, rel: str, data: bytes) -> Path:
    path = server.local_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _check(server: AnyServer, spec: WatchSpec, watcher: Watcher | None, now: float) -> tuple[Watcher, Any]:
    watcher = watcher or Watcher(spec)
    with client_for(settings_for(server)) as fs:
        return watcher, run_inline(watcher.check(BlockingRemote(fs, offload=False), now))


def _names(files: list[RemoteEntry]) -> list[str]:
    return [e.path.rsplit("/", 1)[1] for e in files]


def _untrusted(server: AnyServer) -> dict[str, Any]:
    """Extras that make the client distrust *server*: another host key, or a certificate pin that does not match."""
    if isinstance(server, FTPSServer):
        return {"cert_fingerprint": "ab" * 32}
    return {"host_key": OTHER_HOST_KEY}


async def _first_event(trigger: SecureFileTrigger) -> dict[str, Any]:
    events: AsyncIterator[Any] = trigger.run()
    event = await asyncio.wait_for(events.__anext__(), 60)
    await events.aclose()  # type: ignore[attr-defined]
    payload: dict[str, Any] = event.payload
    return payload


# --------------------------------------------------------------------------- rules (explicit clock)


def test_match_only_after_stable_for_and_never_hidden_or_temporary_names(any_server: AnyServer) -> None:
    for rel in ("sales-1.csv", "sales-2.csv", ".sales-3.csv", ".sales-4.csv.0123456789abcdef.part", "other.txt"):
        _put(any_server, rel, b"x" * 10)
    (any_server.local_root / "sales-dir.csv").mkdir()
    spec = WatchSpec(path=remote(any_server, "sales-*.csv"), min_files=2, stable_for=10)
    watcher, first = _check(any_server, spec, None, now=100.0)
    assert not first.done and first.stable_in == 10
    _, early = _check(any_server, spec, watcher, now=109.0)
    assert not early.done
    _, ready = _check(any_server, spec, watcher, now=110.0)
    assert ready.done and _names(ready.files) == ["sales-1.csv", "sales-2.csv"]
    assert [e.size for e in ready.files] == [10, 10]
    # A file that changes starts its clock again.
    _put(any_server, "sales-1.csv", b"y" * 11)
    _, changed = _check(any_server, spec, watcher, now=111.0)
    assert not changed.done and "1 of 2" in changed.waiting_for
    _, again = _check(any_server, spec, watcher, now=121.0)
    assert again.done and [e.size for e in again.files] == [11, 10]


def test_a_missing_directory_is_nothing_yet(any_server: AnyServer) -> None:
    spec = WatchSpec(path=remote(any_server, "later", "*.csv"), stable_for=0)
    _, result = _check(any_server, spec, None, now=0.0)
    assert not result.done and "0 of 1" in result.waiting_for


def test_done_marker_per_file_and_for_all(any_server: AnyServer) -> None:
    for rel in ("a.csv", "b.csv"):
        _put(any_server, rel, b"data")
    per_file = WatchSpec(path=remote(any_server, "*"), stable_for=0, done_marker="{path}.done")
    _, unmarked = _check(any_server, per_file, None, now=0.0)
    assert not unmarked.done and "done marker" in unmarked.waiting_for
    _put(any_server, "a.csv.done", b"")
    _, marked = _check(any_server, per_file, None, now=0.0)
    assert marked.done and _names(marked.files) == ["a.csv"]  # b.csv has no marker; a marker is no match

    elsewhere = WatchSpec(
        path=remote(any_server, "*.csv"), stable_for=0, done_marker=remote(any_server, "ok", "_SUCCESS")
    )
    _, waiting = _check(any_server, elsewhere, None, now=0.0)
    assert not waiting.done
    _put(any_server, "ok/_SUCCESS", b"")
    _, done = _check(any_server, elsewhere, None, now=0.0)
    assert done.done and _names(done.files) == ["a.csv", "b.csv"]


def test_manifest_gates_until_every_listed_file_has_its_size(any_server: AnyServer) -> None:
    _put(any_server, "day/a.csv", b"abc")
    digest = sha256_file(any_server.local_root / "day/a.csv")
    files = [{"path": "a.csv", "size": 3, "sha256": digest}, {"path": "sub/b.csv", "size": 5, "sha256": digest}]
    spec = WatchSpec(path=remote(any_server, "day", "*"), stable_for=0, manifest=remote(any_server, "day", "M.json"))
    _, no_manifest = _check(any_server, spec, None, now=0.0)
    assert not no_manifest.done and "manifest" in no_manifest.waiting_for
    _put(
        any_server,
        "day/M.json",
        json.dumps({"files": files, "created": "2026-12-02T00:00:00Z", "producer": "t"}).encode(),
    )
    _, missing = _check(any_server, spec, None, now=0.0)
    assert not missing.done and "sub/b.csv (missing, 5 expected)" in missing.waiting_for
    _put(any_server, "day/sub/b.csv", b"abcd")
    _, short = _check(any_server, spec, None, now=0.0)
    assert not short.done and "(4 bytes, 5 expected)" in short.waiting_for
    _put(any_server, "day/sub/b.csv", b"abcde")
    _, done = _check(any_server, spec, None, now=0.0)
    assert done.done and _names(done.files) == ["a.csv"]  # the manifest itself never matches


def test_a_hostile_manifest_fails_at_once_and_an_incomplete_one_is_waited_for(
    asyncssh_server: AnyServer, airflow_conn: Callable[..., str]
) -> None:
    _put(asyncssh_server, "a.csv", b"abc")
    sensor = SecureFileSensor(
        task_id="wait",
        conn_id=airflow_conn("hostile", asyncssh_server),
        path=remote(asyncssh_server, "*.csv"),
        stable_for=0,
        manifest=remote(asyncssh_server, "M.json"),
    )
    _put(asyncssh_server, "M.json", b'{"files": [{"path": "a.csv", "si')  # still being written by another tool
    assert sensor.poke({}) is False
    with pytest.raises(IntegrityError):
        _check(asyncssh_server, sensor._watch()[1].spec, None, now=0.0)
    escape = {
        "files": [{"path": "../../etc/passwd", "size": 1, "sha256": "a" * 64}],
        "created": "2026-01-01",
        "producer": "",
    }
    _put(asyncssh_server, "M.json", json.dumps(escape).encode())
    with pytest.raises(AirflowFailException) as info:
        sensor.poke({})
    assert isinstance(info.value.__cause__, RemotePathError)


# --------------------------------------------------------------------------- the sensor, in real time


def test_a_growing_file_is_reported_only_once_it_stops(any_server: AnyServer, airflow_conn: Callable[..., str]) -> None:
    target = _put(any_server, "big.dat", b"")
    stop = threading.Event()
    stopped: dict[str, float] = {}

    def grow() -> None:
        with target.open("ab") as f:
            for _ in range(40):  # ~2 s of appends, each visible at once
                f.write(b"z" * 1000)
                f.flush()
                stopped["last_write"] = time.monotonic()
                if stop.wait(0.05):
                    break
        stopped["size"] = target.stat().st_size

    sensor = SecureFileSensor(
        task_id="wait_grow",
        conn_id=airflow_conn("grow", any_server),
        path=remote(any_server, "*.dat"),
        stable_for=0.8,
        poke_interval=0.1,
        timeout=120,
    )
    grower = threading.Thread(target=grow)
    grower.start()
    try:
        files = sensor.execute(context={})
    finally:
        stop.set()
        grower.join()
    returned = time.monotonic()
    assert files == [
        {"remote_path": remote(any_server, "big.dat"), "size": stopped["size"], "mtime": files[0]["mtime"]}
    ]
    assert stopped["size"] == 40_000
    assert returned - stopped["last_write"] >= 0.8  # unchanged for stable_for after the last append


def test_wrong_host_key_or_certificate_pin_fails_the_sensor_at_once(
    any_server: AnyServer, airflow_conn: Callable[..., str]
) -> None:
    _put(any_server, "a.csv", b"abc")
    conn_id = airflow_conn("untrusted", any_server, **_untrusted(any_server))
    common: dict[str, Any] = {"conn_id": conn_id, "path": remote(any_server, "*.csv"), "stable_for": 0}
    sensor = SecureFileSensor(task_id="poke", poke_interval=0.1, timeout=600, **common)
    pokes = 0
    real_poke = sensor.poke

    def counted(context: Any) -> Any:
        nonlocal pokes
        pokes += 1
        return real_poke(context)

    sensor.poke = counted  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match="VerificationError") as info:
        sensor.execute(context={})
    assert isinstance(info.value.__cause__, VerificationError) and pokes == 1

    event = asyncio.run(_first_event(SecureFileTrigger(poke_interval=0.1, **common)))
    assert event["status"] == "error" and event["error_class"] == "VerificationError"
    assert any_server.password not in json.dumps(event)
    with pytest.raises(AirflowFailException) as resumed:
        SecureFileSensor(task_id="deferred", deferrable=True, **common).execute_complete({}, event)
    assert isinstance(resumed.value.__cause__, VerificationError)


# --------------------------------------------------------------------------- the trigger


def test_the_trigger_fires_with_the_files_once_marker_and_manifest_are_there(
    any_server: AnyServer, airflow_conn: Callable[..., str]
) -> None:
    _put(any_server, "out/a.csv", b"abc")
    digest = sha256_file(any_server.local_root / "out/a.csv")
    manifest = {"files": [{"path": "a.csv", "size": 3, "sha256": digest}], "created": "2026-12-02", "producer": "p"}
    _put(any_server, "out/MANIFEST.json", json.dumps(manifest).encode())
    _put(any_server, "_SUCCESS", b"")
    trigger = SecureFileTrigger(
        conn_id=airflow_conn("trig", any_server),
        path=remote(any_server, "out", "*"),
        stable_for=0.3,
        done_marker=remote(any_server, "_SUCCESS"),
        manifest=remote(any_server, "out", "MANIFEST.json"),
        poke_interval=0.1,
    )
    started = time.monotonic()
    event = asyncio.run(_first_event(trigger))
    assert time.monotonic() - started >= 0.3
    assert event["status"] == "success"
    assert [(f["remote_path"], f["size"]) for f in event["files"]] == [(remote(any_server, "out", "a.csv"), 3)]
    assert json.loads(json.dumps(event)) == event


def test_trigger_serializes_the_connection_id_and_plain_values_only(
    asyncssh_server: AnyServer, airflow_conn: Callable[..., str]
) -> None:
    from airflow_secure_transfer.compat import default_deferrable

    conn_id = airflow_conn("ser", asyncssh_server, conn_type=None)
    sensor = SecureFileSensor(
        task_id="wait",
        conn_id=conn_id,
        path="/outbox/sales-*.csv",
        min_files=2,
        stable_for=5,
        done_marker="{path}.done",
        manifest="/outbox/MANIFEST.json",
        deferrable=True,
        poke_interval=7,
    )
    assert SecureFileSensor(task_id="d", conn_id=conn_id, path="/x").deferrable is default_deferrable()
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "airflow_secure_transfer.triggers.file.SecureFileTrigger"
    assert kwargs == {
        "conn_id": conn_id,
        "path": "/outbox/sales-*.csv",
        "min_files": 2,
        "stable_for": 5,
        "done_marker": "{path}.done",
        "manifest": "/outbox/MANIFEST.json",
        "poke_interval": 7.0,
    }
    assert deferred.value.method_name == "execute_complete"
    text = json.dumps(kwargs)
    for secret in (asyncssh_server.password, asyncssh_server.host, str(asyncssh_server.port)):
        assert secret not in text
    assert SecureFileTrigger(**kwargs).serialize() == (classpath, kwargs)


def _unexplained(loop_ticks: list[tuple[float, float]], control_ticks: list[tuple[float, float]]) -> float:
    """The largest lateness of a loop tick that a control thread did not see at the same time.

    A tick of the event loop that is late while a plain thread of the same process kept ticking means the
    loop itself was blocked (a synchronous socket call or a long computation in a coroutine). When the whole
    process was descheduled (a busy 2-core CI machine), the control thread was late over the same stretch,
    and that part of the lateness is not the loop's.
    """
    worst = 0.0
    for when, late in loop_ticks:
        start = when - late
        seen = max((c for t, c in control_ticks if t >= start and t - c <= when + 0.01), default=0.0)
        worst = max(worst, late - seen)
    return worst


def test_the_trigger_never_blocks_its_event_loop(any_server: AnyServer, airflow_conn: Callable[..., str]) -> None:
    for i in range(300):
        _put(any_server, f"in/f{i:04d}.csv", b"%d" % i)
    trigger = SecureFileTrigger(
        conn_id=airflow_conn("loop", any_server),
        path=remote(any_server, "in", "*.csv"),
        min_files=300,
        stable_for=0.5,
        poke_interval=0.2,
    )
    done = threading.Event()
    control: list[tuple[float, float]] = []

    def control_ticker() -> None:
        # Blocking socket calls release the GIL, so a blocked loop does not stop this thread; a stalled
        # process (CPU steal, preemption) stops both.
        due = time.monotonic() + 0.01
        while not done.is_set():
            time.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            control.append((now, now - due))
            due = now + 0.01

    async def main() -> tuple[dict[str, Any], list[tuple[float, float]]]:
        ticks: list[tuple[float, float]] = []

        async def ticker() -> None:
            due = time.monotonic() + 0.01
            while not done.is_set():
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                now = time.monotonic()
                ticks.append((now, now - due))
                due = now + 0.01

        tick = asyncio.create_task(ticker())
        try:
            event = await _first_event(trigger)  # connects, lists, waits, connects again, lists
        finally:
            done.set()
            await tick
        return event, ticks

    thread = threading.Thread(target=control_ticker, daemon=True)
    thread.start()
    try:
        event, ticks = asyncio.run(main())
    finally:
        done.set()
        thread.join(5)
    assert event["status"] == "success" and len(event["files"]) == 300
    assert len(ticks) > 20 and len(control) > 20
    worst = _unexplained(ticks, control)
    assert worst < 0.05, f"the event loop was blocked: a tick was {worst * 1000:.1f} ms late while a thread was not"


def test_the_blocked_loop_check_tells_a_blocked_loop_from_a_stalled_process() -> None:
    # A stall both tickers saw (the process was descheduled) is not the loop's ...
    assert _unexplained([(10.30, 0.26)], [(10.29, 0.25), (10.30, 0.0)]) < 0.05
    # ... a stall only the loop saw is, and so is the part of a stall beyond what the thread saw.
    assert _unexplained([(10.30, 0.26)], [(10.05, 0.0), (10.20, 0.001), (10.29, 0.0)]) > 0.25
    assert abs(_unexplained([(10.30, 0.26)], [(10.29, 0.10)]) - 0.16) < 1e-9
    # A thread stall at another time explains nothing.
    assert _unexplained([(10.30, 0.26)], [(5.0, 0.3), (10.29, 0.0)]) > 0.25


def test_reschedule_mode_watches_a_candidate_within_one_poke(
    any_server: AnyServer, airflow_conn: Callable[..., str]
) -> None:
    _put(any_server, "a.csv", b"abc")
    sensor = SecureFileSensor(
        task_id="resched",
        conn_id=airflow_conn("resched", any_server),
        path=remote(any_server, "*.csv"),
        stable_for=0.5,
        mode="reschedule",
    )
    started = time.monotonic()
    result = sensor.poke({})  # a new process per poke: the first one sees the file and watches it itself
    assert time.monotonic() - started >= 0.5
    assert not isinstance(result, bool) and result.is_done
    assert result.xcom_value == [
        {"remote_path": remote(any_server, "a.csv"), "size": 3, "mtime": result.xcom_value[0]["mtime"]}
    ]


def test_transient_errors_are_retried_not_raised(asyncssh_server: AnyServer, airflow_conn: Callable[..., str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens there once closed
    conn_id = airflow_conn("gone", asyncssh_server, fields={"port": closed_port}, conn_timeout=0.5)
    common: dict[str, Any] = {"conn_id": conn_id, "path": "/in/*.csv", "stable_for": 0}
    assert SecureFileSensor(task_id="poke", **common).poke({}) is False

    async def no_event() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_first_event(SecureFileTrigger(poke_interval=0.1, **common)), 1.5)

    asyncio.run(no_event())


_FRESH_PROCESS_IMPORTS = """
import asyncio, json, os, sys, threading
from airflow.sdk import BaseHook  # loaded in every triggerer before any trigger runs
from airflow.sdk.log import mask_secret
from airflow_secure_transfer.triggers.file import SecureFileTrigger  # the triggerer imports the class

on_loop = []


class Recorder:
    # Called for every module imported for the first time: note those imported on the loop's thread.
    def find_spec(self, name, path=None, target=None):
        if threading.current_thread() is threading.main_thread():
            on_loop.append(name)
        return None


async def main():
    trigger = SecureFileTrigger(conn_id="fresh", path=os.environ["FRESH_PATH"], stable_for=0.3, poke_interval=0.1)
    events = trigger.run()
    sys.meta_path.insert(0, Recorder())
    event = await asyncio.wait_for(events.__anext__(), 60)
    await events.aclose()
    print(json.dumps({"event": event.payload, "on_loop": on_loop}))

asyncio.run(main())
"""


@pytest.mark.parametrize("server_fixture", ["asyncssh_server", "pyftpd_explicit"])
def test_the_trigger_imports_nothing_heavy_on_its_loop_in_a_fresh_process(
    request: pytest.FixtureRequest, server_fixture: str, tmp_path: Path
) -> None:
    """In a fresh triggerer the clients are not imported yet: their imports (asyncssh and cryptography,
    ssl and ftplib, the policy: hundreds of ms) must happen on a worker thread, not on the loop."""
    import os
    import subprocess
    import sys

    server: AnyServer = request.getfixturevalue(server_fixture)
    _put(server, "a.csv", b"abc")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONN_FRESH": server.conn_json(),
        "FRESH_PATH": remote(server, "*.csv"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_IMPORTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["event"]["status"] == "success" and len(result["event"]["files"]) == 1
    heavy = ("asyncssh", "cryptography", "ssl", "_ssl", "ftplib", "airflow_secure_transfer")
    assert [m for m in result["on_loop"] if m.split(".")[0] in heavy] == []
