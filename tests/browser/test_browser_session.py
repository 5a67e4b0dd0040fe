"""Nothing a user built is lost, no user text becomes a link, and an idle tab costs nothing:
issue 11 (points 4 and 5) in a real browser, on the one server of the run (see ``browser.py``).

Only a browser shows these: it keeps every widget's last value and sends it back with the next
click, so an editor that still showed the old chain after a preset, an import, a link or a
history jump would save that old chain on the next click (Validate), undoing the steps. Each
check here replaces the session one way, presses Validate, and reads the address bar (which
the page keeps equal to its session): the same chain, the same steps, the same cursor.
"""

from __future__ import annotations

import json
import re
import time

import psutil
import pytest
from browser import MEASURE_WAIT_MS, WAIT_MS, App, Server, browser_page, css

from playground.io.export import export_script
from playground.io.presets import load_preset
from playground.io.url_state import encode_state
from playground.schedule.session import Session
from playground.schedule.steps import Step

pytestmark = pytest.mark.browser

SMALL = {"input": {"shape": [1, 8, 16, 16]},
         "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                    {"op": "relu"}, {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}]}
TILE = [Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]}),
        Step("reorder", {"block": "conv2", "loops": ["n", "h_0", "k"]}),
        Step("compute_at", {"block": "conv2_pad", "target_block": "conv2",
                            "target_loop": "h_0"})]
CRAFTED = "[click here to fix](http://example.invalid/x)"
IDLE_S = 10  # 2% of a core over 10 s is 0.2 CPU-s: a watcher or a polling loop shows
IDLE_CPU_SHARE = 0.02


def expected(session: Session) -> dict:
    """What the address bar holds for ``session``."""
    return {"chain": session.chain, "steps": [s.to_dict() for s in session.steps],
            "cursor": session.cursor}


def preset_session(name: str) -> Session:
    chain, steps, meta = load_preset(name)
    session = Session.new(chain, steps)
    return session.goto(meta["cursor"]) if isinstance(meta.get("cursor"), int) else session


def load_preset_in_page(app: App, name: str) -> None:
    """Choose the preset by the name the README uses (shown first in the picker), load it."""
    n = app.runs()
    box = app.tab.locator(f"{css('preset.name')} input")
    box.click()
    box.fill(name)
    app.tab.get_by_role("option", name=re.compile(rf"^{re.escape(name)} — ")).click()
    app.settle(n)
    app.replacing(lambda: app.click("preset.load"))


def validate(app: App) -> None:
    """Press Validate (without timing) and wait for the verdict: it is correct."""
    timing = app.tab.locator(f"{css('measure.timing')} input")
    if timing.is_checked():
        n = app.runs()
        app.tab.locator(f"{css('measure.timing')} label").click()
        app.settle(n)
    app.tab.set_default_timeout(MEASURE_WAIT_MS)  # a build may wait for the worker
    try:
        app.click("measure.run")
        correct = app.tab.locator('[data-testid="stMetric"]:has-text("Correct") '
                                  '[data-testid="stMetricValue"]')
        assert correct.inner_text().strip() == "yes", app.alerts()
    finally:
        app.tab.set_default_timeout(WAIT_MS)


def assert_kept(app: App, want: dict) -> None:
    """The page shows ``want``: in the address bar, in the editor, with no step undone."""
    assert app.url_state() == want
    shape = want["chain"]["input"]["shape"]
    assert [app.value(f"chain.input.{d}") for d in "nchw"] == [str(v) for v in shape]
    assert not [w for w in app.alerts("Warning") if "undone" in w], app.alerts("Warning")


def check_validate_keeps(app: App, want: dict) -> None:
    assert_kept(app, want)
    validate(app)
    assert_kept(app, want)


# ----------------------------------------------------------------------------- point 4

def test_presets_and_history_then_validate_keep_the_session(page: App):
    """Loading presets one after another (resnet after depthwise: the issue's silently mixed
    chain), then undo, redo and go to a step, each followed by Validate."""
    app = page
    wants = []
    for name in ("depthwise_pointwise_fused", "resnet_conv_relu_conv"):
        load_preset_in_page(app, name)
        wants.append(expected(preset_session(name)))
        check_validate_keeps(app, wants[-1])
    # A preset is one history entry (issue 22, point 3): Undo brings back the one before.
    app.tab.get_by_text("⟲ preset resnet_conv_relu_conv").wait_for()
    app.replacing(lambda: app.click("hist.undo"))
    check_validate_keeps(app, wants[0])
    app.replacing(lambda: app.click("hist.redo"))
    want = wants[1]
    check_validate_keeps(app, want)
    # The preset's 45 steps are grouped by stage, the last one open: open the first.
    app.tab.locator('[data-testid="stExpander"] summary').filter(
        has_text="1–9 · conv1 · weights and layout").click()  # drawn already: no rerun
    app.tab.locator(f"{css('hist.goto.3')} button").first.wait_for()
    app.replacing(lambda: app.click("hist.goto.3"))
    want["cursor"] = 3
    check_validate_keeps(app, want)


def test_import_reads_the_last_touched_source_and_validate_keeps_it(page: App):
    app = page
    uploaded = Session.new(SMALL, TILE[:1])
    pasted = Session.new({**SMALL, "input": {"shape": [1, 8, 24, 24]}}, TILE)
    upload = app.tab.locator(f"{css('io.upload')} input[type=file]")
    n = app.runs()
    upload.set_input_files(files=[{"name": "one.json", "mimeType": "application/json",
                                   "buffer": uploaded.to_json().encode()}])
    app.settle(n)
    app.tab.get_by_text("Import reads the uploaded file one.json.").wait_for()
    n = app.runs()
    box = app.tab.locator(f"{css('io.paste')} textarea")
    box.fill(export_script(pasted.chain, pasted.active, target="cpu", title="pasted"))
    box.press("Control+Enter")  # what leaving the box does: the text counts from now on
    app.settle(n)
    app.tab.get_by_text("Import reads the pasted text (touched last); the uploaded file "
                        "one.json is ignored.").wait_for()
    app.replacing(lambda: app.click("io.import"))
    check_validate_keeps(app, expected(pasted))
    # The upload touched again: now it wins.
    n = app.runs()
    upload.set_input_files(files=[{"name": "two.json", "mimeType": "application/json",
                                   "buffer": uploaded.to_json().encode()}])
    app.settle(n)
    app.tab.get_by_text("Import reads the uploaded file two.json (touched last)").wait_for()
    app.replacing(lambda: app.click("io.import"))
    check_validate_keeps(app, expected(uploaded))


def test_a_link_then_validate_keeps_the_session(page: App, server: Server):
    app = page
    app.type("chain.0.channels", 6)  # an edit in this tab first: the link replaces it all
    linked = Session.new(SMALL, TILE).undo()
    app.open(f"{server.url}/?state={encode_state(linked.chain, linked.steps, linked.cursor)}")
    check_validate_keeps(app, expected(linked))
    app.tab.get_by_text("Shareable link").click()
    link = app.tab.locator('[data-testid="stSidebar"] [data-testid="stExpander"] code')
    assert link.inner_text().startswith(f"{server.url}/?state="), link.inner_text()


# ----------------------------------------------------------------------------- point 5

def no_link_to(app: App, href: str) -> None:
    assert app.tab.locator(f'a[href^="{href}"]').count() == 0, app.alerts()


def test_user_text_never_becomes_a_link_or_markup(page: App, server: Server):
    app = page
    crafted = {"chain": {"input": {"shape": [1, 3, 8, 8]},
                         "layers": [{"op": "relu", "name": CRAFTED}]}, "steps": []}
    box = app.tab.locator(f"{css('io.paste')} textarea")
    for text, shows in ((json.dumps(crafted), CRAFTED), ('x = __import__("os")\n', "__import__")):
        n = app.runs()
        box.fill(text)
        box.press("Control+Enter")
        app.settle(n)
        app.click("io.import")
        (error,) = app.alerts("Error")
        assert shows in error.replace("\n", ""), error  # as typed: no link, no bold
        no_link_to(app, "http://example.invalid")
        assert app.tab.locator('[data-testid="stAlertContentError"] strong').count() == 0
    # A crafted shared link: its refusal quotes the name, as text.
    app.open(f"{server.url}/?state={encode_state(crafted['chain'], [])}")
    assert any(CRAFTED in e.replace("\n", "") for e in app.alerts("Error")), app.alerts()
    no_link_to(app, "http://example.invalid")


def tree_cpu_s(root: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) used so far by ``root`` and each of its descendants."""
    used = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        used[proc.pid] = times.user + times.system
    return used


def cpu_over(root: psutil.Process, seconds: float) -> float:
    """CPU seconds the process tree used in the next ``seconds`` (a process that ends in
    between loses its share, so this can only under-count a worker that was killed)."""
    before = tree_cpu_s(root)
    time.sleep(seconds)
    after = tree_cpu_s(root)
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


@pytest.mark.slow
def test_the_server_with_an_idle_tab_is_quiet(server: Server, web_browser):
    """One tab open and left alone: the server (and its workers) use < 2% of a core."""
    root = psutil.Process(server.pid)
    with browser_page(web_browser, server.url):
        deadline = time.monotonic() + 60
        # The first page starts the worker (importing TVM): let it finish before measuring.
        while cpu_over(root, 2.0) > 0.05 and time.monotonic() < deadline:
            pass
        used = cpu_over(root, IDLE_S)
    assert used < IDLE_CPU_SHARE * IDLE_S, (
        f"the idle server used {used:.2f} CPU-s in {IDLE_S} s; the file watcher is "
        f"probably on:\n{server.log.read_text()[-2000:]}")
