"""Run jobs in warm, reused worker processes, never in the caller's process.

A user's schedule can hang the compiler, eat all memory or segfault (see the "Isolation" notes),
so the server only ever sends *text* to a child process (:mod:`playground.worker_main`) and gets
JSON back. A :class:`Worker` owns one child; a :class:`WorkerPool` hands jobs to ``size``
workers from many threads (one Streamlit server, many sessions) and returns a
:class:`JobResult` for every outcome instead of raising::

    pool = WorkerPool(size=2)
    result = pool.run("ping", {}, timeout_s=10)
    if result.status != "ok":
        show(result.message, result.detail)

Each child runs in its own process group with ``TVM_NUM_THREADS`` set and its address space
capped (``RLIMIT_AS``). A timeout, a cancellation, a crash or an out-of-memory kills the group;
the next job lazily starts a fresh child. Timings that must not share the CPU run with
``exclusive=True`` behind :class:`MeasurementLock`, a machine-wide FIFO lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from playground.errors import PlaygroundError

log = logging.getLogger(__name__)

STATUSES = ("ok", "schedule_error", "build_error", "wrong_result", "crash", "timeout", "oom",
            "error", "cancelled")
_OOM_TEXT = ("bad_alloc", "Cannot allocate memory", "MemoryError", "out of memory")
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
_POLL_S = 0.05
_TAIL_BYTES = 16_384


@dataclass(frozen=True)
class JobResult:
    """What happened to one job.

    Attributes
    ----------
    status
        One of :data:`STATUSES`.
    value
        The job's JSON result (kept for ``"wrong_result"``); ``None`` when it did not return.
    message
        One line for the user: what went wrong (empty when ``"ok"``).
    detail
        Long text for an expander: TVM's full message, a traceback or the worker's stderr tail.
    elapsed_s
        Seconds from sending the job to its outcome (worker start-up and queueing excluded).
    worker_pid
        The child that ran the job, or ``None`` when it never reached one.
    where
        The failing field, from :class:`~playground.errors.PlaygroundError` (may be empty).
    """

    status: str
    value: dict | None = None
    message: str = ""
    detail: str = ""
    elapsed_s: float = 0.0
    worker_pid: int | None = None
    where: str = ""

    @property
    def ok(self) -> bool:
        """True when the job ran and returned a value that is not marked incorrect."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The result as plain JSON-able data."""
        return asdict(self)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _vm_mb(pid: int) -> float:
    """The process's virtual size in MiB, or 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


# -- machine-wide measurement lock ------------------------------------------------------------

EventCallback = Callable[[dict], None]
_WAKE = threading.Condition()  # wakes this process's waiters when one of its holders releases
_TICKETS = itertools.count()


def emit(on_event: EventCallback | None, event: dict) -> None:
    """Call ``on_event(event)``; a failing UI callback is logged, never breaks a job."""
    if on_event is not None:
        try:
            on_event(event)
        except Exception:
            log.exception("on_event callback failed for %r", event)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_lock_dir() -> Path:
    """The lock directory shared by this user's processes on this machine."""
    return Path(tempfile.gettempdir()) / f"playground-measure-{os.getuid()}"


class MeasurementTicket:
    """A held measurement lock; :meth:`release` it (or use :func:`measurement_lock`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path, self._fd = path, fd

    def release(self) -> None:
        """Give the lock to the next ticket; calling it twice does nothing."""
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._path.unlink(missing_ok=True)
        with _WAKE:
            _WAKE.notify_all()


class MeasurementLock:
    """A first-come-first-served lock across threads *and* processes, so timings never overlap.

    Every waiter drops a ticket file ``<time_ns>-<pid>-<n>.ticket`` in ``directory``; the
    position of a waiter is the number of live tickets before its own (the holder included),
    which a UI shows as "2 jobs ahead". Only the first ticket may take the ``fcntl.flock`` on
    ``directory/lock``, which is the actual mutual exclusion and is released by the kernel if
    the holder dies. Tickets of dead processes are removed by whoever looks next.

    Parameters
    ----------
    directory
        Where tickets and the lock file live; default :func:`default_lock_dir`.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_lock_dir()
        self.directory.mkdir(parents=True, exist_ok=True)

    def tickets(self) -> list[str]:
        """Live tickets in queue order (the holder first), dropping those of dead processes."""
        live = []
        for path in self.directory.glob("*.ticket"):
            try:
                pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if _pid_alive(pid):
                live.append(path.name)
            else:
                path.unlink(missing_ok=True)
        return sorted(live)

    def queue_length(self) -> int:
        """How many jobs hold or wait for the lock now, machine-wide."""
        return len(self.tickets())

    def acquire(self, *, on_event: EventCallback | None = None,
                cancel: threading.Event | None = None) -> MeasurementTicket | None:
        """Wait for the lock; ``None`` when ``cancel`` was set first.

        ``on_event`` gets ``{"event": "queued", "position": n}`` at once and whenever ``n``
        (the number of jobs ahead) changes.
        """
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_TICKETS):08d}.ticket"
        path = self.directory / name
        path.touch()
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        last = None
        try:
            while True:
                tickets = self.tickets()
                position = tickets.index(name) if name in tickets else len(tickets)
                if position != last:
                    emit(on_event, {"event": "queued", "position": position})
                    last = position
                if position == 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return MeasurementTicket(path, fd)
                    except BlockingIOError:
                        pass
                if cancel is not None and cancel.is_set():
                    break
                with _WAKE:
                    _WAKE.wait(_POLL_S)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        path.unlink(missing_ok=True)
        with _WAKE:
            _WAKE.notify_all()
        return None


@contextlib.contextmanager
def measurement_lock(directory: str | Path | None = None, *,
                     on_event: EventCallback | None = None,
                     cancel: threading.Event | None = None) -> Iterator[MeasurementTicket]:
    """Hold the machine-wide measurement lock for the ``with`` block.

    ``on_event`` gets "queued" events (see :meth:`MeasurementLock.acquire`), then
    ``{"event": "started"}`` once held and ``{"event": "done"}`` after the block.

    Raises
    ------
    PlaygroundError
        When ``cancel`` is set before the lock is acquired.
    """
    ticket = MeasurementLock(directory).acquire(on_event=on_event, cancel=cancel)
    if ticket is None:
        raise PlaygroundError("measurement_lock: cancelled while waiting for the lock")
    emit(on_event, {"event": "started"})
    try:
        yield ticket
    finally:
        ticket.release()
        emit(on_event, {"event": "done"})


class Worker:
    """One warm child process running jobs one at a time (``run`` serializes callers).

    Parameters
    ----------
    num_threads
        ``TVM_NUM_THREADS`` for the child; default ``os.cpu_count()``.
    memory_limit_mb
        Address-space cap of the child in MiB (``None``: no cap). ``import tvm`` alone needs
        about 500 MiB of address space.
    fault_jobs
        Register the debug/fault jobs of :mod:`playground.jobs` in the child (tests only).
    env
        Extra environment variables for the child.
    start_timeout_s
        How long the child may take to import TVM and report ready.
    """

    def __init__(self, *, num_threads: int | None = None, memory_limit_mb: int | None = 6144,
                 fault_jobs: bool = False, env: dict[str, str] | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.num_threads = num_threads or os.cpu_count() or 1
        self.memory_limit_mb = memory_limit_mb
        self.fault_jobs = fault_jobs
        self.extra_env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()  # one job (or start) at a time
        self._proc: subprocess.Popen | None = None
        self._log_fd: int | None = None  # the child's stderr, an unlinked O_APPEND temp file
        self._buffer = b""
        self._next_id = 0
        self._peak_vm_mb = 0.0  # the child's largest address space seen during the current job
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The live child's pid, or ``None`` when none is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child (if needed) and wait until it has imported TVM.

        Raises
        ------
        PlaygroundError
            When the child dies or hangs while starting; ``detail`` holds its stderr.
        """
        with self._lock:
            failure = self._ensure_started(None)
        if failure is not None:
            raise PlaygroundError(failure.message, detail=failure.detail)

    def close(self) -> None:
        """Kill the child and its process group; a job running now ends as ``"cancelled"``."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._discard()
            finally:
                self._lock.release()
        else:  # a job is running: kill only; its thread sees EOF, reaps and cleans up
            self._kill_group(self._proc)

    def _spawn(self) -> None:
        fd, path = tempfile.mkstemp(prefix="playground-worker-", suffix=".log")
        os.unlink(path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        env = {**os.environ, **self.extra_env, "TVM_NUM_THREADS": str(self.num_threads)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        env.pop("PLAYGROUND_FAULT_JOBS", None)
        if self.fault_jobs:
            env["PLAYGROUND_FAULT_JOBS"] = "1"
        env.pop("PLAYGROUND_MEMORY_LIMIT_MB", None)
        if self.memory_limit_mb is not None:
            env["PLAYGROUND_MEMORY_LIMIT_MB"] = str(int(self.memory_limit_mb))
        self._log_fd, self._buffer = fd, b""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "playground.worker_main"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=fd, env=env, bufsize=0, start_new_session=True)

    def _ensure_started(self, cancel: threading.Event | None) -> JobResult | None:
        """Start a child unless a live one exists; a failure comes back as a JobResult."""
        if self._closed:
            raise PlaygroundError("worker is closed")
        if self._proc is not None and self._proc.poll() is not None:
            log.warning("worker %d died between jobs (code %s); replacing it",
                        self._proc.pid, self._proc.returncode)
            self._discard()
        if self._proc is not None:
            return None
        self._spawn()
        kind, message = self._read(time.monotonic() + self.start_timeout_s, cancel)
        if kind == "message" and message.get("event") == "ready":
            return None
        result = self._failure(kind, "worker start-up", self.start_timeout_s, 0.0)
        return JobResult(result.status, None, "worker failed to start: " + result.message,
                         result.detail, 0.0, None)

    @staticmethod
    def _kill_group(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _discard(self) -> None:
        """Kill the child's process group, reap it (no zombies) and close its pipes and log."""
        proc, fd = self._proc, self._log_fd
        self._proc, self._log_fd, self._buffer = None, None, b""
        if proc is not None:
            self._kill_group(proc)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        if fd is not None:
            os.close(fd)

    # -- one job -------------------------------------------------------------------------------

    def run(self, job: str, payload: dict | None = None, *, timeout_s: float = 60.0,
            on_event: EventCallback | None = None, cancel: threading.Event | None = None,
            memory_limit_mb: int | None = None) -> JobResult:
        """Run ``job`` with ``payload`` in the child; see :meth:`WorkerPool.run`."""
        with self._lock:
            failure = self._ensure_started(cancel)
            if failure is not None:
                self._discard()
                return failure
            self._next_id += 1
            line = json.dumps({"id": self._next_id, "job": job, "payload": payload or {},
                               "memory_limit_mb": memory_limit_mb}).encode() + b"\n"
            os.ftruncate(self._log_fd, 0)  # the stderr tail then belongs to this job
            try:
                self._send(line)
            except BrokenPipeError:  # died after the liveness check: the job never started
                self._discard()
                failure = self._ensure_started(cancel)
                if failure is not None:
                    self._discard()
                    return failure
                self._send(line)
            pid = self._proc.pid
            emit(on_event, {"event": "started", "worker_pid": pid})
            start = time.monotonic()
            kind, reply = self._read(start + timeout_s, cancel)
            elapsed = time.monotonic() - start
            if kind == "message" and reply.get("id") == self._next_id:
                result = self._from_reply(reply, elapsed, pid)
            else:
                result = self._failure(kind, f"job {job!r}", timeout_s, elapsed, pid)
            if result.status in ("crash", "timeout", "oom", "cancelled"):
                self._discard()  # the next job gets a fresh child
            return result

    def _send(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._proc.stdin.fileno(), view):]

    def _read(self, deadline: float, cancel: threading.Event | None) -> tuple[str, dict | None]:
        """Wait for one JSON line: ("message", obj), or (kind, None) for kind "eof",
        "timeout", "cancelled" or "garbled" (not JSON)."""
        proc = self._proc
        fd = proc.stdout.fileno()
        self._peak_vm_mb = 0.0
        chunks = [self._buffer]  # joined once: replies (generated code) can be megabytes
        pending = b"\n" not in self._buffer
        while pending:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return "cancelled", None
            if now >= deadline:
                return "timeout", None
            ready, _, _ = select.select([fd], [], [], min(_POLL_S, deadline - now))
            self._peak_vm_mb = max(self._peak_vm_mb, _vm_mb(proc.pid))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return ("cancelled" if self._closed else "eof"), None
                chunks.append(chunk)
                pending = b"\n" not in chunk
        line, self._buffer = b"".join(chunks).split(b"\n", 1)
        try:
            return "message", json.loads(line)
        except json.JSONDecodeError:
            return "garbled", None

    def _stderr_tail(self) -> str:
        try:
            size = os.fstat(self._log_fd).st_size
            data = os.pread(self._log_fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        except (OSError, TypeError):
            return ""
        return data.decode(errors="replace")

    def _failure(self, kind: str, what: str, limit_s: float, elapsed: float,
                 pid: int | None = None) -> JobResult:
        """Classify a job (or start) that got no reply: timeout, cancel, crash or oom."""
        proc = self._proc
        # After EOF the child is dead but unreaped, so its group id is still ours to kill: this
        # also ends any process the job started.
        self._kill_group(proc)
        proc.wait()
        tail = self._stderr_tail()
        if kind == "timeout":
            message = f"{what} timed out after {limit_s:g} s; worker killed"
            return JobResult("timeout", None, message, tail, elapsed, pid)
        if kind in ("garbled", "message"):
            return JobResult("crash", None, f"{what}: unreadable reply from the worker", tail,
                             elapsed, pid)
        if kind == "cancelled":
            reason = "worker pool closed" if self._closed else "cancelled by the caller"
            return JobResult("cancelled", None, f"{what}: {reason}", tail, elapsed, pid)
        code = proc.returncode
        cap = self.memory_limit_mb
        near_cap = cap is not None and self._peak_vm_mb >= 0.9 * cap
        if any(t in tail for t in _OOM_TEXT) or (code == -signal.SIGKILL and near_cap):
            return JobResult("oom", None, f"{what} ran out of memory ({self._cap_text()})", tail,
                             elapsed, pid)
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return JobResult("crash", None, f"{what} crashed the worker with {name}", tail,
                             elapsed, pid)
        return JobResult("crash", None, f"{what}: the worker exited with code {code}", tail,
                         elapsed, pid)

    def _cap_text(self) -> str:
        cap = self.memory_limit_mb
        return f"cap {cap} MiB" if cap is not None else "no memory cap"

    def _from_reply(self, reply: dict, elapsed: float, pid: int) -> JobResult:
        status = reply.get("status", "error")
        if status == "ok":
            value = reply.get("value")
            if isinstance(value, dict) and value.get("correct") is False:
                message = value.get("message") or "the result does not match the reference"
                return JobResult("wrong_result", value, _one_line(message), "", elapsed, pid)
            return JobResult("ok", value, "", "", elapsed, pid)
        message = reply.get("message", "")
        if reply.get("error_type") not in (None, "", "PlaygroundError") and status == "error":
            message = f"{reply['error_type']}: {message}"
        if status == "oom":
            message = f"out of memory ({self._cap_text()}): {message}"
        detail = reply.get("detail") or reply.get("traceback") or ""
        return JobResult(status if status in STATUSES else "error", None, _one_line(message),
                         detail, elapsed, pid, reply.get("where", ""))


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
            A name in :data:`playground.jobs.JOBS`.
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
                return self._idle.get(timeout=_POLL_S)
            except queue.Empty:
                continue

