"""Should I fuse these layers? The best fused and best unfused schedules, measured side by side.

For a chain with two or more window layers (convolutions, pools) "fused" means some of them
are computed tile by tile together (:class:`~playground.templates.plan.Group`); "unfused"
means each is a separate pass over its whole output. For a chain with one window layer the
question is its epilogue: bias, batch norm and activations folded into the write-back, or run
as separate passes. Both schedules come from the search; then they are timed again in
alternating rounds (so that a change in the machine's load hits both), and:

* ``ratio = unfused_ms / fused_ms``; "fuse" above 1.05, "don't fuse" below 1/1.05, else
  "no difference";
* the reason says why, in one sentence, from the analysis of both schedules: the work the
  halo repeats, where the intermediate lives (a tile in L2, or a whole tensor streamed through
  L3 or memory), e.g. "fusing conv1 into conv2 at 8-row tiles repeats 23% of conv1's work
  and keeps a 450 KiB tile of the intermediate in L2 instead of streaming 784 KiB through
  L3: 0.85x, don't fuse".
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from playground import service
from playground.build.machine import MachineFacts
from playground.chain.spec import normalize_chain
from playground.schedule.session import Session
from playground.templates.plan import Plan
from playground.templates.search import Candidate, SearchResult, measure_candidate, search
from playground.templates.space import fusion_options
from playground.templates.stages import Stage, stages

#: Within this ratio (either way) the two schedules are "no difference".
NO_DIFFERENCE = 1.05
ROUNDS = 5


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

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "fused_ms": self.fused_ms,
                "unfused_ms": self.unfused_ms, "ratio": self.ratio, "reason": self.reason,
                "fused_layers": self.fused_layers,
                "fused": self.fused.to_dict() if self.fused else None,
                "unfused": self.unfused.to_dict() if self.unfused else None,
                "search_s": self.search.search_s if self.search else None,
                "candidates": self.search.measured if self.search else 0}


def _kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 4 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _where(nbytes: int, facts: MachineFacts) -> str:
    caches = facts.caches
    if nbytes <= caches.get("L2", 0):
        return "L2"
    if nbytes <= caches.get("L3", 0):
        return "L3"
    return "memory"


def _call(ratio: float) -> str:
    if ratio > NO_DIFFERENCE:
        return "fuse"
    if ratio < 1 / NO_DIFFERENCE:
        return "don't fuse"
    return "no difference"


def _redundancy(pool: Any, chain: dict, cand: Candidate, producers: list[str]) -> float | None:
    """Work done / needed by the producer layers' blocks, read from the fused schedule's TIR
    (job ``analyze``); None when the analysis is not available."""
    session = Session(chain, cand.steps, len(cand.steps))
    res = pool.run("analyze", service.payload(session, "cpu"), timeout_s=120.0)
    if not res.ok:
        return None
    done = needed = 0
    for block in res.value.get("blocks", []):
        if any(block["block"] == p or block["block"].startswith(p + "_") for p in producers) \
                and block["flop_needed"]:
            done += block["flop_done"]
            needed += block["flop_needed"]
    return done / needed if needed else None


def _reason(pool: Any, chain: dict, st: list[Stage], fused: Candidate, ratio: float,
            facts: MachineFacts) -> str:
    tail = f"{ratio:.2f}x, {_call(ratio)}"
    if fused.fusion is None:  # the epilogue question
        s = st[0] if len(st) == 1 else next(x for x in st if x.kind != "elementwise")
        nbytes = 4 * _prod(s.out_shape)
        return (f"folding {', '.join(s.epilogue_blocks)} into {s.name}'s write-back saves "
                f"{len(s.epilogue)} pass(es) over its {_kib(nbytes)} output (which fits in "
                f"{_where(nbytes, facts)}): {tail}")
    g = fused.fusion.group
    producers = [st[i].name for i in range(g.first, g.last)]
    measured = _redundancy(pool, chain, fused, producers)
    redundancy = measured if measured is not None else fused.fusion.redundancy
    inter = sum(4 * _prod(st[i].out_shape) for i in range(g.first, g.last))
    what = " and ".join(producers)
    tile_at, whole_at = _where(fused.fusion.tile_bytes, facts), _where(inter, facts)
    head = (f"fusing {what} into {st[g.last].name} at {g.rows}-row tiles repeats "
            f"{max(0.0, redundancy - 1) * 100:.0f}% of {what}'s work")
    if tile_at == whole_at:
        if _call(ratio) == "fuse":  # no cache level gained, yet faster: a pass saved
            return (f"{head}; the whole {_kib(inter)} intermediate fits in {whole_at} anyway, "
                    f"so what fusing saves is the pass that writes it out and reads it back: "
                    f"{tail}")
        return (f"{head}, and buys no locality: the whole {_kib(inter)} intermediate fits in "
                f"{whole_at} anyway: {tail}")
    slower = ", yet measured slower" if _call(ratio) == "don't fuse" else ""
    return (f"{head} and keeps a {_kib(fused.fusion.tile_bytes)} tile of the intermediate in "
            f"{tile_at} instead of streaming {_kib(inter)} through {whole_at}{slower}: {tail}")


def _prod(shape: Any) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _epilogue_pair(pool: Any, chain: dict, best: Candidate, target: str,
                   cancel: threading.Event | None) -> Candidate:
    """The best schedule with its epilogue run as separate passes (the unfused twin)."""
    plan = replace(best.plan, fold_epilogue=False)
    return measure_candidate(pool, chain, best.label + " (epilogue as separate passes)", plan,
                             target=target, cancel=cancel)


def _side_by_side(pool: Any, chain: dict, a: Candidate, b: Candidate, target: str,
                  cancel: threading.Event | None) -> tuple[float, float]:
    """Median times of ``a`` and ``b`` over alternating rounds."""
    times_a, times_b = [], []
    for _ in range(ROUNDS):
        for cand, times in ((a, times_a), (b, times_b)):
            if cancel is not None and cancel.is_set():
                break
            again = measure_candidate(pool, chain, cand.label, cand.plan, target=target,
                                      cancel=cancel, fusion=cand.fusion)
            if again.ok:
                times.append(again.median_ms)
    return (statistics.median(times_a) if times_a else a.median_ms,
            statistics.median(times_b) if times_b else b.median_ms)


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
                   result: SearchResult | None = None, weights: str = "per-call") -> Verdict:
    """Search (unless ``result`` is a search already done for this chain), then time the best
    fused and best unfused schedules side by side (both with ``weights`` as the search's
    plans carry them)."""
    chain = normalize_chain(chain)
    st = stages(chain)
    windows = [s for s in st if s.kind != "elementwise"]
    if result is None:
        result = search(pool, chain, facts, budget_s=budget_s * 0.7, target=target,
                        cancel=cancel, on_progress=on_progress, weights=weights)
    if len(windows) >= 2:
        fused, unfused = result.best(fused=True), result.best(fused=False)
    else:
        fused = result.best()
        unfused = None
        if fused is not None and any(s.epilogue for s in st):
            unfused = _epilogue_pair(pool, chain, fused, target, cancel)
            result.candidates.append(unfused)
    if fused is None or unfused is None or not unfused.ok:
        only = fused or unfused
        call, why = _unpaired(result, st, windows, fused, facts)
        return Verdict(call,
                       only.median_ms if only and only is fused else None,
                       only.median_ms if only and only is unfused else None, None, why,
                       [], fused, unfused, result)
    fused_ms, unfused_ms = _side_by_side(pool, chain, fused, unfused, target, cancel)
    ratio = unfused_ms / fused_ms
    reason = _reason(pool, chain, st, fused, ratio, facts)
    return Verdict(_call(ratio), fused_ms, unfused_ms, ratio, reason,
                   fused.plan.fused_layers(st) if fused.fusion else
                   [[windows[0].name, *windows[0].epilogue_blocks]] if windows else [],
                   fused, unfused, result)


__all__ = ["Plan", "Verdict", "fusion_verdict"]
