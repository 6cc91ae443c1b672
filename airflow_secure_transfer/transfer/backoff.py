"""Bounded, jittered waiting for a server that refuses new sessions for load.

A partner's server that allows a few sessions per user answers the next one with
FTP ``421`` or drops it during the SSH key exchange (OpenSSH ``MaxStartups``); many
Airflow tasks delivering to it at once meet that often. A short wait usually gets a
session, so :func:`connect_with_backoff` tries again — only for
:class:`~airflow_secure_transfer.exceptions.ServerBusyError`. Nothing else is
retried here: a certificate or host key that is not trusted, a refused login or a
policy refusal stays what it is, and raises at once.

The waits follow "full jitter" exponential back-off (each wait is uniform in
``[0, min(cap, base * 2**attempt)]``), so tasks refused together do not come back
together; the total wait is bounded by *budget* (the engine uses ``4 * conn_timeout``),
after which the last ``ServerBusyError`` (a retryable ``TransportError``) is raised.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from airflow_secure_transfer.exceptions import ServerBusyError

__all__ = ["BUSY_BUDGET_FACTOR", "backoff_delays", "connect_with_backoff"]

T = TypeVar("T")

#: The total wait for a busy server is this many times the connection's ``conn_timeout``.
BUSY_BUDGET_FACTOR = 4
#: First wait's upper bound, and the largest single wait (seconds).
BASE_DELAY = 0.5
MAX_DELAY = 15.0


class _Log(Protocol):
    def warning(self, msg: str, /, *args: object) -> object: ...


def backoff_delays(budget: float, *, rng: Callable[[], float] = random.random) -> list[float]:
    """Return the waits of one back-off: full jitter, exponential, together at most *budget* seconds.

    :param budget: the most seconds all waits may add up to (<= 0: no wait at all).
    :param rng: a source of floats in ``[0, 1)`` (tests pass a fixed one).
    """
    delays: list[float] = []
    total = 0.0
    attempt = 0
    while total < budget:
        ceiling = min(MAX_DELAY, BASE_DELAY * 2**attempt)
        # A floor of 5 % of the ceiling keeps the number of attempts bounded even with rng() == 0.
        delay = min(max(ceiling * rng(), ceiling * 0.05), budget - total)
        delays.append(delay)
        total += delay
        attempt += 1
    return delays


def connect_with_backoff(
    connect: Callable[[], T],
    *,
    budget: float,
    log: _Log,
    what: str = "the server",
    cancel: threading.Event | None = None,
    sleep: Callable[[float], object] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call *connect*; while it raises :class:`ServerBusyError`, wait and call it again.

    :param connect: opens one connection (a client factory); any other exception passes through at once.
    :param budget: the most seconds to spend waiting in total (``BUSY_BUDGET_FACTOR * conn_timeout``).
    :param log: where each wait is announced (a warning naming the reason, the wait and the attempt).
    :param what: names the server in the log.
    :param cancel: when set (the run failed elsewhere), stop waiting and raise the last busy error.
    :raises ServerBusyError: the server was still busy when the budget ran out.
    """
    waited = 0.0
    for attempt, delay in enumerate([*backoff_delays(budget, rng=rng), None], start=1):
        try:
            return connect()
        except ServerBusyError as exc:
            if delay is None or (cancel is not None and cancel.is_set()):
                raise ServerBusyError(
                    f"{exc} (still busy after {attempt} attempts and {waited:.1f} s of waiting)"
                ) from None
            log.warning(
                "%s is busy (%s); attempt %d, trying again in %.1f s (at most %.0f s of waiting in all)",
                what,
                exc,
                attempt,
                delay,
                budget,
            )
            if cancel is not None:
                if cancel.wait(delay):
                    raise ServerBusyError(f"{exc} (gave up waiting: the run was cancelled)") from None
            else:
                sleep(delay)
            waited += delay
    raise AssertionError("unreachable")  # pragma: no cover - the loop's last round returns or raises
