"""Page latency in real browsers: from the click on *Apply* to the step's new IR on the page.

Issue 13 asks that applying a step show its new IR in under half a second with four users on
one server, one of them sweeping. This starts ``./run.sh`` on a free loopback port (its own
process group, killed at the end), opens one headless Chromium (Debian's, driven by
Playwright; never ``playwright install``) with one browser context per user, and then:

- ``--appliers`` users (each on a chain of its own, so that no user hits another's caches)
  repeat: set the split factor of the default ``split`` form (not timed), click *Apply*
  (timed: from the click, taken in the page with ``performance.now()``, until the Scheduled
  TVMScript panel shows the loop nest that split made, polled every animation frame, ~16
  ms), then *Undo* (not timed). All appliers run at once, so their clicks overlap;
- with ``--sweeper``, one more user runs a sweep of a split factor on the Fusion explorer
  (12 points, each built, validated and timed in the long workers) and starts it again
  whenever it ends, for the whole run.

It prints the machine, the load the rest of the machine put on it during the run (CPU of
every process that is not the server, its workers, the browser or this script), and the
latencies: median, 90th percentile and worst, per user and over all.

Usage::

    .venv/bin/python benchmarks/page_latency.py                    # 3 appliers + 1 sweeper
    .venv/bin/python benchmarks/page_latency.py --appliers 1 --no-sweeper --trials 10
    .venv/bin/python benchmarks/page_latency.py --json out.json
    .venv/bin/python benchmarks/page_latency.py --server-root ../main   # another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from browser import CHROMIUM, CHROMIUM_ARGS, css  # noqa: E402

from playground.io.url_state import QUERY_KEY, encode_state  # noqa: E402
from playground.measure.load import LoadProbe  # noqa: E402
from playground.remote.cluster import free_port  # noqa: E402
from playground.schedule.steps import Step  # noqa: E402

WAIT_MS = 120_000
#: No script run in progress and nothing on the page left from an earlier run.
QUIET = """() =>
  document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === "notRunning"
  && !document.querySelector('[data-stale="true"]')"""
#: The code of the open Inspect tab (the Scheduled TVMScript by default).
CODE = (f'{css("inspect.tab")} [data-testid="stTabPanel"]:not([data-st-inactive]) '
        '[data-testid="stCode"] code')
#: True once the IR shows the loop nest the split made; notes the time.
APPLIED = """([code, nest]) => {
  const text = document.querySelector(code)?.innerText ?? "";
  if (text.includes(nest)) {
    window.__shown = window.__shown ?? performance.now();
    return true;
  }
  return false;
}"""
CLICK = """(selector) => {
  window.__shown = undefined;
  window.__clicked = performance.now();
  document.querySelector(selector).click();
}"""


def chain(channels: int) -> dict:
    """The page's default chain with ``channels`` output channels (one per user)."""
    return {"input": {"shape": [1, 3, 64, 64], "dtype": "float32"},
            "layers": [{"op": "conv2d", "channels": channels, "kernel": 16}, {"op": "relu"}]}


def start_server(log: Path, env: dict, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["./run.sh"], cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env, "PLAYGROUND_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"./run.sh exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                if reply.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not healthy:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGKILL the server's process group; each worker's guardian then ends the worker's."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def quiet(tab) -> None:
    """Wait until no script run is in progress, and again 0.3 s later: an Apply's fragment
    run is followed by a rerun of the whole page."""
    for _ in range(2):
        await tab.wait_for_function(QUIET, timeout=WAIT_MS)
        await asyncio.sleep(0.3)
    await tab.wait_for_function(QUIET, timeout=WAIT_MS)


async def open_page(browser, url: str, query: str):
    context = await browser.new_context(viewport={"width": 1600, "height": 1300})
    tab = await context.new_page()
    tab.set_default_timeout(WAIT_MS)
    await tab.goto(f"{url}/?{QUERY_KEY}={query}")
    await tab.wait_for_selector(css("sched.apply"))
    await quiet(tab)
    return tab


async def set_factor(tab, key: str, value: int) -> None:
    """Type the split factor, and wait until the form's preview of the step shows it."""
    box = tab.locator(f"{css(key)} input")
    if await box.input_value() != str(value):
        await box.fill(str(value))
        await box.press("Enter")
    await tab.get_by_text(f"factors=[None, {value}])").first.wait_for(timeout=WAIT_MS)
    await quiet(tab)


async def applier(browser, url: str, channels: int, trials: int, start: asyncio.Event) -> dict:
    """One user applying a split ``trials`` times (each with another factor), undoing after."""
    tab = await open_page(browser, url, encode_state(chain(channels), (), 0))
    factor_key = "sched.split.f1.relu1.c"
    await start.wait()
    shown = []
    for trial in range(trials):
        factor = 2 + trial % (channels - 2)
        await set_factor(tab, factor_key, factor)
        # The relu's channel loop, split by ``factor`` (the IR before has no c_1 at all).
        nest = f"c_0, c_1, h, w in T.grid(1, {-(-channels // factor)}, {factor},"
        await tab.evaluate(CLICK, f"{css('sched.apply')} button")
        await tab.wait_for_function(APPLIED, arg=[CODE, nest], polling="raf", timeout=WAIT_MS)
        shown.append(await tab.evaluate("window.__shown - window.__clicked"))
        print(f"applier {channels}: apply {trial + 1}/{trials} shown after {shown[-1]:.0f} ms",
              file=sys.stderr, flush=True)
        await quiet(tab)
        await tab.locator(f"{css('hist.undo')} button").first.click()
        await tab.wait_for_function(f"() => !(document.querySelector({CODE!r})?.innerText ?? "
                                    "'c_1').includes('c_1')", timeout=WAIT_MS)
        await quiet(tab)
    return {"user": f"applier ({channels} channels)", "shown_ms": shown}


async def sweeper(browser, url: str, start: asyncio.Event, stop: asyncio.Event) -> dict:
    """One user sweeping a split factor on the Fusion explorer, again whenever it ends."""
    try:
        steps = [Step("split", {"block": "conv1", "loop": "h", "factors": [None, 7]})]
        tab = await open_page(browser, url, encode_state(chain(9), steps, 1))
        await tab.get_by_role("tab", name="Fusion explorer").click()
        await tab.wait_for_selector(f"{css('fusion.sweep.run')} button", timeout=WAIT_MS)
    finally:
        start.set()  # the appliers start once the sweeper is ready (or failed: see bench)
    sweeps = 0
    while not stop.is_set():
        await tab.locator(f"{css('fusion.sweep.run')} button").click()
        sweeps += 1
        print(f"sweeper: sweep {sweeps} started", file=sys.stderr, flush=True)
        await tab.wait_for_selector('[data-testid="stProgress"]', timeout=WAIT_MS)
        while not stop.is_set() and await tab.locator('[data-testid="stProgress"]').count():
            await asyncio.sleep(0.5)
    return {"user": "sweeper", "sweeps_started": sweeps}


def summary(values: list[float]) -> dict:
    values = sorted(values)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return {"n": len(values), "median_ms": round(statistics.median(values)),
            "p90_ms": round(p90), "max_ms": round(values[-1]), "min_ms": round(values[0])}


async def bench(url: str, appliers: int, trials: int, with_sweeper: bool,
                probe: LoadProbe) -> list[dict]:
    """Run the users; ``probe`` measures the load while the browser is open (closed, its
    processes and their CPU time are gone, and would count as "others")."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with probe:
                start, stop = asyncio.Event(), asyncio.Event()
                sweep = asyncio.create_task(sweeper(browser, url, start, stop)) \
                    if with_sweeper else None
                if sweep is None:
                    start.set()
                users = [applier(browser, url, 10 + 2 * i, trials, start)
                         for i in range(appliers)]
                await start.wait()
                if sweep is not None and sweep.done():
                    sweep.result()  # the sweeper failed to start: say why
                results = await asyncio.gather(*users)
                stop.set()
                if sweep is not None:
                    results.append(await sweep)
                return results
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appliers", type=int, default=3)
    parser.add_argument("--no-sweeper", dest="sweeper", action="store_false")
    parser.add_argument("--trials", type=int, default=8, help="applies per applier")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="serve ./run.sh of another checkout (a before/after comparison)")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} missing (./test.sh installs Debian's chromium)")
    from playground.measure.machine import machine_facts

    facts = machine_facts().summary()
    log = Path(tempfile.mkdtemp(prefix="page-latency-")) / "server.log"
    # A SIGTERM (from `timeout`, say) ends the run through the finally below: no server left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"terminated; server log: {log}"))
    server, url = start_server(log, {}, args.server_root)
    try:
        # Everything this benchmark started is "own"; the rest of the machine is "others".
        probe = LoadProbe([server.pid, os.getpid()], descendants=True, where="benchmark")
        results = asyncio.run(bench(url, args.appliers, args.trials, args.sweeper, probe))
    finally:
        stop_server(server)
    shown = [v for r in results for v in r.get("shown_ms", [])]
    report = {"machine": facts, "server_root": str(args.server_root),
              "appliers": args.appliers, "sweeper": args.sweeper,
              "trials": args.trials, "load": probe.load.to_dict(),
              "apply_to_ir": summary(shown),
              "users": [{**r, **({"summary": summary(r["shown_ms"])} if "shown_ms" in r else {})}
                        for r in results]}
    load = probe.load
    print(f"machine: {facts}; server from {args.server_root}")
    print(f"load during the run: other processes {load.others_cores:.2f} of {load.cores} cores "
          f"on average; ours {load.own_cores:.2f}; load average {load.loadavg_1m:.2f}; "
          f"{load.seconds:.0f} s")
    who = f"{args.appliers} applier(s)" + (" + 1 sweeper" if args.sweeper else "")
    print(f"{who}: click on Apply -> new IR shown: {report['apply_to_ir']}")
    for r in report["users"]:
        print(f"  {r['user']}: {r.get('summary', r)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
