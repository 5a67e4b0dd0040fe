"""Faults in the worker, seen from the page: a kernel that segfaults, a build that hangs, one
that eats memory, a worker killed from outside. Each time the page stays up, the session
(chain and steps) is intact, the user reads which fault it was, and the next measurement runs
on a fresh worker and succeeds. Faults are injected with the worker's test-only fault jobs."""

import os
import signal
import threading

import paths
import pytest
from helpers import CONV_RELU
from streamlit.testing.v1 import AppTest

from playground import service
from playground.io.url_state import QUERY_KEY, encode_state
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.worker.pool import WorkerPool

pytestmark = pytest.mark.slow
APP = paths.APP
REAL_RUN = service.run


@pytest.fixture(scope="module")
def fault_pool():
    with WorkerPool(1, fault_jobs=True, memory_limit_mb=2048) as pool:
        yield pool


def _kill_soon(pool: WorkerPool) -> None:
    def kill() -> None:
        for pid in pool.pids:
            os.kill(pid, signal.SIGKILL)

    threading.Timer(1.5, kill).start()


FAULTS = {
    "crash": ("segfault", {}, 60, None, "crashed the worker with SIGSEGV"),
    "timeout": ("sleep", {"seconds": 60}, 2, None, "2"),
    "oom": ("allocate", {"mb": 4096}, 60, None, ""),
    "killed": ("sleep", {"seconds": 30}, 60, _kill_soon, "SIGKILL"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_named_and_the_session_kept(fault, fault_pool, monkeypatch):
    job, payload, timeout_s, before, needle = FAULTS[fault]
    monkeypatch.setattr("ui.state.get_pool", lambda: fault_pool)

    def faulty_run(pool, session, target="cpu", **kw):
        if before is not None:
            before(pool)
        return pool.run(job, payload, timeout_s=timeout_s, exclusive=True,
                        on_event=kw.get("on_event"))

    built = Session.new(CONV_RELU, [Step("parallel", {"block": "conv1", "loop": "k"})])
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params[QUERY_KEY] = encode_state(built.chain, built.steps, built.cursor)
    at.run()
    monkeypatch.setattr(service, "run", faulty_run)
    pid_before = set(fault_pool.pids)
    at.button(key="measure.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    expected_status = "crash" if fault == "killed" else fault
    texts = [e.value for e in at.error] + [w.value for w in at.warning] + \
        [s.label for s in at.status]
    assert any(expected_status in t for t in texts), texts
    assert any(needle in t for t in texts), texts
    # Nothing the user built is lost.
    kept = at.session_state["session"]
    assert kept.chain == built.chain and kept.steps == built.steps and kept.cursor == 1
    # The next measurement runs on a fresh worker and succeeds.
    monkeypatch.setattr(service, "run", REAL_RUN)
    at.button(key="measure.run").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics.get("Correct") == "yes", ([e.value for e in at.error], metrics)
    assert not set(fault_pool.pids) & pid_before
