"""Should I fuse these layers? The best fused and best unfused schedules, measured side by side.

For a chain with two or more window layers (convolutions, pools) "fused" means some of them
are computed tile by tile together (:class:`~playground.templates.plan.Group`); "unfused"
means each is a separate pass over its whole output. For a chain with one window layer the
question is its epilogue: bias, batch norm and activations folded into the write-back, or run
as separate passes. Both schedules come from the search; then they are timed again in
alternating rounds (so that a change in the machine's load hits both), and:

* ``ratio`` = unfused / fused time: the median of the rounds' ratios, with a 95% bootstrap
  interval over the rounds (:mod:`playground.measure.stats`); "fuse" when the whole interval is
  above 1.05 by at least its own width and by 2% (what a ratio drifts between runs), so that
  the call holds when measured again; "don't fuse" likewise below 1/1.05, else "no
  difference (within noise)" (the reason says when the interval clears the band by less:
  too close to call);
* the rounds run in one worker job under the measurement lock (:func:`~playground.templates.
  search.retime`) and replace the two candidates' times in the search's result, so the
  search's table and best show the verdict's numbers, never others that contradict them;
* rounds taken under load (:mod:`playground.measure.load`) are taken again once the load drops
  (waiting at most what is left of the budget); still loaded, the verdict says it is
  unreliable;
* the reason says why, in one sentence, from the analysis of both schedules: the work the
  halo repeats, where the intermediate lives (a tile in L2, or a whole tensor streamed through
  L3 or memory), e.g. "fusing conv1 into conv2 at 8-row tiles repeats 23% of conv1's work
  and keeps a 450 KiB tile of the intermediate in L2 instead of streaming 784 KiB through
  L3: 0.85x, don't fuse".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from playground import service
from playground.chain.spec import normalize_chain
from playground.measure.load import LoadProbe
from playground.measure.machine import STAYS_SHARE, MachineFacts, fitting_level
from playground.measure.stats import (
    FASTER,
    SAME,
    SLOWER,
    RatioInterval,
    close_call,
    compare_rounds,
    decide,
)
from playground.schedule.session import Session
from playground.templates.plan import Plan
from playground.templates.search import (
    Candidate,
    Final,
    SearchResult,
    measure_candidate,
    retime,
    rounds_for,
    search,
)
from playground.templates.space import fusion_options
from playground.templates.stages import Stage, stages
from playground.worker.job_table import ANALYZE

#: Within this ratio (either way) the two schedules are "no difference".
NO_DIFFERENCE = 1.05
#: The share of the budget the search may use; the rest is the side-by-side rounds'.
SEARCH_SHARE = 0.7
#: The share of the budget left for the reason's analysis job after the rounds.
REASON_SHARE = 0.05
#: The verdict's words for :func:`playground.measure.stats.decide`'s calls.
CALLS = {FASTER: "fuse", SLOWER: "don't fuse", SAME: "no difference (within noise)"}


@dataclass(frozen=True)
class Verdict:
    """The answer to "should I fuse", with both schedules and the numbers behind it."""

    verdict: str  # "fuse", "don't fuse" or "no difference"
    fused_ms: float | None
    unfused_ms: float | None
    ratio: float | None  # unfused / fused: > 1 means fusing is faster
    reason: str
    fused_layers: list[list[str]]
    fused: Candidate | None
    unfused: Candidate | None
    search: SearchResult | None = None
    interval: RatioInterval | None = None  # of ``ratio``, over the paired rounds
    under_load: bool = False  # the rounds (taken again once) were still under load
    remeasured: bool = False  # the first rounds were under load and were taken again

    @property
    def ratio_text(self) -> str:
        """``"unfused / fused = 1.12x, 95% interval 1.05-1.19x (7 rounds)"`` (or "")."""
        return self.interval.text("unfused / fused") if self.interval else ""

    def to_dict(self) -> dict:
        iv = self.interval
        return {"verdict": self.verdict, "fused_ms": self.fused_ms,
                "unfused_ms": self.unfused_ms, "ratio": self.ratio,
                "ratio_low": iv.low if iv else None, "ratio_high": iv.high if iv else None,
                "rounds": list(iv.ratios) if iv else [], "ratio_text": self.ratio_text,
                "close_call": bool(iv and close_call(iv, NO_DIFFERENCE)),
                "under_load": self.under_load, "remeasured": self.remeasured,
                "reliable": iv is not None and not self.under_load, "reason": self.reason,
                "fused_layers": self.fused_layers,
                "fused": self.fused.to_dict() if self.fused else None,
                "unfused": self.unfused.to_dict() if self.unfused else None,
                "search_s": self.search.search_s if self.search else None,
                "candidates": self.search.measured if self.search else 0}


def _kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 4 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _where(nbytes: int, facts: MachineFacts) -> str:
    """Where a tensor stays between being written and read back: L2, L3 or memory (an L1
    counts as L2 here: the verdict speaks of the levels a tile or a layer lives in)."""
    caches = {k: v for k, v in facts.caches.items() if k in ("L2", "L3")}
    return fitting_level(nbytes, caches, STAYS_SHARE)


def _stays(level: str) -> str:
    return "goes through memory" if level == "memory" else f"stays in {level}"


def _call(interval: RatioInterval) -> str:
    """The verdict's call: decided only where it holds when measured again (the interval
    clears the band by its own width, :func:`~playground.measure.stats.decide`)."""
    return CALLS[decide(interval, NO_DIFFERENCE, replicable=True)]


def _measured(pool: Any, chain: dict, cand: Candidate, producers: list[str],
              anchor: str, tile_local: bool) -> tuple[float | None, int | None]:
    """Work done / needed by the producer layers' blocks, and the bytes of the intermediate
    tiles one parallel iteration allocates (compacted buffers, weight copies and the anchor's
    own accumulators aside), read from the fused schedule's lowered TIR (job ``analyze``);
    None where the analysis is not available."""
    session = Session(chain, cand.steps, len(cand.steps))
    res = ANALYZE.call(pool, service.payload(session, "cpu", tile_local=tile_local))
    if not res.ok:
        return None, None
    done = needed = 0
    for block in res.value.get("blocks", []):
        if any(block["block"] == p or block["block"].startswith(p + "_") for p in producers) \
                and block["flop_needed"]:
            done += block["flop_done"]
            needed += block["flop_needed"]
    footprint = sum(b["bytes"] for b in res.value.get("buffers", [])
                    if b["role"] == "intermediate" and "_weight" not in b["name"]
                    and (b["name"] == f"{anchor}_pad" or not b["name"].startswith(anchor)))
    return (done / needed if needed else None), footprint or None


def _reason(pool: Any, chain: dict, st: list[Stage], fused: Candidate,
            interval: RatioInterval, facts: MachineFacts, tile_local: bool = True) -> str:
    call = _call(interval)
    close = (" (the interval clears the 5% band by less than its own width or the 2% a "
             "ratio drifts between runs: too close to call, a re-measurement could fall "
             "inside it)"
             if close_call(interval, NO_DIFFERENCE) else "")
    tail = f"{interval.text('unfused / fused')}{close}: {call}"
    if fused.fusion is None:  # the epilogue question
        s = st[0] if len(st) == 1 else next(x for x in st if x.kind != "elementwise")
        nbytes = 4 * _prod(s.out_shape)
        return (f"folding {', '.join(s.epilogue_blocks)} into {s.name}'s write-back saves "
                f"{len(s.epilogue)} pass(es) over its {_kib(nbytes)} output (which "
                f"{_stays(_where(nbytes, facts))} between them): {tail}")
    g = fused.fusion.group
    producers = [st[i].name for i in range(g.first, g.last)]
    measured, footprint = _measured(pool, chain, fused, producers, st[g.last].name, tile_local)
    redundancy = measured if measured is not None else fused.fusion.redundancy
    tile_bytes = footprint or fused.fusion.tile_bytes
    inter = sum(4 * _prod(st[i].out_shape) for i in range(g.first, g.last))
    what = " and ".join(producers)
    tile_at, whole_at = _where(tile_bytes, facts), _where(inter, facts)
    head = (f"fusing {what} into {st[g.last].name} at {g.where} repeats "
            f"{max(0.0, redundancy - 1) * 100:.0f}% of {what}'s work")
    if tile_at == whole_at:
        if call == "fuse":  # no cache level gained, yet faster: a pass saved
            return (f"{head}; the whole {_kib(inter)} intermediate {_stays(whole_at)} anyway, "
                    f"so what fusing saves is the pass that writes it out and reads it back: "
                    f"{tail}")
        return (f"{head}, and buys no locality: the whole {_kib(inter)} intermediate "
                f"{_stays(whole_at)} anyway: {tail}")
    slower = ", yet measured slower" if call == "don't fuse" else ""
    lowered = " (as lowered)" if footprint else ""
    return (f"{head} and keeps a {_kib(tile_bytes)} tile of the intermediate{lowered} in "
            f"{tile_at} instead of streaming {_kib(inter)} through {whole_at}{slower}: {tail}")


def _prod(shape: Any) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _epilogue_pair(pool: Any, chain: dict, best: Candidate, target: str,
                   cancel: threading.Event | None, tile_local: bool) -> Candidate:
    """The best schedule with its epilogue run as separate passes (the unfused twin)."""
    plan = replace(best.plan, fold_epilogue=False)
    return measure_candidate(pool, chain, best.label + " (epilogue as separate passes)", plan,
                             target=target, cancel=cancel, tile_local=tile_local)


def _loaded_now(seconds: float = 1.0) -> bool:
    """Whether other processes keep more than a quarter of a core busy right now (the worker
    is idle between jobs, so it counts among the others only if it is busy)."""
    with LoadProbe() as probe:
        time.sleep(seconds)
    return bool(probe.load and probe.load.under_load)


def _side_by_side(pool: Any, result: SearchResult, unfused: Candidate, fused: Candidate,
                  target: str, cancel: threading.Event | None, deadline: float
                  ) -> tuple[Candidate, Candidate, bool, bool] | None:
    """``unfused`` and ``fused`` re-timed in paired rounds (fitted to the time left before
    ``deadline``, :func:`time.monotonic`); rounds under load are taken again once the load
    drops. Returns (unfused, fused, still under load, taken again), None when they failed."""
    rounds = rounds_for(max(0.0, deadline - time.monotonic()), [unfused, fused])
    again = retime(pool, result, [unfused, fused], target=target, rounds=rounds, cancel=cancel)
    if again is None:
        return None
    loaded, remeasured = bool(again[0].under_load), False
    while loaded and time.monotonic() < deadline - 1.0 and not (cancel and cancel.is_set()):
        if _loaded_now():
            continue
        second = retime(pool, result, again, target=target, rounds=rounds, cancel=cancel)
        if second is not None:
            again, loaded, remeasured = second, bool(second[0].under_load), True
        break
    return again[0], again[1], loaded, remeasured


def _no_fused_why(result: SearchResult, st: list[Stage], facts: MachineFacts) -> str:
    """Why the search has no fused schedule to compare: none fits, every one tried failed
    (with the first failure's message), or the search was cancelled before one ran."""
    tried = [c for c in result.candidates if c.fused]
    if tried:
        first = tried[0]
        said = (first.message or "").strip().splitlines()
        why = f": {said[0][:200]}" if said else ""
        return (f"every fused schedule tried failed ({len(tried)}; the first, "
                f"{first.label!r}: {first.status}{why})")
    if result.cancelled and fusion_options(st, facts):
        return "the search was cancelled before a fused schedule was measured"
    return ("no fused schedule fits this chain (every fusion option repeats too much "
            "work, needs more than L2 per tile, or leaves too few tiles for the cores)")


def _unpaired(result: SearchResult, st: list[Stage], windows: list[Stage],
              fused: Candidate | None, facts: MachineFacts) -> tuple[str, str]:
    """The call and reason when there is no pair to time side by side. Without a fused
    schedule nothing fused was measured against the unfused one: the answer is not to fuse
    (not "no difference", which would claim a measurement), and the reason says why."""
    if len(windows) < 2 and not any(s.epilogue for s in st):
        return "no difference", "nothing to fuse: the chain has one layer and no epilogue"
    if fused is None:
        return "don't fuse", _no_fused_why(result, st, facts)
    # an epilogue's separate passes failed (fusing is all that runs), or no unfused one did
    return ("fuse" if len(windows) < 2 else "no difference"), "the unfused schedule failed"


def fusion_verdict(pool: Any, chain: dict, facts: MachineFacts, *, budget_s: float = 60.0,
                   target: str = "cpu", cancel: threading.Event | None = None,
                   on_progress: Callable[[Candidate, SearchResult], None] | None = None,
                   result: SearchResult | None = None,
                   started: float | None = None, tile_local: bool = True,
                   weights: str = "per-call") -> Verdict:
    """Search (unless ``result`` is a search already done for this chain), then time the best
    fused and best unfused schedules side by side (built with the tile-local step unless
    ``tile_local`` is False, with ``weights`` as the search's plans carry them; a given
    ``result`` keeps its own settings); the answer comes within ``budget_s`` of ``started`` (a
    :func:`time.monotonic` reading: the click or the command; default now)."""
    t0 = time.monotonic() if started is None else started
    chain = normalize_chain(chain)
    st = stages(chain)
    windows = [s for s in st if s.kind != "elementwise"]
    if result is None:
        result = search(pool, chain, facts, budget_s=budget_s * SEARCH_SHARE, target=target,
                        cancel=cancel, on_progress=on_progress, started=t0,
                        tile_local=tile_local, weights=weights)
    tile_local = result.tile_local
    if len(windows) >= 2:
        fused, unfused = result.best(fused=True), result.best(fused=False)
    else:
        fused = result.best()
        unfused = None
        if fused is not None and any(s.epilogue for s in st):
            unfused = _epilogue_pair(pool, chain, fused, target, cancel, tile_local)
            result.candidates.append(unfused)
    if fused is None or unfused is None or not unfused.ok:
        only = fused or unfused
        call, why = _unpaired(result, st, windows, fused, facts)
        return Verdict(call,
                       only.median_ms if only and only is fused else None,
                       only.median_ms if only and only is unfused else None, None, why,
                       [], fused, unfused, result)
    # The reason's analysis job comes after the rounds: leave it a little of the budget.
    timed = _side_by_side(pool, result, unfused, fused, target, cancel,
                          t0 + budget_s * (1 - REASON_SHARE))
    if timed is None:
        return Verdict("no difference (within noise)", fused.median_ms, unfused.median_ms, None,
                       "the side-by-side rounds failed; the search's single timings cannot "
                       "tell a 5% difference", [], fused, unfused, result)
    unfused, fused, loaded, remeasured = timed
    interval = compare_rounds(unfused.rounds_ms, fused.rounds_ms)
    call = _call(interval)
    reason = _reason(pool, chain, st, fused, interval, facts, tile_local)
    if loaded:
        reason += (" (measured under load, also when taken again: unreliable)" if remeasured
                   else " (measured under load: unreliable)")
    # The search's best is the one the verdict's paired ratio favours: never the other.
    best, other = (fused, unfused) if interval.ratio >= 1 else (unfused, fused)
    versus = compare_rounds(other.rounds_ms, best.rounds_ms)
    result.final = Final(best.label, other.label, versus,
                         decide(versus, NO_DIFFERENCE, replicable=True), "verdict", loaded)
    return Verdict(call, fused.median_ms, unfused.median_ms, interval.ratio, reason,
                   fused.plan.fused_layers(st) if fused.fusion else
                   [[windows[0].name, *windows[0].epilogue_blocks]] if windows else [],
                   fused, unfused, result, interval, loaded, remeasured)


__all__ = ["Plan", "Verdict", "fusion_verdict"]
