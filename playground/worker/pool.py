"""Run jobs in warm, reused worker processes, never in the caller's process.

A user's schedule can hang the compiler, eat all memory or segfault (see the "Isolation" notes),
so the server only ever sends *text* to a child process (:mod:`playground.worker.main`) and gets
JSON back. A :class:`~playground.worker.process.Worker` owns one child; a :class:`WorkerPool`
hands jobs to ``size`` workers from many threads (one Streamlit server, many sessions) and
returns a :class:`~playground.worker.result.JobResult` for every outcome instead of raising::

    pool = WorkerPool(size=2)
    result = pool.run("ping", {}, timeout_s=10)
    if result.status != "ok":
        show(result.message, result.detail)

Timings that must not share the CPU run with ``exclusive=True`` behind
:class:`~playground.worker.lock.MeasurementLock`, a machine-wide FIFO lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from pathlib import Path

from playground.errors import PlaygroundError
from playground.worker.lock import POLL_S, EventCallback, MeasurementLock, emit
from playground.worker.process import Worker
from playground.worker.result import JobResult

log = logging.getLogger(__name__)


def _close_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.close()


class WorkerPool:
    """``size`` workers shared by many threads; every job gets the next free worker.

    Parameters
    ----------
    size
        Number of child processes (each needs ~250 MB resident once TVM is imported).
    num_threads, memory_limit_mb, fault_jobs, env, start_timeout_s
        Passed to every :class:`Worker`.
    lock_dir
        Directory of the machine-wide measurement lock; the default is shared by every
        process of this user on the machine.
    """

    def __init__(self, size: int = 1, *, num_threads: int | None = None,
                 memory_limit_mb: int | None = 6144, fault_jobs: bool = False,
                 env: dict[str, str] | None = None, lock_dir: str | Path | None = None,
                 start_timeout_s: float = 120.0) -> None:
        if size < 1:
            raise PlaygroundError(f"WorkerPool: size must be at least 1, got {size}")
        self.workers = [Worker(num_threads=num_threads, memory_limit_mb=memory_limit_mb,
                               fault_jobs=fault_jobs, env=env, start_timeout_s=start_timeout_s)
                        for _ in range(size)]
        self.measurement_lock = MeasurementLock(lock_dir)
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for worker in self.workers:
            self._idle.put(worker)
        self._closed = False
        # Kills the children when the pool is garbage-collected or the interpreter exits.
        self._finalizer = weakref.finalize(self, _close_all, list(self.workers))

    def warm_up(self) -> None:
        """Start every idle worker now (in parallel) so that the first jobs are fast.

        Raises
        ------
        PlaygroundError
            When a worker cannot start (for example a memory cap too small for ``import tvm``).
        """
        errors: list[PlaygroundError] = []

        def start(worker: Worker) -> None:
            try:
                worker.start()
            except PlaygroundError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,), daemon=True) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Kill every child (running jobs end as ``"cancelled"``); the pool cannot be reused."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Pids of the live children."""
        return [pid for pid in (w.pid for w in self.workers) if pid is not None]

    def run(self, job: str, payload: dict | None = None, *, timeout_s: float = 60.0,
            exclusive: bool = False, on_event: EventCallback | None = None,
            cancel: threading.Event | None = None,
            memory_limit_mb: int | None = None) -> JobResult:
        """Run the registered job ``job`` on a free worker and classify what happened.

        Parameters
        ----------
        job
            A name in :data:`playground.worker.registry.JOBS`.
        payload
            JSON-able arguments of the job.
        timeout_s
            Seconds the job may run (queueing and worker start-up not counted); past it the
            worker's process group is killed and the status is ``"timeout"``.
        exclusive
            Hold the machine-wide measurement lock while the job runs (for timings).
        on_event
            Called with ``{"event": "queued", "position": n}`` (exclusive jobs, whenever the
            number of jobs ahead changes), ``{"event": "started", "worker_pid": pid}`` and
            ``{"event": "done", "status": s}``. Exceptions it raises are logged and ignored.
        cancel
            Setting it kills the running job (status ``"cancelled"``) or stops the wait.
        memory_limit_mb
            A lower address-space cap for this job only (cannot exceed the pool's).

        Returns
        -------
        JobResult
            Never raises for a job's failure; see :data:`STATUSES`.
        """
        if self._closed:
            raise PlaygroundError("WorkerPool.run: the pool is closed")
        result = None
        ticket = None
        if exclusive:
            ticket = self.measurement_lock.acquire(on_event=on_event, cancel=cancel)
        try:
            if exclusive and ticket is None:
                result = JobResult("cancelled", message="cancelled while queued for measurement")
            else:
                worker = self._checkout(cancel)
                if worker is None:
                    result = JobResult("cancelled", message="cancelled while waiting for a worker")
                else:
                    try:
                        result = worker.run(job, payload, timeout_s=timeout_s, on_event=on_event,
                                            cancel=cancel, memory_limit_mb=memory_limit_mb)
                    finally:
                        self._idle.put(worker)
        finally:
            if ticket is not None:
                ticket.release()
        emit(on_event, {"event": "done", "status": result.status})
        return result

    def _checkout(self, cancel: threading.Event | None) -> Worker | None:
        while True:
            if cancel is not None and cancel.is_set():
                return None
            if self._closed:
                raise PlaygroundError("WorkerPool.run: the pool was closed while waiting")
            try:
                return self._idle.get(timeout=POLL_S)
            except queue.Empty:
                continue
