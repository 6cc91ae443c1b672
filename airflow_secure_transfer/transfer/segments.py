"""One large SFTP upload split into segments sent over several connections at once (issue #15).

Why: one SSH channel moves at most its window per round trip (OpenSSH's sshd: 2 MiB), so
one large file over a long link is capped at about ``2 MiB / RTT`` (40 MiB/s at 50 ms,
13 MiB/s at 150 ms) whatever the bandwidth. Several connections each carry their own window.

How (the engine's ``_FileUpload`` drives it; this module holds the layout and the threads)::

    layout(size, max_connections)       n = min(max_connections, 16, size // 16 MiB) segments of
                                        equal length (1 MiB aligned), fixed by size and
                                        max_connections only: a retry finds the same names
    .name.<id>.seg<i>of<n>.part         each segment is its own hidden partial, written by one
                                        connection in order, so its size on the server proves
                                        its prefix (the same evidence as a whole-file resume)
    stat + write_from(offset=size)      per segment, on whichever connection takes it
                                        (the worker's own, plus the ones the runner can lend)
    assemble(.name.<id>.part, parts)    server-side copy-data of every segment to its offset
                                        (each segment's size checked first); no byte crosses
                                        the network again
    set_mtime, verify (size; checksum)  on the assembled partial, exactly as for one stream;
                                        the SHA-256 is the whole file's, hashed in order by a
                                        local thread while the segments are sent
    remove seg<n>..seg2, then seg1      only after the verify, seg1 last (see below)
    rename(part, target)                the final name only ever holds the verified file

Why separate files and copy-data, not several writers into one partial: SFTP cannot tell
which ranges of a file hold data (a hole reads as zeros and the size says nothing), so a
retry of writers-at-offsets could only trust a record of its own progress. Separate
segment files keep the only evidence the engine trusts for a resume -- the size of a file
that one connection wrote in order -- at the price of one server-side copy of the file
(no network bytes; ~0.2 s for 256 MiB on the test machine). A server without ``copy-data``
(OpenSSH before 9.0, most commercial servers) gets the single stream, as before.

What a retry finds, and does:

* segment files: each resumes from its size (at most its length; a longer one is removed);
* the assembled partial *and* segment 1: an assembly that did not finish (copies may land in
  any order, so its size proves nothing): it is assembled again from the segments;
* the assembled partial without segment 1: segment 1 is removed last, after the verify, so
  the partial was verified; or a single-stream upload left it: either way the ordinary
  single-stream resume goes on from its size (and verifies again);
* neither, and no connection to lend: one stream, as before.

A worker only splits a file when the runner lends it connections (free worker slots, an
empty queue: a run of many files does not split), or when segment files from an earlier
try exist. A lent connection that the server refuses (a session limit, ``MaxStartups``)
only means fewer connections for the segments; any other error on it (a changed host key)
fails the file. A failed segment stops the others from starting new segments; what they
have in flight finishes and stays for the retry.

Imports no Airflow.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from airflow_secure_transfer.exceptions import SecureTransferError, TransportError
from airflow_secure_transfer.transfer.base import RemoteFS
from airflow_secure_transfer.transfer.runner import Cancelled, Connection, Log, caused_by_cancel

__all__ = ["MAX_SEGMENTS", "MIN_SEGMENT", "SEGMENT_MIN_FILE", "Segment", "layout", "run_segments", "segment_path"]

logger = logging.getLogger(__name__)

#: Files of at least this size are split when connections can be lent (see BENCHMARKS.md, WAN).
SEGMENT_MIN_FILE: Final = 64 * 1024 * 1024
#: No segment is shorter than this (its open, resume stat and close cost round trips)...
MIN_SEGMENT: Final = 16 * 1024 * 1024
#: ...and there are at most this many (names and server-side copies stay few).
MAX_SEGMENTS: Final = 16
_ALIGN: Final = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes ``[start, start + length)`` of the file, sent to their own hidden partial *path*."""

    index: int
    count: int
    start: int
    length: int
    path: str


def segment_path(part: str, index: int, count: int) -> str:
    """The hidden partial of segment *index* (0-based) of *count*, beside the file's partial *part*."""
    stem = part.removesuffix(".part")
    return f"{stem}.seg{index + 1}of{count}.part"


def layout(size: int, max_connections: int, part: str) -> list[Segment]:
    """Split *size* bytes into segments for *part*; fewer than two means: do not split.

    The layout depends only on *size* and *max_connections* (and the constants), so that a
    retry of the same task finds the segment files a cut left.
    """
    count = min(max_connections, MAX_SEGMENTS, size // max(MIN_SEGMENT, 1))
    if count < 2:
        return []
    length = -(-size // count)
    length = -(-length // _ALIGN) * _ALIGN
    segments: list[Segment] = []
    start = 0
    while start < size:
        n = min(length, size - start)
        segments.append(Segment(len(segments), 0, start, n, ""))
        start += n
    count = len(segments)
    return [Segment(s.index, count, s.start, s.length, segment_path(part, s.index, count)) for s in segments]


def run_segments(
    own: Connection,
    lent: Sequence[Connection],
    segments: Sequence[Segment],
    send: Callable[[RemoteFS, Segment], T],
    *,
    cancel: threading.Event,
    log: Log,
) -> list[T]:
    """Send every segment with *send*, over *own* (in this thread) and each *lent* connection (a thread each).

    Each connection takes the next segment until none is left or one failed. A lent connection
    that cannot open (``TransportError``) leaves its segments to the others.

    :returns: *send*'s results in segment order.
    :raises: the first error of a segment (a non-retryable one first); ``Cancelled`` when the run
        is cancelled.
    """
    todo: queue.SimpleQueue[Segment] = queue.SimpleQueue()
    for s in segments:
        todo.put(s)
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop(conn: Connection, lent_one: bool) -> None:
        if lent_one:
            try:
                conn.get()
            except TransportError as exc:
                log.warning("could not open another connection for a segment (%s); continuing with fewer", exc)
                return
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stop.set()
                return
        while not stop.is_set() and not cancel.is_set():
            try:
                segment = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = send(conn.get(), segment)
            except BaseException as exc:
                if not caused_by_cancel(exc):
                    with lock:
                        errors.append(exc)
                stop.set()
                return
            with lock:
                results[segment.index] = result

    remaining = [len(lent)]
    all_done = threading.Event()
    if not lent:
        all_done.set()

    def helper(conn: Connection) -> None:
        try:
            loop(conn, True)
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    all_done.set()

    for i, conn in enumerate(lent, 2):
        threading.Thread(target=helper, args=(conn,), name=f"segment-{i}", daemon=True).start()
    try:
        loop(own, False)
        # Event.wait, not Thread.join (see Runner._parallel): interruptible without a stuck lock.
        while not all_done.wait(1.0):
            pass
    except BaseException:
        cancel.set()  # a task timeout, SIGTERM: the helpers stop at their next block
        all_done.wait()
        raise
    if errors:
        first = next((e for e in errors if not (isinstance(e, SecureTransferError) and e.retryable)), errors[0])
        raise first
    if cancel.is_set() or len(results) != len(segments):
        if not cancel.is_set() and not errors:  # pragma: no cover - every connection gave up without an error
            raise TransportError("no connection could send the remaining segments")
        raise Cancelled
    return [results[s.index] for s in segments]
