"""The Fusion explorer tab, driven with AppTest: analysis numbers, the halo picture, a sweep
run in the background (validated points, CSV), and a cancelled sweep."""

import re
import time

import paths
import pytest
from helpers import CONV_RELU_CONV, fuse_two_convs
from streamlit.testing.v1 import AppTest

from playground.schedule.session import Session

APP = paths.APP


def _app(session: Session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["session"] = session
    at.session_state["page"] = "Fusion explorer"  # tabs are lazy: open this one
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _wait(at: AppTest, name: str, timeout_s: float = 240) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = at.session_state["tasks"].get(name)
        if task is not None and task.done:
            return task
        time.sleep(0.2)
    raise AssertionError(f"{name} did not finish in {timeout_s} s")


def _table(at: AppTest, column: str):
    """The first dataframe on the page with ``column`` (AppTest finds dataframes by index)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.slow
def test_analysis_and_halo_of_a_fused_schedule():
    at = _app(Session.new(CONV_RELU_CONV, fuse_two_convs(8)))
    # 16x16 image in 8x8 tiles: with the tile-local step every tile computes a 10x10 tile of
    # conv1 (the ring outside the image included): 20x20 per 16x16 of output, 1.5625.
    blocks = _table(at, "iterations done")
    conv1 = blocks[blocks["block"] == "conv1"].iloc[0]
    assert conv1["redundancy"] == pytest.approx((20 / 16) ** 2, abs=1e-4)  # shown rounded
    assert any("border predicate dropped, tile-sized: conv1_pad, conv1, relu1" in c.value
               for c in at.caption)
    assert _metric(at, "redundant work").endswith("x")
    halo = next(c.value for c in at.caption if "Red: region the next iteration" in c.value)
    assert "{'" not in halo and re.search(r"at `h_0` = \d+, `w_0` = \d+\)", halo), halo


@pytest.mark.slow
def test_sweep_runs_in_the_background_and_every_point_is_validated():
    at = _app(Session.new(CONV_RELU_CONV, fuse_two_convs(8)))
    label = "split conv2.h factor[1]"
    at.selectbox(key="fusion.sweep.param").set_value(label).run()
    at.multiselect(key=f"fusion.sweep.values.{label}").set_value([4, 8]).run()
    at.button(key="fusion.sweep.run").click().run()
    task = _wait(at, "sweep")
    assert not task.error, task.error
    assert [p.value for p in task.result.points] == [4, 8]
    assert all(p.correct is True and p.median_ms > 0 for p in task.result.points)
    at.run()
    assert not at.exception
    table = _table(at, "footprint_bytes")
    assert list(table["value"]) == [4, 8]
    from playground.store import get_store

    (group,) = get_store().list_experiments()  # recorded as one group of two points
    assert (group["kind"], group["label"], group["children"]) == ("sweep", label, 2)
    assert group["median_ms"] == min(p.median_ms for p in task.result.points)
    # Shown in units, not as raw floats (the data keep full precision).
    shown = next(d.proto.columns for d in at.dataframe if "footprint_bytes" in d.value.columns)
    for label, fmt in (("median (ms)", "%.3f"), ("max abs error", "%.1e"),
                       ("footprint", "bytes"), ("GFLOP/s", "%.2f")):
        assert label in shown and f'"{fmt}"' in shown, (label, shown)


@pytest.mark.slow
def test_cancelled_sweep_stops():
    at = _app(Session.new(CONV_RELU_CONV, fuse_two_convs(8)))
    label = "split conv2.h factor[1]"
    at.selectbox(key="fusion.sweep.param").set_value(label).run()
    at.multiselect(key=f"fusion.sweep.values.{label}").set_value([1, 2, 4, 8, 16]).run()
    at.button(key="fusion.sweep.run").click().run()
    task = at.session_state["tasks"]["sweep"]
    task.cancel.set()  # what the Cancel button does
    task = _wait(at, "sweep")
    assert task.result.status == "cancelled" and len(task.result.points) < 5


@pytest.mark.slow
def test_a_tabs_background_jobs_take_its_turns(monkeypatch):
    """A sweep's jobs run in a background thread yet count as its tab's in the fair queue:
    they carry the tab's session id as owner (AppTest gives every tab the same id, so only
    that the owner reaches the thread can be checked here)."""
    from playground import service
    from playground.worker.fair import current_owner
    from playground.worker.result import JobResult

    owners: list[str] = []

    def fake_run(pool, session, target="cpu", **kwargs):
        owners.append(current_owner())
        return JobResult("ok", {"correct": True, "median_ms": 1.0, "gflops": 1.0,
                                "timing": {"spread": 0.0}})

    monkeypatch.setattr(service, "run", fake_run)
    label = "split conv2.h factor[1]"
    at = _app(Session.new(CONV_RELU_CONV, fuse_two_convs(8)))
    at.selectbox(key="fusion.sweep.param").set_value(label).run()
    at.multiselect(key=f"fusion.sweep.values.{label}").set_value([4, 8]).run()
    at.button(key="fusion.sweep.run").click().run()
    assert not _wait(at, "sweep").error
    assert len(owners) == 2 and owners[0] == owners[1] != ""


@pytest.mark.slow
def test_search_and_verdict_on_the_page_load_their_schedules():
    """The template search and the verdict run in the background with progress, land as
    tables and buttons, and load their schedules into the session as ordinary steps."""
    from helpers import CONV_RELU_CONV as chain

    at = _app(Session.new(chain))
    at.number_input(key="fusion.search.budget").set_value(5).run()
    at.button(key="fusion.search.run").click().run()
    task = _wait(at, "search")
    assert not task.error, task.error
    best = task.result.best()
    assert best is not None and best.ok
    if task.result.measured > 1:  # the fastest were timed again side by side
        assert task.text.startswith("timing the") and task.result.final is not None
        assert best.label == task.result.final.best and best.rounds_ms
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = _table(at, "candidate")
    assert len(table) == len(task.result.candidates) and "ok" in set(table["status"])
    before = at.session_state["session"]
    at.button(key="fusion.search.load").click().run()
    session = at.session_state["session"]
    assert session.active == best.steps and session.chain == task.result.chain
    # One history entry, said under the search: Undo brings the session before it back.
    assert session.at_replacement
    assert session.before_replacement() == before
    assert any("Undo brings back" in m.value for m in at.success)

    from playground.store import get_store  # the search is kept as one group

    (group,) = [e for e in get_store().list_experiments() if e["kind"] == "search"]
    assert group["children"] == len(task.result.candidates)

    at.button(key="fusion.verdict.run").click().run()
    verdict = _wait(at, "verdict", timeout_s=400).result
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Verdict: {verdict.verdict}" in m.value and "unfused / fused = " in m.value
               for m in at.markdown)
    assert verdict.fused is not None and verdict.unfused is not None
    # One story: the verdict re-timed the search's schedules; the search's best is one of them
    assert verdict.search is task.result and task.result.final.by == "verdict"
    shown = task.result.best()
    assert shown.label in (verdict.fused.label, verdict.unfused.label)
    assert any(f"**{shown.median_ms:.3f} ms**" in m.value for m in at.markdown)
    at.button(key="fusion.verdict.load.unfused").click().run()
    assert at.session_state["session"].active == verdict.unfused.steps
    at.button(key="fusion.verdict.load.fused").click().run()
    assert at.session_state["session"].active == verdict.fused.steps


@pytest.mark.slow
def test_cancel_stops_the_search_on_the_page():
    from helpers import CONV_RELU_CONV as chain

    at = _app(Session.new(chain))
    at.number_input(key="fusion.search.budget").set_value(300).run()
    at.button(key="fusion.search.run").click().run()
    deadline = time.monotonic() + 120
    while not at.session_state["tasks"]["search"].result and time.monotonic() < deadline:
        if at.session_state["tasks"]["search"].text.startswith("1 measured"):
            break
        time.sleep(0.2)
    at.run()  # the progress bar and its Cancel button
    at.button(key="fusion.cancel.search").click().run()
    task = _wait(at, "search")
    assert task.result.cancelled and task.elapsed_s < 120


def test_tuning_result_shows_its_notes_and_imports_its_steps(monkeypatch):
    """The tuning panel shows what the job says about the schedule it returns (here: faster
    ones skipped because TVM miscompiles them), and imports its steps as the session."""
    from helpers import CONV_RELU as chain

    from playground.explore import tuning
    from playground.worker.result import JobResult

    steps = [{"primitive": "split", "args": {"block": "conv1", "loop": "h",
                                             "factors": [None, 4]}}]
    note = ("MetaSchedule's 2 faster schedule(s) skipped: their steps are refused because TVM "
            "0.27 miscompiles them (conv2_pad pads its input)")

    def fake_tune(pool, session, trials, **kwargs):
        return JobResult("ok", {"steps": steps, "complete": True, "dropped": [],
                                "unsupported": "", "structurally_equal": True,
                                "verify_message": "", "best_ms": 1.5, "trials": trials,
                                "tune_s": 3.0, "trace": "", "runner": "local",
                                "notes": [note]})

    monkeypatch.setattr(tuning, "tune", fake_tune)
    at = _app(Session.new(chain))
    at.button(key="fusion.tune.run").click().run()
    assert not _wait(at, "tune").error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("skipped" in c.value and "miscompiles" in c.value for c in at.caption)
    at.button(key="fusion.tune.import").click().run()
    assert [s.to_dict() for s in at.session_state["session"].active] == steps
