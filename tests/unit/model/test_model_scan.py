"""Scanning a model: the command line's table and JSON, the store's group, resuming from it,
cancelling, the exported schedules, and reading an upload in a worker."""

from __future__ import annotations

import json
import threading

import pytest
from model_graphs import conv, model, op, to_bytes

from playground.io.script_import import import_script
from playground.model import ModelError, cut_chains, load_model, read_in_worker, scan
from playground.store import get_store
from playground.templates.verdict import CALLS

pytestmark = pytest.mark.slow


def _small(cin: int = 8) -> bytes:
    """Four conv-relu pairs (8 channels; the first reads ``cin``) and a Tanh (not a chain
    layer): with 8 input channels, two identical conv-relu-conv-relu chains."""
    nodes, x = [], "x"
    for i in range(4):
        nodes += [conv(x, f"c{i}", f"w{i}", pads=[1, 1, 1, 1]), op("Relu", [f"c{i}"], f"r{i}")]
        x = f"r{i}"
    nodes.append(op("Tanh", [x], "s"))
    return to_bytes(model(nodes, shape=[1, cin, 8, 8],
                          weights={f"w{i}": [8, cin if i == 0 else 8, 3, 3] for i in range(4)}))


class _NoPool:
    """A pool that must not be used: a resumed scan runs nothing."""

    farm = None

    def run(self, *args, **kwargs):
        raise AssertionError("a resumed scan ran a job")


def test_command_line_scans_records_resumes_and_exports(tmp_path, capsys):
    from playground.__main__ import main

    path = tmp_path / "small.onnx"
    path.write_bytes(_small())
    out_dir = tmp_path / "out"
    args = ["model", str(path), "--budget-s-per-chain", "1", "--max-convs", "2", "--json"]
    assert main([*args, "-o", str(out_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped_ops"] == {"Tanh": 1}
    rows = out["chains"]
    assert [r["count"] for r in rows] == [2]
    assert rows[0]["nodes"] == ["c0", "r0", "c1", "r1"]
    assert rows[0]["occurrences"][1] == ["c2", "r2", "c3", "r3"]
    for r in rows:
        assert {"nodes", "chain", "count", "auto_ms", "valid", "correct", "verdict",
                "ratio"} <= set(r)
        assert r["valid"] and r["correct"] and r["auto_ms"] > 0
        # a measured call (CALLS: "no difference (within noise)" among them), or the plain
        # "no difference" of a chain with nothing to fuse
        assert r["verdict"] in {*CALLS.values(), "no difference"}, r["verdict"]
    assert out["total_ms"] == pytest.approx(sum(r["auto_ms"] * r["count"] for r in rows))
    # the store holds the scan as one group, one child per distinct chain
    store = get_store()
    (group,) = store.list_experiments(kind="model")
    assert group["children"] == 1
    # each chain's best schedule is a script that reads back, with an index
    index = json.loads((out_dir / "index.json").read_text())
    assert [e["file"] for e in index["chains"]] == ["chain_01.py"]
    chain, steps, _ = import_script((out_dir / "chain_01.py").read_text())
    assert chain == rows[0]["chain"] and steps
    # run again: every chain's outcome comes from the store
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in again["chains"]] == ["reused"]
    assert again["total_ms"] == pytest.approx(out["total_ms"])
    m = load_model(path)
    resumed = scan(_NoPool(), m, cut_chains(m, 2), budget_s_per_chain=1, record=False)
    assert resumed.total_ms == pytest.approx(out["total_ms"])


def test_scan_is_cancellable_with_progress(pool):
    m = load_model(_small(cin=4))
    chains = cut_chains(m, 1)  # conv 4->8, then three identical 8->8
    cancel = threading.Event()
    events = []

    def progress(event):
        events.append(event)
        cancel.set()  # after the first candidate

    result = scan(pool, m, chains, budget_s_per_chain=30, cancel=cancel, on_progress=progress,
                  resume=False)
    assert result.cancelled and result.wall_s < 30
    assert events[0]["event"] == "candidate" and events[0]["of"] == len(chains) == 2
    assert [r.status for r in result.rows] == ["cancelled", "pending"]
    (group,) = get_store().list_experiments(kind="model")
    assert group["status"] == "cancelled" and group["children"] == 0


def test_upload_is_read_in_a_worker(pool):
    m = read_in_worker(pool, _small(), name="small")
    assert m == load_model(_small(), name="small")
    with pytest.raises(ModelError, match="not an ONNX model"):
        read_in_worker(pool, b"GIF89a" + bytes(300))
    with pytest.raises(ModelError, match="above the cap"):
        read_in_worker(pool, _small(), max_bytes=100)
