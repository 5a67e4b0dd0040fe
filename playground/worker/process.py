"""One warm worker process: :class:`Worker` starts it, sends it jobs and classifies how they end.

The child (:mod:`playground.worker.main`) runs in its own process group with
``TVM_NUM_THREADS`` set and its address space capped (``RLIMIT_AS``). A timeout, a
cancellation, a crash or an out-of-memory kills the group; the next job lazily starts a fresh
child. Replies are JSON lines; the child's stderr goes to a log whose tail explains crashes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from playground.errors import PlaygroundError
from playground.worker.lock import POLL_S, EventCallback, emit
from playground.worker.result import STATUSES, JobResult, one_line

log = logging.getLogger(__name__)

_OOM_TEXT = ("bad_alloc", "Cannot allocate memory", "MemoryError", "out of memory")
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
_TAIL_BYTES = 16_384


def _vm_mb(pid: int) -> float:
    """The process's virtual size in MiB, or 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


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
        Register the debug/fault jobs of :mod:`playground.worker.registry` in the child (tests
        only).
    env
        Extra environment variables for the child.
    start_timeout_s
        How long the child may take to import TVM and report ready.
    nice
        Added to the child's nice value (0: as the server). Long jobs run niced so that the
        page and quick jobs get the CPU first; a timing they disturb says so in its load.
    """

    def __init__(self, *, num_threads: int | None = None, memory_limit_mb: int | None = 6144,
                 fault_jobs: bool = False, env: dict[str, str] | None = None,
                 start_timeout_s: float = 120.0, nice: int = 0) -> None:
        self.num_threads = num_threads or os.cpu_count() or 1
        self.nice = int(nice)
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
        env["PLAYGROUND_NICE"] = str(self.nice)
        env.pop("PLAYGROUND_MEMORY_LIMIT_MB", None)
        if self.memory_limit_mb is not None:
            env["PLAYGROUND_MEMORY_LIMIT_MB"] = str(int(self.memory_limit_mb))
        self._log_fd, self._buffer = fd, b""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "playground.worker.main"], stdin=subprocess.PIPE,
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
            start = time.monotonic()
            try:
                emit(on_event, {"event": "started", "worker_pid": pid})
                kind, reply = self._read(start + timeout_s, cancel)
            except BaseException:
                # The caller stopped waiting with the job sent: Streamlit stops a closed or
                # rerun tab's script by raising from its next page write (``on_event``). Left
                # running, the job would keep the child busy (and the CPU, its timing no
                # longer behind the measurement lock), and the next caller on this worker
                # would wait for it, then read its reply as a crash: kill it.
                self._discard()
                raise
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
            ready, _, _ = select.select([fd], [], [], min(POLL_S, deadline - now))
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
                return JobResult("wrong_result", value, one_line(message), "", elapsed, pid)
            return JobResult("ok", value, "", "", elapsed, pid)
        message = reply.get("message", "")
        if reply.get("error_type") not in (None, "", "PlaygroundError") and status == "error":
            message = f"{reply['error_type']}: {message}"
        if status == "oom":
            message = f"out of memory ({self._cap_text()}): {message}"
        detail = reply.get("detail") or reply.get("traceback") or ""
        return JobResult(status if status in STATUSES else "error", None, one_line(message),
                         detail, elapsed, pid, reply.get("where", ""))
