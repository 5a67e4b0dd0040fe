"""Tests of sweeps: parameters, validation of every point, cancellation, Pareto front, CSV."""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import replace

import pytest
from helpers import CONV_RELU_CONV, fuse_two_convs

from playground.errors import StepError
from playground.explore.sweep import (
    SweepParam,
    SweepPoint,
    SweepResult,
    factor_candidates,
    run_sweep,
    steps_with,
    sweep_parameters,
)
from playground.explore.sweep_parallel import parallel_points
from playground.explore.sweep_report import pareto_front, sweep_figure, to_csv, tradeoff_figure
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult


@pytest.fixture(scope="module")
def fused() -> Session:
    return Session.new(CONV_RELU_CONV, [s.to_dict() for s in fuse_two_convs(8)])


def _param(session: Session, label: str) -> SweepParam:
    return next(p for p in sweep_parameters(session) if p.label == label)


class FakePool:
    """Answers "run" with canned results: wrong for the values in ``wrong``."""

    def __init__(self, wrong=(), analyze=True):
        self.wrong, self.analyze, self.jobs = set(wrong), analyze, []

    def run(self, job, payload, *, timeout_s=60.0, exclusive=False, on_event=None,
            cancel=None, memory_limit_mb=None):
        self.jobs.append((job, payload))
        if job == "analyze":
            if not self.analyze:
                return JobResult("error", message="unknown job 'analyze' (known: run)")
            tile = payload["steps"][0]["args"]["factors"][1]
            return JobResult("ok", {"redundancy": 1 + 2 / tile, "buffers": [
                {"role": "intermediate", "bytes": 100 * tile},
                {"role": "input", "bytes": 10**6}]})
        tile = payload["steps"][0]["args"]["factors"][1]
        if tile in self.wrong:
            return JobResult("wrong_result", {"correct": False, "max_abs_error": 3.0,
                                              "median_ms": None, "timing": None},
                             "12 of 2048 elements differ")
        return JobResult("ok", {"correct": True, "max_abs_error": 1e-7, "median_ms": 10 / tile,
                                "gflops": tile, "timing": {"spread": 0.01}})


# ----------------------------------------------------------------------------- fast

def test_factor_candidates_mix_divisors_and_others():
    values = factor_candidates(56)
    assert {2, 4, 7, 8, 14, 28, 56} <= set(values)
    assert any(56 % v for v in values)  # non-divisors too
    assert 5 in factor_candidates(16, current=5)


def test_parameters_of_a_fused_schedule(fused):
    params = sweep_parameters(fused)
    labels = [p.label for p in params]
    assert "split conv2.h factor[1]" in labels
    h = _param(fused, "split conv2.h factor[1]")
    assert h.current == 8 and h.extent == 16 and 8 in h.candidates and 5 in h.candidates
    together = params[0]
    assert together.kind == "loop" and together.linked == (4, 5, 6)
    assert {"h_0", "w_0", "k"} <= set(together.candidates)


def test_steps_with_replaces_only_the_parameter(fused):
    h = _param(fused, "split conv2.h factor[1]")
    steps = steps_with(fused, h, 4)
    assert steps[0].args["factors"] == [None, 4]
    assert steps[1:] == fused.active[1:]
    together = sweep_parameters(fused)[0]
    moved = steps_with(fused, together, "h_0")
    assert [s.args["target_loop"] for s in moved[3:]] == ["h_0"] * 4


def test_bad_values_are_refused(fused):
    h = _param(fused, "split conv2.h factor[1]")
    with pytest.raises(StepError, match="positive integers"):
        run_sweep(FakePool(), fused, h, [4, "x"])
    with pytest.raises(StepError, match="at least one"):
        run_sweep(FakePool(), fused, h, [])


def test_points_carry_the_load_they_were_timed_under(fused):
    class LoadedPool(FakePool):
        def run(self, job, payload, **options):
            result = super().run(job, payload, **options)
            if job != "run":
                return result
            tile = payload["steps"][0]["args"]["factors"][1]
            load = {"under_load": tile == 2, "others_cores": 0.9 if tile == 2 else 0.0}
            return replace(result, value={**result.value, "timing": {"spread": 0.01,
                                                                     "load": load}})

    h = _param(fused, "split conv2.h factor[1]")
    points = run_sweep(LoadedPool(), fused, h, [2, 8]).points
    assert [(p.under_load, p.others_cores) for p in points] == [(True, 0.9), (False, 0.0)]


def test_points_carry_an_interval_of_their_median(fused):
    class SampledPool(FakePool):
        def run(self, job, payload, **options):
            result = super().run(job, payload, **options)
            if job != "run":
                return result
            samples = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 4.0, 1.02, 0.98, 1.01]
            return replace(result, value={**result.value, "median_ms": 1.005,
                                          "timing": {"spread": 0.1, "samples_ms": samples}})

    h = _param(fused, "split conv2.h factor[1]")
    (point,) = run_sweep(SampledPool(), fused, h, [8]).points
    assert point.ci_low_ms <= 1.005 <= point.ci_high_ms < 4.0  # the outlier stays out
    header = to_csv(run_sweep(FakePool(), fused, h, [8])).splitlines()[0].split(",")
    assert {"under_load", "others_cores"} <= set(header)


def test_points_run_in_parallel_on_a_farm_of_other_machines(fused):
    """With timings on other machines, points overlap (two meet at a barrier), keep their
    order, and keep the caller's owner for the fair queue."""
    from types import SimpleNamespace
    from typing import ClassVar

    from playground.remote.device import RemoteDevice
    from playground.worker.fair import current_owner, owner_scope

    class FarmPool(FakePool):
        farm = RemoteDevice("farm.example", 9190, "x86")
        long = SimpleNamespace(workers=[1, 2, 3])
        meet = threading.Barrier(2, timeout=30)
        owners: ClassVar[set] = set()

        def run(self, job, payload, **options):
            if job == "remote_run" and payload["steps"][0]["args"]["factors"][1] in (2, 4):
                self.meet.wait()  # both must be in flight at once, or this times out
            self.owners.add(current_owner())
            return super().run(job, payload, **options)

    h = _param(fused, "split conv2.h factor[1]")
    seen = []
    with owner_scope("tab-7"):
        result = run_sweep(FarmPool(), fused, h, [2, 4, 8],
                           on_progress=lambda i, n, p: seen.append((i, n)))
    assert [p.value for p in result.points] == [2, 4, 8]
    assert result.status == "done" and result.analysis
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
    assert FarmPool.owners == {"tab-7"}
    pool = FarmPool()
    run_sweep(pool, fused, h, [8])
    assert [job for job, _ in pool.jobs] == ["remote_run", "analyze"]  # timed on the farm
    assert pool.jobs[0][1]["remote"]["host"] == "farm.example"
    assert parallel_points(FakePool(), 5) == 1  # no farm: one at a time
    loopback = SimpleNamespace(farm=SimpleNamespace(is_local=True), long=FarmPool.long)
    assert parallel_points(loopback, 5) == 1  # servers on this machine share its cores
    assert parallel_points(FarmPool(), 2) == 2 and parallel_points(FarmPool(), 9) == 3


def test_every_point_is_validated_and_wrong_ones_are_not_timed(fused):
    pool = FakePool(wrong={4})
    h = _param(fused, "split conv2.h factor[1]")
    seen = []
    result = run_sweep(pool, fused, h, [2, 4, 8],
                       on_progress=lambda i, n, p: seen.append((i, n, p.value)))
    assert seen == [(1, 3, 2), (2, 3, 4), (3, 3, 8)]
    assert result.status == "done" and result.analysis
    assert [p.correct for p in result.points] == [True, False, True]
    wrong = result.points[1]
    assert wrong.status == "wrong_result" and wrong.median_ms is None
    assert wrong.max_abs_error == 3.0
    assert result.points[2].median_ms == pytest.approx(10 / 8)
    assert result.points[2].redundancy == pytest.approx(1.25)
    assert result.points[2].footprint_bytes == 800
    assert result.best().value == 8


def test_a_point_whose_later_steps_no_longer_apply_is_invalid(fused):
    pool = FakePool()
    conv1_at = _param(fused, "compute_at conv1 at conv2")
    result = run_sweep(pool, fused, conv1_at, ["w_0", "k"])
    assert [p.status for p in result.points] == ["ok", "invalid"]
    assert result.points[1].message.startswith("invalid: step")
    assert len([j for j, _ in pool.jobs if j == "run"]) == 1  # nothing sent for it


def test_missing_analyze_job_is_noted(fused):
    pool = FakePool(analyze=False)
    result = run_sweep(pool, fused, _param(fused, "split conv2.h factor[1]"), [2, 4, 8])
    assert not result.analysis and result.notes
    assert all(p.redundancy is None for p in result.points)
    assert [j for j, _ in pool.jobs].count("analyze") == 1  # asked once only


def test_cancel_between_points_with_a_fake_pool(fused):
    cancel = threading.Event()
    result = run_sweep(FakePool(), fused, _param(fused, "split conv2.h factor[1]"), [2, 4, 8],
                       on_progress=lambda i, n, p: cancel.set(), cancel=cancel)
    assert result.cancelled and len(result.points) == 1


def test_a_recorded_sweep_is_one_group_with_every_point(fused, tmp_path, monkeypatch):
    from playground.store import get_store

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    conv1_at = _param(fused, "compute_at conv1 at conv2")
    run_sweep(FakePool(), fused, conv1_at, ["w_0", "k"], record=True)
    h = _param(fused, "split conv2.h factor[1]")
    run_sweep(FakePool(wrong={4}), fused, h, [2, 4, 8], record=True)
    store = get_store()
    (tile, loop) = store.list_experiments()
    assert (tile["kind"], tile["source"], tile["label"]) == ("sweep", "sweep", h.label)
    assert tile["status"] == "done" and tile["children"] == 3
    assert tile["median_ms"] == pytest.approx(10 / 8)  # its fastest validated point
    points = {c["label"]: c for c in store.list_experiments(parent=tile["id"])}
    assert points[f"{h.label} = 4"]["status"] == "wrong_result"
    assert points[f"{h.label} = 4"]["error"] == "12 of 2048 elements differ"
    full = store.get(points[f"{h.label} = 8"]["id"])
    assert full["result"]["timing"] == {"spread": 0.01}  # the worker's whole result
    assert full["steps"][0]["args"]["factors"] == [None, 8]
    assert full["machine"]["tvm_version"].startswith("0.27")
    invalid = store.list_experiments(parent=loop["id"])[0]
    assert invalid["status"] == "invalid" and invalid["error"].startswith("step")
    assert store.get(tile["id"])["result"]["values"] == [2, 4, 8]


def test_a_cancelled_recorded_sweep_keeps_its_points(fused, tmp_path, monkeypatch):
    from playground.store import get_store

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path))
    cancel = threading.Event()
    run_sweep(FakePool(), fused, _param(fused, "split conv2.h factor[1]"), [2, 4, 8],
              on_progress=lambda i, n, p: cancel.set(), cancel=cancel, record=True)
    (group,) = get_store().list_experiments()
    assert group["status"] == "cancelled" and group["children"] == 1


def _points() -> list[SweepPoint]:
    return [SweepPoint(2, "ok", correct=True, median_ms=5.0, redundancy=2.0, footprint_bytes=10),
            SweepPoint(4, "ok", correct=True, median_ms=3.0, redundancy=1.5, footprint_bytes=40),
            SweepPoint(5, "ok", correct=True, median_ms=4.0, redundancy=1.6, footprint_bytes=50),
            SweepPoint(8, "ok", correct=True, median_ms=3.5, redundancy=1.2, footprint_bytes=90),
            SweepPoint(16, "ok", correct=True, median_ms=6.0, redundancy=1.0,
                       footprint_bytes=200),
            SweepPoint(3, "wrong_result", correct=False, redundancy=0.5),
            SweepPoint(6, "invalid", "invalid: step 3 ...")]


def test_pareto_front_by_hand():
    front = pareto_front(_points())
    # (1.0, 6.0), (1.2, 3.5), (1.5, 3.0) survive; 2 and 5 are dominated by 4.
    assert [p.value for p in front] == [16, 8, 4]
    assert [p.value for p in pareto_front(_points(), x="footprint_bytes")] == [2, 4]
    as_dicts = [p.to_dict() for p in _points()]
    assert [p["value"] for p in pareto_front(as_dicts)] == [16, 8, 4]
    assert pareto_front([]) == []


def _result() -> SweepResult:
    param = SweepParam(0, "factors", 1, "factor", 8, (2, 4, 8), 16, "split conv2.h factor[1]")
    return SweepResult(param, (2, 4, 5, 8, 16, 3, 6), tuple(_points()), "done")


def test_csv_has_a_header_and_one_row_per_point():
    text = to_csv(_result())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "value (split conv2.h factor[1])"
    assert rows[0][1:4] == ["status", "correct", "max_abs_error"]
    assert len(rows) == 1 + len(_points())
    assert rows[1][:2] == ["2", "ok"] and rows[-1][1] == "invalid"


def test_figures_build():
    fig = sweep_figure(_result())
    assert fig.data[0].y == (5.0, 3.0, 4.0, 3.5, 6.0)
    trade = tradeoff_figure(_result())
    fronts = [t for t in trade.data if t.name == "Pareto front"]
    assert len(fronts) == 2 and list(fronts[0].x) == [1.0, 1.2, 1.5]


# ----------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_real_sweep_validates_each_point_including_a_non_divisor(fused):
    h = _param(fused, "split conv2.h factor[1]")
    with WorkerPool(1, num_threads=2) as pool:
        result = run_sweep(pool, fused, h, [4, 5, 8], repeat=3, min_repeat_ms=10)
    assert result.status == "done"
    assert [p.value for p in result.points] == [4, 5, 8]
    for p in result.points:
        assert p.status == "ok", p.message
        assert p.correct is True and p.max_abs_error < 1e-4 and p.median_ms > 0
    if result.analysis:
        # 5 does not divide 16: the guarded tiles recompute more of conv1 than 8x8 tiles.
        by = {p.value: p for p in result.points}
        assert by[5].redundancy > by[8].redundancy > 1.0


@pytest.mark.slow
def test_cancel_kills_the_job_in_flight_and_keeps_the_points_done(fused, tmp_path):
    """The pool has a measurement lock of its own: with the machine-wide one, another
    process's timing (a second test run, a page) could hold the second point in the queue
    when the cancel comes, and a queued job has no worker to kill."""
    h = _param(fused, "split conv2.h factor[1]")
    cancel = threading.Event()
    pids = []

    def on_progress(i, n, point):
        pids.extend(pool.pids)
        threading.Timer(0.5, cancel.set).start()  # while the second point runs

    with WorkerPool(1, num_threads=2, lock_dir=tmp_path / "lock") as pool:
        result = run_sweep(pool, fused, h, [4, 8, 16], on_progress=on_progress, cancel=cancel,
                           repeat=200, min_repeat_ms=50, analyze=False)
        assert result.cancelled
        assert [p.value for p in result.points] == [4]
        assert pool.pids == []  # the worker that ran the cancelled job is gone
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
