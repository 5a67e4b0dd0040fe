"""Tests of :mod:`playground.worker.pools` and :mod:`playground.worker.fair`: a quick pool that
answers while the long one is busy, and long jobs served round robin by owner.

The fast tests drive :class:`FairQueue` with plain items and threads; the slow ones use real
workers with the fault jobs (``sleep``, ``echo``). No assertion depends on the machine's
speed: orders are read from events, durations only bound what a sleep guarantees.
"""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from playground.errors import PlaygroundError
from playground.worker.fair import FairQueue, current_owner, owner_scope
from playground.worker.job_table import JOBS, QUICK
from playground.worker.pool import WorkerPool
from playground.worker.pools import WorkerPools, long_nice, pool_sizes

CAP_MB = 2048


def _wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cores", "farm", "sizes"), [
    (1, False, (2, 2)), (2, False, (2, 2)), (8, False, (8, 4)), (64, False, (8, 8)),
    (2, True, (2, 4)), (32, True, (8, 8)),
])
def test_pool_sizes_follow_the_cores(cores, farm, sizes):
    assert pool_sizes(cores, {}, farm=farm) == sizes


def test_pool_sizes_from_the_environment():
    env = {"PLAYGROUND_QUICK_WORKERS": "3", "PLAYGROUND_LONG_WORKERS": " 5 "}
    assert pool_sizes(2, env) == (3, 5)
    assert pool_sizes(16, {"PLAYGROUND_LONG_WORKERS": "1"}) == (8, 1)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "65"])
def test_bad_pool_size_names_the_variable(value):
    with pytest.raises(PlaygroundError) as info:
        pool_sizes(2, {"PLAYGROUND_QUICK_WORKERS": value})
    assert info.value.where == "PLAYGROUND_QUICK_WORKERS"
    assert "PLAYGROUND_QUICK_WORKERS" in info.value.message


def test_long_workers_are_niced():
    assert long_nice({}) == 10 and long_nice({"PLAYGROUND_LONG_NICE": "0"}) == 0
    with pytest.raises(PlaygroundError) as info:
        long_nice({"PLAYGROUND_LONG_NICE": "20"})
    assert info.value.where == "PLAYGROUND_LONG_NICE"
    pools = WorkerPools.sized(2, environ={"PLAYGROUND_LONG_NICE": "7"})
    try:
        assert {w.nice for w in pools.long.workers} == {7}
        assert {w.nice for w in pools.quick.workers} == {0}
    finally:
        pools.close()


@pytest.mark.slow
def test_a_niced_worker_runs_at_lower_priority(tmp_path):
    import os

    import psutil

    with WorkerPool(1, nice=5, memory_limit_mb=CAP_MB, num_threads=1,
                    lock_dir=tmp_path) as pool:
        pid = pool.run("ping", {}, timeout_s=60).worker_pid
        assert psutil.Process(pid).nice() == min(19, os.nice(0) + 5)


def test_jobs_are_routed_to_their_declared_pool():
    pools = WorkerPools(WorkerPool(1), WorkerPool(1))  # workers start lazily: none here
    try:
        quick = {name for name, job in JOBS.items() if job.pool == QUICK}
        assert quick == {"lower", "codegen", "analyze", "tile_regions", "ping"}
        for job in quick:
            assert pools.pool_for(job) is pools.quick
        # Long, and anything not declared (a fault job of the tests) is long.
        for job in ("run", "remote_run", "tune", "numpy_time", "machine_peak", "sleep"):
            assert pools.pool_for(job) is pools.long
        assert pools.pids == [] and pools.sizes == (1, 1)
    finally:
        pools.close()


# -- the fair queue, without processes ------------------------------------------------------


def _queue_in_order(fair: FairQueue, callers: list[str], served: list[str]) -> list:
    """Start one waiting thread per caller ("A1" is owner A), each queued after the last."""
    threads = []
    for name in callers:
        owner = name[0]
        before = sum(fair.waiting().values())
        thread = threading.Thread(target=lambda n=name, o=owner: served.append(
            (n, fair.get(o))))
        thread.start()
        _wait_until(lambda b=before: sum(fair.waiting().values()) == b + 1)
        threads.append(thread)
    return threads


def test_owners_take_turns_and_keep_their_own_order():
    fair: FairQueue[int] = FairQueue([])
    served: list = []
    threads = _queue_in_order(fair, ["A1", "A2", "A3", "B1", "C1", "B2"], served)
    assert fair.waiting() == {"A": 3, "B": 2, "C": 1}
    for item in range(6):  # one free item at a time: each goes to the next in turn
        fair.put(item)
        _wait_until(lambda n=item: len(served) == n + 1)
    for thread in threads:
        thread.join(10)
    assert [name for name, _ in served] == ["A1", "B1", "C1", "A2", "B2", "A3"]
    assert [item for _, item in served] == list(range(6))
    assert fair.waiting() == {}


def test_waiting_positions_count_the_turns_ahead():
    fair: FairQueue[int] = FairQueue([])
    events: list[dict] = []
    served: list = []
    threads = _queue_in_order(fair, ["A1", "A2", "A3"], served)
    late = threading.Thread(target=lambda: served.append(
        ("B1", fair.get("B", on_event=events.append))))
    late.start()
    _wait_until(lambda: events)
    assert events[0] == {"event": "waiting", "position": 1}  # only A1 goes before B1
    for item in range(4):
        fair.put(item)
    for thread in [*threads, late]:
        thread.join(10)
    assert [name for name, _ in served][:2] == ["A1", "B1"]


def test_a_free_item_is_taken_at_once_without_events():
    fair = FairQueue(["w"])
    events: list[dict] = []
    assert fair.get("A", on_event=events.append) == "w"
    assert events == []


def test_cancel_leaves_the_queue_and_passes_the_turn():
    fair: FairQueue[int] = FairQueue([])
    cancel = threading.Event()
    served: list = []
    first = threading.Thread(target=lambda: served.append(("A1", fair.get("A", cancel=cancel))))
    first.start()
    _wait_until(lambda: fair.waiting() == {"A": 1})
    second = threading.Thread(target=lambda: served.append(("B1", fair.get("B"))))
    second.start()
    _wait_until(lambda: fair.waiting() == {"A": 1, "B": 1})
    cancel.set()
    first.join(10)
    fair.put(7)
    second.join(10)
    assert sorted(served) == [("A1", None), ("B1", 7)]
    assert fair.waiting() == {}


def test_owner_scope_sets_the_owner_of_this_context_only():
    assert current_owner() == ""
    seen = {}
    with owner_scope("tab-1"):
        assert current_owner() == "tab-1"
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(lambda: seen.update(
            copied=current_owner()),))
        thread.start()
        thread.join()
        plain = threading.Thread(target=lambda: seen.update(plain=current_owner()))
        plain.start()
        plain.join()
    assert current_owner() == ""
    assert seen == {"copied": "tab-1", "plain": ""}


# -- real workers ---------------------------------------------------------------------------


@pytest.fixture
def pools(tmp_path):
    options = {"fault_jobs": True, "memory_limit_mb": CAP_MB, "num_threads": 1,
               "lock_dir": tmp_path / "lock"}
    with WorkerPools(WorkerPool(1, **options), WorkerPool(1, **options)) as p:
        p.warm_up()
        yield p


def _start_blocker(pools: WorkerPools, cancel: threading.Event, results: list) -> threading.Thread:
    """A 60 s sleep on the only long worker; returns once it runs."""
    started = threading.Event()
    thread = threading.Thread(target=lambda: results.append(pools.run(
        "sleep", {"seconds": 60}, timeout_s=120, cancel=cancel, owner="blocker",
        on_event=lambda e: e["event"] == "started" and started.set())))
    thread.start()
    assert started.wait(60)
    return thread


@pytest.mark.slow
def test_a_quick_job_answers_while_the_long_pool_is_busy(pools):
    cancel = threading.Event()
    results: list = []
    blocker = _start_blocker(pools, cancel, results)
    try:
        answer = pools.run("ping", {}, timeout_s=60)
        assert answer.status == "ok"
        assert answer.worker_pid in pools.quick.pids
        assert blocker.is_alive() and not results  # the sleep still holds the long worker
    finally:
        cancel.set()
        blocker.join(60)
    assert results[0].status == "cancelled"


@pytest.mark.slow
def test_long_jobs_are_served_round_robin_by_owner(pools):
    """A queues three jobs, then B one: B's goes second, not fourth."""
    cancel = threading.Event()
    blocked: list = []
    blocker = _start_blocker(pools, cancel, blocked)
    order: list[str] = []
    results: dict[str, str] = {}
    threads = []

    def submit(name: str) -> None:
        def on_event(event: dict) -> None:
            if event["event"] == "started":
                order.append(name)

        def run() -> None:
            # B names no owner: it comes from the context, as on the page.
            with owner_scope(name[0]):
                results[name] = pools.run("echo", {"name": name}, timeout_s=60,
                                          on_event=on_event).status

        before = sum(pools.waiting().values())
        thread = threading.Thread(target=run)
        thread.start()
        _wait_until(lambda: sum(pools.waiting().values()) == before + 1)
        threads.append(thread)

    for name in ("A1", "A2", "A3", "B1"):
        submit(name)
    assert pools.waiting() == {"A": 3, "B": 1}
    cancel.set()  # frees the long worker: the queue drains in turn order
    blocker.join(60)
    for thread in threads:
        thread.join(60)
    assert order == ["A1", "B1", "A2", "A3"]
    assert set(results.values()) == {"ok"}
