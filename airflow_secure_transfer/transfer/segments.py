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
    per segment, on whichever           stat, write_from(offset=its size), then copy-data into
    connection takes it                 .name.<id>.<n>seg.part (the assembly) at the segment's
                                        offset, server-side, after checking the segment's size;
                                        the copy overlaps the other connections' sending
    set_mtime, verify (size; checksum)  on the assembly, exactly as for one stream; the SHA-256
                                        is the whole file's, hashed in order by a local thread
                                        while the segments are sent
    rename(assembly, target)            the final name only ever holds the verified file
    remove the segments                 only now (one exchange): until the final name holds the
                                        verified file, the segments are the resume state

Why separate files and copy-data, not several writers into one partial: SFTP cannot tell
which ranges of a file hold data (a hole reads as zeros and the size says nothing), so a
retry of writers-at-offsets could only trust a record of its own progress. Separate
segment files keep the only evidence the engine trusts for a resume -- the size of a file
that one connection wrote in order -- at the price of one server-side copy of the file
(no network bytes, overlapped with the sending). A server without ``copy-data`` (OpenSSH
before 9.0, most commercial servers) gets the single stream, as before.

What a retry finds, and does:

* segment files: each resumes from its size (at most its length; a longer one is removed),
  and each is copied into the assembly again;
* the assembly: never trusted (copies land in any order, a hole reads as zeros): every
  segment is copied into it again, and the verify decides;
* the file's single-stream partial (``.name.<id>.part``, which segments never write): the
  single-stream resume goes on from its size, as before;
* nothing, and no connection to lend: one stream, as before.

A cut after the rename leaves segment files that a rerun (``overwrite="replace"``) turns into
the file again without sending them; ``skip_identical`` skips the file and leaves them. A retry
with another ``max_connections`` has another layout (the count is in the names): it starts the
segments again and leaves the earlier ones, as a changed source leaves its old partial.

A worker only splits a file when the server is far (a stat's round trip of at least
``SEGMENT_MIN_RTT``: nearer, one stream is not window-bound and a split only costs) and the
runner lends it connections (free worker slots, an empty queue: a run of many files does not
split), or when segment files from an earlier try exist. A lent connection that the server
refuses (a session limit, ``MaxStartups``) only means fewer connections for the segments;
any other error on it (a changed host key) fails the file. A failed segment stops the others
from starting new segments; what they have in flight finishes and stays for the retry.

Imports no Airflow.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from airflow_secure_transfer.exceptions import SecureTransferError, TransportError
from airflow_secure_transfer.transfer.base import RemoteFS
from airflow_secure_transfer.transfer.runner import Cancelled, Connection, Log, caused_by_cancel

__all__ = [
    "HEAD_START",
    "MAX_SEGMENTS",
    "MIN_SEGMENT",
    "SEGMENT_MIN_FILE",
    "SEGMENT_MIN_RTT",
    "Segment",
    "SegmentRun",
    "assembly_path",
    "layout",
    "run_segments",
    "segment_path",
]

logger = logging.getLogger(__name__)

#: Files of at least this size are split when connections can be lent (see BENCHMARKS.md, WAN).
SEGMENT_MIN_FILE: Final = 64 * 1024 * 1024
#: No segment is shorter than this (its open, resume stat and close cost round trips)...
MIN_SEGMENT: Final = 16 * 1024 * 1024
#: ...and there are at most this many (names and server-side copies stay few).
MAX_SEGMENTS: Final = 16
#: What the first connection sends while the others connect (ten round trips of OpenSSH's 2 MiB
#: window, measured: ~0.6 s at 50 ms, ~1.8 s at 150 ms): segment 1 is longer by this much.
HEAD_START: Final = 16 * 1024 * 1024
#: Only a server at least this far (one stat's round trip, the lower of two) gets a split: nearer, one
#: stream is not held back by the channel window (2 MiB / 20 ms = 105 MB/s, about what one stream's
#: client CPU gives here), and the extra connections and the server-side copy would only cost (on
#: loopback, 256 MiB: 1.82 s split vs 1.39 s one stream). A retry that finds segments resumes them anyway.
SEGMENT_MIN_RTT: Final = 0.020
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


def assembly_path(part: str, count: int) -> str:
    """The hidden file the *count* segments are copied into, verified, then renamed to the target."""
    return f"{part.removesuffix('.part')}.{count}seg.part"


def layout(size: int, max_connections: int, part: str) -> list[Segment]:
    """Split *size* bytes into segments for *part*; fewer than two means: do not split.

    Segment 1 goes first, on the connection that is already open, while the others still
    connect (about ten round trips, in which one stream sends about ``HEAD_START``): it is
    longer by that lead, the others share the rest equally (1 MiB aligned), so that all end
    together. The layout depends only on *size* and *max_connections* (and the constants), so
    that a retry of the same task finds the segment files a cut left.
    """
    count = min(max_connections, MAX_SEGMENTS, size // max(MIN_SEGMENT, 1))
    if count < 2:
        return []
    lead = min(HEAD_START, size // (2 * count))
    rest = -(-(size - lead) // count)
    rest = -(-rest // _ALIGN) * _ALIGN
    lengths = [min(size, rest + lead)]
    while sum(lengths) < size:
        lengths.append(min(rest, size - sum(lengths)))
    segments: list[Segment] = []
    start = 0
    for length in lengths:
        segments.append(
            Segment(len(segments), len(lengths), start, length, segment_path(part, len(segments), len(lengths)))
        )
        start += length
    return segments


@dataclass
class SegmentRun(Generic[T]):
    """What :func:`run_segments` returns: the results, and a wait for the lent connections' closing."""

    results: list[T]
    _closed: threading.Event

    def wait_closed(self) -> None:
        """Wait until every lent connection is closed and given back (they close while the caller goes on)."""
        while not self._closed.wait(1.0):
            pass


def run_segments(
    own: Connection,
    lent: Sequence[Connection],
    segments: Sequence[Segment],
    send: Callable[[RemoteFS, Segment], T],
    *,
    release: Callable[[Connection], None],
    cancel: threading.Event,
    log: Log,
) -> SegmentRun[T]:
    """Send every segment with *send*, over *own* (in this thread) and each *lent* connection (a thread each).

    Each connection takes the next segment until none is left or one failed. A lent connection
    that cannot open (``TransportError``) leaves its segments to the others. Each lent connection
    is handed to *release* by its thread once it has no segment left: its closing (a round trip
    or two) overlaps the caller's next steps; :meth:`SegmentRun.wait_closed` waits for all of them
    (done here already when this raises).

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

    remaining = [len(lent), len(lent)]  # still sending, not yet released
    all_done = threading.Event()
    all_closed = threading.Event()
    if not lent:
        all_done.set()
        all_closed.set()

    def helper(conn: Connection) -> None:
        try:
            loop(conn, True)
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    all_done.set()
            try:
                release(conn)
            finally:
                with lock:
                    remaining[1] -= 1
                    if remaining[1] == 0:
                        all_closed.set()

    for i, conn in enumerate(lent, 2):
        threading.Thread(target=helper, args=(conn,), name=f"segment-{i}", daemon=True).start()
    run: SegmentRun[T] = SegmentRun([], all_closed)
    try:
        loop(own, False)
        # Event.wait, not Thread.join (see Runner._parallel): interruptible without a stuck lock.
        while not all_done.wait(1.0):
            pass
    except BaseException:
        cancel.set()  # a task timeout, SIGTERM: the helpers stop at their next block
        all_done.wait()
        run.wait_closed()
        raise
    if errors or cancel.is_set() or len(results) != len(segments):
        run.wait_closed()
    if errors:
        first = next((e for e in errors if not (isinstance(e, SecureTransferError) and e.retryable)), errors[0])
        raise first
    if cancel.is_set() or len(results) != len(segments):
        if not cancel.is_set():  # pragma: no cover - every connection gave up without an error
            raise TransportError("no connection could send the remaining segments")
        raise Cancelled
    run.results = [results[s.index] for s in segments]
    return run
