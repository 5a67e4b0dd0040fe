"""The worker process: ``python -m playground.worker.main``.

Started by :class:`playground.worker.process.Worker`, never imported by the server. It caps its own
address space (``RLIMIT_AS``), imports TVM once (the warm start), then answers requests, one
JSON object per line::

    parent -> child   {"id": 7, "job": "ping", "payload": {}, "memory_limit_mb": null}
    child -> parent   {"id": 7, "status": "ok", "value": {...}}
                      {"id": 7, "status": "schedule_error", "message": ..., "detail": ...}

The protocol runs over duplicates of the original stdin/stdout. File descriptors 0 and 1 are
then pointed at ``/dev/null`` and stderr, so that prints from jobs, TVM or LLVM (Python or C
level) land in the stderr log and cannot corrupt the protocol. End of input means the parent is
gone: the worker exits.

No process outlives the server, even one killed with SIGKILL mid-job: the worker leads its own
process group, and so do its children (MetaSchedule's ``tvm.exec.popen_worker`` builders and
runners) unless they leave it. A *guardian* forked at start (before any thread or TVM) waits
for the hang-up of the protocol pipe, whose only writer is the server, and then kills the whole
group: the worker, its children and itself. It is a separate process, so a job busy in C code
holding the GIL cannot delay it. A watchdog thread that notices a new parent pid does the same,
as a second line. (``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that started a
process ends, and the server starts workers from short-lived threads.)
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback

MEMORY_ENV = "PLAYGROUND_MEMORY_LIMIT_MB"
NICE_ENV = "PLAYGROUND_NICE"


def _cap_memory() -> None:
    """Apply the pool's address-space cap before anything large is loaded."""
    limit_mb = os.environ.get(MEMORY_ENV)
    if limit_mb:
        limit = int(limit_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _set_job_memory(limit_mb: int | None) -> None:
    """Lower the soft cap for one job (never above the hard cap); ``None`` restores it."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = hard
    if limit_mb is not None:
        wanted = int(limit_mb) << 20
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _kill_my_group() -> None:
    """SIGKILL this process group: the worker, every child still in it, and the caller."""
    os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(70)  # not reached unless the worker is not a group leader (started by hand)


def _watch_parent(parent: int) -> None:
    """Kill the group when the parent process dies (a job may be too busy to notice EOF)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            _kill_my_group()


def _fork_guardian() -> int:
    """Fork the guardian (see the module docstring); returns its pid.

    It keeps only a duplicate of the protocol's read end and polls it for the hang-up alone
    (no read: the worker's requests stay in the pipe), so it holds no pipe the server reads
    from and never delays the server seeing a crashed worker's end of output.
    """
    watched = os.dup(0)
    pid = os.fork()
    if pid:
        os.close(watched)
        return pid
    try:  # the guardian: close everything else, wait for the server to go, end the group
        os.closerange(0, watched)
        os.closerange(watched + 1, 1 << 16)
        poller = select.poll()
        poller.register(watched, 0)  # POLLHUP and POLLERR are always reported
        while not poller.poll():
            pass
        _kill_my_group()
    finally:
        os._exit(0)


def _protocol_streams():
    """Move the protocol to private fds; send stray stdout to stderr and stdin to /dev/null."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # kept for the life of the process
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _classify(exc: BaseException) -> str:
    from playground.errors import BuildError, StepError

    if isinstance(exc, StepError):
        return "schedule_error"
    if isinstance(exc, BuildError):
        return "build_error"
    if isinstance(exc, MemoryError):
        return "oom"
    return "error"


def _run_one(request: dict, jobs: dict) -> dict:
    """Run one request; every outcome, including an exception, becomes a reply dict."""
    reply: dict = {"id": request.get("id")}
    name = request.get("job")
    func = jobs.get(name)
    if func is None:
        known = ", ".join(sorted(jobs))
        return {**reply, "status": "error", "error_type": "KeyError",
                "message": f"unknown job {name!r} (known: {known})", "detail": ""}
    try:
        _set_job_memory(request.get("memory_limit_mb"))
        try:
            value = func(request.get("payload") or {})
        finally:
            _set_job_memory(None)
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"job {name!r} returned {type(value).__name__}, not a dict")
        json.dumps(value)  # fail here, as this job's error, if the value is not JSON-able
        return {**reply, "status": "ok", "value": value}
    except BaseException as exc:  # report everything; the parent decides what to do
        tb = traceback.format_exc()
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        detail = getattr(exc, "detail", "") or tb
        return {**reply, "status": _classify(exc), "error_type": type(exc).__name__,
                "message": str(message), "detail": detail, "where": getattr(exc, "where", ""),
                "traceback": tb}


def main() -> None:
    """Cap memory, import TVM, announce readiness, then serve requests until EOF."""
    _cap_memory()
    nice = int(os.environ.get(NICE_ENV, "0") or 0)
    if nice:
        os.nice(nice)  # long jobs yield the CPU to the page and to quick jobs
    if os.getpgrp() == os.getpid():  # only a group leader may end its group
        _fork_guardian()
    proto_in, proto_out = _protocol_streams()
    faulthandler.enable(sys.stderr)  # a segfault leaves a Python traceback in the stderr log
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def send(obj: dict) -> None:
        proto_out.write(json.dumps(obj).encode() + b"\n")
        proto_out.flush()

    import tvm  # the expensive import, paid once per worker

    from playground.worker.registry import load_jobs

    jobs = load_jobs()
    send({"event": "ready", "pid": os.getpid(), "tvm": tvm.__version__})
    for line in proto_in:
        if not line.strip():
            continue
        reply = _run_one(json.loads(line), jobs)
        sys.stderr.flush()
        send(reply)


if __name__ == "__main__":
    main()
