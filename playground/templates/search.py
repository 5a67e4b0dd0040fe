"""A small measured search over template choices: tiles per stage, and which stages to fuse.

The search writes each candidate as ordinary steps (:func:`~playground.templates.plan.
plan_steps`), then builds, validates and times it in the worker (job ``"run"``: NaN-poisoned
intermediates, two input seeds, timed only when correct), best-first within a time budget:

1. every stage at its best-ranked tile, nothing fused;
2. for each 3x3 stride-1 dense convolution of 32 channels or more, heaviest first, Winograd's
   F(2x2, 3x3) (:mod:`~playground.templates.winograd`: fewer multiplies, where a direct
   conv already runs near the FMA peak);
3. for each convolution, heaviest first, its next-ranked tiles (the others at their best so
   far): a coordinate descent over the stages;
4. the fusion options (:func:`~playground.templates.space.fusion_options`, pruned by the
   tile's intermediate bytes against L2 and the halo's redundant work), with the best tiles;
   a pool computed per register tile of the conv before it
   (:mod:`~playground.templates.pool_tiles`) with that conv at its own tile, first where the
   conv's best tile so far is a column tile too, else last.

When the chain has fusion options, the descent stops at ``DESCENT_SHARE`` of the budget and
at least one fusion option is measured whatever the budget: the verdict needs a fused schedule
to compare, and a loaded machine must not turn "the budget ran out" into "nothing fits".

It runs from the caller's thread (the page runs it in the background, the command line in
the foreground); every build and run happens in the worker pool, one measurement at a time
under the machine-wide lock. ``cancel`` stops it between candidates (the job in flight is
killed); what was measured so far is kept.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from playground import service
from playground.chain.spec import chain_flop, normalize_chain
from playground.errors import PlaygroundError
from playground.measure.machine import MachineFacts
from playground.measure.sampling import METHOD
from playground.measure.stats import RatioInterval, compare_rounds, decide
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.templates.conv import Tile
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.space import FusionOption, fusion_options, tile_candidates
from playground.templates.stages import Stage, stages
from playground.templates.winograd import winograd_tiles

#: Timing of each candidate: enough samples to rank, few enough to try many.
REPEAT, MIN_REPEAT_MS = 5, 40.0
#: The share of a search's budget spent searching (:func:`search_and_finalize`); the rest times
#: the fastest side by side.
SEARCH_SHARE = 0.8
#: The share of the budget the tile descent may use when the chain has fusion options: the
#: rest is theirs, so that a slow machine (or a short budget) still measures a fused schedule.
DESCENT_SHARE = 0.6


@dataclass(frozen=True)
class Candidate:
    """One measured schedule of the search."""

    label: str
    plan: Plan
    steps: tuple[Step, ...] = ()
    status: str = ""  # ok | wrong_result | invalid | <a JobResult status>
    median_ms: float | None = None
    gflops: float | None = None
    message: str = ""
    timing: dict | None = None
    fusion: FusionOption | None = None
    max_abs_error: float | None = None
    #: Medians (ms) of the paired rounds this candidate was last re-timed in (:func:`retime`);
    #: empty when it was timed only once, by the search.
    rounds_ms: tuple[float, ...] = ()
    under_load: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.median_ms is not None

    @property
    def fused(self) -> bool:
        return any(g.fused for g in self.plan.groups)

    def to_dict(self) -> dict:
        return {"label": self.label, "plan": self.plan.to_dict(), "status": self.status,
                "median_ms": self.median_ms, "gflops": self.gflops, "message": self.message,
                "max_abs_error": self.max_abs_error, "rounds_ms": list(self.rounds_ms),
                "under_load": self.under_load,
                "fused": self.fused, "steps": [s.to_dict() for s in self.steps]}


@dataclass(frozen=True)
class Final:
    """The best candidate against the runner-up (or the verdict's pair), timed in paired
    rounds: ``interval`` is ``other / best`` (above 1: the best is faster), ``call`` what
    :func:`playground.measure.stats.decide` makes of it, ``by`` who timed it."""

    best: str
    other: str
    interval: RatioInterval
    call: str
    by: str  # "search" or "verdict"
    under_load: bool = False

    def to_dict(self) -> dict:
        return {"best": self.best, "other": self.other, "interval": self.interval.to_dict(),
                "call": self.call, "by": self.by, "under_load": self.under_load}


@dataclass
class SearchResult:
    """Every candidate measured, the best, and how long it took."""

    chain: dict
    candidates: list[Candidate] = field(default_factory=list)
    search_s: float = 0.0
    cancelled: bool = False
    facts: dict | None = None
    #: (start, end, predicted duration; -1 where it was measured whatever the budget) of each
    #: candidate, in seconds from the search's start: what the budget did.
    timeline: list[tuple[float, float, float]] = field(default_factory=list)
    #: The last side-by-side comparison of its best (:func:`finalize` or the verdict): which
    #: candidates, and the ratio with its interval (see :class:`Final`).
    final: Final | None = None
    tile_local: bool = True  # candidates built with the tile-local step

    def best(self, fused: bool | None = None) -> Candidate | None:
        """The fastest validated candidate (only fused / only unfused ones when asked).

        Once a side-by-side comparison chose one (:attr:`final`), that is the best: its paired
        rounds outrank a single timing of the search that happened to be lower."""
        ok = [c for c in self.candidates if c.ok and (fused is None or c.fused == fused)]
        chosen = [c for c in ok if self.final is not None and c.label == self.final.best]
        if chosen:
            return chosen[0]
        return min(ok, key=lambda c: c.median_ms) if ok else None

    @property
    def measured(self) -> int:
        return sum(c.ok for c in self.candidates)


def _unfused(stages_: list[Stage]) -> tuple[Group, ...]:
    return tuple(Group(i, i) for i in range(len(stages_)))


def _with_group(stages_: list[Stage], group: Group) -> tuple[Group, ...]:
    return (*(Group(i, i) for i in range(group.first)), group,
            *(Group(i, i) for i in range(group.last + 1, len(stages_))))


def candidate_plans(chain: dict, facts: MachineFacts, *, fused: bool | None = None,
                    best_tiles: list[Tile | None] | None = None,
                    weights: str = "per-call") -> Iterator[tuple[str, Plan,
                                                                                     FusionOption |
                                                                                     None]]:
    """Plans in the order the search measures them (see the module docstring); ``fused``
    restricts to unfused (False) or fused (True) plans. ``best_tiles`` is read at each step,
    so a caller that updates it steers the descent."""
    st = stages(chain)
    lanes = facts.lanes("float32")
    options = {i: tile_candidates(s, facts) for i, s in enumerate(st)}
    tiles = best_tiles if best_tiles is not None else [None] * len(st)
    for i, cands in options.items():
        if tiles[i] is None and cands:
            tiles[i] = cands[0]
    groups = _unfused(st)
    if fused is not True:
        yield "tiles " + _describe_tiles(st, tuple(tiles)), Plan(tuple(tiles), groups, lanes,
                                                                  weights=weights), None
        order = sorted((i for i, s in enumerate(st) if s.kind == "conv"),
                       key=lambda i: -st[i].flop)
        for i in order:  # Winograd first: where it applies it wins by the most, or not
            for alt in winograd_tiles(st[i], lanes, l2_bytes=facts.caches.get("L2", 0)):
                trial = list(tiles)
                trial[i] = alt
                yield (f"{st[i].name}: {alt.label()}",
                       Plan(tuple(trial), groups, lanes, weights=weights), None)
        for i in order:
            for alt in options[i][1:6]:
                trial = list(tiles)
                trial[i] = alt
                yield (f"{st[i].name}: {alt.label()}",
                       Plan(tuple(trial), groups, lanes, weights=weights), None)
    if fused is not False:
        fusions = fusion_options(st, facts)
        per_tile = [o for o in fusions if o.tile is not None]
        rest = [o for o in fusions if o.tile is None][:6]
        # a pool per register tile of the conv before it first where that conv's best tile
        # so far is a column tile too (else it is measured last)
        first = [o for o in per_tile if tiles[o.group.last - 1] is not None
                 and tiles[o.group.last - 1].vector == "w"]
        for option in [*first, *rest, *(o for o in per_tile if o not in first)]:
            g = option.group
            names = "+".join(s.name for s in st[g.first:g.last + 1])
            plan_tiles = _fusable(tiles, options, g)
            if option.tile is not None:  # the conv's tile for a pool per register tile
                plan_tiles = (*plan_tiles[:g.last - 1], option.tile, *plan_tiles[g.last:])
            yield (f"fuse {names} at {g.where}",
                   Plan(plan_tiles, _with_group(st, g), lanes, weights=weights), option)


def _fusable(tiles: list[Tile | None], options: dict[int, list[Tile]],
             group: Group) -> tuple[Tile | None, ...]:
    """``tiles`` with each tile the group cannot take (:meth:`Group.takes`: a pixel-vector
    tile anywhere but as the last layer of a row-tile group its rows divide) replaced by the
    stage's best tile it can."""
    return tuple(t if group.takes(i, t) else next((o for o in options[i] if group.takes(i, o)),
                                                  None)
                 for i, t in enumerate(tiles))


def _describe_tiles(st: list[Stage], tiles: tuple[Tile | None, ...]) -> str:
    parts = [f"{s.name} {t.vector}:{t.kt}x{t.nt if t.vector == 'n' else t.ht}x{t.wt}"
             for s, t in zip(st, tiles, strict=True) if t is not None]
    return ", ".join(parts) or "default"


def measure_candidate(pool: Any, chain: dict, label: str, plan: Plan, *, target: str = "cpu",
                      cancel: threading.Event | None = None,
                      fusion: FusionOption | None = None, repeat: int = REPEAT,
                      min_repeat_ms: float = MIN_REPEAT_MS, tile_local: bool = True) -> Candidate:
    """Write the plan as steps, then validate and time it in the worker (built with the
    tile-local step unless ``tile_local`` is False)."""
    try:
        recorder = plan_steps(chain, plan, target=target)
    except PlaygroundError as e:
        return Candidate(label, plan, status="invalid", message=e.message, fusion=fusion)
    steps = tuple(recorder.steps)
    session = Session(recorder.chain, steps, len(steps))
    result = service.run(pool, session, target, measure=True, repeat=repeat,
                         min_repeat_ms=min_repeat_ms, cancel=cancel, tile_local=tile_local,
                         weights=plan.weights)
    value = result.value or {}
    status = result.status if result.status != "ok" or value.get("correct") else "wrong_result"
    return Candidate(label, plan, steps, status, value.get("median_ms"), value.get("gflops"),
                     result.message or value.get("message", ""), value.get("timing"), fusion,
                     value.get("max_abs_error"))


def search(pool: Any, chain: dict, facts: MachineFacts, *, budget_s: float = 60.0,
           target: str = "cpu", fused: bool | None = None,
           cancel: threading.Event | None = None,
           on_progress: Callable[[Candidate, SearchResult], None] | None = None,
           record: str = "", started: float | None = None,
           tile_local: bool = True, weights: str = "per-call") -> SearchResult:
    """Measure template choices for ``chain`` until the budget is spent (or all are tried).

    Parameters
    ----------
    pool
        A worker pool (:class:`~playground.worker.pool.WorkerPool` or the page's pools).
    facts
        The machine the kernels run on (from :func:`playground.measure.machine.machine_facts`).
    budget_s
        Wall-clock budget, counted from ``started`` (a :func:`time.monotonic` reading: the
        click or the command; default now). A candidate is started only when it should end
        within the budget (it is expected to take what the others took); the first one, and
        the first fused one, are measured whatever the budget.
    fused
        Only unfused (False) or only fused (True) schedules; None: both.
    on_progress
        Called after every candidate with it and the result so far (best-so-far included).
    record
        When given (the source: ``"page"``, ``"cli"``), the search goes into the experiment
        store as one group, every candidate under it (failures included).
    tile_local
        Build every candidate with the tile-local step (:mod:`playground.compile.tile_local`).
    weights
        ``"constant"``: plans keep the weight re-layouts top-level and are timed with them
        run once before the kernel (every candidate's plan carries the mode).
    """
    chain = normalize_chain(chain)
    result = SearchResult(chain, facts=facts.to_dict(), tile_local=tile_local)
    st = stages(chain)
    tiles: list[Tile | None] = [None] * len(st)
    t0 = time.monotonic() if started is None else started
    best_ms: float | None = None
    group = _record_group(pool, chain, target, budget_s, fused, record, weights) \
        if record else None
    has_fusion = fused is not False and bool(fusion_options(st, facts))
    tried_fused = False
    for label, plan, option in candidate_plans(chain, facts, fused=fused, best_tiles=tiles,
                                              weights=weights):
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            break
        elapsed = time.monotonic() - t0
        if option is None and has_fusion and result.measured \
                and elapsed > budget_s * DESCENT_SHARE:
            continue  # the rest of the budget belongs to the fusion options
        # A candidate takes about what the others took: start one only if it should end
        # within the budget, unless it is the first, or the first fused one where the chain
        # has fusion options (the verdict needs one whatever the budget).
        predicted = statistics.median(e - b for b, e, _ in result.timeline) \
            if result.timeline else 0.0
        must = not result.measured or (option is not None and not tried_fused)
        if not must and elapsed + predicted > budget_s:
            if has_fusion and not tried_fused:
                continue  # skip the rest of the descent to the first fusion option
            break
        tried_fused = tried_fused or option is not None
        began = time.monotonic() - t0
        cand = measure_candidate(pool, chain, label, plan, target=target, cancel=cancel,
                                 fusion=option, tile_local=tile_local)
        result.timeline.append((began, time.monotonic() - t0, -1.0 if must else predicted))
        result.candidates.append(cand)
        if group is not None:
            group.add(cand.steps, status=cand.status, error=cand.message, label=label,
                      value={"median_ms": cand.median_ms, "gflops": cand.gflops,
                             "correct": cand.status == "ok", "timing": cand.timing,
                             "max_abs_error": cand.max_abs_error, "plan": plan.to_dict(),
                             "weights": plan.weights})
        if cand.ok and not cand.fused and (best_ms is None or cand.median_ms < best_ms):
            best_ms = cand.median_ms
            tiles[:] = list(plan.tiles)  # the descent continues from the best tiles
        if on_progress is not None:
            on_progress(cand, result)
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            break
    result.search_s = time.monotonic() - t0
    if group is not None:
        group.finish("cancelled" if result.cancelled else "done")
    return result


def _record_group(pool: Any, chain: dict, target: str, budget_s: float, fused: bool | None,
                  source: str, weights: str = "per-call"):
    """The store's record of this search: on this machine, or on the pools' measurement farm
    when candidates are timed there (see :func:`playground.service.run`)."""
    from playground.store import record_group

    machine = timing_machine(pool, target)
    kind = {None: "", True: " (fused only)", False: " (unfused only)"}[fused]
    return record_group("search", chain, target, machine,
                        label=f"template search{kind}, {budget_s:.0f} s, {weights} weights",
                        source=source, info={"budget_s": budget_s, "fused": fused,
                                             "weights": weights})


def timing_machine(pool: Any, target: str) -> dict:
    """The machine a ``pool``'s timings for ``target`` are taken on, as the store names it:
    the pools' measurement farm when it times that target, else this machine."""
    from playground.measure.machine import host_fingerprint

    farm = getattr(pool, "farm", None)
    return {"remote": farm.label} if farm is not None and farm.target == target \
        else host_fingerprint()


def flop(chain: dict) -> float:
    return chain_flop(normalize_chain(chain))


def retime(pool: Any, result: SearchResult, cands: list[Candidate], *, target: str = "cpu",
           rounds: int = 7, cancel: threading.Event | None = None) -> list[Candidate] | None:
    """Time ``cands`` again side by side in paired, alternating rounds (job ``rounds``) and
    put them back into ``result`` with their rounds (``rounds_ms``) and the rounds' median as
    ``median_ms``: the search's table, its best and the verdict then show the same numbers.
    Returns the re-timed candidates (in the order given), or None when the rounds failed."""
    res = service.rounds(pool, result.chain, [c.steps for c in cands], target, rounds=rounds,
                         cancel=cancel, tile_local=result.tile_local,
                         weights=cands[0].plan.weights)
    if not res.ok:
        return None
    flop_ = chain_flop(result.chain)
    loaded = bool(res.value.get("under_load"))
    out = []
    for cand, times in zip(cands, res.value["rounds_ms"], strict=True):
        median = statistics.median(times)
        again = replace(cand, median_ms=median, gflops=flop_ / (median * 1e6),
                        rounds_ms=tuple(times), under_load=loaded)
        result.candidates = [again if c is cand else c for c in result.candidates]
        out.append(again)
    return out


def rounds_for(budget_s: float, cands: list[Candidate], *, most: int = 7,
               least: int = 3) -> int:
    """How many rounds of ``cands`` fit in ``budget_s`` seconds (between ``least`` and
    ``most``): a round times each for three samples of the method's length (or one call,
    if longer), plus the evaluator's discarded call; the method's warm-up comes once."""
    sample_s = METHOD["min_repeat_ms"] * 1e-3
    per_round = sum(4 * max(sample_s, (c.median_ms or 0) * 1e-3) * 1.3 for c in cands)
    return max(least, min(most, int(budget_s / max(per_round, 1e-3))))


def finalize(pool: Any, result: SearchResult, *, top: int = 3, rounds: int = 7,
             target: str = "cpu", cancel: threading.Event | None = None) -> Candidate | None:
    """The best candidate, chosen again from the ``top`` fastest by timing them side by side
    in ``rounds`` paired rounds (:func:`retime`): one noisy sample during the search (another
    process waking up, say) should not pick the answer. ``result.final`` gets the best
    against the runner-up with its interval. Returns None when nothing validated."""
    ok = sorted((c for c in result.candidates if c.ok), key=lambda c: c.median_ms)[:top]
    if len(ok) <= 1:
        return remeasure(pool, result.chain, ok[0], target=target,
                         tile_local=result.tile_local) if ok else None
    again = retime(pool, result, ok, target=target, rounds=rounds, cancel=cancel)
    if again is None:
        return ok[0]
    ranked = sorted(again, key=lambda c: c.median_ms)
    best, other = ranked[0], ranked[1]
    interval = compare_rounds(other.rounds_ms, best.rounds_ms)
    if interval.ratio < 1:  # the paired ratio outranks the medians taken apart
        best, other = other, best
        interval = compare_rounds(other.rounds_ms, best.rounds_ms)
    result.final = Final(best.label, other.label, interval, decide(interval), "search",
                         bool(best.under_load))
    return best


def search_and_finalize(pool: Any, chain: dict, facts: MachineFacts, *, budget_s: float,
                        started: float | None = None, target: str = "cpu",
                        cancel: threading.Event | None = None,
                        on_progress: Callable[[Candidate, SearchResult], None] | None = None,
                        on_finalize: Callable[[int], None] | None = None,
                        record: str = "", tile_local: bool = True,
                        weights: str = "per-call") -> tuple[SearchResult, Candidate | None]:
    """:func:`search` for :data:`SEARCH_SHARE` of the budget, then :func:`finalize` in the
    rounds that fit in what is left: the answer of ``auto`` and of the page's search, within
    ``budget_s`` of ``started`` (the click or the command). ``on_finalize(n)`` is called
    before the ``n`` fastest are re-timed."""
    t0 = time.monotonic() if started is None else started
    result = search(pool, chain, facts, budget_s=budget_s * SEARCH_SHARE, target=target,
                    cancel=cancel, on_progress=on_progress, record=record, started=t0,
                    tile_local=tile_local, weights=weights)
    top = sorted((c for c in result.candidates if c.ok), key=lambda c: c.median_ms)[:3]
    if cancel is not None and cancel.is_set():
        return result, result.best()
    if on_finalize is not None and len(top) > 1:
        on_finalize(len(top))
    left = budget_s - (time.monotonic() - t0)
    best = finalize(pool, result, rounds=rounds_for(left, top), target=target, cancel=cancel)
    return result, best


def remeasure(pool: Any, chain: dict, cand: Candidate, *, target: str = "cpu",
              repeat: int = METHOD["repeat"], tile_local: bool = True) -> Candidate:
    """The candidate timed again with more samples (for the final answer)."""
    again = measure_candidate(pool, chain, cand.label, cand.plan, target=target,
                              fusion=cand.fusion, repeat=repeat,
                              min_repeat_ms=METHOD["min_repeat_ms"], tile_local=tile_local)
    return again if again.ok else replace(cand, message=again.message or cand.message)
