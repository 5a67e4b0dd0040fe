"""The page's remote device option (issue 6 item 5), driven by AppTest.

Fast tests: a bad field is refused by the library before any job runs and its message sits in
that field's column; a result that needed a retry shows where it ran and a notice (the service
patched). Slow tests: a real tracker and server on loopback (:class:`LocalRpcCluster`, killed
at the end), listed with "List keys", validated and timed through the page; a key that no
server offers gets its message under the key field.
"""

from __future__ import annotations

import re

import paths
import pytest
from helpers import shown
from streamlit.testing.v1 import AppTest

from playground import service
from playground.io.url_state import QUERY_KEY, encode_state
from playground.remote.cluster import LocalRpcCluster, free_port
from playground.worker.result import JobResult
from ui import remote_ui

APP = paths.APP
TINY = {"input": {"shape": [1, 3, 16, 16], "dtype": "float32"},
        "layers": [{"op": "conv2d", "channels": 4, "kernel": 3}, {"op": "relu"}]}


@pytest.fixture(scope="module", autouse=True)
def shared_pool(close_page_pool):
    """Every AppTest of this module shares the page's worker pool (closed after)."""


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def remote_page(**fields: str) -> AppTest:
    """The page on the tiny chain with "remote (RPC)" picked and ``fields`` typed."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params[QUERY_KEY] = encode_state(TINY, (), 0)
    run(at)
    at.radio(key="measure.device").set_value(remote_ui.REMOTE)
    run(at)
    for name, value in fields.items():
        at.text_input(key=f"remote.{name}").set_value(value)
    return run(at)


def column_of(at: AppTest, key: str):
    """The column that holds the text input ``key``."""
    return next(c for c in at.columns if any(t.key == key for t in c.text_input))


def field_errors(at: AppTest) -> dict[str, list[str]]:
    return {f: [e.value for e in column_of(at, f"remote.{f}").error] for f in remote_ui.FIELDS}


def measure(at: AppTest) -> AppTest:
    at.button(key="measure.run").click()
    return run(at)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.mark.parametrize(("fields", "where", "text"), [
    ({"port": "99999"}, "port", "port must be an integer from 1 to 65535"),
    ({"port": "91x0"}, "port", "port must be an integer"),
    ({"host": "bad host"}, "host", "not a valid hostname"),
    ({"key": "no spaces"}, "key", "key must be 1 to 64 characters"),
])
def test_bad_field_is_refused_next_to_that_field(fields, where, text, monkeypatch):
    ran = []
    real_run = service.WorkerPool.run

    def spy(pool, job, *args, **kwargs):  # other panels (the Fusion explorer) use the pool too
        if job == "remote_run":
            ran.append(job)
        return real_run(pool, job, *args, **kwargs)

    monkeypatch.setattr(service.WorkerPool, "run", spy)
    at = remote_page(**fields)
    before = at.session_state["session"]
    measure(at)
    errors = field_errors(at)
    assert any(text in m for m in errors[where]), errors
    assert not [m for f, ms in errors.items() if f != where for m in ms], errors
    assert not ran  # refused before any job reached the worker
    assert at.session_state["session"] == before
    assert at.session_state["ui"].measurements == []
    at.text_input(key=f"remote.{where}").set_value(remote_ui.DEFAULTS[where])
    run(at)
    assert not any(field_errors(at).values())  # the message went with the value


def test_retried_result_says_where_it_ran(monkeypatch):
    calls = []

    def fake_remote_run(pool, session, host, port, key, **kw):
        calls.append((host, port, key, kw["target"], kw["measure"]))
        kw["on_event"]({"event": "queued", "position": 0})
        timing = {"median_ms": 0.5, "min_ms": 0.4, "max_ms": 0.6, "p10_ms": 0.45,
                  "p90_ms": 0.55, "spread": 0.2, "repeats": 10, "number": 20,
                  "samples_ms": [0.5] * 10}
        return JobResult("ok", {"valid": True, "correct": True, "max_abs_error": 0.0,
                                "max_rel_error": 0.0, "median_ms": 0.5, "gflops": 3.0,
                                "timing": timing, "compile_s": 0.2, "server": "10.0.0.7:9091",
                                "remote": "tracker.lan:9190/rk3399", "attempts": 2,
                                "lost": ["10.0.0.6:9091: Socket closed"], "upload_s": 0.01})

    monkeypatch.setattr(service, "remote_run", fake_remote_run)
    at = measure(remote_page(host="tracker.lan", key="rk3399"))
    assert calls == [("tracker.lan", "9190", "rk3399", "cpu", True)]
    assert metrics(at)["Correct"] == "yes"
    assert any("ran on 10.0.0.7:9091" in shown(c.value) for c in at.caption)
    assert any("went away" in w.value and "10.0.0.6:9091" in shown(w.value) for w in at.warning)
    record = at.session_state["ui"].measurements[-1]
    assert record["target"] == "tracker.lan:9190/rk3399 (cpu)" and record["median_ms"] == 0.5
    from playground.store import get_store

    (stored,) = get_store().list_experiments()  # recorded with the remote device as machine
    assert (stored["machine_name"], stored["median_ms"]) == ("remote tracker.lan:9190/rk3399",
                                                             0.5)
    assert get_store().get(stored["id"])["result"]["server"] == "10.0.0.7:9091"


@pytest.mark.slow
def test_unreachable_tracker_is_reported_at_the_host():
    at = remote_page(port=str(free_port()))  # nothing listens there
    at.checkbox(key="measure.timing").set_value(False)  # no timing: no wait for the slot
    measure(run(at))
    errors = field_errors(at)
    assert any("unreachable" in m for m in errors["host"]), errors


@pytest.fixture(scope="module")
def cluster():
    with LocalRpcCluster(1, key="pg-ui", num_threads=1) as c:
        yield c


@pytest.mark.slow
def test_list_keys_then_measure_on_the_tracker_server(cluster):
    at = remote_page(port=str(cluster.port), key="pg-ui")
    at.button(key="remote.list").click()
    run(at)
    assert any("pg-ui" in m.value and "1 server(s)" in m.value for m in at.markdown)
    measure(at)
    assert metrics(at)["Correct"] == "yes", [e.value for e in at.error]
    assert re.fullmatch(r"[\d.]+ (ms|µs)", metrics(at)["Median time"])
    server = cluster.servers[0].port
    assert any(f"ran on 127.0.0.1:{server}" in shown(c.value) for c in at.caption)
    # One attempt: no retry notice (a busy machine may add an "under load" warning).
    assert not [w.value for w in at.warning if "went away" in w.value]


@pytest.mark.slow
def test_key_no_server_offers_is_reported_at_the_key(cluster, monkeypatch):
    real = service.remote_run
    monkeypatch.setattr(service, "remote_run",
                        lambda *a, **k: real(*a, **{**k, "timeout_s": 1.0}))
    at = measure(remote_page(port=str(cluster.port), key="nobody"))
    errors = field_errors(at)
    assert any("no RPC server with key 'nobody'" in m and "'pg-ui'" in m
               for m in errors["key"]), errors
