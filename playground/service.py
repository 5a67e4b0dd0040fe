"""What the UI and the command line ask of the worker: lower, generate code, validate, measure.

Each function takes a :class:`~playground.session.Session` (or chain + steps) and a
:class:`~playground.worker.WorkerPool` and returns the pool's
:class:`~playground.worker.JobResult`. Payloads are plain JSON; compiling and running happen in
the worker, never in the caller's process.
"""

from __future__ import annotations

import threading

from playground.session import Session
from playground.worker import JobResult, WorkerPool

#: Per-job limits: lowering is quick, a build + validation of a large chain is not.
TIMEOUTS_S = {"lower": 60.0, "codegen": 90.0, "run": 300.0}


def payload(session: Session, target: str = "cpu", **extra: object) -> dict:
    """The JSON payload of a job on the session's active steps."""
    return {"chain": session.chain, "steps": [s.to_dict() for s in session.active],
            "target": target, **extra}


def lower(pool: WorkerPool, session: Session, target: str = "cpu") -> JobResult:
    """Lowered TIR text (``value["text"]``) of the session's schedule."""
    return pool.run("lower", payload(session, target), timeout_s=TIMEOUTS_S["lower"])


def codegen(pool: WorkerPool, session: Session, target: str = "cpu",
            kind: str = "asm") -> JobResult:
    """Generated code (``value["text"]``): ``asm`` or ``llvm`` on the CPU, ``cuda`` for GPUs."""
    return pool.run("codegen", payload(session, target, kind=kind),
                    timeout_s=TIMEOUTS_S["codegen"])


def run(pool: WorkerPool, session: Session, target: str = "cpu", *, measure: bool = True,
        repeat: int = 10, min_repeat_ms: float = 50.0, on_event=None,
        cancel: threading.Event | None = None, timeout_s: float | None = None) -> JobResult:
    """Validate against the numpy reference and, if ``measure``, time the kernel.

    Timing jobs hold the machine-wide measurement lock (``exclusive``), so two timings never
    share the CPU; ``on_event`` receives the queue position while waiting.
    """
    return pool.run("run", payload(session, target, measure=measure, repeat=repeat,
                                   min_repeat_ms=min_repeat_ms),
                    timeout_s=timeout_s or TIMEOUTS_S["run"], exclusive=measure,
                    on_event=on_event, cancel=cancel)
