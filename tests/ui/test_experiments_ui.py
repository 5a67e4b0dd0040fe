"""The page and the experiment store, driven with AppTest: measurements recorded and charted
from the store after a reload; the Experiments tab's list, filters, restore, star, note,
delete, comparison, leaderboard and saved sessions; short links; and a store that cannot save
(corrupt, under a regular file, full): the page works on and says so.

Each test has its own store (``conftest.experiment_store``); the measurement is patched
(``service.run``), lowering for the IR diff runs in the page's real worker pool.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import paths
import pytest
from streamlit.testing.v1 import AppTest
from test_app import TINY, fake_run

from playground import service
from playground.chain.spec import normalize_chain
from playground.io.url_state import QUERY_KEY, encode_state
from playground.measure.machine import host_fingerprint
from playground.schedule.session import Session
from playground.store import Store, StoreError, api, get_store, record_run
from playground.store.db import DB_NAME
from ui import store_ui
from ui.io_ui import SHORT_KEY, SHORT_LINK
from ui.state import DEFAULT_CHAIN

APP = paths.APP
EVIL = "see [this](http://evil.example) <b>now</b> **loud**"
PARALLEL = [{"primitive": "parallel", "args": {"block": "conv1", "loop": "k"}}]


@pytest.fixture(scope="module", autouse=True)
def shared_pool(close_page_pool):
    """Every AppTest of this module shares the page's worker pool (closed after)."""


def start(page: str = "Playground", query: dict | None = None,
          session: Session | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["page"] = page
    if session is not None:
        at.session_state["session"] = session
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def seed(ms: float, steps: list | None = None, *, chain: dict = DEFAULT_CHAIN,
         correct: bool = True, label: str = "", target: str = "cpu", machine=None) -> int:
    value = {"correct": correct, "median_ms": ms, "gflops": 10 / ms,
             "timing": {"median_ms": ms, "p10_ms": 0.9 * ms, "p90_ms": 1.1 * ms, "repeats": 5,
                        "samples_ms": [f * ms for f in (0.9, 0.98, 1.0, 1.02, 1.1)]}}
    return record_run(normalize_chain(chain), steps or [], target,
                      machine or host_fingerprint(), status="ok", value=value,
                      label=label or f"{ms} ms", source="page")


def markdown_texts(at: AppTest) -> list[str]:
    """Every text the page rendered as Markdown."""
    out = []
    for kind in ("markdown", "caption", "success", "error", "warning", "info", "subheader",
                 "title", "header"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def table_with(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


# ----------------------------------------------------------------------------- recording

def test_a_measurement_is_recorded_and_charted_after_a_reload(monkeypatch):
    monkeypatch.setattr(service, "run", fake_run)
    at = start()
    at.button(key="measure.run").click()
    run(at)
    (row,) = get_store().list_experiments()
    assert (row["source"], row["label"], row["median_ms"]) == ("page", "0: unscheduled", 2.0)
    full = get_store().get(row["id"])
    assert full["result"]["timing"]["p90_ms"] == 2.2
    assert full["machine"] == host_fingerprint()

    seed(3.0, PARALLEL, label="from another tab")
    reloaded = start()  # a new tab: its own measurements are empty, the store's are not
    assert reloaded.session_state["ui"].measurements == []
    chart = json.loads(reloaded.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["y"] == [2.0, 3.0]
    assert chart["data"][0]["hovertext"] == ["0: unscheduled", "from another tab"]
    assert any("experiment store" in c for c in markdown_texts(reloaded))

    listed = start("Experiments")
    table = table_with(listed, "label")
    assert list(table["label"]) == ["from another tab", "0: unscheduled"]


# ----------------------------------------------------------------------------- the tab

def test_restore_star_annotate_and_delete():
    slow, fast = seed(2.0, label="unscheduled"), seed(1.0, PARALLEL, label="parallel")
    at = start("Experiments")
    assert at.selectbox(key="exp.pick").value == fast  # newest first
    at.selectbox(key="exp.pick").set_value(slow)
    run(at)
    at.button(key="exp.star").click()
    run(at)
    assert get_store().get(slow)["starred"] == 1
    assert at.button(key="exp.star").label == "Unstar"
    at.text_area(key=f"exp.note.{slow}").input(EVIL)
    at.button(key="exp.note.save").click()
    run(at)
    assert get_store().get(slow)["note"] == EVIL
    assert EVIL in list(table_with(at, "note")["note"])  # shown in a table, as text
    assert not any("evil.example" in t for t in markdown_texts(at))  # never as Markdown

    at.button(key="exp.delete").click()
    run(at)
    assert any("Tick" in w for w in warnings(at)) and get_store().count() == 2
    at.checkbox(key="exp.delete.confirm").check()
    at.button(key="exp.delete").click()
    run(at)
    assert [r["id"] for r in get_store().list_experiments()] == [fast]

    at.button(key="exp.restore").click()
    run(at)
    assert at.session_state["page"] == "Playground"
    restored = at.session_state["session"]
    assert [s.to_dict() for s in restored.steps] == PARALLEL
    assert any(f"Restored experiment #{fast}" in s.value for s in at.success)


def test_filters_by_chain_machine_target_star_and_date():
    other = {**host_fingerprint(), "cpu_model": "another CPU"}
    mine = seed(2.0, label="mine")
    seed(1.0, chain=TINY, label="tiny chain")
    seed(1.5, label="elsewhere", machine=other)
    seed(0.5, label="on cuda", target="cuda")
    get_store().star(mine)
    at = start("Experiments")

    def labels() -> list[str]:
        return sorted(table_with(at, "label")["label"])

    assert labels() == ["elsewhere", "mine", "on cuda", "tiny chain"]
    at.selectbox(key="exp.chain").set_value("this")
    run(at)
    assert labels() == ["elsewhere", "mine", "on cuda"]
    at.selectbox(key="exp.machine").set_value("this")
    run(at)
    assert labels() == ["mine", "on cuda"]
    at.selectbox(key="exp.target").set_value("cuda")
    run(at)
    assert labels() == ["on cuda"]
    at.selectbox(key="exp.target").set_value("")
    at.checkbox(key="exp.starred").check()
    run(at)
    assert labels() == ["mine"]
    at.checkbox(key="exp.starred").uncheck()
    at.date_input(key="exp.since").set_value(dt.date.today() + dt.timedelta(days=1))
    run(at)
    assert not any(d for d in at.dataframe if "label" in d.value.columns and "note" in
                   d.value.columns)
    assert any("Nothing recorded matches" in c for c in markdown_texts(at))


def test_compare_two_side_by_side_with_steps_and_ir_diffs():
    slow, fast = seed(2.0, label="unscheduled"), seed(1.0, PARALLEL, label="parallel")
    at = start("Experiments")
    assert (at.selectbox(key="exp.compare.a").value, at.selectbox(key="exp.compare.b").value) \
        == (slow, fast)
    table = table_with(at, f"#{slow}").set_index("")
    assert table.loc["median ms", f"#{slow}"] == "2" and table.loc["median ms", f"#{fast}"] == "1"
    line = next(t.value for t in at.text if "timed apart" in t.value)
    assert line.startswith(f"#{fast} ran 2.00x faster than #{slow}"), line
    assert "interval" in line and "Not like for like" not in line, line
    codes = [c.value for c in at.code]
    assert any(c.startswith(f"--- #{slow} steps") and "+1. parallel conv1.k" in c
               for c in codes), codes
    scheduled = next(c for c in codes if c.startswith(f"--- #{slow}\n"))
    assert "T.parallel" in scheduled
    at.radio(key="exp.compare.ir").set_value("Lowered TIR")
    run(at)
    lowered = next(c.value for c in at.code if c.value.startswith(f"--- #{slow}\n"))
    assert lowered != scheduled and "+" in lowered


def test_leaderboard_fastest_validated_on_this_machine():
    seed(3.0, label="slow")
    seed(1.0, PARALLEL, label="fast")
    seed(0.1, [{"primitive": "unroll", "args": {"block": "conv1", "loop": "k"}}],
         correct=False, label="wrong but quick")
    seed(0.2, PARALLEL, label="other machine", machine={**host_fingerprint(), "cores": 64})
    at = start("Experiments")
    board = table_with(at, "rank")
    assert list(board["label"]) == ["fast", "slow"]
    assert list(board["median ms"]) == [1.0, 3.0]
    at.selectbox(key="exp.board.machine").set_value("")  # every machine
    run(at)
    assert list(table_with(at, "rank")["label"]) == ["other machine", "fast", "slow"]
    at.selectbox(key="exp.board.pick").set_value(table_with(at, "rank")["#"][1])
    at.button(key="exp.board.restore").click()
    run(at)
    assert [s.to_dict() for s in at.session_state["session"].steps] == PARALLEL


def test_save_a_session_by_name_and_load_it():
    at = start("Experiments", session=Session.new(DEFAULT_CHAIN, PARALLEL))
    at.text_input(key="exp.save.name").input(EVIL)
    at.text_input(key="exp.save.note").input("before vectorizing")
    at.button(key="exp.save").click()
    run(at)
    (saved,) = get_store().list_sessions()
    assert (saved["name"], saved["note"]) == (EVIL, "before vectorizing")
    assert EVIL in list(table_with(at, "saved")["name"])
    assert not any("evil.example" in t for t in markdown_texts(at))
    fresh = start("Experiments")
    assert fresh.session_state["session"].steps == ()
    fresh.button(key="exp.sessions.load").click()
    run(fresh)
    assert [s.to_dict() for s in fresh.session_state["session"].steps] == PARALLEL


# ----------------------------------------------------------------------------- short links

def test_share_gives_a_short_link_that_restores_the_session():
    original = Session.new(TINY, [{"primitive": "parallel", "args": {"block": "relu1",
                                                                     "loop": "c"}}])
    at = start(session=original)
    at.button(key="io.share").click()
    run(at)
    link, _ = at.session_state[SHORT_LINK]
    assert len(link) >= 22 and any(f"?{SHORT_KEY}={link}" in c.value for c in at.code)
    opened = start(query={SHORT_KEY: link})
    assert opened.session_state["session"] == original
    assert SHORT_KEY not in opened.query_params  # the state follows the session from here
    assert QUERY_KEY in opened.query_params
    old = start(query={QUERY_KEY: encode_state(original.chain, original.steps)})
    assert old.session_state["session"].steps == original.steps  # old links still work


@pytest.mark.parametrize("bad", ["not a link!", "A" * 24, "[x](http://evil.example)"])
def test_a_missing_or_malformed_short_link_says_so_and_shows_the_default_chain(bad):
    at = start(query={SHORT_KEY: bad})
    message = " ".join(e.value for e in at.error)
    assert "could not be restored" in message and "default chain" in message
    assert ("not a short-link id" in message) or ("no shared session" in message)
    assert "evil.example" not in message
    assert at.session_state["session"].chain == normalize_chain(DEFAULT_CHAIN)


# ----------------------------------------------------------------------------- broken stores

def _corrupt(path: Path) -> None:
    path.mkdir(parents=True)
    (path / DB_NAME).write_bytes(b"garbage, not sqlite " * 300)


def _under_a_file(path: Path, monkeypatch) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "file").write_text("a regular file")
    monkeypatch.setenv("PLAYGROUND_DATA", str(path.parent / "file" / "data"))


def _full(path: Path) -> None:
    full = Store(path, max_pages=30)
    for size in (4000, 400, 0):
        while record_run(TINY, [], "cpu", {}, status="ok", detail="x" * size, store=full):
            pass
    with pytest.raises(StoreError):  # and the gaps a short link would fit in
        while True:
            full.share({"chain": TINY, "steps": []})
    api._stores[path] = full


@pytest.mark.parametrize("breakage", ["corrupt", "under a file", "full"])
def test_a_store_that_cannot_save_never_stops_the_page(breakage, experiment_store,
                                                       monkeypatch):
    if breakage == "corrupt":
        _corrupt(experiment_store)
    elif breakage == "under a file":
        _under_a_file(experiment_store, monkeypatch)
    monkeypatch.setattr(service, "run", fake_run)
    at = start()
    if breakage == "full":
        _full(experiment_store)  # reads work: the page learns it when a write fails
    at.button(key="measure.run").click()
    run(at)
    assert {m.label: m.value for m in at.metric}["Median time"] == "2 ms"  # the run ran
    assert store_ui.NOT_SAVED in warnings(at)
    run(at)
    assert store_ui.NOT_SAVED in warnings(at)  # and the notice stays at the top
    assert any("history is not being saved" in t.value for t in at.text)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["y"] == [2.0]  # this tab's measurements
    at.button(key="io.share").click()
    run(at)
    assert any("No short link" in e.value for e in at.error)
    at.session_state["page"] = "Experiments"
    run(at)
    if breakage != "full":
        assert store_ui.NOT_SAVED in warnings(at)
    at.session_state["page"] = "Fusion explorer"
    run(at)


def test_the_speedup_line_names_what_makes_two_runs_not_like_for_like():
    from ui.compare_ui import speedup_line
    store = get_store()
    a = store.get(seed(2.0, label="here"))
    b = store.get(seed(4.0, chain={**DEFAULT_CHAIN, "input": {"shape": [1, 3, 32, 32]}},
                       target="cuda", label="there"))
    line = speedup_line(a, b)
    assert line.startswith(f"#{b['id']} ran 2.00x slower than #{a['id']}"), line
    assert "different chains" in line and "different targets" in line, line
    assert "different machines" not in line, line
