"""SQLite's worker thread: takes every call queued since it last looked as one batch, and
wakes each waiting event loop once per batch.

A batch lets the executor commit the writes that queued together in one transaction
(group commit): with WAL, each COMMIT writes every page it touched to the log again, which
costs more than the inserts themselves. One wake-up per batch saves the event loop a
self-pipe round per call. Jobs are settled on this thread and delivered on their loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: At most this many queued calls in one batch (so one transaction), to bound how long the
#: first of them waits for the last.
MAX_BATCH = 64


class JobKind(enum.Enum):
    """What a call does to the database, which decides how the executor may batch it."""

    #: Reads only, outside any transaction.
    READ = "read"
    #: One statement that commits by itself when run alone.
    STATEMENT = "statement"
    #: Several statements that must commit together (`steps`).
    TRANSACTION = "transaction"
    #: Fold the write-ahead log into the database file (outside any transaction).
    CHECKPOINT = "checkpoint"
    #: Close the connection (the executor's last job).
    CLOSE = "close"


@dataclass(slots=True, eq=False)
class Job:
    """One call: `work` runs statements on the connection, with no BEGIN or COMMIT of its own.

    `statement[-1]` is the SQL running, for error messages. The worker calls `succeed` or
    `fail`; the job's loop then settles `future` with the outcome.
    """

    kind: JobKind
    work: Callable[[Any], Any]
    statement: list[str]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    settled: bool = field(default=False)

    def succeed(self, result: Any) -> None:
        self.result, self.error, self.settled = result, None, True

    def fail(self, error: BaseException) -> None:
        self.result, self.error, self.settled = None, error, True

    @property
    def writes(self) -> bool:
        return self.kind in (JobKind.STATEMENT, JobKind.TRANSACTION)

    @property
    def abandoned(self) -> bool:
        """The caller's future was cancelled before the job ran (a loop shutting down)."""
        return self.future.cancelled()


class WorkerThread:
    """One thread serving queued jobs in batches, through `handle(batch)` (which must call
    each job's `succeed` or `fail`), started on the first job."""

    def __init__(self, handle: Callable[[list[Job]], None], name: str) -> None:
        self._handle = handle
        self._name = name
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._unfinished = 0  # jobs queued or in the batch running

    @property
    def idle(self) -> bool:
        """No job queued and none running: everything submitted so far is settled."""
        return self._unfinished == 0

    def submit(self, job: Job) -> None:
        with self._ready:
            if self._stopping:
                raise RuntimeError("the SQLite worker thread has stopped")
            if self._thread is None:
                # A daemon, so a provider never closed does not keep the process alive; at
                # exit, `stop` (registered with atexit) still serves what is queued first.
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(self.stop)
            self._jobs.append(job)
            self._unfinished += 1
            self._ready.notify()

    def stop(self) -> None:
        """Serve what is queued, then end the thread (waits for it)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            atexit.unregister(self.stop)
            if thread is not threading.current_thread():
                thread.join()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._stopping:
                    self._ready.wait()
                if not self._jobs:
                    return
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), MAX_BATCH))]
            try:
                self._handle(batch)
            except BaseException as error:  # pragma: no cover - `handle` settles every job
                # Whatever `handle` did is in doubt: no job may be told it succeeded.
                for job in batch:
                    job.fail(error)
            with self._ready:
                self._unfinished -= len(batch)
            with contextlib.suppress(BaseException):  # the thread must outlive any one batch
                _deliver(batch)


def _deliver(batch: list[Job]) -> None:
    """Hand each job's outcome to its loop: one wake-up per loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in batch:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, jobs in by_loop.items():
        # A loop closed meanwhile has no one left waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[Job]) -> None:
    # Runs on the jobs' loop.
    for job in jobs:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
        # The job may outlive this call in a traceback: drop what it holds.
        job.error = None
        job.result = None
