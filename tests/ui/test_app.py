"""The Streamlit page, driven by AppTest: widgets found by key, the session read back.

Fast tests patch nothing but the measurement (``service.run``); lowering a tiny chain runs in
the real worker pool, which all tests share (``st.cache_resource``) and which is closed at the
end. One slow test validates and times in the real worker.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import editor_key
from page import TINY, apply, errors, run, session, start, with_session
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from playground import service
from playground.io.url_state import QUERY_KEY
from playground.schedule.session import Session
from playground.schedule.steps import Step
from playground.worker.result import JobResult


@pytest.fixture(scope="module", autouse=True)
def shared_pool(close_page_pool):
    """Every AppTest of this module shares the page's worker pool (closed after)."""


def codes(at: AppTest) -> list[str]:
    return [c.value for c in at.code]


# ----------------------------------------------------------------------------- first screen

def test_first_screen_shows_the_default_chain_and_its_ir():
    at = start()
    assert at.title[0].value == "Schedule Playground"
    s = session(at)
    assert [layer["op"] for layer in s.chain["layers"]] == ["conv2d", "relu"]
    assert any('T.sblock("conv1")' in c for c in codes(at))
    assert at.query_params[QUERY_KEY]  # the link already holds the state


# ----------------------------------------------------------------------------- chain

def test_edit_a_layer_keeps_the_steps():
    at = apply(start(), "split", block="relu1", **{"loop.relu1": "h"})
    assert len(session(at).steps) == 1
    at.number_input(key=editor_key(at, "0.channels")).set_value(8)
    run(at)
    s = session(at)
    assert s.chain["layers"][0]["channels"] == 8
    assert s.cursor == 1 and s.steps[0].primitive == "split"
    assert at.number_input(key=editor_key(at, "0.channels")).value == 8


def test_invalid_layer_shows_the_message_and_keeps_the_session():
    at = start()
    before = session(at)
    at.number_input(key=editor_key(at, "0.groups")).set_value(2)  # 3 input channels
    run(at)
    assert session(at) == before
    assert any("groups=2 does not divide" in m for m in errors(at)), errors(at)
    assert at.number_input(key=editor_key(at, "0.groups")).value == 2  # the user's value stays
    at.number_input(key=editor_key(at, "0.groups")).set_value(1)
    run(at)
    assert not errors(at)


def test_kernel_larger_than_input_is_refused():
    at = start()
    at.number_input(key=editor_key(at, "input.h")).set_value(8)
    run(at)
    assert any("larger than its padded input" in m for m in errors(at)), errors(at)
    assert session(at).chain["input"]["shape"] == [1, 3, 64, 64]


def test_add_move_and_remove_layers():
    at = start()
    at.selectbox(key="layer.new_op").set_value("conv2d")
    at.button(key="layer.add").click()
    run(at)
    assert [layer["name"] for layer in session(at).chain["layers"]] == ["conv1", "relu1", "conv2"]
    assert at.number_input(key=editor_key(at, "2.channels")).value == 10  # from the chain
    at.button(key="layer.up.2").click()
    run(at)
    assert [layer["name"] for layer in session(at).chain["layers"]] == ["conv1", "conv2", "relu1"]
    at.button(key="layer.remove.1").click()
    run(at)
    assert [layer["name"] for layer in session(at).chain["layers"]] == ["conv1", "relu1"]


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pooling_layers_are_added_and_edited(op):
    at = start()
    at.selectbox(key="layer.new_op").set_value(op)
    at.button(key="layer.add").click()
    run(at)
    pool = session(at).chain["layers"][-1]
    assert (pool["op"], pool["kernel"], pool["stride"]) == (op, [2, 2], [2, 2])
    assert at.number_input(key=editor_key(at, "2.kernel_h")).value == 2
    at.number_input(key=editor_key(at, "2.stride_h")).set_value(1)
    run(at)
    pool = session(at).chain["layers"][-1]
    assert pool["stride"] == [1, 2] and not errors(at), errors(at)


def test_every_op_of_the_table_is_offered_and_added_with_its_fields():
    """The editor reads the op table: the new-layer menu lists every op, and each one added
    at the end of the default chain is valid with the fields its record starts it with."""
    from playground.chain.ops import OPS
    from playground.chain.spec import normalize_chain
    from ui.chain_ui import restructured

    at = start()
    assert list(at.selectbox(key="layer.new_op").options) == list(OPS)
    chain = session(at).chain
    taken = {layer["name"] for layer in chain["layers"]}  # conv1, relu1
    for name in OPS:
        added = normalize_chain(restructured(chain, "add", name))["layers"][-1]
        assert added["op"] == name and added["name"] not in taken
        assert added["name"] == f"{OPS[name].prefix}{2 if name in ('conv2d', 'relu') else 1}"
    at.selectbox(key="layer.new_op").set_value("sigmoid")
    at.button(key="layer.add").click()
    run(at)
    assert session(at).chain["layers"][-1] == {"op": "sigmoid", "name": "sigmoid1"}
    assert not errors(at), errors(at)


def test_preset_loads_when_presets_exist():
    from ui.chain_ui import presets

    items = presets()
    if not items:
        pytest.skip("no presets in schedules/ yet")
    at = start()
    at.selectbox(key="preset.name").set_value(items[0]["name"])
    run(at)
    at.button(key="preset.load").click()
    run(at)
    assert len(session(at).steps) == items[0]["steps"]
    assert at.session_state["measure.target"] == items[0]["target"]  # the preset's target
    assert any("Loaded preset" in s.value for s in at.success)


# ----------------------------------------------------------------------------- schedule

def fused(at: AppTest) -> AppTest:
    """split relu1's rows, reorder, compute conv1 at the row tile."""
    apply(at, "split", block="relu1", **{"loop.relu1": "h", "f1.relu1.h": 7})
    apply(at, "reorder", block="relu1", **{"loops.relu1": ["h_0", "c"]})
    return apply(at, "compute_at", block="conv1", **{"target_block.conv1": "relu1",
                                                     "target_loop.relu1": "h_0"})


def test_split_reorder_compute_at():
    at = fused(start())
    s = session(at)
    assert [step.primitive for step in s.steps] == ["split", "reorder", "compute_at"]
    assert s.steps[0].args["factors"] == [None, 7]
    assert s.steps[1].args["loops"] == ["h_0", "c"]
    assert not errors(at)
    script = next(c for c in codes(at) if "T.sblock" in c)
    assert "for h_0 in range(7)" in script or "h_0 in T.grid" in script or "h_0" in script
    history = " ".join(m.value for m in at.markdown)
    assert "compute_at" in history


def test_invalid_compute_at_shows_the_reason_and_keeps_the_session():
    at = start()
    before = session(at)
    apply(at, "compute_at", block="relu1", **{"target_block.relu1": "conv1",
                                              "target_loop.conv1": "h"})
    assert session(at) == before
    assert any("output block" in m for m in errors(at)), errors(at)
    assert any(e.label == "Full explanation from TVM" for e in at.expander)


def test_undo_redo_goto_and_delete():
    at = fused(start())
    at.button(key="hist.undo").click()
    run(at)
    assert session(at).cursor == 2
    at.button(key="hist.redo").click()
    run(at)
    assert session(at).cursor == 3
    at.button(key="hist.goto.1").click()
    run(at)
    assert session(at).cursor == 1 and len(session(at).steps) == 3
    at.button(key="hist.goto.3").click()
    run(at)
    at.button(key="hist.delete.1").click()  # drop the reorder: compute_at still applies
    run(at)
    assert [s.primitive for s in session(at).steps] == ["split", "compute_at"]


def test_inspect_tabs_diff_outline_and_lowered():
    at = apply(start(), "split", block="relu1", **{"loop.relu1": "h", "f1.relu1.h": 7})
    at.session_state["inspect.tab"] = "Step diff"
    run(at)
    diff = next(c for c in at.code if c.language == "diff")
    assert "+" in diff.value and "h_0" in diff.value
    at.session_state["inspect.tab"] = "Loop outline"
    run(at)
    assert any("for h_0 in 7" in c for c in codes(at))
    at.session_state["inspect.tab"] = "Lowered TIR"
    run(at)  # lowered in the real worker, then cached in the tab's state
    assert any("def main" in c for c in codes(at)), errors(at)
    assert any(k.startswith("lower|cpu|tile_local|") for k in at.session_state["ui"].results)
    at.toggle(key="inspect.tile_local").set_value(False)  # TVM's default lowering, to compare
    run(at)
    assert any(k.startswith("lower|cpu||") for k in at.session_state["ui"].results)
    assert any("def main" in c for c in codes(at)), errors(at)


# ----------------------------------------------------------------------------- measure

def fake_run(pool, session, target="cpu", *, measure=True, on_event=None, **kw):
    on_event({"event": "queued", "position": 1})
    on_event({"event": "queued", "position": 0})
    on_event({"event": "started", "worker_pid": 1})
    timing = {"median_ms": 2.0, "min_ms": 1.8, "max_ms": 2.5, "p10_ms": 1.9, "p90_ms": 2.2,
              "spread": 0.15, "repeats": 10, "number": 5, "samples_ms": [2.0] * 10}
    return JobResult("ok", {"valid": True, "correct": True, "max_abs_error": 1e-6,
                            "max_rel_error": 2e-6, "median_ms": 2.0, "gflops": 18.5,
                            "timing": timing, "compile_s": 0.4, "message": ""})


def test_measure_fills_the_result_panel_and_the_chart(monkeypatch):
    monkeypatch.setattr(service, "run", fake_run)
    at = start()
    at.button(key="measure.run").click()
    run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Correct"] == "yes" and metrics["Median time"] == "2 ms"
    assert metrics["GFLOP/s"] == "18.50"
    assert any("p10–p90: 1.900–2.200 ms" in c.value for c in at.caption)
    apply(at, "split", block="relu1", **{"loop.relu1": "h"})
    at.button(key="measure.run").click()
    run(at)
    records = at.session_state["ui"].measurements
    assert [r["label"] for r in records] == ["0: unscheduled", "1: split relu1.h factors=[None, 7]"]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["y"] == [2.0, 2.0]
    # Each point's label sits above its bar (not on the marker), whole or its step cut in the
    # middle (ui/test_chart_labels.py: cut so that different steps still read differently).
    labels = chart["layout"]["annotations"]
    assert [a["text"] for a in labels] == ["0: unscheduled", "1: split relu1.…ors=[None, 7]"]
    assert all(a["yanchor"] == "bottom" and a["yshift"] > 0 for a in labels)


def test_a_time_measured_under_load_is_flagged(monkeypatch):
    def loaded_run(*args, **kwargs):
        result = fake_run(*args, **kwargs)
        others = 0.7 if len(state_records) == 0 else 0.0
        load = {"cores": 2, "threads": 2, "seconds": 0.5, "busy_cores": 2.0,
                "own_cores": 2.0 - others, "others_cores": others, "loadavg_1m": 2.5,
                "where": "local", "under_load": others > 0.25}
        state_records.append(load)
        return JobResult("ok", {**result.value, "timing": {**result.value["timing"],
                                                           "load": load}})

    state_records: list[dict] = []
    monkeypatch.setattr(service, "run", loaded_run)
    at = start()
    at.button(key="measure.run").click()
    run(at)
    assert any("Measured under load" in w.value and "0.70 of 2 cores" in w.value
               for w in at.warning)
    apply(at, "split", block="relu1", **{"loop.relu1": "h"})
    at.button(key="measure.run").click()
    run(at)
    assert any("Load while timing: other processes 0.00 of 2 cores" in c.value
               for c in at.caption)
    assert [r["under_load"] for r in at.session_state["ui"].measurements] == [True, False]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["marker"]["symbol"] == ["x", "circle"]


def test_failed_measurement_shows_its_classification(monkeypatch):
    monkeypatch.setattr(service, "run", lambda *a, **k: JobResult(
        "timeout", message="job 'run' ran past its 300 s limit", detail="stderr tail"))
    at = start()
    at.button(key="measure.run").click()
    run(at)
    assert any("timeout" in m and "300 s" in m for m in errors(at)), errors(at)
    assert session(at).cursor == 0
    from playground.store import get_store

    (row,) = get_store().list_experiments()  # recorded too, with its classification
    assert (row["status"], row["error"]) == ("timeout", "job 'run' ran past its 300 s limit")


@pytest.mark.slow
def test_validate_and_measure_in_the_real_worker():
    at = with_session(Session.new(TINY))
    at.button(key="measure.run").click()
    run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Correct"] == "yes", (metrics, errors(at))
    assert re.fullmatch(r"[\d.]+ (ms|µs)", metrics["Median time"]), metrics


# ----------------------------------------------------------------------------- export / import

@pytest.fixture
def downloads(monkeypatch):
    """Capture what download buttons offer (AppTest's media storage is private)."""
    files: dict[str, bytes] = {}

    class Capturing(MemoryMediaFileStorage):
        def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
            file_id = super().load_and_get_id(path_or_data, mimetype, kind, filename)
            files[file_id] = path_or_data
            return file_id

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Capturing)

    def get(at: AppTest, key: str) -> str:
        button = next(b for b in at.get("download_button") if b.proto.id.endswith(key))
        data = files[button.proto.url.rsplit("/", 1)[-1].split(".")[0]]
        return data.decode() if isinstance(data, bytes) else data

    return get


def test_export_then_import_gives_the_same_schedule(downloads):
    at = fused(start())
    original = session(at)
    script = downloads(at, "io.download_script")
    assert "def apply_schedule(sch):" in script
    fresh = start()
    fresh.text_area(key="io.paste").set_value(script)
    fresh.button(key="io.import").click()
    run(fresh)
    assert session(fresh).chain == original.chain
    assert session(fresh).active == original.active
    assert any("Imported" in s.value for s in fresh.success)
    as_json = downloads(at, "io.download_json")
    other = start()
    other.text_area(key="io.paste").set_value(as_json)
    other.button(key="io.import").click()
    run(other)
    assert session(other) == original


def test_bad_import_is_refused_and_the_session_kept():
    at = fused(start())
    before = session(at)
    at.text_area(key="io.paste").set_value("import os\nos.system('echo hi')\n")
    at.button(key="io.import").click()
    run(at)
    assert session(at) == before
    assert any("Import refused" in m for m in errors(at)), errors(at)


def test_a_script_cut_short_is_refused_before_it_replaces_the_session(downloads):
    at = fused(start())
    before = session(at)
    script = downloads(at, "io.download_script")
    lines = script.splitlines(keepends=True)
    head = lines.index("def apply_schedule(sch):\n") + 3  # docstring and one step
    at.text_area(key="io.paste").set_value("".join(lines[:head]))
    at.button(key="io.import").click()
    run(at)
    assert session(at) == before
    assert any("Import refused" in m and "cut short" in m for m in errors(at)), errors(at)
    fresh = start()  # only the runtime is cut: the whole schedule comes in, with a warning
    fresh.text_area(key="io.paste").set_value("".join(lines[:-1]))
    fresh.button(key="io.import").click()
    run(fresh)
    assert session(fresh).active == before.active
    assert any("runtime section is cut short" in w.value for w in fresh.warning)


# ----------------------------------------------------------------------------- shareable link

def test_link_restores_the_state():
    s = Session.new(TINY, [Step("split", {"block": "relu1", "loop": "h",
                                          "factors": [None, 2]})]).undo()
    at = with_session(s)
    restored = session(at)
    assert restored.chain == s.chain and restored.steps == s.steps and restored.cursor == 0
    assert at.number_input(key=editor_key(at, "input.h")).value == 16
    # Opening the link is a history entry: Undo goes back to the default chain, Redo to it.
    at.button(key="hist.undo").click()
    assert session(run(at)).chain["input"]["shape"] == [1, 3, 64, 64]
    at.button(key="hist.redo").click()
    assert session(run(at)) == restored
    apply(at, "parallel", block="relu1", **{"loop.relu1": "c"})
    link = at.query_params[QUERY_KEY]
    again = start({QUERY_KEY: link[0] if isinstance(link, list) else link})
    assert session(again) == session(at)


def test_bad_link_shows_an_error_and_the_default_session():
    at = start({QUERY_KEY: "not-a-session"})
    assert any("could not be restored" in m for m in errors(at)), errors(at)
    assert session(at).chain["input"]["shape"] == [1, 3, 64, 64]


def test_a_gpu_binding_is_refused_at_the_step_on_the_cpu_target():
    """The page knows the target: a bind on the CPU is refused when applied, in plain words,
    not later by the build."""
    at = start()
    apply(at, "bind", block="relu1", **{"loop.relu1": "c (10)", "thread": "threadIdx.x"})
    assert session(at).cursor == 0
    assert any("makes it a GPU loop, but the target is the CPU" in m for m in errors(at)), \
        errors(at)


def test_the_form_has_a_widget_for_every_argument_kind():
    """The form maps widget names to Streamlit calls; every kind in the catalog asks for one."""
    from playground.schedule.steps import CATALOG
    from ui.schedule_ui import _WIDGETS

    assert {a.kind.widget for p in CATALOG.values() for a in p.args} <= set(_WIDGETS)
