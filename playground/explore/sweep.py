"""Sweeps: one argument of one step of the current schedule, tried at several values.

A sweep is ``(session, parameter, values)``. The parameter is an argument of one of the
session's active steps, named by :class:`SweepParam`: an element of a split's ``factors``, or
the ``target_loop`` of a ``compute_at`` / ``reverse_compute_at``. For each value the sweep
rebuilds the step list with that argument replaced and then, in the worker:

1. replays the steps (here, symbolically: milliseconds). A later step that no longer applies
   (it names a loop the new factor removed, say) makes the point ``"invalid"`` with the reason;
   the sweep goes on;
2. validates the kernel on a NaN-poisoned output against the float64 reference and times it
   only if it is correct (job ``"run"``, see :mod:`playground.jobs.kernel`);
3. if the worker has an ``"analyze"`` job (:mod:`playground.explore.analysis`), records the
   redundant-compute factor and the footprint of the intermediates.

Points are measured one at a time, unless the pool's timings go to a measurement farm of
other machines (:mod:`playground.remote.farm`): then :func:`parallel_points` of them at once,
one per long worker, each on its own RPC server. Cancelling (``cancel.set()``) kills the jobs
in flight and stops before the next point; the result is marked ``"cancelled"`` and keeps the
points already done. Its Pareto front, CSV and figures are in
:mod:`playground.explore.sweep_report`.

With ``record=True`` the sweep is a ``"sweep"`` group in the experiment store
(:mod:`playground.store`): every point is recorded as it is done, invalid and failed ones
included, with the worker's whole result, and the group is finished with the sweep's status,
so a cancelled sweep keeps what it measured.

Example
-------
>>> params = sweep_parameters(session)                      # doctest: +SKIP
>>> p = next(p for p in params if p.label == "split conv2.h factor[1]")  # doctest: +SKIP
>>> result = run_sweep(pool, session, p, p.candidates)      # doctest: +SKIP
>>> print(sweep_report.to_csv(result))                                   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from playground import service
from playground.errors import PlaygroundError, StepError
from playground.explore.sweep_parallel import parallel_points, run_parallel
from playground.measure.sampling import METHOD
from playground.measure.stats import spread_interval
from playground.schedule.replay import blocks, scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.store import RunGroup
from playground.worker.job_table import ANALYZE
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult

#: Parameters: the step arguments a sweep can vary.
SWEEPABLE = {"split": "factors", "compute_at": "target_loop",
             "reverse_compute_at": "target_loop"}
#: How many candidate factors :func:`sweep_parameters` proposes at most.
MAX_CANDIDATES = 12
ANALYZE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SweepParam:
    """One sweepable argument of the session's schedule.

    Attributes
    ----------
    step_index
        0-based index of the step among the session's active steps.
    arg
        The argument: ``"factors"`` (split) or ``"target_loop"`` (compute_at).
    element
        For ``factors``, the index of the factor in the list; ``None`` otherwise.
    kind
        ``"factor"`` (integers) or ``"loop"`` (loop names).
    current
        The value in the session's schedule now.
    candidates
        Suggested values: divisors and a few non-divisors of the loop's extent, or the loops
        of the target block.
    extent
        The extent of the loop being split (``None`` for a loop parameter).
    label
        A short name for pickers and plot axes, e.g. ``"split conv2.h factor[1]"``.
    linked
        Indices of further steps set to the same value: a "fusion depth" parameter moves
        every ``compute_at`` to one loop of the consumer together (moving one alone usually
        breaks the others: a producer must stay above all its consumers).
    """

    step_index: int
    arg: str
    element: int | None
    kind: str
    current: Any
    candidates: tuple
    extent: int | None
    label: str
    linked: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "candidates": list(self.candidates), "linked": list(self.linked)}


@dataclass(frozen=True)
class SweepPoint:
    """The outcome of one value.

    ``status`` is ``"ok"``, ``"invalid"`` (the steps do not apply; ``message`` says why), or a
    worker status (``"wrong_result"``: validated and wrong, so not timed; ``"build_error"``,
    ``"timeout"``, ``"crash"``, ...). ``correct`` is ``None`` when the kernel never ran.
    Times are milliseconds per call (median), ``footprint_bytes`` the compacted bytes of all
    intermediate buffers, ``redundancy`` FLOP done / FLOP needed (1.0: no recomputation).
    ``under_load`` and ``others_cores`` say what else ran while the point was timed
    (:class:`playground.measure.load.Load`; ``None`` when unknown). ``ci_low_ms`` /
    ``ci_high_ms`` bound the median with 95% confidence (a bootstrap over the point's samples,
    :func:`playground.measure.stats.spread_interval`): two points whose intervals overlap are not
    told apart by this sweep.
    """

    value: Any
    status: str
    message: str = ""
    correct: bool | None = None
    max_abs_error: float | None = None
    median_ms: float | None = None
    gflops: float | None = None
    spread: float | None = None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    under_load: bool | None = None
    others_cores: float | None = None
    redundancy: float | None = None
    footprint_bytes: int | None = None
    intensity: float | None = None  # FLOP done / bytes moved past L2, for the roofline
    steps: tuple = ()

    @property
    def timed(self) -> bool:
        return self.median_ms is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = [s.to_dict() for s in self.steps]
        return d


@dataclass(frozen=True)
class SweepResult:
    """All points of a sweep; ``status`` is ``"done"`` or ``"cancelled"``."""

    param: SweepParam
    values: tuple
    points: tuple[SweepPoint, ...]
    status: str
    elapsed_s: float = 0.0
    analysis: bool = False  # whether the worker had an "analyze" job
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def best(self) -> SweepPoint | None:
        """The fastest correct point, if any."""
        timed = [p for p in self.points if p.timed and p.correct]
        return min(timed, key=lambda p: p.median_ms) if timed else None

    def to_dict(self) -> dict:
        return {"param": self.param.to_dict(), "values": list(self.values),
                "points": [p.to_dict() for p in self.points], "status": self.status,
                "elapsed_s": self.elapsed_s, "analysis": self.analysis,
                "notes": list(self.notes)}


# ----------------------------------------------------------------------------- parameters

def factor_candidates(extent: int, current: int | None = None,
                      limit: int = MAX_CANDIDATES) -> tuple[int, ...]:
    """Divisors of ``extent`` (1 excluded when there are others; at most ``limit - 3``, spread
    out), ``extent`` itself (one tile), a few non-divisors, and ``current``, sorted.

    >>> factor_candidates(16)
    (2, 3, 4, 5, 6, 8, 12, 16)
    """
    divisors = [d for d in range(2, extent) if extent % d == 0] or [1, extent]
    if len(divisors) > limit - 3:  # keep the small, the large and some in between
        step = len(divisors) / (limit - 3)
        divisors = sorted({divisors[int(i * step)] for i in range(limit - 3)} | {divisors[-1]})
    others = [d for d in (3, 5, 6, 12, 16, 24, 32) if d < extent and extent % d]
    chosen = set(divisors) | set(others[: max(0, limit - len(divisors))]) | {extent}
    if current is not None:
        chosen.add(current)
    return tuple(sorted(chosen))


def _loop_extent(session: Session, index: int, block: str, loop_name: str) -> int | None:
    sch = scheduled(session.chain, session.active[:index])
    for b in blocks(sch):
        if b.name == block:
            for lp in b.loops:
                if lp.name == loop_name:
                    return lp.extent
    return None


def _split_params(session: Session, index: int, step: Step) -> list[SweepParam]:
    args = step.args
    extent = _loop_extent(session, index, args["block"], args["loop"])
    if extent is None:
        return []
    factors = list(args["factors"])
    out = []
    for j, f in enumerate(factors):
        if f is None:
            continue
        # The room left for this factor by the other fixed ones.
        others = math.prod(x for k, x in enumerate(factors) if k != j and x is not None)
        room = max(1, -(-extent // others)) if None not in factors else extent
        out.append(SweepParam(index, "factors", j, "factor", f, factor_candidates(room, f), room,
                              f"split {args['block']}.{args['loop']} factor[{j}]"))
    return out


def _loop_params(session: Session, index: int, step: Step) -> list[SweepParam]:
    args = step.args
    sch = scheduled(session.chain, session.active[:index])
    target = next((b for b in blocks(sch) if b.name == args["target_block"]), None)
    if target is None:
        return []
    names = tuple(lp.name for lp in target.loops)
    return [SweepParam(index, "target_loop", None, "loop", args["target_loop"], names, None,
                       f"{step.primitive} {args['block']} at {args['target_block']}")]


def _group_params(session: Session) -> list[SweepParam]:
    """One parameter per group of compute_at steps sharing a target block and loop."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, step in enumerate(session.active):
        if step.primitive == "compute_at":
            key = (step.args["target_block"], step.args["target_loop"])
            groups.setdefault(key, []).append(i)
    out = []
    for (block, loop_name), indices in groups.items():
        if len(indices) < 2:
            continue
        first = _loop_params(session, indices[0], session.active[indices[0]])
        if first:
            names = ", ".join(session.active[i].args["block"] for i in indices)
            out.append(SweepParam(indices[0], "target_loop", None, "loop", loop_name,
                                  first[0].candidates, None,
                                  f"compute_at {names} at {block} (together)",
                                  tuple(indices[1:])))
    return out


def sweep_parameters(session: Session) -> list[SweepParam]:
    """What can be swept in the session's active steps, with candidate values.

    Split factors (each fixed element of ``factors``) propose divisors and non-divisors of the
    loop's extent; ``compute_at`` / ``reverse_compute_at`` propose every loop of the target
    block as it is just before that step. Several ``compute_at`` at the same loop of the same
    block also give one linked parameter that moves them together (listed first).
    """
    out: list[SweepParam] = _group_params(session)
    for i, step in enumerate(session.active):
        if step.primitive == "split":
            out.extend(_split_params(session, i, step))
        elif step.primitive in ("compute_at", "reverse_compute_at"):
            out.extend(_loop_params(session, i, step))
    return out


def _check_value(param: SweepParam, value: Any) -> Any:
    if param.kind == "factor":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StepError(f"sweep {param.label}: values must be positive integers, got "
                            f"{value!r}", where="sweep.values")
        return int(value)
    if not isinstance(value, str) or not value:
        raise StepError(f"sweep {param.label}: values must be loop names, got {value!r}",
                        where="sweep.values")
    return value


def steps_with(session: Session, param: SweepParam, value: Any) -> tuple[Step, ...]:
    """The session's active steps with the parameter set to ``value`` (not yet applied)."""
    steps = list(session.active)
    for index in (param.step_index, *param.linked):
        if not 0 <= index < len(steps):
            raise StepError(f"sweep: step {index + 1} does not exist ({len(steps)} active "
                            "steps)", where="sweep.param")
        step = steps[index]
        if SWEEPABLE.get(step.primitive) != param.arg:
            raise StepError(f"sweep: step {index + 1} is a {step.primitive}, which has no "
                            f"sweepable {param.arg!r}", where="sweep.param")
        args = dict(step.args)
        if param.element is None:
            args[param.arg] = value
        else:
            factors = list(args[param.arg])
            if not 0 <= param.element < len(factors):
                raise StepError(f"sweep: step {index + 1} has no factor {param.element}",
                                where="sweep.param")
            factors[param.element] = value
            args[param.arg] = factors
        steps[index] = Step(step.primitive, args)
    return tuple(steps)


# ----------------------------------------------------------------------------- running

def _analysis_fields(value: dict | None) -> tuple[float | None, int | None]:
    """(redundancy, footprint bytes of the intermediates) from an ``analyze`` job's value."""
    if not isinstance(value, dict):
        return None, None
    redundancy = value.get("redundancy")
    buffers = value.get("buffers") or []
    inter = [b for b in buffers if b.get("role") == "intermediate"]
    if inter:
        footprint = sum(int(b.get("bytes") or 0) for b in inter)
    elif "allocated_bytes" in value:
        footprint = int(value["allocated_bytes"])
    else:
        footprint = None
    return (float(redundancy) if redundancy is not None else None), footprint


def _point_from_run(value: Any, steps: tuple[Step, ...], result: JobResult) -> SweepPoint:
    v = result.value or {}
    timing = v.get("timing") or {}
    load = timing.get("load") or {}
    samples = timing.get("samples_ms") if v.get("correct") else None
    low, high = spread_interval(samples) if samples else (None, None)
    return SweepPoint(
        value=value, status=result.status,
        message=result.message or ("" if result.ok else result.status),
        correct=v.get("correct"), max_abs_error=v.get("max_abs_error"),
        median_ms=v.get("median_ms") if v.get("correct") else None,
        gflops=v.get("gflops") if v.get("correct") else None,
        spread=timing.get("spread") if v.get("correct") else None,
        ci_low_ms=low, ci_high_ms=high, under_load=load.get("under_load"),
        others_cores=load.get("others_cores"), steps=steps)


def run_point(pool: WorkerPool, session: Session, param: SweepParam, value: Any, *,
              target: str = "cpu", cancel: threading.Event | None = None,
              analyze: bool = True, repeat: int = METHOD["repeat"],
              min_repeat_ms: float = METHOD["min_repeat_ms"],
              group: RunGroup | None = None) -> tuple[SweepPoint, bool]:
    """Build, validate, time (and analyze) one value; returns (point, analyze job present).

    With ``group``, the point is recorded in it (unless the job was cancelled)."""
    value = _check_value(param, value)
    steps = steps_with(session, param, value)
    label = f"{param.label} = {value}"
    try:
        scheduled(session.chain, steps)
    except PlaygroundError as e:
        if group is not None:
            group.add(steps, status="invalid", error=e.message, label=label)
        return SweepPoint(value, "invalid", f"invalid: {e.message}", steps=steps), analyze
    point_session = Session(session.chain, steps, len(steps))
    result = service.run(pool, point_session, target, measure=True, repeat=repeat,
                         min_repeat_ms=min_repeat_ms, cancel=cancel)
    if group is not None and result.status != "cancelled":
        group.add(steps, status=result.status, value=result.value, error=result.message,
                  detail=result.detail, label=label)
    point = _point_from_run(value, steps, result)
    if analyze and result.status in ("ok", "wrong_result") and not (cancel and cancel.is_set()):
        res = ANALYZE.call(pool, service.payload(point_session, target),
                           timeout_s=ANALYZE_TIMEOUT_S, cancel=cancel)
        if res.status == "error" and res.message.startswith("unknown job"):
            analyze = False
        elif res.ok:
            redundancy, footprint = _analysis_fields(res.value)
            intensity = res.value.get("arithmetic_intensity")
            point = replace(point, redundancy=redundancy, footprint_bytes=footprint,
                            intensity=None if intensity is None else float(intensity))
    return point, analyze


def _start_group(pool: Any, session: Session, param: SweepParam, values: tuple,
                 target: str) -> RunGroup:
    """The store's record of this sweep: on this machine, or on the pools' measurement farm
    when its timings go there (see :func:`playground.service.run`)."""
    from playground.measure.machine import host_fingerprint
    from playground.store import record_group

    farm = getattr(pool, "farm", None)
    machine = {"remote": farm.label} if farm is not None and farm.target == target \
        else host_fingerprint()
    return record_group("sweep", session.chain, target, machine, label=param.label,
                        source="sweep", steps=session.active,
                        info={"param": param.to_dict(), "values": list(values)})


def run_sweep(pool: WorkerPool, session: Session, param: SweepParam, values: Sequence[Any], *,
              target: str = "cpu",
              on_progress: Callable[[int, int, SweepPoint], None] | None = None,
              cancel: threading.Event | None = None, analyze: bool = True,
              repeat: int = METHOD["repeat"], min_repeat_ms: float = METHOD["min_repeat_ms"],
              record: bool = False) -> SweepResult:
    """Measure the schedule at every value of ``param``.

    Parameters
    ----------
    pool
        The worker pool; every build, validation and timing runs there.
    session
        The session whose active steps are varied (unchanged).
    param
        From :func:`sweep_parameters`.
    values
        Integers (factors) or loop names; duplicates are measured once.
    on_progress
        Called after each point with ``(i, n, point)``, ``i`` counting from 1.
    cancel
        Setting it kills the job in flight and ends the sweep (status ``"cancelled"``).
    analyze
        Also run the worker's ``"analyze"`` job per point (skipped if the worker has none).
    record
        Record the sweep in the experiment store: a ``"sweep"`` group with this machine's
        fingerprint, one child per point as it is done, finished with the sweep's status.
        A store that cannot save changes nothing (see :func:`playground.store.problem`).

    Raises
    ------
    StepError
        When ``param`` does not name a sweepable argument of the session, or a value has the
        wrong type. A value whose steps do not apply is a point, not an error.
    """
    values = tuple(dict.fromkeys(_check_value(param, v) for v in values))
    if not values:
        raise StepError(f"sweep {param.label}: give at least one value", where="sweep.values")
    steps_with(session, param, values[0])  # refuse a bad parameter before any work
    t0 = time.monotonic()
    group = _start_group(pool, session, param, values, target) if record else None
    points: list[SweepPoint] = []
    status = "done"
    had_analysis = analyze
    width = parallel_points(pool, len(values))
    try:
        if width > 1:  # timings on a farm of other machines: one point per long worker
            point = functools.partial(run_point, pool, session, param, target=target,
                                      cancel=cancel, analyze=analyze, repeat=repeat,
                                      min_repeat_ms=min_repeat_ms, group=group)
            points, status, had_analysis = run_parallel(point, values, width, analyze=analyze,
                                                        on_progress=on_progress, cancel=cancel)
        for i, value in enumerate(values if width == 1 else ()):
            if cancel is not None and cancel.is_set():
                status = "cancelled"
                break
            point, had_analysis = run_point(pool, session, param, value, target=target,
                                            cancel=cancel, analyze=had_analysis, repeat=repeat,
                                            min_repeat_ms=min_repeat_ms, group=group)
            if point.status == "cancelled":
                status = "cancelled"
                break
            points.append(point)
            if on_progress is not None:
                on_progress(i + 1, len(values), point)
            if cancel is not None and cancel.is_set():  # e.g. during this point's analysis
                status = "cancelled" if i + 1 < len(values) else status
                break
    except BaseException:
        status = "error"
        raise
    finally:
        if group is not None:
            group.finish(status)
    notes = () if had_analysis or not analyze else (
        "the worker has no 'analyze' job: redundancy and footprint not recorded",)
    return SweepResult(param, values, tuple(points), status, time.monotonic() - t0,
                       analyze and had_analysis, notes)
