"""A budget is wall time from the click (or the command) to the answer, within 20%.

The machine running the tests may be loaded (other builds, other tests): a candidate can take
far longer than the ones before it, and that is the machine, not the code. So each test checks
the part the code controls: no candidate was started that was expected (from what the others
took) to end past the budget; and the answer came within 20% of the budget plus whatever the
candidates took beyond that expectation (all of the time of the ones measured whatever the
budget: the first, and the first fused one).
"""

from __future__ import annotations

import time

import pytest

from playground.measure.machine import machine_facts
from playground.templates.search import SearchResult, search, search_and_finalize
from playground.templates.verdict import fusion_verdict

pytestmark = pytest.mark.slow

SMALL = {"input": {"shape": [1, 8, 12, 12]},
         "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                    {"op": "relu"}, {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}]}


def _surprise(result: SearchResult) -> float:
    """Seconds the candidates took beyond what the code expected of them (all of a forced
    candidate's time: the code had no choice)."""
    return sum((end - began) - predicted if predicted >= 0 else end - began
               for began, end, predicted in result.timeline if end - began > predicted)


def _no_late_start(result: SearchResult, budget_s: float) -> None:
    for began, _, predicted in result.timeline:
        if predicted >= 0:  # a candidate the budget could refuse
            assert began + predicted <= budget_s, result.timeline


def test_a_search_stops_within_its_budget(pool):
    search(pool, SMALL, machine_facts(), budget_s=1)  # warm: compile caches, worker up
    budget = 4.0
    t0 = time.monotonic()
    result = search(pool, SMALL, machine_facts(), budget_s=budget, started=t0)
    wall = time.monotonic() - t0
    assert result.measured >= 2
    _no_late_start(result, budget)
    assert wall <= 1.2 * budget + _surprise(result), (wall, result.timeline)


def test_auto_answers_within_its_budget_rounds_included(pool):
    budget = 5.0
    t0 = time.monotonic()
    result, best = search_and_finalize(pool, SMALL, machine_facts(), budget_s=budget,
                                       started=t0)
    wall = time.monotonic() - t0
    assert best is not None and result.final is not None and len(best.rounds_ms) >= 3
    _no_late_start(result, budget * 0.8)
    assert wall <= 1.2 * budget + _surprise(result), (wall, result.timeline)


def test_the_verdict_answers_within_its_budget(pool):
    budget = 6.0
    t0 = time.monotonic()
    v = fusion_verdict(pool, SMALL, machine_facts(), budget_s=budget, started=t0)
    wall = time.monotonic() - t0
    assert v.interval is not None and v.search is not None
    _no_late_start(v.search, budget * 0.7)
    assert wall <= 1.2 * budget + _surprise(v.search), (wall, v.search.timeline)
