"""The Model tab, driven with AppTest: an example opens with its drawing, chain table and
totals; bad uploads get one line beside the uploader; a chain opens in the playground as a
history entry that Undo reverses; "Scan all" runs in the background with progress and
Cancel, and its times fill the table and the chart.

The fast tests patch the expensive backend: the page's worker pools run the ``model_open``
job in this process (the real job function) and nothing else, and the scan is a stand-in
that reports progress and times each chain by its FLOPs (the real scan, its resume and its
cancel are tested in test_model_scan.py). The slow test reads and cuts models in a real
worker, within its limits.
"""

from __future__ import annotations

import json
import time

import paths
import pytest
from helpers import shown
from streamlit.testing.v1 import AppTest

import playground.model as model_api
from playground.errors import PlaygroundError
from playground.jobs.onnx_upload import model_open_job
from playground.model import ChainResult, ScanResult, left_out
from playground.worker.result import JobResult
from ui import state
from ui.model_ui import UPLOAD_MB, parse_shape

APP = paths.APP


class InProcessPools:
    """The page's pools for these tests: ``model_open`` runs here; other jobs are refused
    (the Playground's IR panel then says so, which these tests do not read)."""

    def __init__(self) -> None:
        self.jobs: list[str] = []

    def run(self, job: str, payload: dict | None = None, **options) -> JobResult:
        self.jobs.append(job)
        if job == "model_open":
            return JobResult("ok", model_open_job(payload))
        return JobResult("error", None, f"no {job} worker in this test")


@pytest.fixture
def pools(monkeypatch) -> InProcessPools:
    fake = InProcessPools()
    monkeypatch.setattr(state, "get_pool", lambda: fake)
    return fake


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def model_tab() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["page"] = "Model"  # tabs are lazy: open this one
    return run(at)


def open_example(name: str) -> AppTest:
    at = model_tab()
    at.selectbox(key="model.example").set_value(name)
    at.button(key="model.example.open").click()
    return run(at)


def library_cut(example: str) -> list:
    from playground.model import cut_chains, load_model
    from playground.model.examples import example_bytes

    return cut_chains(load_model(example_bytes(example)))


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def figure(at: AppTest, key: str) -> dict:
    """The plotly figure of ``st.plotly_chart(key=key)``, as its JSON."""
    charts = [e for e in at.get("plotly_chart")
              if getattr(e.proto, "id", "").endswith(key) or key in e.proto.id]
    assert charts, f"no chart {key}"
    return json.loads(charts[0].proto.spec)


def chain_table(at: AppTest):
    return next(d.value for d in at.dataframe if "MFLOP" in d.value.columns)


def test_an_example_opens_with_its_drawing_chains_and_what_was_left_out(pools):
    at = open_example("resnet18")
    assert pools.jobs == ["model_open"]
    opened = at.session_state["model._opened"]["opened"]
    table = chain_table(at)
    want = library_cut("resnet18")  # what the library cuts, shown as it is
    assert opened.chains == tuple(want) and len(table) == len(want) > 10
    assert table["count"].sum() == opened.occurrences == sum(c.count for c in want)
    assert list(table["chain"]) == [c.describe() for c in want]
    assert table["chain"][1].startswith("[1, 64, 56, 56] conv3x3/1 64 + bn, relu")
    assert table["count"][1] == 2  # the first stage's two identical blocks, counted once
    assert metric(at, "conv + pool GFLOP") == f"{opened.model.flop / 1e9:,.2f}"
    assert metric(at, "chains") == f"{len(want)} distinct"
    left = next(c.value for c in at.caption if "Left out" in c.value)
    assert "`Gemm` ×1" in left and "Chains cover 100.0%" in left
    drawing = figure(at, "model.drawing")
    markers = [t for t in drawing["data"] if t.get("mode") == "markers"]
    assert sum(len(t["x"]) for t in markers) == len(opened.model.nodes)
    assert {t["name"] for t in markers} == {f"chain {i + 1} ×{c.count}"
                                            for i, c in enumerate(opened.chains)} | {"left out"}
    # A numbered box per occurrence (two where it wraps onto the next band).
    labels = [a["text"] for a in drawing["layout"]["annotations"]]
    assert len(drawing["layout"]["shapes"]) == len(labels) >= 12
    assert sorted(set(labels), key=int) == [str(i + 1) for i in range(len(want))]
    # Nothing scanned yet: no columns for times, no chart of them.
    assert "time (ms)" not in table.columns and "verdict" not in table.columns
    assert not [e for e in at.get("plotly_chart") if "model.time" in e.proto.id]


def test_the_cut_follows_max_convs_and_opening_again_reads_nothing(pools):
    at = open_example("yolo_tiny")
    assert len(chain_table(at)) == 6
    at.number_input(key="model.max_convs").set_value(1)
    run(at)
    opened = at.session_state["model._opened"]["opened"]
    assert all(c.windows == 1 for c in opened.chains)  # one conv or pool per chain...
    assert len(chain_table(at)) == len(opened.chains) > 6
    run(at)
    assert pools.jobs == ["model_open", "model_open"]  # ...read once per setting


@pytest.mark.parametrize("content", [b"\x08\x07\x12\x04abc", b"hello, I am not a model"])
def test_a_bad_upload_gets_one_line_beside_the_uploader(pools, content):
    at = open_example("yolo_tiny")
    at.file_uploader(key="model.upload").upload("evil.onnx", content)
    run(at)
    (error,) = at.error
    assert shown(error.value) == ("evil.onnx: not an ONNX model: the file does not parse as "
                                  "one (truncated, or another format)")
    # The model open before stays open.
    assert at.session_state["model._opened"]["opened"].model.name == "yolo_tiny"
    run(at)
    assert pools.jobs.count("model_open") == 2  # the refused file is not read again


def test_an_upload_above_the_cap_is_refused_before_any_worker_reads_it(pools, monkeypatch):
    from ui import model_ui

    monkeypatch.setattr(model_ui, "MAX_BYTES", 1000)
    at = model_tab()
    at.file_uploader(key="model.upload").upload("big.onnx", b"\0" * 1001)
    run(at)
    assert "above the 64 MB cap" in shown(at.error[0].value) and UPLOAD_MB == 64
    assert pools.jobs == []


def test_an_input_shape_that_does_not_read_gets_one_line():
    assert parse_shape("1, 3, 224x224") == (1, 3, 224, 224)
    assert parse_shape(" ") is None
    for bad in ("1,3,224", "1,3,-2,4", "a,b,c,d"):
        with pytest.raises(PlaygroundError, match="N, C, H, W"):
            parse_shape(bad)


def test_a_chain_opens_in_the_playground_and_undo_brings_the_session_back(pools):
    at = open_example("yolo_tiny")
    before = at.session_state["session"]
    opened = at.session_state["model._opened"]["opened"]
    at.selectbox(key="model.open.pick").select_index(5)
    at.button(key="model.open").click()
    run(at)
    session = at.session_state["session"]
    assert session.chain == opened.chains[5].chain and session.cursor == 0
    assert at.session_state["page"] == "Playground"
    (said,) = [shown(s.value) for s in at.success]
    assert said.startswith("Opened chain 6 of yolo_tiny ([1, 512, 13, 13] conv1x1/1 255 + bias; "
                           "its nodes conv10)")
    assert "Undo brings back the session it replaced" in said
    at.button(key="hist.undo").click()
    run(at)
    assert at.session_state["session"] == before


def fake_scan(pool, model, chains, facts=None, *, budget_s_per_chain, cancel=None,
              on_progress=None, source="", **options) -> ScanResult:
    """The scan's contract without the search: each chain timed at 1 ms per GFLOP, its
    unfused schedule 1.5x slower; progress after a candidate and a chain; stops on cancel."""
    rows = [ChainResult(c) for c in chains]
    result = ScanResult(model.name, rows, left_out(model, chains), budget_s_per_chain,
                        model.flop)
    for i, (c, row) in enumerate(zip(chains, rows, strict=True)):
        on_progress({"event": "candidate", "index": i, "of": len(rows), "label": "tiles 8",
                     "status": "ok", "median_ms": 0.5})
        if cancel.wait(fake_scan.pause_s):
            row.status, result.cancelled = "cancelled", True
            break
        row.auto_ms = row.fused_ms = c.flop / 1e9
        row.unfused_ms, row.ratio, row.verdict = 1.5 * row.auto_ms, 1.5, "fuse"
        row.valid = row.correct = True
        row.steps = list(PARALLEL)
        row.status = "done"
        on_progress({"event": "chain", "index": i, "of": len(rows), "row": row,
                     "reused": False})
    return result


fake_scan.pause_s = 0.0
#: The best schedule the stand-in finds for every chain: one step.
PARALLEL = [{"primitive": "parallel", "args": {"block": "conv1", "loop": "k"}}]


def opened_flop(at: AppTest, index: int) -> float:
    return at.session_state["model._opened"]["opened"].chains[index].flop


def wait_done(at: AppTest, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = at.session_state["tasks"].get("scan")
        if task is not None and task.done:
            return task
        time.sleep(0.05)
    raise AssertionError("the scan did not finish")


def test_scan_all_fills_the_table_the_totals_and_the_time_chart(pools, monkeypatch):
    monkeypatch.setattr(model_api, "scan", fake_scan)
    at = open_example("resnet18")
    at.button(key="model.scan.run").click()
    run(at)
    task = wait_done(at)
    assert not task.error, task.error
    n = len(at.session_state["model._opened"]["opened"].chains)
    assert task.text == f"chain {n}/{n} done: {opened_flop(at, n - 1) / 1e9:.3f} ms"
    run(at)
    opened = at.session_state["model._opened"]["opened"]
    table = chain_table(at)
    assert list(table["time (ms)"]) == [round(c.flop / 1e9, 4) for c in opened.chains]
    assert set(table["verdict"]) == {"fuse"} and set(table["scan"]) == {"done"}
    best = sum(c.flop / 1e9 * c.count for c in opened.chains)
    assert metric(at, "network, best schedules") == f"{best:.2f} ms"
    assert metric(at, "network, unfused") == f"{1.5 * best:.2f} ms"
    assert metric(at, "fusion saves") == "33%"
    chart = figure(at, "model.time")
    assert len(chart["data"]) == len(opened.chains)  # a segment per chain in each bar
    assert sum(t["x"][0] for t in chart["data"]) == pytest.approx(best)
    assert any(f"Scanned: {n} of {n} chains" in m.value for m in at.markdown)

    # A scanned chain opens with its best schedule, one history entry Undo reverses.
    at.selectbox(key="model.open.pick").select_index(2)
    at.button(key="model.open").click()
    run(at)
    session = at.session_state["session"]
    assert session.chain == opened.chains[2].chain
    assert [s.to_dict() for s in session.active] == PARALLEL
    assert "with the scan's best schedule (1 step)" in shown(at.success[0].value)


def test_a_cancelled_scan_keeps_what_it_finished(pools, monkeypatch):
    monkeypatch.setattr(model_api, "scan", fake_scan)
    monkeypatch.setattr(fake_scan, "pause_s", 10.0)
    at = open_example("yolo_tiny")
    at.button(key="model.scan.run").click()
    run(at)
    assert at.button(key="model.scan.run").disabled  # no second scan while one runs
    cancel = at.button(key="fusion.cancel.scan")  # beside the button, while it runs
    cancel.click()
    run(at)
    task = wait_done(at, 5)
    assert task.result.cancelled
    run(at)
    assert any("Cancelled: 0 of 6 chains" in m.value for m in at.markdown)
    table = chain_table(at)
    assert table["scan"][0] == "cancelled" and table["time (ms)"].isna().all()


@pytest.mark.slow
def test_a_model_is_read_and_cut_in_a_worker_within_its_limits(pool):
    """The page's path through a real worker: an example opens; a truncated file and a read
    past its time limit each end as one line; 8,000 Relus in a row (whose cut once took
    minutes) open in seconds."""
    from onnx import TensorProto, helper

    from playground.model import ModelError
    from playground.model.examples import example_bytes
    from playground.model.opened import open_in_worker

    opened = open_in_worker(pool, example="mobilenet_v2")
    assert sum(c.count for c in opened.chains) == opened.occurrences
    assert opened.chains_flop == pytest.approx(opened.model.flop)
    with pytest.raises(ModelError, match=r"^not an ONNX model: the file does not parse"):
        open_in_worker(pool, example_bytes("resnet18")[:-100])

    def relus(n: int) -> bytes:
        graph = helper.make_graph(
            [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)], "relus",
            [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 3, 8, 8])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]) \
            .SerializeToString()

    opened = open_in_worker(pool, relus(8000), timeout_s=60)
    assert sum(c.count for c in opened.chains) == 8000 // 32  # 32 layers a chain at most
    with pytest.raises(ModelError, match=r"^the model could not be read \(timeout\)"):
        open_in_worker(pool, relus(60000), timeout_s=0.5)
