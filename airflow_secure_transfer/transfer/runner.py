"""The run shared by both directions: workers, connection reuse, failure policy, progress and summary.

A *step* (:mod:`~airflow_secure_transfer.transfer.engine` for uploads,
:mod:`~airflow_secure_transfer.transfer.download` for downloads) moves one planned
item over one connection; the :class:`Runner` decides which connection, how many
at once, and what a failure means for the rest:

* The first connection is opened before any worker starts (and may wait for a busy
  server, see :mod:`~airflow_secure_transfer.transfer.backoff`), so a wrong password
  or host key fails once, fast, with one clear error. The step's ``prepare`` then
  turns the plan into items on that connection (an upload learns the login
  directory; a download lists the remote tree).
* Up to ``max_connections`` worker threads, each owning one connection for many
  items; the extra connections do not wait for a busy server: a worker that cannot
  connect gives its item back to the others.
* A retryable error fails that item and the others carry on (the run raises at the
  end); a non-retryable one (or a full disk) cancels the run: the other workers stop
  at their next block and every connection is closed.
* A step may return a *pending* item instead of a record (a small file to send in a
  batch); the runner collects them per worker and hands them to ``flush``.
* A step may borrow connections for one item (:meth:`Runner.lend`: a large file's
  segments, see :mod:`~airflow_secure_transfer.transfer.segments`) from the worker slots
  that are free: within ``max_connections`` counting the workers still running, and
  only once the queue is empty (a run of many files keeps its connections for its files).

Imports no Airflow.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from airflow_secure_transfer.exceptions import (
    LocalStorageFullError,
    RemoteStorageFullError,
    SecureTransferError,
    TransportError,
)
from airflow_secure_transfer.transfer.backoff import connect_with_backoff
from airflow_secure_transfer.transfer.base import RemoteFS, TransferRecord

__all__ = [
    "Cancelled",
    "Connection",
    "Lender",
    "Log",
    "Progress",
    "RunContext",
    "Runner",
    "Step",
    "caused_by_cancel",
    "fmt_bytes",
    "raise_run_errors",
    "safe_remove",
    "summary_table",
]

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
PendingT = TypeVar("PendingT")


class Log(Protocol):
    """What the engine needs from a logger (a stdlib ``Logger`` or Airflow's task logger)."""

    def debug(self, msg: str, /, *args: Any) -> Any: ...
    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


# --------------------------------------------------------------------------- progress


def fmt_bytes(n: float) -> str:
    """Format a byte count for people (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
    """Thread-safe progress counter that logs at least every *interval* seconds and every 10 %.

    :param files_total: number of files in the plan.
    :param bytes_total: their total size.
    :param log: where messages go (the operator passes its task logger).
    :param interval: the longest time between two messages while bytes move.
    :param clock: monotonic seconds (injectable for tests).
    :param direction: ``"upload"`` or ``"download"``, the first word of each message.
    """

    def __init__(
        self,
        files_total: int,
        bytes_total: int,
        log: Log,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        direction: str = "upload",
    ) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.files_done = 0
        #: Bytes accounted for: moved, plus resumed-over and skipped (for % and ETA).
        self.bytes_done = 0
        #: Bytes actually moved in this run (for the rate).
        self.bytes_sent = 0
        self.direction = direction
        self._log = log
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last_log = self._start
        self._last_step = 0
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def sent(self, n: int) -> None:
        """Count *n* bytes moved."""
        with self._lock:
            self.bytes_sent += n
            self.bytes_done += n
            self._maybe_log()

    def accounted(self, n: int) -> None:
        """Count *n* bytes that need no moving (resumed-over or skipped)."""
        with self._lock:
            self.bytes_done += n
            self._maybe_log()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            self._maybe_log()

    def tick(self) -> None:
        """Log if the interval has passed (called periodically by the coordinating thread)."""
        with self._lock:
            self._maybe_log()

    def _step(self) -> int:
        if self.bytes_total <= 0:
            return 10 * self.files_done // max(self.files_total, 1)
        return min(10, 10 * self.bytes_done // self.bytes_total)

    def _maybe_log(self) -> None:
        now = self._clock()
        step = self._step()
        if step <= self._last_step and now - self._last_log < self._interval:
            return
        if step >= 10 and self._last_step >= 10:
            return  # 100 % was logged; the summary follows
        self._last_step = max(step, self._last_step)
        self._last_log = now
        self._log.info("%s", self.message(now))

    def message(self, now: float | None = None) -> str:
        """Return the progress line: files, bytes, percentage, rate and ETA."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.bytes_sent / elapsed
        pct = (
            100.0 * self.bytes_done / self.bytes_total
            if self.bytes_total
            else 100.0 * self.files_done / max(self.files_total, 1)
        )
        remaining = max(self.bytes_total - self.bytes_done, 0)
        eta = _fmt_seconds(remaining / rate) if rate > 0 else "unknown"
        return (
            f"{self.direction} progress: {self.files_done}/{self.files_total} files, "
            f"{fmt_bytes(self.bytes_done)} of {fmt_bytes(self.bytes_total)} ({math.floor(pct)}%), "
            f"{rate / 1e6:.1f} MB/s, ETA {eta}"
        )


def summary_table(
    records: Sequence[TransferRecord], seconds: float, failed: int = 0, *, direction: str = "upload"
) -> str:
    """Return the end-of-run table: files, bytes, seconds, MB/s, resumed, skipped (and failed)."""
    moved = sum(r.bytes for r in records)
    rate = moved / seconds / 1e6 if seconds > 0 else 0.0
    head = ["files", "bytes sent" if direction == "upload" else "bytes received", "seconds", "MB/s"]
    head += ["resumed", "skipped"]
    row = [
        str(len(records)),
        str(moved),
        f"{seconds:.2f}",
        f"{rate:.1f}",
        str(sum(r.resumed for r in records)),
        str(sum(r.skipped for r in records)),
    ]
    if failed:
        head.append("failed")
        row.append(str(failed))
    widths = [max(len(h), len(v)) for h, v in zip(head, row, strict=True)]
    line = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))
    values = "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))
    return f"{direction} summary:\n{line}\n{values}"


# --------------------------------------------------------------------------- cancellation, connections


class Cancelled(Exception):
    """Raised from a reader or writer when the run is being stopped."""


def caused_by_cancel(exc: BaseException) -> bool:
    """Whether *exc* is (or wraps) the run's cancellation: a transport may translate it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Cancelled):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class Connection:
    """One worker's connection, opened lazily, and facts it learned about the server."""

    def __init__(self, factory: Callable[[], RemoteFS], fs: RemoteFS | None = None) -> None:
        self._factory = factory
        self.fs = fs
        #: The algorithm the server's checksum uses, learned from the first answer.
        self.checksum_algorithm: str | None = None
        #: An exec'd checksum command (``sha256sum`` over SSH) disagreed with a read-back: not used again.
        self.exec_distrusted = False

    def get(self) -> RemoteFS:
        if self.fs is None:
            self.fs = self._factory()
        return self.fs

    def drop(self) -> None:
        fs, self.fs = self.fs, None
        if fs is not None:
            try:
                fs.close()
            except Exception:  # closing a broken connection must not hide the error that broke it
                logger.debug("error while closing a connection", exc_info=True)


def safe_remove(fs: RemoteFS, path: str) -> None:
    """Remove remote *path*, best effort (the error that made us clean up is the one to report)."""
    try:
        fs.remove(path)
    except Exception:
        logger.debug("could not remove %s", path, exc_info=True)


class Lender(Protocol):
    """Extra connections for one item, from the run's free worker slots (see :meth:`Runner.lend`)."""

    def lend(self, wanted: int) -> list[Connection]: ...
    def give_back(self, conns: Sequence[Connection]) -> None: ...


@dataclass(kw_only=True)
class RunContext:
    """State shared by the workers of one run (a step adds its own fields)."""

    progress: Progress
    log: Log
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Seconds a connection that the run cannot do without may wait in all for a busy server.
    busy_wait: float = 0.0
    #: Lends connections from free worker slots (set by the :class:`Runner` that runs the step).
    lender: Lender | None = None
    _said: set[str] = field(default_factory=set)

    def say_once(self, key: str, level: str, message: str, *args: object) -> None:
        """Log *message* the first time *key* comes up in this run (reasons, methods)."""
        with self.lock:
            if key in self._said:
                return
            self._said.add(key)
        getattr(self.log, level)(message, *args)


# --------------------------------------------------------------------------- the run


class Step(Protocol[ItemT, PendingT]):
    """One direction's work on one item, as the :class:`Runner` drives it."""

    def prepare(self, first: Connection) -> Sequence[ItemT]:
        """Return the items to move, in queue order, using the first (open) connection."""

    def run(self, item: ItemT, conn: Connection, *, batch: bool) -> TransferRecord | PendingT:
        """Move *item* over *conn*; with *batch*, a small item may come back as a pending one."""

    def batching(self, conn: Connection) -> bool:
        """Whether items on *conn* may be batched."""

    def flush(self, conn: Connection, batch: Sequence[PendingT]) -> list[TransferRecord | BaseException]:
        """Complete *batch* in one exchange; per item a record or its error (raise: the whole batch failed)."""

    def item_of(self, pending: PendingT) -> ItemT:
        """The item a pending one stands for."""

    def batch_full(self, batch: Sequence[PendingT], conn: Connection, share: int) -> bool:
        """Whether *batch* should be flushed now (*share*: this worker's share of the items left)."""

    def name(self, item: ItemT) -> tuple[str, str]:
        """``(source, target)`` of *item*, for messages."""


def _name_the_item(exc: BaseException, names: tuple[str, str], verb: str) -> None:
    """Make sure a per-file error's message says which file (transports may name only the server)."""
    if not isinstance(exc, SecureTransferError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return
    message = exc.args[0]
    source, target = names
    if source in message or target in message:
        return
    # Same exception object (class, retryable flag, path, cause, traceback): only its text grows.
    exc.args = (f"{message} ({verb} {source} to {target})",)


class Runner(Generic[ItemT, PendingT]):
    """Workers pulling items from one queue, one connection each (see the module docstring).

    :param step: the direction's work.
    :param connect: opens a new connected client.
    :param context: the run's shared state (cancel flag, progress, log).
    :param max_workers: most connections at once (the item count lowers it).
    :param verb: ``"uploading"``/``"downloading"``, for error messages.
    """

    def __init__(
        self,
        step: Step[ItemT, PendingT],
        connect: Callable[[], RemoteFS],
        context: RunContext,
        max_workers: int,
        *,
        verb: str = "uploading",
    ) -> None:
        self.step = step
        self.connect = connect
        self.context = context
        self.max_workers = max_workers
        self.verb = verb
        self.queue: queue.SimpleQueue[ItemT] = queue.SimpleQueue()
        self.items: Sequence[ItemT] = ()
        self.records: list[TransferRecord] = []
        self.errors: list[tuple[ItemT | None, BaseException]] = []
        self.connected = 0
        #: Worker threads of this run (known once the step prepared its items).
        self.workers = 1
        #: Workers still running, and connections lent to one of them (see ``lend``).
        self.active = 0
        self.lent = 0
        self._lock = threading.Lock()
        context.lender = self

    def _fail(self, item: ItemT | None, exc: BaseException, *, name: bool = True) -> None:
        if item is not None and name:
            _name_the_item(exc, self.step.name(item), self.verb)
        with self._lock:
            self.errors.append((item, exc))
        retryable = isinstance(exc, SecureTransferError) and exc.retryable
        if not retryable or isinstance(exc, (RemoteStorageFullError, LocalStorageFullError)):
            # A full disk: the other files would fill it too (and their partials hold the space).
            self.context.cancel.set()

    def _release(self, conn: Connection) -> None:
        """Close *conn* (if open) and stop counting it."""
        if conn.fs is not None:
            conn.drop()
            with self._lock:
                self.connected -= 1

    def worker(self, conn: Connection, *, may_requeue: bool = False) -> None:
        """Move items from the queue over *conn* until it is empty or the run is cancelled.

        :param may_requeue: when this worker cannot connect (a transport error, e.g. the
            server's per-user session limit), give the item back to the others instead of failing.
        """
        batch: list[PendingT] = []
        step = self.step
        with self._lock:
            self.active += 1
        try:
            while not self.context.cancel.is_set():
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if conn.fs is None and not self._connect(conn, [item], may_requeue):
                    self._requeue(batch)
                    return
                try:
                    outcome = step.run(item, conn, batch=step.batching(conn))
                except Cancelled:
                    return  # the connection is mid-transfer: closed below, never reused
                except Exception as exc:
                    if caused_by_cancel(exc):
                        return
                    if isinstance(exc, TransportError):
                        self._release(conn)  # the session is broken; reconnect for the next file
                    if batch:
                        # Items taken before this one are completed before its error can stop the run.
                        self._flush(conn, batch, may_requeue)
                        batch = []
                    self._fail(item, exc)
                    continue
                if not isinstance(outcome, TransferRecord):
                    batch.append(outcome)
                    # This worker's share of what is left (a client that sends a batch serially wants it).
                    share = max(1, -(-(self.queue.qsize() + len(batch)) // self.workers))
                    if step.batch_full(batch, conn, share):
                        self._flush(conn, batch, may_requeue)
                        batch = []
                    continue
                self._done(outcome)
            if batch and not self.context.cancel.is_set():
                self._flush(conn, batch, may_requeue)
        finally:
            self._release(conn)
            with self._lock:
                self.active -= 1

    def lend(self, wanted: int) -> list[Connection]:
        """Return up to *wanted* unopened connections for the calling worker's current item.

        Only slots no worker uses count (``max_workers`` minus the running workers and what is
        lent already), and only when the queue is empty: a run of many files keeps its
        connections for its files. A lent connection opens without waiting for a busy server
        (its ``get`` raises ``TransportError``: the borrower does with fewer); give every one
        back with :meth:`give_back`.
        """
        with self._lock:
            if not self.queue.empty() or self.context.cancel.is_set():
                return []
            n = max(0, min(wanted, self.max_workers - self.active - self.lent))
            self.lent += n

        def factory() -> RemoteFS:
            fs = self.connect()
            with self._lock:
                self.connected += 1
            return fs

        return [Connection(factory) for _ in range(n)]

    def give_back(self, conns: Sequence[Connection]) -> None:
        """Close connections from :meth:`lend` and free their slots."""
        for conn in conns:
            self._release(conn)
        with self._lock:
            self.lent -= len(conns)

    def _connect(self, conn: Connection, items: list[ItemT], may_requeue: bool) -> bool:
        """Open *conn* for *items*; on failure requeue them (see ``worker``) or fail them and the run."""
        try:
            conn.get()
        except Exception as exc:
            if isinstance(exc, TransportError) and may_requeue:
                # The server takes fewer connections than asked: carry on with the others
                # (execute() drains the queue if they finished before these items went back).
                self.context.log.warning("could not open another connection (%s); continuing", exc)
                for item in items:
                    self.queue.put(item)
                return False
            for item in items:
                self._fail(item, exc, name=False)
            self.context.cancel.set()  # no connection left to carry on with
            return False
        with self._lock:
            self.connected += 1
        return True

    def _requeue(self, batch: list[PendingT]) -> None:
        for p in batch:
            self.queue.put(self.step.item_of(p))

    def _flush(self, conn: Connection, batch: list[PendingT], may_requeue: bool) -> None:
        """Complete a worker's batch of small items with one ``flush`` call."""
        items = [self.step.item_of(p) for p in batch]
        if conn.fs is None and not self._connect(conn, items, may_requeue):
            return
        try:
            answers = self.step.flush(conn, batch)
        except Exception as exc:  # the whole batch: a timeout, a lost connection
            if caused_by_cancel(exc):
                return
            if isinstance(exc, TransportError):
                self._release(conn)
            for item in items:
                self._fail(item, exc, name=False)
            return
        broken = False
        for item, answer in zip(items, answers, strict=True):
            if isinstance(answer, TransferRecord):
                self._done(answer)
                continue
            broken = broken or isinstance(answer, TransportError)
            self._fail(item, answer)
        if broken:
            self._release(conn)  # the session is broken; reconnect for the next file

    def _done(self, record: TransferRecord) -> None:
        with self._lock:
            self.records.append(record)
        self.context.progress.file_done()
        self.context.log.debug(
            "%s %s -> %s (%d bytes%s)",
            "skipped" if record.skipped else self.verb.replace("ing", "ed"),
            record.local_path,
            record.remote_path,
            record.bytes,
            ", resumed" if record.resumed else "",
        )

    def _patient_connect(self) -> RemoteFS:
        """Open a connection the run cannot do without: wait for a busy server (bounded), see ``backoff``."""
        return connect_with_backoff(
            self.connect, budget=self.context.busy_wait, log=self.context.log, cancel=self.context.cancel
        )

    def execute(self) -> None:
        """Open the first connection, let the step plan on it, then run the workers to the end."""
        # The first connection, and the one that finishes items given back by others, wait for a
        # busy server; the extra parallel ones do not (their items go to the connections that exist).
        first = Connection(self._patient_connect)
        try:
            first.get()
            self.items = self.step.prepare(first)
        except BaseException:
            first.drop()
            raise
        self.connected = 1
        for item in self.items:
            self.queue.put(item)
        workers = self.workers = max(1, min(self.max_workers, len(self.items)))
        if workers <= 1:
            self.worker(first)
        else:
            self._parallel(first, workers)
        if not self.context.cancel.is_set() and not self.queue.empty():
            # A worker that could not connect put its item back after the others had finished:
            # one more connection, and this time a failure to connect is the run's error.
            self.worker(Connection(self._patient_connect))

    def _parallel(self, first: Connection, workers: int) -> None:
        conns = [first] + [Connection(self.connect) for _ in range(workers - 1)]
        remaining = [len(conns)]
        all_done = threading.Event()

        def run_worker(conn: Connection, may_requeue: bool) -> None:
            try:
                self.worker(conn, may_requeue=may_requeue)
            finally:
                with self._lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        name = self.verb.removesuffix("ing") or "transfer"
        try:
            for i, conn in enumerate(conns, 1):
                threading.Thread(target=run_worker, args=(conn, i > 1), name=f"{name}-{i}", daemon=True).start()
            # Event.wait, not Thread.join: an exception raised in this thread while it waits (a task
            # timeout, SIGTERM, Ctrl-C) can leave Thread.join's internal lock held, hanging the cleanup.
            while not all_done.wait(1.0):
                self.context.progress.tick()
        except BaseException:
            # KeyboardInterrupt, a task timeout, SIGTERM: stop the workers, wait until each closed its connection.
            self.context.cancel.set()
            all_done.wait()
            raise


def raise_run_errors(runner: Runner[Any, Any], total: int, log: Log, describe: Callable[[Any], str], what: str) -> None:
    """Log every failed item and raise the run's error: the first non-retryable one, else the first.

    :param describe: names an item in the log (``None`` items are connection failures).
    :param what: ``"uploaded"``/``"downloaded"``, for the "only N of M" message.
    """
    if runner.errors:
        for item, exc in runner.errors:
            log.error("failed: %s: %s", describe(item) if item is not None else "(connect)", exc)
        first = next(
            (e for _, e in runner.errors if not (isinstance(e, SecureTransferError) and e.retryable)),
            runner.errors[0][1],
        )
        if len(runner.errors) > 1:
            first.add_note(f"{len(runner.errors)} of {total} files failed; see the log for each")
        raise first
    if len(runner.records) != total:  # pragma: no cover - a worker stopped without an error
        raise TransportError(f"only {len(runner.records)} of {total} files were {what}")
