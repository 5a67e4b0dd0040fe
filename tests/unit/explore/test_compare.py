"""Tests of the comparison table (unscheduled, yours, best preset, tuned, numpy)."""

from __future__ import annotations

import threading

import pytest
from helpers import CONV_RELU_CONV, fuse_two_convs

from playground.explore.compare import (
    CompareRow,
    _ratios,
    comparison_table,
    matching_presets,
    rows_to_records,
)
from playground.io.presets import list_presets, load_preset
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult


class FakePool:
    """Canned timings: 10 ms without steps, 2 ms / (number of steps) with; numpy 5 ms."""

    def __init__(self):
        self.jobs = []

    def run(self, job, payload, *, timeout_s=60.0, exclusive=False, on_event=None,
            cancel=None, memory_limit_mb=None):
        self.jobs.append(job)
        if job == "rounds":  # each kernel's canned time, round after round (1% apart)
            times = [10.0 if not k else 2.0 / len(k) for k in payload["kernels"]]
            return JobResult("ok", {"rounds_ms": [[t * (1 + 0.01 * (i % 2))
                                                  for i in range(payload["rounds"])]
                                                 for t in times], "under_load": False})
        if job == "numpy_time":
            return JobResult("ok", {"median_ms": 5.0})
        ms = 10.0 if not payload["steps"] else 2.0 / len(payload["steps"])
        return JobResult("ok", {"correct": True, "median_ms": ms, "gflops": 1.0 / ms})


@pytest.fixture(scope="module")
def session() -> Session:
    return Session.new(CONV_RELU_CONV, [s.to_dict() for s in fuse_two_convs(8)])


def test_rows_in_order_with_ratios(session):
    tuned = fuse_two_convs(4)[:2]
    rows = comparison_table(FakePool(), session, tuned=tuned, presets=False)
    assert [r.name for r in rows] == ["unscheduled", "yours", "tuned",
                                      "numpy (float64 reference)"]
    yours = rows[1].median_ms
    assert rows[1].ratio == 1.0
    assert rows[0].ratio == pytest.approx(10.0 / yours)
    assert rows[2].ratio == pytest.approx(1.0 / yours)
    assert rows[3].gflops is not None and rows[3].status == "ok"
    records = rows_to_records(rows)
    assert set(records[0]) == {"name", "median ms", "GFLOP/s", "ratio vs yours", "under load",
                               "status", "message", "95% interval"}


def test_kernel_rows_carry_an_interval_from_paired_rounds_with_yours(session):
    pool = FakePool()
    rows = comparison_table(pool, session, tuned=fuse_two_convs(4)[:2], presets=False,
                            rounds=5)
    assert pool.jobs.count("rounds") == 1
    by = {r.name: r for r in rows}
    assert by["unscheduled"].ratio_low <= by["unscheduled"].ratio <= by["unscheduled"].ratio_high
    assert by["tuned"].ratio_low is not None
    assert by["yours"].ratio_low is None and by["numpy (float64 reference)"].ratio_low is None
    assert rows_to_records(rows)[0]["95% interval"].count("–") == 1


def test_without_tuned_or_numpy(session):
    rows = comparison_table(FakePool(), session, presets=False, numpy=False)
    assert [r.name for r in rows] == ["unscheduled", "yours"]


def test_cancel_stops_between_rows(session):
    cancel = threading.Event()
    rows = comparison_table(FakePool(), session, presets=False, cancel=cancel,
                            on_progress=lambda i, n, r: cancel.set())
    assert [r.name for r in rows] == ["unscheduled"]


def test_wrong_rows_are_kept_untimed():
    rows = _ratios([CompareRow("yours", "yours", "ok", 2.0),
                    CompareRow("tuned", "tuned", "wrong_result", None, correct=False,
                               message="differs")])
    assert rows[1].ratio is None and rows[1].message == "differs"


def test_best_preset_row_for_a_preset_chain():
    name = next(p["name"] for p in list_presets() if p["target"] == "cpu" and not p["error"])
    chain, _, _ = load_preset(name)
    assert name in [n for n, _ in matching_presets(chain)]
    session = Session.new(chain)
    rows = comparison_table(FakePool(), session, numpy=False)
    preset_rows = [r for r in rows if r.kind == "preset"]
    assert len(preset_rows) == 1 and preset_rows[0].name.startswith("preset: ")


@pytest.mark.slow
def test_real_table_measures_every_row(session):
    with WorkerPool(1, num_threads=2) as pool:
        rows = comparison_table(pool, session, tuned=fuse_two_convs(4), repeat=3,
                                min_repeat_ms=10)
    names = [r.name for r in rows]
    assert names[:2] == ["unscheduled", "yours"]
    assert names[-2:] == ["tuned", "numpy (float64 reference)"]
    for r in rows:
        assert r.status == "ok", (r.name, r.message)
        assert r.median_ms > 0 and r.gflops > 0 and r.ratio > 0
    assert rows[1].ratio == 1.0
