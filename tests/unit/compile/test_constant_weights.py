"""Constant weights: the weight re-layouts run once (``pack``), the timed kernel reads them.

Both build modes must validate (on NaN-poisoned buffers, packed ones included) on random
chains; the packed kernel must no longer copy the weights (read in its lowered TIR); and the
command line's ``auto --weights constant -o best.py`` must give a file that ``run --weights
constant`` and the script itself accept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import paths
import pytest
from fuzzing import HypothesisDraw, facts_with, random_template_chain
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground import service
from playground.chain.spec import normalize_chain
from playground.compile.constant import split_constant_weights
from playground.compile.lowering import lower
from playground.errors import PlaygroundError
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.schedule.replay import scheduled
from playground.schedule.session import Session
from playground.templates.conv import Tile
from playground.templates.plan import Group, Plan, plan_steps
from playground.templates.space import tile_candidates
from playground.templates.stages import stages
from playground.worker.result import JobResult

ROOT = paths.ROOT
CHAIN = normalize_chain({"input": {"shape": [1, 16, 8, 8]},
                         "layers": [{"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1},
                                    {"op": "bias_add"}, {"op": "relu"}]})


def _plan(weights: str, order: str = "channels") -> Plan:
    tile = Tile("k", 8, 1, 1, 8, order=order)
    return Plan((tile,), (Group(0, 0),), lanes=8, weights=weights)


def _stores(text: str, buffer: str) -> bool:
    """Whether lowered TIR ``text`` stores into ``buffer`` (or a view of it)."""
    return re.search(rf"^\s*{buffer}(_\d+)?\[[^\n]*\] = ", text, re.M) is not None


def test_the_packed_kernel_no_longer_copies_the_weights():
    per_call = plan_steps(CHAIN, _plan("per-call", order="rows")).sch.mod
    assert _stores(lower(per_call)["main"].script(), "conv1_weight_global")
    constant = plan_steps(CHAIN, _plan("constant")).sch.mod
    mod, packed = split_constant_weights(constant)
    assert packed == [("conv1_weight_global", [4, 16, 3, 3, 8], "float32")]
    lowered = lower(mod)
    main, pack = lowered["main"].script(), lowered["pack"].script()
    assert not _stores(main, "conv1_weight_global") and "conv1_weight_1" not in main
    assert "conv1_weight_global" in main  # the kernel reads the packed buffer instead
    assert _stores(pack, "conv1_weight_global")


def test_constant_weights_keep_the_copy_top_level_where_per_call_moves_it_into_the_conv():
    """With channel blocks outermost, per-call weights are copied block by block inside the
    conv's parallel loop (nothing to hoist); constant weights keep the copy whole."""
    per_call = plan_steps(CHAIN, _plan("per-call")).sch.mod
    assert split_constant_weights(per_call)[1] == []
    assert split_constant_weights(plan_steps(CHAIN, _plan("constant")).sch.mod)[1]


def test_a_schedule_without_weight_copies_builds_unchanged():
    mod = scheduled(CHAIN, ()).mod
    split, packed = split_constant_weights(mod)
    assert split is mod and packed == []


def test_weight_modes_travel_through_export_and_import():
    steps = plan_steps(CHAIN, _plan("constant")).steps
    text = export_script(CHAIN, steps, weights="constant")
    assert "WEIGHTS = 'constant'" in text
    assert import_script(text)[2]["weights"] == "constant"
    assert import_script(export_script(CHAIN, steps))[2]["weights"] == "per-call"
    with pytest.raises(PlaygroundError, match="weights must be one of"):
        export_script(CHAIN, steps, weights="folded")
    with pytest.raises(PlaygroundError, match="WEIGHTS must be 'per-call' or 'constant'"):
        import_script(text.replace("WEIGHTS = 'constant'", "WEIGHTS = 'folded'"))


def test_an_unknown_weight_mode_is_refused_before_any_job():
    with pytest.raises(PlaygroundError, match="weights must be one of per-call, constant"):
        service.run(None, Session.new(CHAIN, ()), weights="folded")


@settings(max_examples=examples(5, 100), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_both_weight_modes_validate_on_random_chains(pool, data):
    d = HypothesisDraw(data)
    chain = random_template_chain(d)
    facts = facts_with(d.choice((256, 512)))
    tiles = [d.choice(c) if (c := tile_candidates(s, facts)) else None for s in stages(chain)]
    groups = tuple(Group(i, i) for i in range(len(tiles)))
    for weights in ("per-call", "constant"):
        plan = Plan(tuple(tiles), groups, lanes=facts.lanes(), weights=weights)
        r = plan_steps(chain, plan)
        result = pool.run("run", {"chain": r.chain, "steps": [s.to_dict() for s in r.steps],
                                  "target": "cpu", "measure": False, "weights": weights},
                          timeout_s=300)
        assert result.status == "ok" and result.value["correct"], (chain, plan, result.message)
        assert result.value["weights"] == weights


@pytest.mark.slow
def test_auto_with_constant_weights_then_run_and_the_script(tmp_path):
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(CHAIN))
    best = tmp_path / "best.py"
    cli = [sys.executable, "-m", "playground"]
    auto = subprocess.run([*cli, "auto", str(chain), "--weights", "constant", "--budget-s", "4",
                           "--json", "-o", str(best)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert auto.returncode == 0, auto.stderr[-2000:]
    found = json.loads(auto.stdout)
    assert found["weights"] == "constant" and found["params"]["weights"] == "constant"
    run = subprocess.run([*cli, "run", str(best), "--weights", "constant", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    data = json.loads(run.stdout)
    assert data["correct"] and data["weights"] == "constant" and data["median_ms"] > 0
    script = subprocess.run([sys.executable, str(best), "--json", "--repeat", "2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert script.returncode == 0, script.stdout[-2000:] + script.stderr[-2000:]
    data = json.loads(script.stdout)
    assert data["correct"] and data["weights"] == "constant"  # the file's WEIGHTS


def test_the_page_measures_with_the_constant_weights_toggle_and_says_so(monkeypatch,
                                                                        close_page_pool):
    from page import run as run_page
    from page import start

    asked = []

    def fake_run(pool, session, target="cpu", *, weights="per-call", **kw):
        asked.append(weights)
        timing = {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "p10_ms": 1.0,
                  "p90_ms": 1.0, "spread": 0.0, "repeats": 10, "number": 5,
                  "samples_ms": [1.0] * 10}
        return JobResult("ok", {"valid": True, "correct": True, "median_ms": 1.0,
                                "gflops": 1.0, "timing": timing, "weights": weights,
                                "packed": ["conv1_weight_global"] if weights == "constant"
                                else []})

    monkeypatch.setattr(service, "run", fake_run)
    at = start()
    at.button(key="measure.run").click()
    run_page(at)
    assert any("weights re-laid out on every call" in c.value for c in at.caption)
    at.toggle(key="measure.constant_weights").set_value(True)
    at.button(key="measure.run").click()
    run_page(at)
    assert asked == ["per-call", "constant"]
    assert any("constant weights (1 buffer(s) packed once" in c.value for c in at.caption)
    assert [r["weights"] for r in at.session_state["ui"].measurements] == ["per-call",
                                                                           "constant"]


def test_a_recorded_run_says_which_weights_its_time_was_taken_with(tmp_path, monkeypatch,
                                                                  capsys):
    from playground.__main__ import main

    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path / "data"))
    script = tmp_path / "best.py"
    script.write_text(export_script(CHAIN, plan_steps(CHAIN, _plan("constant")).steps,
                                    weights="constant"))
    asked = []

    def fake_run(pool, session, target="cpu", *, weights="per-call", **kw):
        asked.append(weights)
        return JobResult("ok", {"correct": True, "median_ms": 0.5, "weights": weights})

    monkeypatch.setattr(service, "run", fake_run)
    assert main(["run", str(script), "--record", "--json"]) == 0  # the file's WEIGHTS
    out = json.loads(capsys.readouterr().out)
    assert asked == ["constant"] and out["weights"] == "constant"
    assert main(["experiments", "show", str(out["experiment"])]) == 0
    assert "0.5" in (shown := capsys.readouterr().out) and "(constant weights)" in shown


def test_fusion_on_the_command_line_takes_the_weights_mode(tmp_path, monkeypatch, capsys):
    """``fusion --weights constant`` searches and times in that mode and says so."""
    import contextlib

    from playground.__main__ import main
    from playground.templates import verdict as verdict_module
    from playground.templates.verdict import Verdict
    from playground.worker import pool as pool_module

    asked = {}

    def fake_verdict(pool, chain, facts, *, budget_s, weights="per-call", **kw):
        asked["weights"] = weights
        return Verdict("no difference", None, None, None, "nothing to fuse", [], None, None,
                       None)

    monkeypatch.setattr(verdict_module, "fusion_verdict", fake_verdict)
    monkeypatch.setattr(pool_module, "WorkerPool", lambda size: contextlib.nullcontext())
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(CHAIN))
    main(["fusion", str(chain), "--weights", "constant", "--json"])
    assert asked == {"weights": "constant"}
    assert json.loads(capsys.readouterr().out)["weights"] == "constant"


def test_a_weight_copy_into_local_memory_stays_in_the_kernel():
    """Only global buffers become ``pack``'s outputs: a copy a user put in ``local`` scope is
    left where it is (per call) and the module builds unchanged."""
    from playground.templates.recorder import Recorder

    r = Recorder(CHAIN)
    r("cache_read", "conv1", read_buffer_index=r.reads("conv1").index("conv1_weight"),
      storage_scope="local")
    mod = r.sch.mod
    split, packed = split_constant_weights(mod)
    assert split is mod and packed == []
