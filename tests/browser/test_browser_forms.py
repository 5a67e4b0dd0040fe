"""Issue 22, points 7 and 8 in a real browser: the schedule form keeps the block picked when
the primitive changes and never opens compute_at on a block moved into itself; the halo
picture opens on the fused block at its tile loop (helpers in ``browser.py``)."""

from __future__ import annotations

import re

import pytest
from browser import MEASURE_WAIT_MS, App, Server, css

from playground.io.url_state import encode_state
from playground.schedule.session import Session
from playground.schedule.steps import Step

pytestmark = pytest.mark.browser

CHAIN = {"input": {"shape": [1, 8, 16, 16]},
         "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                    {"op": "relu"}, {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                    {"op": "relu"}]}
TILED = [Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]}),
         Step("split", {"block": "conv2", "loop": "w", "factors": [None, 8]}),
         Step("reorder", {"block": "conv2", "loops": ["n", "h_0", "w_0", "k", "h_1", "w_1"]})]
FUSED = TILED + [Step("compute_at", {"block": b, "target_block": "conv2", "target_loop": "w_0"})
                 for b in ("conv2_pad", "relu1", "conv1", "conv1_pad")]


def open_session(app: App, server: Server, steps: list[Step]) -> None:
    s = Session.new(CHAIN, steps)
    app.open(f"{server.url}/?state={encode_state(s.chain, s.steps, s.cursor)}")


def test_the_block_stays_when_the_primitive_changes(page: App, server: Server):
    app = page
    open_session(app, server, TILED)
    app.pick("sched.primitive", "split")
    app.pick("sched.split.block", "relu1")
    for primitive in ("parallel", "compute_at"):
        app.pick("sched.primitive", primitive)
        assert app.value(f"sched.{primitive}.block") == "relu1", primitive
    assert app.value("sched.compute_at.target_block.relu1") == "conv2"  # the tiled consumer
    app.pick("sched.compute_at.block", "relu2")  # the output block feeds nothing
    assert app.value("sched.compute_at.target_block.relu2") not in ("relu2", "")
    app.tab.get_by_text("relu2 feeds no other block").wait_for()


def test_the_halo_opens_on_the_fused_block_and_its_tile_loop(page: App, server: Server):
    app = page
    open_session(app, server, FUSED)
    n = app.runs()
    app.tab.get_by_role("tab", name="Fusion explorer").click()
    app.settle(n)
    block = app.tab.locator('[class*="st-key-fusion-halo-block-"] input').first
    loop = app.tab.locator('[class*="st-key-fusion-halo-loop-"] input').first
    assert (block.input_value(), loop.input_value()) == ("conv2", "w_0")
    app.tab.set_default_timeout(MEASURE_WAIT_MS)  # the regions come from the worker
    caption = app.tab.get_by_text(re.compile(r"One iteration of w_0 \(at h_0 = 1, w_0 = 1\)"))
    caption.wait_for()
    title = app.tab.locator(f"{css('fusion.halo.figure')} .gtitle").first.text_content()
    assert title.startswith("conv2, one iteration of w_0 (n = 0, h_0 = 1, w_0 = 1)"), title


def test_an_unroll_too_large_to_build_is_refused_beside_the_form(page: App, server: Server):
    """The preset fuzz's timeouts (an unroll around a large body took minutes to build): the
    page says why in one line and keeps the session as it was."""
    app = page
    open_session(app, server, TILED)
    steps = app.tab.locator('[class*="st-key-hist-goto-"]')
    before = steps.count()
    app.pick("sched.primitive", "unroll")
    app.pick("sched.unroll.block", "conv1")
    app.pick("sched.unroll.loop.conv1", "k (8)")
    n = app.runs()
    app.tab.locator(f"{css('sched.apply')} button").click()
    app.settle(n)
    app.tab.get_by_text(re.compile(r"unrolling conv1\.k would write out [\d,]+ loop "
                                   r"iterations")).first.wait_for()
    assert steps.count() == before


def test_winograd_from_the_form_rewrites_the_conv_and_validates(page: App, server: Server):
    """The winograd step through the schedule form: the history gains it, the TVMScript shows
    the conv's Winograd stages, a later step schedules them, Validate says correct; the same
    step after another one is refused in one line and the history keeps its steps."""
    app = page
    open_session(app, server, [])
    steps = app.tab.locator('[class*="st-key-hist-goto-"]')
    before = steps.count()
    app.pick("sched.primitive", "winograd")
    app.pick("sched.winograd.block", "conv2")
    n = app.runs()
    app.tab.locator(f"{css('sched.apply')} button").click()
    app.settle(n)
    app.tab.get_by_text("winograd conv2").first.wait_for()
    assert steps.count() == before + 1
    for block in ("conv2_U", "conv2_V", "conv2_M", "conv2_Y"):
        assert f'T.sblock("{block}")' in app.script(), block
    app.pick("sched.primitive", "parallel")
    app.pick("sched.parallel.block", "conv2_M")
    n = app.runs()
    app.tab.locator(f"{css('sched.apply')} button").click()
    app.settle(n)
    assert steps.count() == before + 2
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    app.click("measure.run")
    correct = app.tab.locator('[data-testid="stMetric"]:has-text("Correct") '
                              '[data-testid="stMetricValue"]')
    correct.wait_for()
    assert correct.inner_text().strip() == "yes", app.alerts()
    app.pick("sched.primitive", "winograd")
    app.pick("sched.winograd.block", "conv1")
    n = app.runs()
    app.tab.locator(f"{css('sched.apply')} button").click()
    app.settle(n)
    app.tab.get_by_text(re.compile(r"winograd rewrites the chain's program, so it must come "
                                   r"before every other step")).first.wait_for()
    assert steps.count() == before + 2
