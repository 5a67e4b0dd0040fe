"""The comparison table for the current chain: unscheduled, yours, best preset, tuned, numpy.

Every row is measured in the worker through the pool, with the same validation and timing as
the "run" job (validated on a poisoned output first; a wrong kernel is not timed). The numpy row
times the project's float64 reference (job ``"numpy_time"``): the oracle every kernel is checked
against, not a float32 numpy program tuned for speed.

Columns: ``name``, ``median_ms`` (per call), ``gflops`` (the chain's FLOP / median time),
``ratio`` = ``median_ms / yours`` (time relative to the user's schedule: 2.0 is twice as slow,
0.5 twice as fast).

Example
-------
>>> rows = comparison_table(pool, session, tuned=tune_result.steps)   # doctest: +SKIP
>>> rows_to_records(rows)                                             # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from playground import service
from playground.chain.spec import chain_flop, chain_to_json, normalize_chain
from playground.errors import PlaygroundError
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult

NUMPY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class CompareRow:
    """One row: what was measured and how it went (``status`` as the worker's)."""

    name: str
    kind: str  # unscheduled, yours, preset, tuned, auto, numpy
    status: str
    median_ms: float | None = None
    gflops: float | None = None
    ratio: float | None = None
    correct: bool | None = None
    message: str = ""
    steps: int = 0
    under_load: bool | None = None  # timed under load (see playground.build.load); None: unknown

    def to_dict(self) -> dict:
        return asdict(self)


def _under_load(value: dict) -> bool | None:
    return ((value.get("timing") or {}).get("load") or {}).get("under_load")


def _row(name: str, kind: str, result: JobResult, steps: int) -> CompareRow:
    v = result.value or {}
    correct = v.get("correct")
    return CompareRow(name, kind, result.status,
                      v.get("median_ms") if correct else None,
                      v.get("gflops") if correct else None, None, correct,
                      result.message, steps, _under_load(v))


def matching_presets(chain: dict) -> list[tuple[str, tuple[Step, ...]]]:
    """(name, steps) of every CPU preset written for exactly this chain.

    Empty when the presets module is missing or a preset fails to load. Each preset's chain
    is read without replaying its steps; only the matching ones are loaded (replayed), so a
    chain no preset was written for costs a few parses, not a replay of every preset.
    """
    from playground.io.presets import load_preset, preset_paths
    from playground.io.script_import import read_header

    key = chain_to_json(chain)
    out = []
    for path in preset_paths():
        try:
            p_chain, _, meta = read_header(path.read_text())
            if meta.get("target", "cpu") != "cpu" or \
                    chain_to_json(normalize_chain(p_chain)) != key:
                continue
            _, steps, _ = load_preset(path.stem)
        except PlaygroundError:
            continue
        out.append((path.stem, tuple(steps)))
    return out


def _measure(pool: WorkerPool, chain: dict, steps: Sequence[Step], cancel, repeat: int,
             min_repeat_ms: float) -> JobResult:
    session = Session(chain, tuple(steps), len(steps))
    return service.run(pool, session, "cpu", measure=True, repeat=repeat,
                       min_repeat_ms=min_repeat_ms, cancel=cancel)


def comparison_table(pool: WorkerPool, session: Session, *,
                     tuned: Sequence[Step] | None = None,
                     auto: Sequence[Step] | None = None, presets: bool = True,
                     numpy: bool = True, repeat: int = 10, min_repeat_ms: float = 50.0,
                     on_progress: Callable[[int, int, CompareRow], None] | None = None,
                     cancel: threading.Event | None = None) -> list[CompareRow]:
    """Measure the rows of the comparison table (CPU), in this order.

    Rows: ``unscheduled`` (no steps), ``yours`` (the session's active steps), ``preset:
    <name>`` (the fastest correct preset written for this exact chain, if any), ``tuned``
    (``tuned`` steps, e.g. :attr:`playground.explore.tuning.TuneResult.steps`, if given),
    ``auto`` (the template search's best steps, if given), ``numpy (float64 reference)``.
    ``ratio`` is filled once the user's row is timed.

    A row that fails (wrong result, build error, timeout) stays in the table with its status
    and message. ``cancel`` stops at the next row (the rows measured so far are returned).
    """
    chain = session.chain
    plan: list[tuple[str, str, tuple[Step, ...] | None]] = [
        ("unscheduled", "unscheduled", ()), ("yours", "yours", tuple(session.active))]
    candidates = matching_presets(chain) if presets else []
    if tuned is not None:
        plan.append(("tuned", "tuned", tuple(tuned)))
    if auto is not None:
        plan.append(("auto (templates)", "auto", tuple(auto)))
    if numpy:
        plan.append(("numpy (float64 reference)", "numpy", None))
    total = len(plan) + len(candidates)
    rows: list[CompareRow] = []
    done = 0

    def progress(row: CompareRow) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total, row)

    def stopped() -> bool:
        return cancel is not None and cancel.is_set()

    for name, kind, steps in plan[:2]:
        if stopped():
            return _ratios(rows)
        rows.append(_row(name, kind, _measure(pool, chain, steps, cancel, repeat,
                                              min_repeat_ms), len(steps)))
        progress(rows[-1])
    preset_rows = []
    for name, steps in candidates:
        if stopped():
            return _ratios(rows)
        preset_rows.append(_row(f"preset: {name}", "preset",
                                _measure(pool, chain, steps, cancel, repeat, min_repeat_ms),
                                len(steps)))
        progress(preset_rows[-1])
    timed = [r for r in preset_rows if r.median_ms is not None]
    if timed:
        rows.append(min(timed, key=lambda r: r.median_ms))
    elif preset_rows:
        rows.append(preset_rows[0])
    for name, kind, steps in plan[2:]:
        if stopped():
            return _ratios(rows)
        if kind == "numpy":
            result = pool.run("numpy_time", {"chain": chain, "repeat": min(repeat, 5),
                                             "min_repeat_ms": min_repeat_ms},
                              timeout_s=NUMPY_TIMEOUT_S, exclusive=True, cancel=cancel)
            v = result.value or {}
            ms = v.get("median_ms") if result.ok else None
            rows.append(CompareRow(name, kind, result.status, ms,
                                   chain_flop(chain) / (ms * 1e6) if ms else None, None,
                                   None, result.message, under_load=_under_load(v)))
        else:
            rows.append(_row(name, kind, _measure(pool, chain, steps, cancel, repeat,
                                                  min_repeat_ms), len(steps)))
        progress(rows[-1])
    return _ratios(rows)


def _ratios(rows: list[CompareRow]) -> list[CompareRow]:
    yours = next((r.median_ms for r in rows if r.kind == "yours"), None)
    if not yours:
        return rows
    return [replace(r, ratio=r.median_ms / yours if r.median_ms else None) for r in rows]


def rows_to_records(rows: Sequence[CompareRow]) -> list[dict]:
    """Rows as plain dicts for a table widget (times rounded for display)."""
    return [{"name": r.name, "median ms": None if r.median_ms is None else round(r.median_ms, 4),
             "GFLOP/s": None if r.gflops is None else round(r.gflops, 2),
             "ratio vs yours": None if r.ratio is None else round(r.ratio, 3),
             "under load": {True: "yes", False: "no"}.get(r.under_load, "?"),
             "status": r.status, "message": r.message} for r in rows]
