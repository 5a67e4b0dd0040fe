"""One real-browser test: the README's run command serves the page, headless Chromium drives it.

The server is ``./run.sh`` on a free loopback port, in its own process group (killed at the end);
Debian's Chromium is driven by Playwright (never ``playwright install``: it downloads browsers).
The test builds the seed's conv -> relu -> conv chain in the chain editor, fuses conv1 into
conv2 with split, reorder and compute_at picked from the schedule form, checks that the
TVMScript panel now shows conv1 inside conv2's tile loop, validates, and saves a screenshot
(to pytest's tmp dir, and to ``$PLAYGROUND_SCREENSHOT_DIR`` when set).

Every wait is on the page: a widget by its key (``.st-key-<key with dots as dashes>``), the
app's ``data-test-script-state`` going back to ``notRunning``, or a text appearing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
START_TIMEOUT_S = 120
WAIT_MS = 60_000
MEASURE_WAIT_MS = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"./run.sh exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                if reply.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling the server's health endpoint, not waiting on the page
    pytest.fail(f"server not healthy within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The README's run command on a free loopback port; its process group is killed after."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing (./test.sh installs Debian's chromium)")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["./run.sh"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PLAYGROUND_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1600, "height": 1300})
            tab.set_default_timeout(WAIT_MS)
            tab.add_init_script(COUNT_RUNS)
            tab.goto(server)
            app = App(tab)
            app.loaded()
            yield app
        finally:
            browser.close()


def css(key: str) -> str:
    """The CSS selector of the widget with ``key=key``."""
    return ".st-key-" + key.replace(".", "-")


#: Counts script runs: the app's ``data-test-script-state`` turning to ``running``.
COUNT_RUNS = """
window.__runs = 0;
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.getAttribute(r.attributeName) === "running" && r.oldValue !== "running") {
      window.__runs += 1;
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""
SETTLED = """n => window.__runs > n
  && document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === "notRunning"
  && !document.querySelector('[data-stale="true"]')"""


class App:
    """The page, driven the way a person would: type, pick, click; then wait for the rerun."""

    def __init__(self, tab) -> None:
        self.tab = tab

    def runs(self) -> int:
        return self.tab.evaluate("window.__runs")

    def settle(self, runs_before: int) -> None:
        """Wait until a script run started after ``runs_before`` runs has finished."""
        self.tab.wait_for_function(SETTLED, arg=runs_before)

    def loaded(self) -> None:
        self.tab.wait_for_selector(css("measure.run"))
        self.settle(0)

    def type(self, key: str, value: int | str) -> None:
        box = self.tab.locator(f"{css(key)} input")
        if box.input_value() == str(value):
            return
        n = self.runs()
        box.fill(str(value))
        box.press("Enter")
        self.settle(n)

    def pick(self, key: str, option: str) -> None:
        """Choose ``option`` (its shown text, exactly) in the selectbox ``key``."""
        box = self.tab.locator(f"{css(key)} input")
        if box.input_value() == option:
            return
        n = self.runs()
        box.click()
        box.fill(option)  # filters the (virtualized) list, so the option is drawn
        self.tab.get_by_role("option", name=option, exact=True).click()
        self.settle(n)

    def pick_many(self, key: str, options: list[str]) -> None:
        """Choose ``options`` in order in the multiselect ``key``."""
        for option in options:
            n = self.runs()
            self.tab.locator(f"{css(key)} input").click()
            self.tab.get_by_role("option", name=option, exact=True).click()
            self.tab.keyboard.press("Escape")
            self.settle(n)

    def write(self, box, text: str) -> None:
        """Fill the text area ``box`` (a locator) and commit it with Ctrl+Enter."""
        n = self.runs()
        box.fill(text)
        box.press("Control+Enter")
        self.settle(n)

    def click(self, key: str) -> None:
        n = self.runs()
        self.tab.locator(f"{css(key)} button").first.click()  # a button with help has two
        self.settle(n)

    def apply(self, primitive: str, **picks: str | list[str]) -> None:
        """Pick the primitive and its arguments (key suffix -> shown option), press Apply."""
        if self.tab.locator(f"{css('sched.primitive')} input").input_value() != primitive:
            self.pick("sched.primitive", primitive)
        steps = self.tab.locator('[class*="st-key-hist-goto-"]')  # one per history entry
        before = steps.count()
        for suffix, value in picks.items():
            key = f"sched.{primitive}.{suffix}"
            if isinstance(value, list):
                self.pick_many(key, value)
            else:
                self.pick(key, value)
        n = self.runs()
        self.tab.locator(f"{css('sched.apply')} button").click()
        steps.nth(before).wait_for()  # Apply reruns the page once more with the new step
        self.settle(n)
        errors = self.tab.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, errors.all_inner_texts()
        assert steps.count() == before + 1, f"{primitive} {picks} added no step"

    def script(self) -> str:
        """The Scheduled TVMScript panel's text, without line numbers."""
        code = self.tab.locator(f'{css("inspect.tab")} [data-testid="stTabPanel"]'
                                ':not([data-st-inactive]) [data-testid="stCode"] code').first
        lines = code.inner_text().splitlines()
        return "\n".join(re.sub(r"^\d+", "", line, count=1) for line in lines)


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
        app.apply("compute_at", block=block, target_block="conv2",
                  **{"target_loop.conv2": "w_0 (4)"})


def save_screenshot(app: App, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    app.tab.screenshot(path=str(path), full_page=True)
    if os.environ.get("PLAYGROUND_SCREENSHOT_DIR"):
        target = Path(os.environ["PLAYGROUND_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


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
    assert correct.inner_text().strip() == "yes", app.tab.locator(
        '[data-testid="stAlert"]').all_inner_texts()
    median = app.tab.locator('[data-testid="stMetric"]:has-text("Median time") '
                             '[data-testid="stMetricValue"]').inner_text()
    assert median.endswith("ms") and not median.startswith("—"), median

    shot = save_screenshot(app, tmp_path, "fused-two-convs.png")
    assert shot.stat().st_size > 10_000


def test_a_run_is_kept_across_a_reload_and_a_short_link_restores_the_session(
        page: App, server: str, tmp_path: Path):
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
    assert re.fullmatch(re.escape(server) + r"/?\?s=[A-Za-z0-9_-]{22,}", link), link
    app.tab.goto(link)
    app.loaded()
    assert "T.parallel" in app.script()  # the shared session, restored from the store
    query = urllib.parse.parse_qs(urllib.parse.urlparse(app.tab.url).query)
    assert "state" in query and "s" not in query  # from here the URL follows the session

    app.tab.goto(f"{server}/?s=no-such-link-0000000000000")
    app.loaded()
    app.tab.get_by_text("could not be restored").wait_for()
    assert "T.parallel" not in app.script()  # the default chain instead
