"""Retake the README's screenshots: ./run.sh on a free port, headless Chromium, the walk-through.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [OUT_DIR]   (default docs/)

1. the seed's conv -> relu (light: 1x3x64x64, 16x16 kernel), measured, then relu fused into the
   conv with reverse_compute_at and measured again, the loop outline open;
2. conv -> relu -> conv (1x16x56x56, 3x3, 32 channels), measured, then conv1 fused into 8x8
   tiles of conv2 with compute_at and measured again;
3. the Fusion explorer on that schedule: the analysis, the halo of one tile, a sweep of the
   tile size;
4. the Experiments tab (``--only experiments`` takes this one alone): a preset recorded from
   the command line, three measured versions of the seed's conv -> relu, the newest starred
   and annotated, compared with the unscheduled one.
The server records into a fresh experiment store (a temporary ``$PLAYGROUND_DATA``).
Uses the real-browser tests' helpers (tests/support/browser.py). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

import browser as tb  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def shot(app: tb.App, path: Path) -> None:
    height = app.tab.evaluate(
        "document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight") + 40
    app.tab.set_viewport_size({"width": 1500, "height": min(height, 6000)})
    app.tab.wait_for_timeout(500)  # let the layout follow the resize (screenshots only)
    app.tab.screenshot(path=str(path))
    app.tab.set_viewport_size({"width": 1500, "height": 1400})
    print("wrote", path)


def measure(app: tb.App) -> None:
    n = app.tab.locator('[data-testid="stMetric"]:has-text("Median time")').count()
    app.click("measure.run")
    app.tab.locator('[data-testid="stMetric"]:has-text("Correct")').first.wait_for(
        timeout=tb.MEASURE_WAIT_MS)
    assert n >= 0


def new_app(browser, url: str) -> tb.App:
    tab = browser.new_page(viewport={"width": 1500, "height": 1400})
    tab.set_default_timeout(tb.WAIT_MS)
    tab.add_init_script(tb.COUNT_RUNS)
    tab.goto(url)
    app = tb.App(tab)
    app.loaded()
    return app


def experiments_view(browser, url: str, out: Path) -> None:
    """4: the Experiments tab after a few recorded runs."""
    subprocess.run([sys.executable, "-m", "playground", "run", "resnet_conv_relu_conv",
                    "--record", "--repeat", "5"], cwd=ROOT, check=True, capture_output=True)
    app = new_app(browser, url)
    measure(app)
    app.apply("reverse_compute_at", block="relu1", target_block="conv1",
              **{"target_loop.conv1": "w (49)"})
    measure(app)
    app.apply("parallel", block="conv1", **{"loop.conv1": "k (10)"})
    measure(app)
    n = app.runs()
    app.tab.get_by_role("tab", name="Experiments").click()
    app.settle(n)
    app.click("exp.star")
    app.write(app.tab.locator('[class*="st-key-exp-note-"] textarea').first,
              "relu fused into conv1's w loop, then conv1's output channels in parallel")
    app.click("exp.note.save")
    newest = app.tab.locator(f"{tb.css('exp.pick')} input").input_value()
    newest = newest.replace("★ ", "").split(" · ")[0]  # "#4": the parallel one
    first = f"#{int(newest[1:]) - 2}"  # the unscheduled one
    box = app.tab.locator(f"{tb.css('exp.compare.a')} input")
    n = app.runs()
    box.click()
    box.fill(first)
    app.tab.get_by_role("option").filter(has_text=f"{first} · ").first.click()
    app.settle(n)
    shot(app, out / "experiments.png")


def main(out: Path, only: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    port = tb.free_port()
    log = Path("/tmp/screenshots-server.log")
    env = {**os.environ, "PLAYGROUND_PORT": str(port)}
    # A fresh experiment store: the pictures show this run's experiments only.
    env["PLAYGROUND_DATA"] = os.environ["PLAYGROUND_DATA"] = tempfile.mkdtemp(
        prefix="screenshots-data-")
    server = subprocess.Popen(["./run.sh"], cwd=ROOT, start_new_session=True,
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        tb.wait_healthy(url, server, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS)
            if only == "experiments":
                experiments_view(browser, url, out)
                return
            # 1: conv + relu
            app = new_app(browser, url)
            tab = app.tab
            measure(app)
            app.apply("reverse_compute_at", block="relu1",
                      **{"target_block.relu1": "conv1", "target_loop.conv1": "w (49)"})
            measure(app)
            tab.get_by_role("tab", name="Loop outline").click()
            shot(app, out / "walkthrough-1-conv-relu.png")
            # 2: two convolutions, in a fresh tab (a new session)
            app = new_app(browser, url)
            tab = app.tab
            for key, value in (("chain.input.c", 16), ("chain.input.h", 56),
                               ("chain.input.w", 56), ("chain.0.channels", 32),
                               ("chain.0.kernel_h", 3), ("chain.0.kernel_w", 3),
                               ("chain.0.padding_h", 1), ("chain.0.padding_w", 1)):
                app.type(key, value)
            app.click("layer.add")
            tab.wait_for_selector(f"{tb.css('chain.2.channels')} input")
            measure(app)
            app.apply("split", block="conv2", **{"loop.conv2": "h (56)"})
            app.apply("split", block="conv2", **{"loop.conv2": "w (56)"})
            app.apply("reorder", block="conv2",
                      **{"loops.conv2": ["h_0 (7)", "w_0 (7)", "k (32)"]})
            for block in ("conv2_pad", "relu1", "conv1", "conv1_pad"):  # target: the default
                app.apply("compute_at", block=block, **{f"target_block.{block}": "conv2",
                                                        "target_loop.conv2": "w_0 (7)"})
            app.apply("parallel", block="conv2", **{"loop.conv2": "h_0 (7)"})
            measure(app)
            tab.get_by_role("tab", name="Step diff").click()
            shot(app, out / "walkthrough-2-fused.png")
            # 3: the Fusion explorer on it
            n = app.runs()
            tab.get_by_role("tab", name="Fusion explorer").click()
            app.settle(n)
            tab.locator('[data-testid="stMetric"]:has-text("redundant work")').wait_for()
            app.pick("fusion.sweep.param", "split conv2.h factor[1]")
            app.click("fusion.sweep.run")
            tab.get_by_text("Fastest correct point").wait_for(timeout=tb.MEASURE_WAIT_MS)
            tab.locator('[data-testid="stProgress"]').first.wait_for(state="detached")
            app.settle(app.runs() - 1)
            shot(app, out / "walkthrough-3-fusion-explorer.png")
            experiments_view(browser, url, out)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", choices=("experiments",), default="")
    args = parser.parse_args()
    main(args.out, args.only)
