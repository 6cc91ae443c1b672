"""The busy-server back-off: bounded, jittered, and never applied to a security or other failure."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable

import pytest

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    ConfigurationError,
    SecurityPolicyError,
    ServerBusyError,
    TransferTimeout,
    TransportError,
    VerificationError,
)
from airflow_secure_transfer.transfer.backoff import MAX_DELAY, backoff_delays, connect_with_backoff


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, /, *args: object) -> None:
        self.warnings.append(msg % args)


def busy_then(n_busy: int, result: object = "client") -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def connect() -> object:
        calls[0] += 1
        if calls[0] <= n_busy:
            raise ServerBusyError("421 Too many connections from your internet address")
        return result

    return connect, calls


@pytest.mark.parametrize("budget", [0.0, 0.3, 4.0, 80.0, 600.0])
@pytest.mark.parametrize("seed", range(5))
def test_delays_never_exceed_the_budget(budget: float, seed: int) -> None:
    delays = backoff_delays(budget, rng=random.Random(seed).random)
    assert sum(delays) <= budget + 1e-9
    assert all(0 < d <= MAX_DELAY for d in delays)
    if budget > 0:
        assert sum(delays) == pytest.approx(budget)  # the whole budget is usable, not more


def test_delays_are_bounded_in_number_even_when_the_jitter_is_always_zero() -> None:
    delays = backoff_delays(80.0, rng=lambda: 0.0)
    assert sum(delays) == pytest.approx(80.0)
    assert len(delays) < 200


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    delays = backoff_delays(1000.0, rng=lambda: 0.999999)
    assert delays[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0], rel=1e-3)
    assert max(delays) <= MAX_DELAY


def test_delays_are_jittered() -> None:
    """Two tasks refused at the same moment do not come back at the same moment."""
    a = backoff_delays(60.0, rng=random.Random(1).random)
    b = backoff_delays(60.0, rng=random.Random(2).random)
    assert a[:5] != b[:5]
    assert len({round(d, 6) for d in a}) > 1


def test_busy_server_is_retried_until_it_accepts() -> None:
    connect, calls = busy_then(3)
    slept: list[float] = []
    log = RecordingLog()
    assert connect_with_backoff(connect, budget=60, log=log, sleep=slept.append, rng=lambda: 0.5) == "client"
    assert calls[0] == 4
    assert slept == pytest.approx([0.25, 0.5, 1.0])
    assert len(log.warnings) == 3
    assert "is busy (421 Too many connections" in log.warnings[0]
    assert "attempt 1" in log.warnings[0] and "at most 60 s" in log.warnings[0]


def test_still_busy_after_the_budget_raises_a_retryable_busy_error() -> None:
    connect, calls = busy_then(10**6)
    slept: list[float] = []
    with pytest.raises(ServerBusyError) as err:
        connect_with_backoff(connect, budget=20, log=RecordingLog(), sleep=slept.append, rng=random.Random(3).random)
    assert err.value.retryable
    assert isinstance(err.value, TransportError)
    assert sum(slept) == pytest.approx(20)
    assert calls[0] == len(slept) + 1  # one last try after the last wait
    assert f"still busy after {calls[0]} attempts" in str(err.value)


def test_no_budget_means_no_wait() -> None:
    connect, calls = busy_then(1)
    slept: list[float] = []
    with pytest.raises(ServerBusyError):
        connect_with_backoff(connect, budget=0, log=RecordingLog(), sleep=slept.append)
    assert calls == [1] and slept == []


@pytest.mark.parametrize(
    "error",
    [
        VerificationError("host key mismatch"),
        AuthenticationError("530 Login incorrect"),
        SecurityPolicyError("the server refused AUTH TLS"),
        ConfigurationError("bad extra"),
        TransportError("connection reset"),
        TransferTimeout("no answer"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_never_retried(error: Exception) -> None:
    calls = itertools.count()
    slept: list[float] = []

    def connect() -> object:
        next(calls)
        raise error

    with pytest.raises(type(error)) as err:
        connect_with_backoff(connect, budget=600, log=RecordingLog(), sleep=slept.append)
    assert err.value is error
    assert next(calls) == 1  # called exactly once
    assert slept == []


def test_security_error_after_a_busy_answer_is_raised_at_once() -> None:
    answers: list[Exception] = [ServerBusyError("421 busy"), VerificationError("certificate not trusted")]
    slept: list[float] = []

    def connect() -> object:
        raise answers.pop(0)

    with pytest.raises(VerificationError):
        connect_with_backoff(connect, budget=600, log=RecordingLog(), sleep=slept.append, rng=lambda: 0.5)
    assert len(slept) == 1 and answers == []


def test_cancel_stops_the_wait() -> None:
    cancel = threading.Event()
    log = RecordingLog()

    def connect() -> object:
        cancel.set()  # the run failed elsewhere while this worker was being refused
        raise ServerBusyError("421 busy")

    with pytest.raises(ServerBusyError, match="still busy after 1 attempts"):
        connect_with_backoff(connect, budget=3600, log=log, cancel=cancel)
    assert log.warnings == []  # no wait was even started


def test_cancel_during_a_wait_ends_it() -> None:
    cancel = threading.Event()

    class CancellingLog(RecordingLog):
        def warning(self, msg: str, /, *args: object) -> None:
            super().warning(msg, *args)
            cancel.set()  # another worker failed the run while this one waits

    connect, calls = busy_then(10**6)
    with pytest.raises(ServerBusyError, match="gave up waiting: the run was cancelled"):
        connect_with_backoff(connect, budget=3600, log=CancellingLog(), cancel=cancel)
    assert calls[0] == 1
