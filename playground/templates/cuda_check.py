"""The CUDA fusion template's plans, built in the worker: compile-only here, timed on a GPU.

The CPU search (:mod:`playground.templates.search`) times every candidate; a CUDA kernel can
only be timed where a GPU is. :func:`check_cuda_plans` takes the template's best-ranked plans
(:func:`~playground.templates.cuda.cuda_fusion_plans`), writes each as steps, and asks the
worker to lower it (job ``lower``: the kernel's threads per block and static shared memory,
read from the lowered module) and to build it (job ``run``: CUDA code generation, plus
validation against the numpy reference and timing where a GPU is present). Without a GPU
nothing is timed: the candidates keep the model's order, and the result says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from playground import service
from playground.compile.targets import info
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.templates.cuda import CudaPlan, cuda_fusion_plans, cuda_fusion_steps

NOT_TIMED = ("not timed: no GPU on this machine; the CUDA kernels were generated and checked "
             "(threads per block, shared memory per block), and are ranked by the template's "
             "model (work, halo recomputation, idle hardware), not by a measurement")


@dataclass(frozen=True)
class CudaCandidate:
    """One plan of the CUDA fusion template, as built in the worker.

    ``status``: ``built`` (generated and checked, not run: no GPU), ``ok`` (validated and
    timed on the GPU), ``wrong_result``, or the status of the job that failed
    (``build_error``, ...). ``kernels``: what each lowered kernel asks of the GPU
    (:func:`playground.compile.gpu.kernel_resources`).
    """

    plan: CudaPlan
    steps: tuple[Step, ...] = ()
    status: str = ""
    kernels: dict = field(default_factory=dict)
    median_ms: float | None = None
    message: str = ""

    @property
    def label(self) -> str:
        return self.plan.label()

    @property
    def built(self) -> bool:
        return self.status in ("built", "ok")

    def to_dict(self) -> dict:
        return {"label": self.label, "plan": self.plan.to_dict(), "status": self.status,
                "kernels": self.kernels, "median_ms": self.median_ms,
                "message": self.message, "steps": [s.to_dict() for s in self.steps]}


@dataclass
class CudaCheck:
    """Every plan built, whether a GPU timed them, and the note that says so."""

    chain: dict
    candidates: list[CudaCandidate]
    timed: bool
    note: str
    seconds: float = 0.0

    def best(self) -> CudaCandidate | None:
        """The fastest validated candidate where a GPU timed them; otherwise the model's
        best-ranked candidate that built."""
        if self.timed:
            ok = [c for c in self.candidates if c.status == "ok" and c.median_ms is not None]
            return min(ok, key=lambda c: c.median_ms) if ok else None
        return next((c for c in self.candidates if c.built), None)


def _candidate(pool: Any, chain: dict, plan: CudaPlan, measure: bool) -> CudaCandidate:
    recorder = cuda_fusion_steps(chain, plan)
    steps = tuple(recorder.steps)
    session = Session.new(recorder.chain, steps)
    lowered = service.lower(pool, session, "cuda")
    if lowered.status != "ok":
        return CudaCandidate(plan, steps, lowered.status, message=lowered.message)
    kernels = lowered.value.get("kernels", {})
    run = service.run(pool, session, "cuda", measure=measure)
    if run.status != "ok":
        return CudaCandidate(plan, steps, run.status, kernels, message=run.message)
    value = run.value or {}
    if not value.get("ran"):
        return CudaCandidate(plan, steps, "built", kernels, message=value.get("message", ""))
    if not value.get("correct"):
        return CudaCandidate(plan, steps, "wrong_result", kernels,
                             message=value.get("message", ""))
    timing = value.get("timing") or {}
    return CudaCandidate(plan, steps, "ok", kernels, timing.get("median_ms"),
                         value.get("message", ""))


def check_cuda_plans(pool: Any, chain: dict, *, limit: int = 4,
                     on_progress: Callable[[CudaCandidate], None] | None = None,
                     cancel: threading.Event | None = None) -> CudaCheck:
    """Build the template's ``limit`` best-ranked plans for ``chain`` in the worker ``pool``.

    Each is lowered (threads per block and shared memory per block, from the lowered module)
    and built for CUDA; where a GPU is present, validated and timed as well. ``cancel``
    stops between candidates.

    Raises
    ------
    playground.templates.cuda.TemplateRefusal
        When the template cannot fuse the chain (the reason in one line).
    """
    started = time.monotonic()
    plans = cuda_fusion_plans(chain, limit)
    gpu = info("cuda")
    out: list[CudaCandidate] = []
    for plan in plans:
        if cancel is not None and cancel.is_set():
            break
        cand = _candidate(pool, chain, plan, measure=gpu.can_run)
        out.append(cand)
        if on_progress is not None:
            on_progress(cand)
    note = "timed on the GPU" if gpu.can_run else NOT_TIMED
    return CudaCheck(chain, out, gpu.can_run, note, time.monotonic() - started)
