"""The Model tab in a real browser (``./run.sh`` serving the page, headless Chromium; helpers
in ``browser.py``): pick an example, see its chain table and drawing, open a chain in the
playground, and Undo back to the session before. Screenshots go to pytest's tmp dir (and to
``$PLAYGROUND_SCREENSHOT_DIR`` when set).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import App, css, save_screenshot

pytestmark = pytest.mark.browser


def test_open_an_example_then_a_chain_in_the_playground_and_undo(page: App, tmp_path: Path):
    app = page
    default = app.url_state()["chain"]
    n = app.runs()
    app.tab.get_by_role("tab", name="Model").click()
    app.settle(n)
    app.pick("model.example", "ResNet-18 (224×224)")
    app.click("model.example.open")
    from playground.model import cut_chains, load_model
    from playground.model.examples import example_bytes

    chains = cut_chains(load_model(example_bytes("resnet18")))
    app.tab.get_by_text(f"{len(chains)} distinct", exact=True).wait_for()
    drawing = app.tab.locator(f"{css('model.drawing')} .js-plotly-plot")
    drawing.wait_for()
    assert drawing.locator(".legendtext").filter(has_text="chain 2 ×2").count() == 1
    assert drawing.locator("path.point").count() >= 69  # every node of ResNet-18's data path
    cells = app.tab.locator('[data-testid="stDataFrame"] [role="gridcell"]')
    # The table is a canvas grid drawn after the drawing; its cells exist for screen readers
    # only (hidden), with long text cut to the column's width: wait for the first row.
    stem = cells.filter(has_text="[1, 3, 224, 224] conv7x7/2 64 + bn, relu -> max")
    stem.first.wait_for(state="attached")
    assert stem.count() == 1
    assert cells.filter(has_text="conv2, bn2, relu2, conv3, bn3, add1, relu3").count() == 1
    last = ", ".join(chains[-1].nodes)  # the table is tall enough to show every chain
    assert cells.filter(has_text=last).count() == 1, last
    save_screenshot(app, tmp_path, "model-tab.png")

    app.pick("model.open.pick", "2 · ×2 · [1, 64, 56, 56] conv3x3/1 64 + bn, relu -> "
                                "conv3x3/1 64 + bn, add, relu")
    app.replacing(lambda: app.click("model.open"))
    opened = app.url_state()["chain"]
    assert opened["input"]["shape"] == [1, 64, 56, 56]
    assert [layer["op"] for layer in opened["layers"]][:3] == ["conv2d", "batch_norm", "relu"]
    app.tab.locator('[data-testid="stAlertContentSuccess"]').filter(
        has_text="Opened chain 2 of resnet18").wait_for()
    app.tab.locator(css("hist.undo")).wait_for()  # the Playground is shown
    save_screenshot(app, tmp_path, "model-opened-in-playground.png")

    app.replacing(lambda: app.click("hist.undo"))
    assert app.url_state()["chain"] == default
