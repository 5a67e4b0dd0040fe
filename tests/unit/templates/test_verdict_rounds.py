"""The verdict's side-by-side rounds with a fake pool (no kernels: fast): a comparison under
load is taken again once the load drops, or called unreliable; the search's result then
carries the rounds' times."""

from __future__ import annotations

import time

import pytest

from playground.chain.spec import normalize_chain
from playground.templates import verdict
from playground.templates.plan import Group, Plan
from playground.templates.search import Candidate, SearchResult
from playground.worker.result import JobResult

CHAIN = normalize_chain({"input": {"shape": [1, 8, 12, 12]},
                         "layers": [{"op": "conv2d", "channels": 8, "kernel": 3,
                                     "padding": 1}]})


class RoundsPool:
    """Answers job ``rounds``: unfused 1.2 ms, fused 1.0 ms every round; under load for the
    first ``loaded`` jobs."""

    def __init__(self, loaded: int) -> None:
        self.loaded, self.jobs = loaded, 0

    def run(self, job, payload, **options):
        assert job == "rounds"
        self.jobs += 1
        n = payload["rounds"]
        return JobResult("ok", {"rounds_ms": [[1.2] * n, [1.0] * n],
                                "under_load": self.jobs <= self.loaded})


def _pair() -> tuple[SearchResult, Candidate, Candidate]:
    plan = Plan((None,), (Group(0, 0),), 8)
    unfused = Candidate("unfused", plan, status="ok", median_ms=1.3)
    fused = Candidate("fused", plan, status="ok", median_ms=0.9)
    return SearchResult(CHAIN, [unfused, fused]), unfused, fused


@pytest.mark.parametrize("loaded, quiet_later, want_loaded, want_again", [
    (0, True, False, False),   # quiet: one set of rounds
    (1, True, False, True),    # loaded, then quiet: taken again, reliable
    (9, False, True, False),   # loaded and it never drops: unreliable, not taken again
])
def test_rounds_under_load_are_taken_again_or_flagged(monkeypatch, loaded, quiet_later,
                                                      want_loaded, want_again):
    monkeypatch.setattr(verdict, "_loaded_now",
                        lambda seconds=1.0: time.sleep(0.05) is None and not quiet_later)
    result, unfused, fused = _pair()
    pool = RoundsPool(loaded)
    out = verdict._side_by_side(pool, result, unfused, fused, "cpu", None,
                                time.monotonic() + 3.0)
    u, f, still_loaded, again = out
    assert (still_loaded, again) == (want_loaded, want_again)
    assert u.rounds_ms and f.rounds_ms and f.median_ms == 1.0 and u.median_ms == 1.2
    assert {c.label: c.median_ms for c in result.candidates} == {"unfused": 1.2, "fused": 1.0}


@pytest.mark.slow
def test_the_rounds_job_judges_its_rounds_together(pool):
    """The real job: each round is a few tens of ms, too short for the CPU counters alone;
    its ``under_load`` is the verdict of every round as one interval."""
    from playground.measure.load import Load
    from playground.worker.job_table import ROUNDS

    chain = normalize_chain({"input": {"shape": [1, 8, 16, 16]},
                             "layers": [{"op": "conv2d", "channels": 8, "kernel": 3,
                                         "padding": 1}, {"op": "relu"}]})
    parallel = [{"primitive": "parallel", "args": {"block": "conv1", "loop": "k"}}]
    result = ROUNDS.call(pool, {"chain": chain, "target": "cpu", "kernels": [[], parallel],
                                "rounds": 3, "repeat": 1})
    assert result.ok, result.message
    value = result.value
    assert [len(r) for r in value["rounds_ms"]] == [3, 3]
    each = [Load.from_dict(t["load"]) for ts in value["timings"] for t in ts]
    together = Load.from_dict(value["load"])
    assert together.seconds == pytest.approx(sum(x.seconds for x in each))
    assert value["under_load"] is together.under_load
