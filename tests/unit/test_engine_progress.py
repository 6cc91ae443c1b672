"""Progress messages: at least every 10 % of the bytes and every interval, with rate and ETA; the summary."""

from __future__ import annotations

import logging

import pytest

from airflow_secure_transfer.transfer.base import TransferRecord
from airflow_secure_transfer.transfer.engine import Progress, summary_table


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("upload progress")]


def test_a_message_for_every_tenth_of_the_bytes(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.progress.tenth")
    p = Progress(10, 1000, log, interval=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.progress.tenth"):
        for _ in range(100):
            clock.now += 0.01  # fast: the interval never elapses
            p.sent(10)
    msgs = _messages(caplog)
    assert len(msgs) == 10
    assert [m.split("(")[1].split(")")[0] for m in msgs] == [f"{10 * i}%" for i in range(1, 11)]


def test_slow_transfers_log_every_interval(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.progress.slow")
    p = Progress(1, 10_000_000, log, interval=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.progress.slow"):
        for _ in range(30):
            clock.now += 1.0
            p.sent(1000)  # 0.01 % per second: only the interval triggers
        clock.now += 4.0
        p.tick()  # 4 s since the last message: nothing
        clock.now += 1.0
        p.tick()  # 5 s: a message even without new bytes
    assert len(_messages(caplog)) == 7


def test_message_content(clock: Clock) -> None:
    log = logging.getLogger("test.progress.content")
    p = Progress(4, 4 * 1024 * 1024, log, clock=clock)
    p.accounted(1024 * 1024)  # resumed-over bytes count for % but not for the rate
    clock.now += 2.0
    p.sent(1024 * 1024)
    p.file_done()
    msg = p.message()
    assert msg.startswith("upload progress: 1/4 files, 2.0 MiB of 4.0 MiB (50%), ")
    assert "0.5 MB/s" in msg  # 1 MiB sent in 2 s
    assert msg.endswith("ETA 4s")


def test_empty_files_progress_by_count(clock: Clock) -> None:
    p = Progress(2, 0, logging.getLogger("x"), clock=clock)
    p.file_done()
    assert "(50%)" in p.message() and "ETA unknown" in p.message()


def test_summary_table() -> None:
    def rec(n: int, resumed: bool = False, skipped: bool = False) -> TransferRecord:
        return TransferRecord("/l", "/r", n, "0" * 64, 1.0, resumed, skipped, "size")

    table = summary_table([rec(5_000_000), rec(3_000_000, resumed=True), rec(0, skipped=True)], 2.0, failed=1)
    title, header, values = table.splitlines()
    assert title == "upload summary:"
    assert header.split() == ["files", "bytes", "sent", "seconds", "MB/s", "resumed", "skipped", "failed"]
    assert values.split() == ["3", "8000000", "2.00", "4.0", "1", "1", "1"]
