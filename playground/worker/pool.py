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
:class:`~playground.worker.lock.MeasurementLock`, a machine-wide FIFO lock. Callers waiting for
a free worker take turns by *owner* (:class:`~playground.worker.fair.FairQueue`): a job first
waits for a worker in its owner's turn, then, if exclusive, for the measurement lock, so one
user's many queued jobs cannot hold everybody else's back.
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path

from playground.errors import PlaygroundError
from playground.worker.fair import FairQueue, current_owner
from playground.worker.lock import EventCallback, MeasurementLock, emit
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
    num_threads, memory_limit_mb, fault_jobs, env, start_timeout_s, nice
        Passed to every :class:`Worker`.
    lock_dir
        Directory of the machine-wide measurement lock; the default is shared by every
        process of this user on the machine.
    """

    def __init__(self, size: int = 1, *, num_threads: int | None = None,
                 memory_limit_mb: int | None = 6144, fault_jobs: bool = False,
                 env: dict[str, str] | None = None, lock_dir: str | Path | None = None,
                 start_timeout_s: float = 120.0, nice: int = 0) -> None:
        if size < 1:
            raise PlaygroundError(f"WorkerPool: size must be at least 1, got {size}")
        self.workers = [Worker(num_threads=num_threads, memory_limit_mb=memory_limit_mb,
                               fault_jobs=fault_jobs, env=env, start_timeout_s=start_timeout_s,
                               nice=nice)
                        for _ in range(size)]
        self.measurement_lock = MeasurementLock(lock_dir)
        self._idle: FairQueue[Worker] = FairQueue(list(self.workers))
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

    def waiting(self) -> dict[str, int]:
        """Callers waiting for a worker, per owner, in the order their turns come."""
        return self._idle.waiting()

    @property
    def pids(self) -> list[int]:
        """Pids of the live children."""
        return [pid for pid in (w.pid for w in self.workers) if pid is not None]

    def run(self, job: str, payload: dict | None = None, *, timeout_s: float = 60.0,
            exclusive: bool = False, on_event: EventCallback | None = None,
            cancel: threading.Event | None = None,
            memory_limit_mb: int | None = None, owner: str | None = None) -> JobResult:
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
            Called with ``{"event": "waiting", "position": n}`` (no worker free: ``n`` callers
            are served first), ``{"event": "queued", "position": n}`` (exclusive jobs, whenever
            the number of jobs ahead for the measurement lock changes), ``{"event":
            "started", "worker_pid": pid}`` and ``{"event": "done", "status": s}``.
            Exceptions it raises are logged and ignored.
        cancel
            Setting it kills the running job (status ``"cancelled"``) or stops the wait.
        memory_limit_mb
            A lower address-space cap for this job only (cannot exceed the pool's).
        owner
            Who asks (a browser session id): waiting callers get workers round robin by owner.
            ``None``: :func:`~playground.worker.fair.current_owner`.

        Returns
        -------
        JobResult
            Never raises for a job's failure; see :data:`STATUSES`.
        """
        if self._closed:
            raise PlaygroundError("WorkerPool.run: the pool is closed")
        owner = current_owner() if owner is None else owner
        worker = self._idle.get(owner, cancel=cancel, closed=self._raise_if_closed,
                                on_event=on_event)
        if worker is None:
            result = JobResult("cancelled", message="cancelled while waiting for a worker")
        else:
            try:
                result = self._run_on(worker, job, payload, timeout_s, exclusive, on_event,
                                      cancel, memory_limit_mb)
            finally:
                self._idle.put(worker)
        emit(on_event, {"event": "done", "status": result.status})
        return result

    def _run_on(self, worker: Worker, job: str, payload: dict | None, timeout_s: float,
                exclusive: bool, on_event: EventCallback | None,
                cancel: threading.Event | None, memory_limit_mb: int | None) -> JobResult:
        """Run on a checked-out worker, behind the measurement lock when ``exclusive``."""
        ticket = None
        if exclusive:
            ticket = self.measurement_lock.acquire(on_event=on_event, cancel=cancel)
            if ticket is None:
                return JobResult("cancelled", message="cancelled while queued for measurement")
        try:
            return worker.run(job, payload, timeout_s=timeout_s, on_event=on_event,
                              cancel=cancel, memory_limit_mb=memory_limit_mb)
        finally:
            if ticket is not None:
                ticket.release()

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise PlaygroundError("WorkerPool.run: the pool was closed while waiting")
