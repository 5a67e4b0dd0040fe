"""The comparison table for the current chain: unscheduled, yours, best preset, tuned, numpy.

Every row is measured in the worker through the pool, with the same validation and timing as
the "run" job (validated on a poisoned output first; a wrong kernel is not timed). The numpy row
times the project's float64 reference (job ``"numpy_time"``): the oracle every kernel is checked
against, not a float32 numpy program tuned for speed.

Columns: ``name``, ``median_ms`` (per call), ``gflops`` (the chain's FLOP / median time),
``ratio`` = ``median_ms / yours`` (time relative to the user's schedule: 2.0 is twice as slow,
0.5 twice as fast). Once every row is measured, the kernel rows are timed again side by side
with the user's in paired, alternating rounds (job ``rounds``): ``ratio`` is then the median
of the rounds' ratios and ``ratio_low`` / ``ratio_high`` its 95% bootstrap interval
(:mod:`playground.measure.stats`), so that a row 3% faster than yours reads as within noise.

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
from playground.chain.spec import chain_flop, chain_to_json
from playground.errors import PlaygroundError
from playground.measure.sampling import METHOD
from playground.measure.stats import compare_rounds
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.worker.job_table import NUMPY_TIME
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
    under_load: bool | None = None  # timed under load (see playground.measure.load); None: unknown
    ratio_low: float | None = None  # 95% interval of ``ratio`` over paired rounds with yours
    ratio_high: float | None = None

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
    from playground.io.presets import load_preset, preset_paths, read_preset

    key = chain_to_json(chain)
    out = []
    for path in preset_paths():
        try:
            data = read_preset(path.stem)
            if data["target"] != "cpu" or chain_to_json(data["chain"]) != key:
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
                     numpy: bool = True, repeat: int = METHOD["repeat"],
                     min_repeat_ms: float = METHOD["min_repeat_ms"],
                     rounds: int = 5,
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
    ``rounds`` paired rounds then give every timed kernel row its interval against yours (0:
    none).
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
    steps_of = {name: steps for name, _, steps in plan if steps is not None}
    steps_of.update({f"preset: {name}": steps for name, steps in candidates})
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
            result = NUMPY_TIME.call(pool, {"chain": chain, "repeat": min(repeat, 5),
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
    rows = _ratios(rows)
    return _paired(pool, chain, rows, steps_of, rounds, cancel) if rounds and not stopped() \
        else rows


def _paired(pool: WorkerPool, chain: dict, rows: list[CompareRow],
            steps_of: dict[str, tuple[Step, ...]], rounds: int, cancel) -> list[CompareRow]:
    """Rows with ``ratio`` and its interval from paired rounds of every timed kernel row
    against yours (one ``rounds`` job); unchanged when the rounds fail."""
    timed = [r for r in rows if r.median_ms and r.name in steps_of and r.kind != "yours"]
    yours = next((r for r in rows if r.kind == "yours" and r.median_ms), None)
    if yours is None or not timed:
        return rows
    result = service.rounds(pool, chain, [steps_of[yours.name]] + [steps_of[r.name]
                                                                  for r in timed],
                            "cpu", rounds=rounds, cancel=cancel)
    if not result.ok:
        return rows
    mine, *others = result.value["rounds_ms"]
    loaded = bool(result.value.get("under_load"))
    by_name = {}
    for row, times in zip(timed, others, strict=True):
        iv = compare_rounds(times, mine)
        by_name[row.name] = replace(row, ratio=iv.ratio, ratio_low=iv.low, ratio_high=iv.high,
                                    under_load=bool(row.under_load) or loaded)
    return [by_name.get(r.name, r) for r in rows]


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
             "95% interval": "" if r.ratio_low is None else
             f"{r.ratio_low:.2f}–{r.ratio_high:.2f}",
             "under load": {True: "yes", False: "no"}.get(r.under_load, "?"),
             "status": r.status, "message": r.message} for r in rows]
