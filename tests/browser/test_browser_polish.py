"""What a new user hit in a real browser (issue 22), each point checked the way they met it, on
the run's one server (see ``browser.py``); the first-load test starts a server of its own.

- the Playground page: every field's error at once, outlined, nothing held silently (5);
  labels whole and "auto" unclipped (9); an import refused beside the uploader and cleared
  from it (4), an accepted one undone whole (3); a long history grouped by stage (10);
- the Fusion explorer: budget and trials kept across tabs (2); the comparison's progress and
  Cancel beside its button, the old table kept meanwhile (1);
- a short link in a fresh browser and the first visit of a server (6), timed;
- the run-time chart: each point's label whole, clear of the markers, and distinct (9).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import paths
import pytest
from browser import COUNT_RUNS, MEASURE_WAIT_MS, App, Server, css, save_screenshot, serve
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_browser_session import SMALL, TILE, expected, load_preset_in_page

from playground.chain.spec import normalize_chain
from playground.io.url_state import encode_state
from playground.schedule.session import Session
from playground.schedule.steps import Step

pytestmark = pytest.mark.browser

RED = "rgb(255, 43, 43)"  # the outline of a refused field (ui.chain_ui.render_field_errors)
TINY = {"input": {"shape": [1, 4, 12, 12]},
        "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                   {"op": "relu"}, {"op": "conv2d", "channels": 4, "kernel": 3}]}


def border(app: App, key: str) -> str:
    return app.tab.locator(f'{css(key)} [data-testid="stNumberInputContainer"]').evaluate(
        "e => getComputedStyle(e).borderTopColor")


def in_sidebar(app: App, text: str):
    return app.tab.locator('[data-testid="stSidebar"] [data-testid="stAlert"]').filter(
        has_text=text)


def upload(app: App, name: str, content: str) -> None:
    n = app.runs()
    app.tab.locator('[data-testid="stSidebar"] input[type=file]').set_input_files(
        files=[{"name": name, "mimeType": "application/json", "buffer": content.encode()}])
    app.settle(n)


def test_fields_labels_imports_and_history_on_the_playground(page: App, tmp_path: Path):
    app = page
    # 9: at 1024 px the layer's fields wrap between fields: no label breaks inside a word,
    # and the empty "in ch." box shows "auto" whole.
    app.tab.set_viewport_size({"width": 1024, "height": 1300})
    labels = app.tab.locator('[class*="st-key-chain-0-"] [data-testid="stWidgetLabel"] p')
    labels.nth(10).wait_for()  # the fields are drawn as placeholders first
    assert labels.count() == 11
    for text, height, line in labels.evaluate_all(
            "ps => ps.map(p => [p.innerText, p.offsetHeight,"
            " parseFloat(getComputedStyle(p).lineHeight)])"):
        assert height < 1.5 * line, f"label {text!r} breaks over lines"
    auto = app.tab.locator(f"{css('chain.0.in_channels')} input")
    assert auto.get_attribute("placeholder") == "auto"
    assert auto.evaluate("e => e.scrollWidth <= e.clientWidth")
    app.tab.set_viewport_size({"width": 1600, "height": 1300})

    # 5: three fields typed in turn, two invalid: both errors at once, C applied at once.
    for key, value in (("chain.input.h", 100000), ("chain.input.w", 100000),
                       ("chain.input.c", 5)):
        app.type(key, value)
    for dim in "HW":
        app.tab.get_by_text(re.compile(rf"input {dim} = 100000: .* the chain still uses 64")
                            ).wait_for()
    assert app.url_state()["chain"]["input"]["shape"] == [1, 5, 64, 64]
    app.tab.locator("h1").click()  # no field has the focus (its ring is red too)
    assert [border(app, f"chain.input.{d}") for d in "hwc"][:2] == [RED, RED]
    assert border(app, "chain.input.c") != RED
    save_screenshot(app, tmp_path, "field-errors.png")
    app.type("chain.input.h", 16)
    app.type("chain.input.w", 16)
    assert not app.alerts("Error")
    assert app.url_state()["chain"]["input"]["shape"] == [1, 5, 16, 16]

    # 4: a refused import: its error under the Import button, the file gone from the uploader.
    before = app.url_state()
    upload(app, "broken.json", '{"chain": 1}')
    app.click("io.import")
    in_sidebar(app, "Import refused").wait_for()
    assert app.tab.locator('[data-testid="stFileUploaderFile"]').count() == 0
    assert app.url_state() == before

    # 3: an accepted import replaces the session as one entry: Undo brings it all back.
    imported = Session.new(SMALL, TILE)
    upload(app, "tiled.json", imported.to_json())
    app.replacing(lambda: app.click("io.import"))
    in_sidebar(app, "Imported tiled.json: 3 step(s). Undo brings back").wait_for()
    assert app.url_state() == expected(imported)
    app.tab.get_by_text("⟲ imported tiled.json").wait_for()
    app.replacing(lambda: app.click("hist.undo"))
    assert app.url_state() == before
    app.replacing(lambda: app.click("hist.redo"))
    assert app.url_state() == expected(imported)

    # 10: a long history reads as stages, the one at the cursor open.
    load_preset_in_page(app, "resnet_conv_relu_conv")
    stages = app.tab.locator('[data-testid="stExpander"] summary').filter(
        has_text=re.compile(r"conv\d · (register tiling|weights and layout) \(\d+ steps\)"))
    assert stages.count() == 4, stages.all_inner_texts()
    assert app.tab.get_by_text("⟲ preset resnet_conv_relu_conv").count() == 1
    history = app.tab.locator('[data-testid="stExpander"]').filter(
        has_text="conv1 · weights and layout").first
    assert not history.locator(css("hist.goto.3")).is_visible()  # collapsed
    save_screenshot(app, tmp_path, "history-stages.png")


#: How long the comparison's first row may take (it waits for the measurement slot).
FIRST_ROW_MS = 90_000


def test_the_fusion_explorer_keeps_its_values_and_shows_progress_by_the_button(
        page: App, server: Server, tmp_path: Path):
    app = page
    s = Session.new(TINY)
    app.open(f"{server.url}/?state={encode_state(s.chain, s.steps, s.cursor)}")

    def tab(name: str) -> None:
        n = app.runs()
        app.tab.get_by_role("tab", name=name).click()
        app.settle(n)

    tab("Fusion explorer")
    for key, value in (("fusion.search.budget", "15"), ("fusion.tune.trials", "48")):
        for _ in range(3):  # a value typed while the explorer's first jobs redraw it is lost
            app.type(key, value)
            if app.value(key) == value:
                break
    assert (app.value("fusion.search.budget"), app.value("fusion.tune.trials")) == ("15", "48")
    tab("Playground")
    tab("Fusion explorer")
    assert (app.value("fusion.search.budget"), app.value("fusion.tune.trials")) == ("15", "48")

    # 1: the comparison's progress and Cancel right under its button; a first table (cut
    # short after its first row: the machine-wide measurement slot may be busy), then while
    # the next one is measured, that table stays.
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    table = app.tab.locator(f'{css("fusion.compare.box")} [data-testid="stDataFrame"]')
    progress = app.tab.locator('[data-testid="stProgress"]').filter(has_text="compare:")
    button = app.tab.locator(css("fusion.compare.run"))
    cancel = app.tab.locator(f'{css("fusion.cancel.compare")} button')
    app.click("fusion.compare.run")
    progress.wait_for()
    gap = progress.bounding_box()["y"] - button.bounding_box()["y"]
    assert 0 < gap < 150, f"the progress is {gap:.0f} px below its button"
    assert abs(cancel.bounding_box()["y"] - progress.bounding_box()["y"]) < 60
    # A row measured, or the whole table: the progress is redrawn once a second and the tiny
    # chain's rows can land between two redraws (seen: straight to "3/3"), so "1/3" may never
    # show; waiting for it once took 5 minutes in a full run, the comparison long done.
    try:
        progress.filter(has_text=re.compile(r"compare: [1-9]\d*/\d")).or_(table).first.wait_for(
            timeout=FIRST_ROW_MS)
    except PlaywrightTimeout:
        # No row within the time (the measurement slot is machine-wide: on a shared machine
        # other runs' timings go first). Cancel must still end it, by the button.
        stop(cancel)
        progress.wait_for(state="detached")
        pytest.xfail("the comparison's first row did not arrive within "
                     f"{FIRST_ROW_MS // 1000} s: the kept table was not checked")
    stop(cancel)
    table.wait_for()
    app.click("fusion.compare.run")
    progress.wait_for()
    assert table.is_visible()
    app.tab.get_by_text("The table measured before").wait_for()
    save_screenshot(app, tmp_path, "comparison-running.png")
    stop(cancel)
    progress.wait_for(state="detached")


def stop(cancel) -> None:
    """Press the comparison's Cancel if it is still there: the job may end first."""
    try:
        cancel.click(timeout=5_000)
    except PlaywrightTimeout:
        assert not cancel.is_visible()


@pytest.mark.slow
def test_a_first_visit_and_a_short_link_are_usable_fast(web_browser, tmp_path: Path):
    """A server just started: the title shows before the library is loaded (with a spinner
    in the "1 · Chain" box while it loads); then a short link of a 46-step searched session in
    a fresh browser. Times are printed with the load average (the 3 s target is for an idle
    2-core machine: a shared one gives no time to assert)."""
    times = {}
    for server in serve(tmp_path / "server.log"):
        for name, query in (("first visit", ""), ("short link", "link")):
            context = web_browser.new_context(viewport={"width": 1600, "height": 1300})
            tab = context.new_page()
            tab.add_init_script(COUNT_RUNS)
            tab.set_default_timeout(MEASURE_WAIT_MS)
            url = server.url
            if query:
                from playground.store import get_store

                raw = json.loads(SEARCHED.read_text())  # checked by the page as it restores it
                steps = tuple(Step.from_dict(s) for s in raw["steps"])
                searched = Session(normalize_chain(raw["chain"]), steps, len(steps))
                url += "/?s=" + get_store().share(searched, "cpu")
            start = time.monotonic()
            tab.goto(url)
            tab.locator("h1").wait_for()
            title = time.monotonic() - start
            # Never an empty page under the title: the "1 · Chain" box is there at once,
            # with its spinner while the library loads, or with the editor.
            tab.locator('[data-testid="stExpander"]').filter(has_text="1 · Chain").wait_for(
                timeout=5_000)
            tab.locator(f"{css('chain.input.h')} input").wait_for()
            tab.locator(f"{css('measure.run')} button").wait_for()
            times[name] = (round(title, 1), round(time.monotonic() - start, 1))
            context.close()
    print(f"load times (title, editor and Validate) in s: {times}; load {os.getloadavg()}")
    assert all(title <= usable for title, usable in times.values())


#: The 46 steps the search writes for the issue's chain (1x32x64x64, conv 64 3x3, relu, conv
#: 64 3x3, relu; fused at 16-row tiles), as a JSON session.
SEARCHED = paths.DATA / "searched_session.json"


#: Its own chain, so that the chart (every stored run of the chain) holds only this test's runs.
CHART_CHAIN = {"input": {"shape": [1, 3, 18, 18]},
               "layers": [{"op": "conv2d", "channels": 6, "kernel": 3, "padding": 1},
                          {"op": "relu"}]}
CHART_STEPS = (Step("split", {"block": "conv1", "loop": "h", "factors": [None, 2]}),
               Step("split", {"block": "conv1", "loop": "w", "factors": [None, 2]}))

#: Each point label of the run-time chart and each marker: its text and its box on the screen.
CHART_BOXES = """chart => {
  const box = e => { const r = e.getBoundingClientRect();
                     return [r.left, r.top, r.right, r.bottom]; };
  const svg = chart.querySelector('svg.main-svg');
  return {svg: box(svg),
          labels: [...chart.querySelectorAll('g.annotation text')]
                    .map(t => [t.textContent, box(t)]),
          markers: [...chart.querySelectorAll('g.scatterlayer path.point')].map(box)};
}"""


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_run_time_chart_labels_are_whole_apart_from_their_points_and_distinct(
        page: App, server: Server, tmp_path: Path):
    """9: three measurements (unscheduled, then after each of two splits whose labels differ
    only in the loop): each point's label is inside the chart, clear of every marker, and no
    two labels read the same."""
    app = page
    s = Session(normalize_chain(CHART_CHAIN), CHART_STEPS, 0)
    app.open(f"{server.url}/?state={encode_state(s.chain, s.steps, s.cursor)}")
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    chart = app.tab.locator(f"{css('measure.chart')}")
    for k in range(3):
        if k:
            app.replacing(lambda: app.click("hist.redo"))
        app.click("measure.run")
        chart.locator("g.annotation text").nth(k).wait_for()
    seen = chart.evaluate(CHART_BOXES)
    # distinct without their "n: " numbers: the two splits differ in their loop only
    texts = [re.sub(r"^\d+: ", "", t) for t, _ in seen["labels"]]
    assert len(texts) == 3 and len(set(texts)) == 3, texts
    assert len(seen["markers"]) == 3, seen
    left, top, right, bottom = seen["svg"]
    for text, (x0, y0, x1, y1) in seen["labels"]:
        assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, (text, seen["svg"])
        assert not any(_overlap([x0, y0, x1, y1], m) for m in seen["markers"]), text
    chart.scroll_into_view_if_needed()
    save_screenshot(app, tmp_path, "run-time-chart.png")
