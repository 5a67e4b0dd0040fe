"""Many users at once (issue 6 item 4): eight Streamlit clients build and measure concurrently.

Each of eight threads drives its own :class:`AppTest` of ``app.py`` in this one process, so
they share what one server's sessions share: the worker pool (``st.cache_resource``) and the
machine-wide measurement lock. Each builds a chain with its own channel count in the chain
editor, then all press Validate & measure together. The test checks that

- every client sees its own chain and its own result, never another session's;
- the timings were serialized: the ``timed_from``/``timed_until`` wall-clock intervals of the
  eight results do not overlap;
- clients that had to wait were told their queue position (the page's ``on_event`` callback,
  which writes "Waiting for a free worker: n job(s) go first…" and "Queued for the
  measurement slot: n job(s) ahead…").

AppTest swaps a mock ``Runtime`` in and out of a class attribute around each of its runs, which
is not made for runs that overlap in threads (one client's run ending would pull the runtime
from under the others). :func:`one_runtime` keeps one present for the whole test, as a real
server's single runtime is for all its sessions.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import defaultdict

import paths
import pytest
from helpers import editor_key
from streamlit.runtime import Runtime
from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from playground import service
from playground.chain.spec import chain_flop
from playground.io.url_state import QUERY_KEY, encode_state

pytestmark = pytest.mark.slow

APP = paths.APP
USERS = 8
#: Each user's conv2d channel count: distinct, so a result tells whose chain it was.
CHANNELS = [6 + 2 * i for i in range(USERS)]
LINKED = {"input": {"shape": [1, 3, 16, 16], "dtype": "float32"},
          "layers": [{"op": "conv2d", "channels": 4, "kernel": 3}, {"op": "relu"}]}


@pytest.fixture(scope="module", autouse=True)
def shared_pool(close_page_pool):
    """Every AppTest of this module shares the page's worker pool (closed after)."""


@pytest.fixture
def one_runtime(monkeypatch):
    """A runtime that stays while the clients' runs overlap (see the module's docstring)."""
    from unittest.mock import MagicMock

    shared = MagicMock(spec=Runtime)
    shared.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    shared.dataframe_source_mgr = DataframeSourceManager()
    shared.cache_storage_manager = MemoryCacheStorageManager()
    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: cls._instance or shared))
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: True))


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


#: AppTest is not made for runs that overlap in threads: its own widget bookkeeping (not the
#: app) then looks up widget ids or option labels another run is writing (seen: KeyError
#: '$$ID-...-measure.device', ValueError "'c (4)' is not in list"). So each client's run holds
#: this lock, and releases it while its measurement waits in the worker pool (observed_run):
#: the eight jobs are queued at once, as on a real server, and only AppTest's bookkeeping and
#: the scripts' cheap parts take turns.
HARNESS = threading.Lock()


def locked_run(at: AppTest) -> AppTest:
    with HARNESS:
        return run(at)


def build(channels: int) -> AppTest:
    """A client that opens its own link (1x3x16x16 -> conv ``channels`` 3x3 -> relu) and adds
    a relu6 layer in the chain editor.

    (Editing a field that changes loop extents while eight AppTests run in threads once made
    AppTest's own widget bookkeeping look up a stale option label; adding a layer changes the
    chain without relabelling existing pickers.)"""
    at = AppTest.from_file(APP, default_timeout=300)
    linked = {**LINKED, "layers": [{**LINKED["layers"][0], "channels": channels},
                                   *LINKED["layers"][1:]]}
    at.query_params[QUERY_KEY] = encode_state(linked, (), 0)
    locked_run(at)
    with HARNESS:
        at.selectbox(key="layer.new_op").set_value("relu6")
        at.button(key="layer.add").click()
        return run(at)


def test_eight_clients_build_and_measure_at_once(monkeypatch, one_runtime):
    events: dict[int, list[dict]] = defaultdict(list)  # by the session's channel count
    real_run = service.run

    def observed_run(pool, session, target="cpu", *, on_event=None, **kw):
        """The real service.run; records the events the page's callback was given."""
        mine = events[session.chain["layers"][0]["channels"]]

        def both(event: dict) -> None:
            mine.append(event)
            on_event(event)

        HARNESS.release()  # held by this client's locked run: let the others run meanwhile
        try:
            return real_run(pool, session, target, on_event=both, **kw)
        finally:
            HARNESS.acquire()

    monkeypatch.setattr(service, "run", observed_run)
    from ui.state import get_pool

    get_pool().warm_up()  # the shared worker, started once as the server does
    clients: dict[int, AppTest] = {}
    failures: list[BaseException] = []
    ready = threading.Barrier(USERS, timeout=300)

    def user(channels: int) -> None:
        try:
            at = build(channels)
            clients[channels] = at
            ready.wait()  # everyone presses the button together
            with HARNESS:
                at.button(key="measure.run").click()
                run(at)
        except BaseException as e:
            failures.append(e)
            ready.abort()

    threads = [threading.Thread(target=user, args=(c,), name=f"user-{c}") for c in CHANNELS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures
    assert sorted(clients) == CHANNELS

    intervals = []
    for channels, at in clients.items():
        session = at.session_state["session"]
        assert session.chain["layers"][0]["channels"] == channels  # its own chain
        assert session.chain["input"]["shape"] == [1, 3, 16, 16]
        assert [layer["op"] for layer in session.chain["layers"]] == ["conv2d", "relu", "relu6"]
        assert at.number_input(key=editor_key(at, "0.channels")).value == channels
        ui = at.session_state["ui"]
        others = [f'"channels":{c},' for c in CHANNELS if c != channels]
        assert not [k for k in ui.results if any(o in k for o in others)]  # no one else's
        runs = {k: r for k, r in ui.results.items() if k.startswith("run|")}
        assert len(runs) == 1 and len(ui.measurements) == 1, list(runs)
        (key, result), = runs.items()
        assert key.endswith(session.key())  # its own session's result
        value = result["value"]
        assert result["status"] == "ok", result
        assert value["flop"] == chain_flop(session.chain)  # computed on its own chain
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Correct"] == "yes"
        assert re.fullmatch(r"[\d.]+ (ms|µs)", metrics["Median time"]), metrics
        intervals.append((value["timed_from"], value["timed_until"], channels))

    intervals.sort()
    for (_, end, a), (start, _, b) in itertools.pairwise(intervals):
        assert end <= start, f"timings of users {a} and {b} overlapped"

    # A client waits first for a long worker (its turn in the fair queue: "waiting"), then
    # for the measurement lock ("queued"); either way it is told how many go first.
    for channels in CHANNELS:
        kinds = [e["event"] for e in events[channels]]
        assert kinds[0] in ("waiting", "queued") and "queued" in kinds, kinds
        assert "started" in kinds and kinds[-1] == "done", kinds
    waited = {c: max(e["position"] for e in events[c] if e["event"] in ("waiting", "queued"))
              for c in CHANNELS}
    assert max(waited.values()) >= 1, waited  # someone had to wait, and was told where
    assert sum(1 for w in waited.values() if w >= 1) >= USERS // 2, waited
