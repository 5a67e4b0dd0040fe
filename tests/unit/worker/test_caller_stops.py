"""A caller that stops waiting on the page holds nothing: no turn, no worker, no timing slot.

Streamlit stops the script of a closed (or rerun) tab by raising ``StopException`` (a
``BaseException``) from the next thing it writes to the page, and the page's ``on_event``
callback writes the queue position and "started" lines. So a job's caller can vanish at three
points: waiting for its turn in the fair queue, waiting for the measurement lock, and with its
job already sent to a worker. Other tabs' long jobs must not wait for it at any of them.
"""

from __future__ import annotations

import threading
import time

import pytest

from playground.worker.fair import FairQueue
from playground.worker.pool import WorkerPool


class Stopped(BaseException):
    """What Streamlit raises from a page write of a stopped script (not an ``Exception``)."""


def stop_at(event_name: str):
    def on_event(event: dict) -> None:
        if event["event"] == event_name:
            raise Stopped(event_name)

    return on_event


def test_a_waiter_stopped_by_its_page_write_gives_up_its_turn():
    fair: FairQueue[str] = FairQueue([])
    with pytest.raises(Stopped):  # no free item: it waits, and says so to its stopped page
        fair.get("closed-tab", on_event=stop_at("waiting"))
    served: list = []
    other = threading.Thread(target=lambda: served.append(fair.get("other-tab")))
    other.start()
    deadline = time.monotonic() + 10
    while fair.waiting() != {"other-tab": 1} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fair.waiting() == {"other-tab": 1}  # the stopped caller left no ticket
    fair.put("worker")
    other.join(10)
    assert served == ["worker"]


@pytest.mark.slow
def test_a_caller_stopped_with_its_job_running_frees_the_worker_and_the_slot(tmp_path):
    """Stopped with its 60 s timing running: the job is killed, so the next tab's job gets the
    (only) worker and the measurement slot at once, and its result is its own (it used to wait
    for the orphaned job, then read that job's reply and report a crash)."""
    with WorkerPool(1, fault_jobs=True, num_threads=1, lock_dir=tmp_path) as pool:
        with pytest.raises(Stopped):
            pool.run("sleep", {"seconds": 60}, timeout_s=120, exclusive=True,
                     on_event=stop_at("started"), owner="closed-tab")
        assert pool.pids == [] and pool.measurement_lock.queue_length() == 0
        t0 = time.monotonic()
        result = pool.run("sleep", {"seconds": 0.1}, timeout_s=30, exclusive=True,
                          owner="other-tab")
        assert result.status == "ok", (result.status, result.message)
        assert result.value == {"slept": 0.1}
        assert time.monotonic() - t0 < 30  # not behind the stopped tab's 60 s job
