"""Tests of :mod:`playground.worker.pool`: every fault a user's schedule can cause, injected on
purpose.

After each fault the caller must survive and the next job must succeed on a fresh worker. No
assertion depends on the machine's speed; durations only bound what a sleep guarantees.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import paths
import pytest

from playground.errors import PlaygroundError
from playground.worker.lock import MeasurementLock, measurement_lock
from playground.worker.pool import WorkerPool
from playground.worker.registry import JOBS, job
from playground.worker.result import JobResult

CAP_MB = 2048  # import tvm (and the job modules) need ~0.6 GB of address space


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not reaped) counts as alive here."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def pool(tmp_path):
    with WorkerPool(1, fault_jobs=True, memory_limit_mb=CAP_MB, num_threads=1,
                    lock_dir=tmp_path / "lock") as p:
        yield p


def _ping_pid(pool: WorkerPool) -> int:
    result = pool.run("ping", {}, timeout_s=60)
    assert result.status == "ok", result
    assert result.value["pid"] == result.worker_pid != os.getpid()
    return result.worker_pid


def _assert_replaced(pool: WorkerPool, old_pid: int) -> None:
    assert not _alive(old_pid), "the failed worker was not killed and reaped"
    assert _ping_pid(pool) != old_pid


# -- fast: registry and records -------------------------------------------------------------


def test_job_registry_and_decorator():
    assert "ping" in JOBS
    assert "segfault" not in JOBS  # fault jobs exist only in workers that enable them

    @job("test_double")
    def double(payload: dict) -> dict:
        return {"y": 2 * payload["x"]}

    try:
        assert JOBS["test_double"]({"x": 2}) == {"y": 4}
        with pytest.raises(ValueError, match="twice"):
            job("test_double")(lambda p: p)
    finally:
        del JOBS["test_double"]


def test_every_declared_job_is_implemented_where_declared(monkeypatch):
    """The worker's registry and the front door agree: each job of the job table is
    implemented in the module it names, and a declaration without its implementation (or an
    implementation without one) stops the worker."""
    from playground.worker import job_table, registry

    jobs = registry.load_jobs()
    for name, declared in job_table.JOBS.items():
        assert jobs[name].__module__ == declared.module, name
    registry.check_declarations()
    moved = {**job_table.JOBS, "run": job_table.Job("run", job_table.LONG, 1.0,
                                                     "playground.jobs.facts")}
    monkeypatch.setattr(registry, "DECLARED", moved)
    with pytest.raises(RuntimeError, match=r"run \(declared in playground\.jobs\.facts"):
        registry.check_declarations()
    monkeypatch.setattr(registry, "DECLARED", {**job_table.JOBS, "gone": job_table.Job(
        "gone", job_table.LONG, 1.0, "playground.jobs.kernel")})
    with pytest.raises(RuntimeError, match="gone"):
        registry.check_declarations()


def test_job_call_picks_the_declared_pool_and_time_limit():
    """``Job.call`` runs a job on its declared pool with its declared limit, unless the caller
    gives one; a single pool (or a test's fake) runs every job."""
    from playground.worker.job_table import LOWER, RUN

    class Recorder:
        def __init__(self):
            self.calls = []

        def run(self, job, payload=None, **options):
            self.calls.append((job, payload, options))
            return job

    from playground.worker.pools import WorkerPools

    two = WorkerPools(Recorder(), Recorder())
    assert LOWER.call(two, {"a": 1}) == "lower"
    assert RUN.call(two, {}, timeout_s=5.0, exclusive=True) == "run"
    assert two.quick.calls == [("lower", {"a": 1}, {"timeout_s": LOWER.timeout_s})]
    assert two.long.calls == [("run", {}, {"timeout_s": 5.0, "exclusive": True})]
    one = Recorder()
    LOWER.call(one, {})
    assert one.calls == [("lower", {}, {"timeout_s": LOWER.timeout_s})]


def test_job_result_is_frozen_and_json_able():
    r = JobResult("ok", {"a": 1}, elapsed_s=0.5, worker_pid=3)
    assert r.ok and r.to_dict()["value"] == {"a": 1}
    with pytest.raises(AttributeError):
        r.status = "error"


def test_pool_rejects_size_zero():
    with pytest.raises(PlaygroundError, match="size"):
        WorkerPool(0)


# -- slow: real worker processes ------------------------------------------------------------


@pytest.mark.slow
def test_warm_worker_is_reused(pool):
    pool.warm_up()
    assert len(pool.pids) == 1
    first = _ping_pid(pool)
    assert _ping_pid(pool) == first == pool.pids[0]


@pytest.mark.slow
def test_stray_output_does_not_corrupt_the_protocol(pool):
    result = pool.run("echo", {"x": [1, 2]})
    assert result.status == "ok" and result.value == {"x": [1, 2]}


@pytest.mark.slow
def test_large_payload_and_reply(pool):
    text = "x" * (5 << 20)  # generated code can be megabytes; the pipe must carry it whole
    result = pool.run("echo", {"text": text})
    assert result.status == "ok" and result.value["text"] == text


@pytest.mark.slow
def test_timeout_kills_the_worker(pool):
    pid = _ping_pid(pool)
    result = pool.run("sleep", {"seconds": 60}, timeout_s=1)
    assert result.status == "timeout"
    assert "1 s" in result.message and result.worker_pid == pid
    assert 1 <= result.elapsed_s < 30
    _assert_replaced(pool, pid)


@pytest.mark.slow
def test_job_within_its_timeout_succeeds(pool):
    assert pool.run("sleep", {"seconds": 0.2}, timeout_s=30).status == "ok"


@pytest.mark.slow
def test_segfault_is_a_crash_naming_the_signal(pool):
    pid = _ping_pid(pool)
    result = pool.run("segfault", {})
    assert result.status == "crash" and "SIGSEGV" in result.message
    # The stderr tail holds the crash report (TVM's backtrace or faulthandler's traceback).
    assert re.search("segfault|segmentation fault", result.detail, re.IGNORECASE)
    _assert_replaced(pool, pid)


@pytest.mark.slow
def test_allocation_above_the_cap_is_oom(pool):
    pid = _ping_pid(pool)
    result = pool.run("allocate", {"mb": CAP_MB + 512})
    assert result.status == "oom" and f"{CAP_MB} MiB" in result.message
    _assert_replaced(pool, pid)
    assert pool.run("allocate", {"mb": 64}).status == "ok"


@pytest.mark.slow
def test_per_job_memory_cap(pool):
    assert pool.run("allocate", {"mb": 256}).status == "ok"
    assert pool.run("allocate", {"mb": 256}, memory_limit_mb=700).status == "oom"
    assert pool.run("allocate", {"mb": 256}).status == "ok"  # the cap was for one job only


@pytest.mark.slow
def test_worker_killed_between_jobs_is_replaced(pool):
    pid = _ping_pid(pool)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert _ping_pid(pool) != pid


@pytest.mark.slow
def test_worker_killed_during_a_job_is_a_crash(pool):
    pid = _ping_pid(pool)
    started = threading.Event()
    results: list[JobResult] = []

    def on_event(event: dict) -> None:
        if event["event"] == "started":
            started.set()

    thread = threading.Thread(target=lambda: results.append(
        pool.run("sleep", {"seconds": 60}, timeout_s=60, on_event=on_event)))
    thread.start()
    assert started.wait(60)
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert results[0].status == "crash" and "SIGKILL" in results[0].message
    _assert_replaced(pool, pid)


@pytest.mark.slow
@pytest.mark.parametrize("error, status", [("StepError", "schedule_error"),
                                           ("BuildError", "build_error"),
                                           ("ChainError", "error"), ("ValueError", "error")])
def test_exceptions_are_classified_and_keep_the_worker(pool, error, status):
    pid = _ping_pid(pool)
    result = pool.run("raise", {"error": error, "message": "bad factor 7\nmore", "where": "x"})
    assert result.status == status
    assert result.message.endswith("bad factor 7")  # one line
    assert result.detail  # traceback or the error's detail
    if error != "ValueError":
        assert result.where == "x"
    assert _ping_pid(pool) == pid  # a Python exception does not cost the warm worker


@pytest.mark.slow
def test_exit_and_unknown_job(pool):
    result = pool.run("exit", {"code": 4})
    assert result.status == "crash" and "code 4" in result.message
    result = pool.run("no_such_job", {})
    assert result.status == "error" and "no_such_job" in result.message


@pytest.mark.slow
def test_wrong_result_keeps_the_value(pool):
    result = pool.run("echo", {"correct": False, "message": "max abs error 0.5"})
    assert result.status == "wrong_result" and result.message == "max abs error 0.5"
    assert result.value["correct"] is False


@pytest.mark.slow
def test_cancel_kills_the_running_job(pool):
    pid = _ping_pid(pool)
    cancel = threading.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "started":
            threading.Timer(0.3, cancel.set).start()

    result = pool.run("sleep", {"seconds": 60}, timeout_s=60, on_event=on_event, cancel=cancel)
    assert result.status == "cancelled"
    _assert_replaced(pool, pid)


@pytest.mark.slow
def test_failing_event_callback_does_not_break_the_job(pool):
    def on_event(event: dict) -> None:
        raise RuntimeError("UI bug")

    assert pool.run("ping", {}, on_event=on_event).status == "ok"


@pytest.mark.slow
def test_many_threads_share_a_pool(tmp_path):
    with WorkerPool(2, num_threads=1, memory_limit_mb=CAP_MB, lock_dir=tmp_path) as pool:
        results: list[JobResult] = []
        threads = [threading.Thread(target=lambda: results.append(pool.run("ping", {})))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert [r.status for r in results] == ["ok"] * 8
        assert {r.worker_pid for r in results} <= set(pool.pids) and len(pool.pids) <= 2


@pytest.mark.slow
def test_memory_cap_too_small_to_start(tmp_path):
    with WorkerPool(1, memory_limit_mb=64, lock_dir=tmp_path) as pool:
        with pytest.raises(PlaygroundError, match="failed to start"):
            pool.warm_up()
        result = pool.run("ping", {})
        assert result.status in ("oom", "crash", "error") and "failed to start" in result.message


@pytest.mark.slow
def test_close_leaves_no_zombies(tmp_path):
    import psutil

    def workers() -> set[int]:
        return {c.pid for c in psutil.Process().children(recursive=True)
                if "playground.worker.main" in " ".join(c.cmdline())}

    before = workers()  # other tests' pools (shared fixtures) may have live workers
    pool = WorkerPool(2, fault_jobs=True, num_threads=1, memory_limit_mb=CAP_MB,
                      lock_dir=tmp_path)
    pool.warm_up()
    pids = list(pool.pids)
    assert len(pids) == 2
    assert pool.run("sleep", {"seconds": 60}, timeout_s=0.5).status == "timeout"
    assert pool.run("segfault", {}).status == "crash"
    pids += pool.pids
    pool.close()
    assert not any(_alive(pid) for pid in pids)
    assert workers() - before == set()
    with pytest.raises(PlaygroundError, match="closed"):
        pool.run("ping", {})


@pytest.mark.slow
def test_close_during_a_job_cancels_it(tmp_path):
    pool = WorkerPool(1, fault_jobs=True, num_threads=1, memory_limit_mb=CAP_MB,
                      lock_dir=tmp_path)
    started = threading.Event()
    results: list[JobResult] = []
    thread = threading.Thread(target=lambda: results.append(pool.run(
        "sleep", {"seconds": 60}, on_event=lambda e: e["event"] == "started" and started.set())))
    thread.start()
    assert started.wait(60)
    pid = pool.pids[0]
    pool.close()
    thread.join(60)
    assert results[0].status == "cancelled" and "closed" in results[0].message
    assert not _alive(pid)


# -- the measurement lock -------------------------------------------------------------------


def _exclusive_sleeps(pools: list[WorkerPool], seconds: float) -> list[dict]:
    """Run one exclusive sleep per pool, the second queued while the first holds the lock."""
    records = [{"events": []} for _ in pools]
    first_started = threading.Event()

    def run(i: int) -> None:
        def on_event(event: dict) -> None:
            records[i]["events"].append(event)
            if event["event"] == "started":
                records[i]["started"] = time.monotonic()
                first_started.set()

        records[i]["result"] = pools[i].run("sleep", {"seconds": seconds}, exclusive=True,
                                            on_event=on_event)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pools))]
    threads[0].start()
    assert first_started.wait(60)
    threads[1].start()
    for thread in threads:
        thread.join(120)
    return records


def _assert_serialized(records: list[dict], seconds: float) -> None:
    assert all(r["result"].status == "ok" for r in records)
    # The second can start only after the first's sleep ended and it released the lock.
    assert records[1]["started"] - records[0]["started"] >= seconds * 0.95
    queued = [e["position"] for e in records[1]["events"] if e["event"] == "queued"]
    assert queued[0] == 1 and queued[-1] == 0
    assert [e["event"] for e in records[0]["events"]] == ["queued", "started", "done"]


@pytest.mark.slow
def test_exclusive_jobs_from_two_threads_are_serialized(tmp_path):
    with WorkerPool(2, fault_jobs=True, num_threads=1, memory_limit_mb=CAP_MB,
                    lock_dir=tmp_path) as pool:
        pool.warm_up()
        _assert_serialized(_exclusive_sleeps([pool, pool], 0.5), 0.5)


@pytest.mark.slow
def test_exclusive_jobs_from_two_pools_are_serialized(tmp_path):
    kwargs = {"fault_jobs": True, "num_threads": 1, "memory_limit_mb": CAP_MB,
              "lock_dir": tmp_path}
    with WorkerPool(1, **kwargs) as a, WorkerPool(1, **kwargs) as b:
        a.warm_up()
        b.warm_up()
        _assert_serialized(_exclusive_sleeps([a, b], 0.5), 0.5)


@pytest.mark.slow
def test_lock_is_machine_wide_across_processes(tmp_path):
    holder = textwrap.dedent(f"""
        import time
        from playground.worker.lock import measurement_lock
        with measurement_lock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(1.0)
            released = time.time()
        print(released, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        events = []
        with measurement_lock(tmp_path, on_event=events.append):
            acquired = time.time()
        released = float(proc.stdout.readline())
    finally:
        proc.wait(30)
    assert acquired >= released
    assert next(e for e in events if e["event"] == "queued")["position"] == 1
    assert [e["event"] for e in events][-2:] == ["started", "done"]


def test_lock_queue_positions_and_cancel(tmp_path):
    lock = MeasurementLock(tmp_path)
    assert lock.queue_length() == 0
    held = lock.acquire()
    events: list[dict] = []
    cancel = threading.Event()
    waiter = threading.Thread(target=lambda: events.append(
        lock.acquire(on_event=events.append, cancel=cancel)))
    waiter.start()
    deadline = time.monotonic() + 30
    while lock.queue_length() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock.queue_length() == 2
    cancel.set()
    waiter.join(30)
    assert events == [{"event": "queued", "position": 1}, None]  # cancelled: no ticket
    assert lock.queue_length() == 1
    held.release()
    held.release()  # twice is harmless
    assert lock.queue_length() == 0


def test_stale_tickets_of_dead_processes_are_dropped(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / f"{0:020d}-{proc.pid}-00000000.ticket").touch()
    lock = MeasurementLock(tmp_path)
    assert lock.queue_length() == 0
    ticket = lock.acquire()
    ticket.release()


@pytest.mark.slow
def test_cancel_while_queued_for_measurement(pool, tmp_path):
    cancel = threading.Event()
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "queued":
            cancel.set()

    with measurement_lock(tmp_path / "lock"):
        result = pool.run("ping", {}, exclusive=True, on_event=on_event, cancel=cancel)
    assert result.status == "cancelled" and "queued" in result.message
    assert [e["event"] for e in events] == ["queued", "done"]


def test_every_job_module_is_loaded_and_registers_jobs(tmp_path, monkeypatch):
    """Jobs are found on disk: every module of playground/jobs is imported by the
    worker, and a module there that registers no job stops it loudly (not skipped)."""
    import sys

    from playground.worker import job_table, registry

    modules = registry.job_modules()
    assert {j.module for j in job_table.JOBS.values()} - {registry.__name__} == set(modules)
    jobs_dir = Path(registry.__file__).parent.parent / "jobs"
    on_disk = {p.stem for p in jobs_dir.glob("*.py") if p.stem != "__init__"}
    assert {m.rsplit(".", 1)[1] for m in modules} == on_disk

    empty = tmp_path / "playground_empty_jobs"
    empty.mkdir()
    (empty / "__init__.py").write_text("")
    (empty / "nothing.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "JOBS_PACKAGE", "playground_empty_jobs")
    with pytest.raises(RuntimeError, match="registers no job"):
        registry.load_jobs()
    sys.modules.pop("playground_empty_jobs.nothing", None)
    sys.modules.pop("playground_empty_jobs", None)
