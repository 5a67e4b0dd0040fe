"""Real-browser helpers: the README's run command serving the page, headless Chromium driving it.

The server is ``./run.sh`` on a free loopback port, in its own process group (killed at the
end); one server serves every browser test of a run (the ``server`` fixture in conftest).
Debian's Chromium is driven by Playwright (never ``playwright install``: it downloads browsers).

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
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import paths
import pytest

ROOT = paths.ROOT
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


@dataclass(frozen=True)
class Server:
    """A running ``./run.sh``: its address and the streamlit process (run.sh execs it)."""

    url: str
    pid: int
    log: Path


def serve(log: Path) -> Iterator[Server]:
    """The README's run command on a free loopback port; its process group is killed after."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing (./test.sh installs Debian's chromium)")
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["./run.sh"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PLAYGROUND_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield Server(url, proc.pid, log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@contextmanager
def chromium() -> Iterator:
    """Debian's headless Chromium, driven by Playwright (closed after)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(browser, url: str) -> Iterator[App]:
    """A fresh tab (its own context: no cookies or storage shared) on ``url``, loaded."""
    context = browser.new_context(viewport={"width": 1600, "height": 1300})
    try:
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.add_init_script(COUNT_RUNS)
        app = App(tab)
        app.open(url)
        yield app
    finally:
        context.close()


def css(key: str) -> str:
    """The CSS selector of the widget with ``key=key``. The chain editor's keys end in a
    generation (``chain.input.h.v3``, see ``ui.state.editor_key``), and so does the uploader's
    (``io.upload.v1`` after a refused file, see ``ui.io_ui.upload_key``): ``chain.input.h``
    finds the field whatever its generation (only one is on the page)."""
    name = "st-key-" + key.replace(".", "-")
    if key.startswith("chain.") or key == "io.upload":
        return f'[class*="{name}-v"]'
    return "." + name


#: Counts script runs (the app's ``data-test-script-state`` turning to ``running``) and notes
#: when the page last heard from the server: a change of that state, or any message on the
#: app's WebSocket. A fast run (a fragment's, say) can start and finish within one React
#: render, so the state attribute never changes; its messages still arrive.
COUNT_RUNS = """
window.__runs = 0;
window.__changed = performance.now();
const PageSocket = window.WebSocket;
window.WebSocket = class extends PageSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", () => { window.__changed = performance.now(); });
  }
};
new MutationObserver((records) => {
  for (const r of records) {
    window.__changed = performance.now();
    if (r.target.getAttribute(r.attributeName) === "running" && r.oldValue !== "running") {
      window.__runs += 1;
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""
#: An action is waited for by the time it was taken (``performance.now()`` on the page), not
#: by a count of runs: a change made while a run is in progress (the app's ``st.rerun()``
#: starts one ~50 ms after the last ends, longer on a loaded machine) restarts that run
#: without the state ever leaving "running", and a fast run may never show "running" at
#: all; either way the server answers after the action. The page counts as settled once it
#: heard from the server after the action and has been "notRunning" and silent for
#: QUIET_MS: a debounce of the wait, not a timed assertion.
QUIET_MS = 400
CHANGED = "mark => window.__changed > mark"
SETTLED = f"""mark => window.__changed > mark
  && document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === "notRunning"
  && !document.querySelector('[data-stale="true"]')
  && performance.now() - window.__changed > {QUIET_MS}"""
STATE = """() => ({runs: window.__runs,
  msSinceChange: Math.round(performance.now() - window.__changed),
  state: document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState,
  stale: document.querySelectorAll('[data-stale="true"]').length})"""
#: How long an idempotent action (picking an option, typing a value) may go without any
#: change of the page's state before it is taken again: a click on an option that a rerun
#: redrew under the pointer is lost, and would otherwise be waited for until the timeout.
RETRY_MS = 15_000


class App:
    """The page, driven the way a person would: type, pick, click; then wait for the rerun."""

    def __init__(self, tab) -> None:
        self.tab = tab

    def open(self, url: str) -> None:
        """Load ``url`` in this tab (a new Streamlit session) and wait for the first run."""
        self.tab.goto(url)
        self.loaded()

    def runs(self) -> float:
        """A mark of now, on the page's clock: :meth:`settle` waits for a run after it."""
        return self.tab.evaluate("performance.now()")

    def settle(self, mark: float) -> None:
        """Wait until the page's script state changed after ``mark`` and is quiet again."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.tab.wait_for_function(SETTLED, arg=mark)
        except PlaywrightTimeout:
            pytest.fail(f"the page did not rerun and settle after the action; page state: "
                        f"{self.tab.evaluate(STATE)}; alerts: {self.alerts()}")

    def _retrying(self, action, done) -> None:
        """Do ``action`` (idempotent), again if the page has not changed state within
        RETRY_MS and ``done()`` says it did not take; then wait for the page to settle."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        for attempt in range(3):
            mark = self.runs()
            action()
            try:
                self.tab.wait_for_function(CHANGED, arg=mark, timeout=RETRY_MS)
                break
            except PlaywrightTimeout:
                if attempt == 2 or done():
                    break
        self.settle(mark)

    def loaded(self) -> None:
        self.tab.wait_for_selector(css("measure.run"))
        self.settle(0)

    def value(self, key: str) -> str:
        """The text in the input of widget ``key`` (a number, a select's shown option)."""
        return self.tab.locator(f"{css(key)} input").first.input_value()

    def type(self, key: str, value: int | str) -> None:
        box = self.tab.locator(f"{css(key)} input")
        if box.input_value() == str(value):
            return

        def action() -> None:
            box.fill(str(value))
            box.press("Enter")

        self._retrying(action, lambda: False)  # Enter again on an unchanged value is a no-op

    def pick(self, key: str, option: str) -> None:
        """Choose ``option`` (its shown text, exactly) in the selectbox ``key``."""
        box = self.tab.locator(f"{css(key)} input")
        if box.input_value() == option:
            return

        def action() -> None:
            if box.input_value() == option:
                return
            box.click()
            box.fill(option)  # filters the (virtualized) list, so the option is drawn
            self.tab.get_by_role("option", name=option, exact=True).click()

        self._retrying(action, lambda: box.input_value() == option)

    def pick_many(self, key: str, options: list[str]) -> None:
        """Choose ``options`` in order in the multiselect ``key``."""
        for option in options:
            mark = self.runs()
            self.tab.locator(f"{css(key)} input").click()
            self.tab.get_by_role("option", name=option, exact=True).click()
            self.tab.keyboard.press("Escape")
            self.settle(mark)

    def click(self, key: str) -> None:
        n = self.runs()
        self.tab.locator(f"{css(key)} button").first.click()  # a button with help has two
        self.settle(n)

    def write(self, box, text: str) -> None:
        """Fill the text area ``box`` (a locator) and commit it with Ctrl+Enter."""
        n = self.runs()
        box.fill(text)
        box.press("Control+Enter")
        self.settle(n)

    def replacing(self, action) -> None:
        """Do ``action``, which replaces the session (a preset, an import, undo), and wait
        until the address bar holds the new session and the page has settled: such actions
        rerun the page once more (``st.rerun``), after the run that the click started."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        before, mark = self.tab.url, self.runs()
        action()
        try:
            self.tab.wait_for_function("url => location.href !== url", arg=before)
        except PlaywrightTimeout:
            pytest.fail(f"the session did not change; alerts: {self.alerts()}")
        self.settle(mark)

    def apply(self, primitive: str, **picks: str | list[str]) -> None:
        """Pick the primitive and its arguments (key suffix -> shown option), press Apply."""
        if self.value("sched.primitive") != primitive:
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
        assert not self.alerts("Error"), self.alerts("Error")
        assert steps.count() == before + 1, f"{primitive} {picks} added no step"

    def alerts(self, kind: str = "") -> list[str]:
        """The texts of the alerts on the page (``kind``: "Error", "Warning", "" for all)."""
        return self.tab.locator(f'[data-testid="stAlertContent{kind}"]').all_inner_texts()

    def script(self) -> str:
        """The Scheduled TVMScript panel's text, without line numbers."""
        code = self.tab.locator(f'{css("inspect.tab")} [data-testid="stTabPanel"]'
                                ':not([data-st-inactive]) [data-testid="stCode"] code').first
        lines = code.inner_text().splitlines()
        return "\n".join(re.sub(r"^\d+", "", line, count=1) for line in lines)

    def url_state(self) -> dict:
        """The session the address bar holds (the page keeps it equal to its session)."""
        from playground.io.url_state import decode_state

        return decode_state(parse_qs(urlsplit(self.tab.url).query)["state"][0])


def save_screenshot(app: App, tmp_path: Path, name: str) -> Path:
    """A screenshot in pytest's tmp dir (and in ``$PLAYGROUND_SCREENSHOT_DIR`` when set)."""
    path = tmp_path / name
    app.tab.screenshot(path=str(path), full_page=True)
    if os.environ.get("PLAYGROUND_SCREENSHOT_DIR"):
        target = Path(os.environ["PLAYGROUND_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path
