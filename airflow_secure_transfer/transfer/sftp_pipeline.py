"""The SFTP data pipelines: a private event-loop thread, and the pipelined upload and download pumps.

Up to ``max_requests`` WRITE (upload) or READ (download) requests are in flight on the loop while the
calling thread reads the next block from its source or writes the answers, in offset order, to its sink.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh

if TYPE_CHECKING:
    pass


T = TypeVar("T")


class _LoopThread:
    """A private asyncio event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


class _UploadTimeout(Exception):
    pass


class _UploadError(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Uploader:
    """Hands blocks read by the calling thread to the event loop, which keeps WRITEs in flight.

    The calling thread appends to a short read-ahead queue and sleeps only when it is full;
    the loop takes blocks from it as answers free request slots. In steady state neither
    side wakes the other for each block (a cross-thread wake-up costs more than the
    bookkeeping of a 255 KiB write): the loop is kicked only when it ran dry, the caller
    is woken only when the queue has drained to half.
    """

    def __init__(self, remote: asyncssh.SFTPClientFile, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._remote = remote
        self._loop = loop
        self._limit = limit
        self._readahead = max(2, min(16, limit))
        self._cond = threading.Condition()
        self._ready: deque[tuple[int, bytes]] = deque()
        self._in_flight = 0
        self._answers = 0  # WRITE answers so far (progress, for the timeout)
        self._done_bytes = 0
        self._error: BaseException | None = None
        self._loop_idle = True  # the loop waits for data: the next put must kick it
        self._caller_waiting = False
        self._aborted = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- calling thread

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait (holding the condition) until *predicate*; the timeout restarts at every answer."""
        deadline = time.monotonic() + timeout
        seen = self._answers
        while not predicate():
            if self._error is not None:
                raise _UploadError(self._error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _UploadTimeout()
            self._caller_waiting = True
            try:
                self._cond.wait(remaining)
            finally:
                self._caller_waiting = False
            if self._answers != seen:
                seen = self._answers
                deadline = time.monotonic() + timeout
        if self._error is not None:
            raise _UploadError(self._error)

    def put(self, pos: int, data: bytes, timeout: float) -> None:
        with self._cond:
            self._wait(lambda: len(self._ready) < self._readahead, timeout)
            self._ready.append((pos, data))
            kick = self._loop_idle
            self._loop_idle = False
        if kick:
            self._loop.call_soon_threadsafe(self._pump)

    def finish(self, timeout: float) -> None:
        with self._cond:
            self._wait(lambda: not self._ready and self._in_flight == 0, timeout)

    def take_done(self) -> int:
        with self._cond:
            amount, self._done_bytes = self._done_bytes, 0
            return amount

    def abort(self) -> None:
        """Stop sending; cancel what is in flight (the caller closes the handle next)."""
        with self._cond:
            self._aborted = True
            self._ready.clear()

        def cancel() -> None:
            for task in list(self._tasks):
                task.cancel()

        with contextlib.suppress(RuntimeError):  # loop closed
            self._loop.call_soon_threadsafe(cancel)

    # -- event loop

    def _pump(self) -> None:
        started: list[tuple[int, bytes]] = []
        with self._cond:
            while self._ready and self._in_flight < self._limit and self._error is None and not self._aborted:
                started.append(self._ready.popleft())
                self._in_flight += 1
            if not self._ready:
                self._loop_idle = True
            wake = self._caller_waiting and len(self._ready) <= self._readahead // 2
            if wake:
                self._cond.notify_all()
        for pos, data in started:
            task = self._loop.create_task(self._remote.write(data, pos))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, nbytes=len(data)))

    def _done(self, task: asyncio.Task[Any], nbytes: int) -> None:
        self._tasks.discard(task)
        error = asyncssh.SFTPConnectionLost("write cancelled") if task.cancelled() else task.exception()
        with self._cond:
            self._in_flight -= 1
            self._answers += 1
            if error is None:
                self._done_bytes += nbytes
            elif self._error is None:
                self._error = error
            if self._error is not None or (not self._ready and self._in_flight == 0):
                self._cond.notify_all()
        if error is None:
            self._pump()


class _Downloader:
    """Keeps up to *limit* READ chains in flight; posts answers to a thread-safe queue.

    Runs on the event loop. A chain is one READ plus, after a short answer, READs for the
    rest of its range; it holds one slot until the consumer has written its last piece
    (``release`` is then called on the loop), so at most *limit* blocks are buffered and a
    short read never waits for a slot (no deadlock with the in-order consumer).

    Queue items: ``("data", offset, bytes, last_piece_of_chain)``, ``("eof", offset, None, False)``,
    ``("error", offset, exception, False)``.
    """

    def __init__(
        self,
        remote: asyncssh.SFTPClientFile,
        block: int,
        limit: int,
        offset: int,
        size: int,
        results: queue.SimpleQueue[tuple[str, int, Any, bool]],
    ) -> None:
        self._remote = remote
        self._block = block
        self._limit = limit
        self._next = offset
        self._size = size
        self._results = results
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._eof = False
        self._cancelled = False
        self._main: asyncio.Task[Any] | None = None

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def cancel(self) -> None:
        self._cancelled = True
        for task in list(self._tasks):
            task.cancel()
        if self._main is not None:
            self._main.cancel()

    async def _chain(self, pos: int, length: int) -> None:
        try:
            while True:
                data = await self._remote.read(length, pos)
                if not data:
                    self._eof = True
                    self._results.put(("eof", pos, None, False))
                    self.release()
                    return
                if len(data) < length:  # short answer: ask for the rest within this chain
                    self._results.put(("data", pos, data, False))
                    pos += len(data)
                    length -= len(data)
                    continue
                self._results.put(("data", pos, data, True))
                return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._results.put(("error", pos, exc, False))

    def _spawn(self, pos: int, length: int) -> None:
        task = asyncio.get_running_loop().create_task(self._chain(pos, length))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        self._main = asyncio.current_task()
        slots = self._slots = asyncio.Semaphore(self._limit)
        try:
            # Planned reads up to the size seen at open; past it one probe at a time until
            # EOF (the file may have grown). A read at or past the end answers EOF.
            while not self._eof and not self._cancelled:
                await slots.acquire()
                if self._eof or self._cancelled:
                    break
                if self._next < self._size:
                    length = min(self._block, self._size - self._next)
                elif self._tasks:
                    slots.release()
                    await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                    continue
                else:
                    length = self._block
                self._spawn(self._next, length)
                self._next += length
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in list(self._tasks):
                task.cancel()
            raise
