"""The README's walk-through in a real browser: ``./run.sh`` serves the page, headless Chromium
drives it (helpers in ``browser.py``, the server and tab fixtures in conftest).

The test builds the seed's conv -> relu -> conv chain in the chain editor, fuses conv1 into
conv2 with split, reorder and compute_at picked from the schedule form (compute_at's target
block and loop are left at their defaults, as the README says), checks that the TVMScript
panel now shows conv1 inside conv2's tile loop, validates, and saves a screenshot (to pytest's
tmp dir, and to ``$PLAYGROUND_SCREENSHOT_DIR`` when set).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest
from browser import MEASURE_WAIT_MS, WAIT_MS, App, css, save_screenshot

pytestmark = pytest.mark.browser


def loop_body(script: str, loop: str) -> str:
    """The lines nested under the first ``for`` header that binds ``loop``."""
    lines = script.splitlines()
    head = next(i for i, line in enumerate(lines)
                if re.match(rf"\s*for .*\b{loop}\b.* in ", line))
    indent = len(lines[head]) - len(lines[head].lstrip())
    body = []
    for line in lines[head + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return "\n".join(body)


def build_conv_relu_conv(app: App) -> None:
    """1x3x32x32 -> conv 8ch 3x3 pad 1 -> relu -> conv 8ch 3x3 pad 1, edited in the page."""
    for key, value in (("chain.input.h", 32), ("chain.input.w", 32), ("chain.0.channels", 8),
                       ("chain.0.kernel_h", 3), ("chain.0.kernel_w", 3),
                       ("chain.0.padding_h", 1), ("chain.0.padding_w", 1)):
        app.type(key, value)
    app.click("layer.add")  # the new-layer picker starts on conv2d: same channels, 3x3, pad 1
    app.tab.wait_for_selector(f"{css('chain.2.channels')} input")
    app.tab.get_by_text("1×8×32×32", exact=False).last.wait_for()


def fuse_conv1_into_conv2(app: App) -> None:
    """Tile conv2's rows and columns by 8 and compute conv1 (pads and relu too) per tile."""
    app.apply("split", block="conv2", **{"loop.conv2": "h (32)"})
    app.apply("split", block="conv2", **{"loop.conv2": "w (32)"})
    app.apply("reorder", block="conv2", **{"loops.conv2": ["h_0 (4)", "w_0 (4)", "k (8)"]})
    for block in ("conv2_pad", "relu1", "conv1", "conv1_pad"):
        app.pick("sched.primitive", "compute_at")
        app.pick("sched.compute_at.block", block)
        # The defaults are the walk-through's: the tiled consumer and its tile loop.
        assert app.value(f"sched.compute_at.target_block.{block}") == "conv2", block
        assert app.value("sched.compute_at.target_loop.conv2") == "w_0 (4)", block
        app.apply("compute_at")


def test_build_fuse_two_convs_validate_and_screenshot(page: App, tmp_path: Path):
    app = page
    assert 'T.sblock("conv1")' in app.script()  # the first screen already shows the IR

    build_conv_relu_conv(app)
    before = app.script()
    assert 'T.sblock("conv2")' in before
    assert "w_0" not in before

    fuse_conv1_into_conv2(app)
    after = app.script()
    assert after != before
    tile = loop_body(after, "w_0")  # conv2's column-tile loop now computes conv1's halo tile
    for block in ("conv1_pad", "conv1", "relu1", "conv2_pad", "conv2"):
        assert f'T.sblock("{block}")' in tile, (block, after)

    # The measurement slot is machine-wide: other users' timings may be queued ahead.
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    app.click("measure.run")
    correct = app.tab.locator('[data-testid="stMetric"]:has-text("Correct") '
                              '[data-testid="stMetricValue"]')
    correct.wait_for()
    assert correct.inner_text().strip() == "yes", app.alerts()
    median = app.tab.locator('[data-testid="stMetric"]:has-text("Median time") '
                             '[data-testid="stMetricValue"]').inner_text()
    assert re.fullmatch(r"[\d.]+ (ms|µs)", median), median
    # every metric of the result row shows its whole value in its column (a time such as
    # "0.007219 ms" used to be cut to "0.007219 …")
    cut = app.tab.evaluate("""() => [...document.querySelectorAll(
            '[data-testid="stMetricValue"], [data-testid="stMetricValue"] *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)""")
    assert cut == [], cut

    shot = save_screenshot(app, tmp_path, "fused-two-convs.png")
    assert shot.stat().st_size > 10_000


def test_a_run_is_kept_across_a_reload_and_a_short_link_restores_the_session(
        page: App, server, tmp_path: Path):
    app = page
    app.apply("parallel", block="conv1", **{"loop.conv1": "k (10)"})
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    app.click("measure.run")
    correct = app.tab.locator('[data-testid="stMetric"]:has-text("Correct") '
                              '[data-testid="stMetricValue"]')
    correct.wait_for()
    assert correct.inner_text().strip() == "yes"
    app.tab.set_default_timeout(WAIT_MS)

    app.tab.reload()  # a new session: only the store remembers the run
    app.loaded()
    app.tab.locator(css("measure.chart")).wait_for()
    n = app.runs()
    app.tab.get_by_role("tab", name="Experiments").click()
    app.settle(n)
    picked = app.tab.locator(f"{css('exp.pick')} input").input_value()
    assert "1: parallel conv1.k" in picked and " · ok · " in picked, picked

    note = app.tab.locator('[class*="st-key-exp-note-"] textarea').first
    app.write(note, "[click me](http://evil.example) <b>bold</b>")
    app.click("exp.note.save")
    assert app.tab.locator('a[href*="evil.example"]').count() == 0  # shown as text only
    assert "evil.example" in note.input_value()
    save_screenshot(app, tmp_path, "experiments.png")

    app.tab.get_by_text("Shareable link").click()
    app.click("io.share")
    link = app.tab.locator('[data-testid="stSidebar"] [data-testid="stCode"] code').filter(
        has_text="?s=").inner_text().strip()
    assert re.fullmatch(re.escape(server.url) + r"/?\?s=[A-Za-z0-9_-]{22,}", link), link
    app.tab.goto(link)
    app.loaded()
    assert "T.parallel" in app.script()  # the shared session, restored from the store
    query = urllib.parse.parse_qs(urllib.parse.urlparse(app.tab.url).query)
    assert "state" in query and "s" not in query  # from here the URL follows the session

    app.tab.goto(f"{server.url}/?s=no-such-link-0000000000000")
    app.loaded()
    app.tab.get_by_text("could not be restored").wait_for()
    assert "T.parallel" not in app.script()  # the default chain instead


def assert_search_and_verdict_agree(app: App) -> None:
    """One story on one screen: the verdict re-timed the search's schedules, so the search's
    "Best" is the schedule the verdict calls faster (fused for "fuse", unfused for "don't
    fuse"), at the very time the verdict shows for it, and the verdict says its ratio."""
    text = app.tab.locator('[data-testid="stMarkdownContainer"]')
    verdict = text.filter(has_text=re.compile(r"^Verdict: ")).first.inner_text()
    assert re.search(r"unfused / fused = [\d.]+x, 95% interval [\d.]+-[\d.]+x", verdict), verdict
    app.tab.get_by_text("re-timed by the verdict below", exact=False).wait_for()
    best = text.filter(has_text=re.compile(r"^Best: ")).first.inner_text()
    best_ms = re.search(r"([\d.]+) ms \(", best).group(1)
    lines = [[x.strip() for x in m.splitlines() if x.strip()] for m in
             app.tab.locator('[data-testid="stMetric"]').all_inner_texts()]
    metrics = {m[0]: m[-1] for m in lines if m and m[0].startswith("best ")}
    assert f"{best_ms} ms" in (metrics["best fused"], metrics["best unfused"]), (best, metrics)
    if verdict.startswith("Verdict: fuse"):
        assert metrics["best fused"] == f"{best_ms} ms", (best, metrics)
    elif verdict.startswith("Verdict: don't fuse"):
        assert metrics["best unfused"] == f"{best_ms} ms", (best, metrics)


def test_search_and_verdict_in_the_browser(page: App, tmp_path: Path):
    """The template search and the fuse-or-not verdict, run from the Fusion explorer in a
    real browser: progress while they run, the result table, then the best schedule loaded
    into the session as steps (the Playground's history shows them)."""
    app = page
    build_conv_relu_conv(app)
    n = app.runs()
    app.tab.get_by_role("tab", name="Fusion explorer").click()
    app.settle(n)
    app.type("fusion.search.budget", 5)  # the least; the first (fused) schedules run anyway
    app.tab.set_default_timeout(MEASURE_WAIT_MS)
    app.click("fusion.search.run")
    app.tab.get_by_text(re.compile(r"schedule\(s\) built, validated and timed")).wait_for()
    app.tab.locator(css("fusion.search.load")).wait_for()
    app.click("fusion.verdict.run")
    app.tab.get_by_text(re.compile(r"Verdict: (fuse|don't fuse|no difference)")).wait_for()
    # Its one-sentence reason sits under it: what fusing conv1 into conv2 repeats and buys
    # (the search always measures a fused schedule when the chain has a fusion option).
    reason = app.tab.get_by_text(re.compile(r"repeats \d+% of conv1's work")).inner_text(
        timeout=10_000)
    assert "conv2" in reason
    assert_search_and_verdict_agree(app)
    save_screenshot(app, tmp_path, "search-and-verdict.png")
    app.click("fusion.search.load")
    app.tab.set_default_timeout(WAIT_MS)
    n = app.runs()
    app.tab.get_by_role("tab", name="Playground").click()
    app.settle(n)
    steps = app.tab.locator('[class*="st-key-hist-goto-"]')
    assert steps.count() > 5  # the template's steps, in the history like any others
    assert "conv1_local" in app.script()  # its register tile's write-back block
