"""Winograd's F(m x m, 3x3) as the ``winograd`` step: the rewritten program computes the
chain's float64 reference (any padding, batches, sizes the tiles do not divide, m = 2, 3, 4),
the step is refused in one line where it cannot apply, and it travels through sessions,
undo, exported scripts and their import like any other step."""

from __future__ import annotations

import pytest
from helpers import check_numerics

from playground.chain.compute import chain_module, winograd, winograd_convs
from playground.chain.spec import normalize_chain
from playground.chain.winograd import winograd_refusal
from playground.errors import PlaygroundError
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.schedule.replay import scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step


def _chain(shape, padding=1, channels=8, *after):
    return normalize_chain({"input": {"shape": shape},
                            "layers": [{"op": "conv2d", "channels": channels, "kernel": 3,
                                        "padding": padding}, *after]})


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("shape, padding, dilation", [
    ([1, 4, 9, 10], 1, 1), ([2, 6, 7, 5], [0, 2, 1, 0], 1), ([1, 3, 3, 3], 0, 1),
    ([1, 4, 11, 9], 2, 2), ([1, 3, 13, 8], [4, 0, 1, 3], [3, 2])])
def test_the_rewritten_program_computes_the_reference(shape, padding, dilation, m):
    chain = _chain(shape, padding, 8, {"op": "batch_norm"}, {"op": "relu"})
    chain = normalize_chain({**chain, "layers": [{**chain["layers"][0], "dilation": dilation},
                                                 *chain["layers"][1:]]})
    sch = winograd(scheduled(chain, ()), chain, "conv1", m)
    names = [b.name for b in sch.mod["main"].body.block.alloc_buffers]
    assert {"conv1_U", "conv1_V", "conv1_M", "conv1_Y"} <= set(names), names
    assert winograd_convs(sch, chain) == {"conv1": m}
    result = check_numerics(chain, sch.mod)
    assert result["correct"], result


def test_two_convs_each_take_one_and_the_step_does_not_change_what_it_was_given():
    chain = normalize_chain({"input": {"shape": [1, 4, 8, 8]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}, {"op": "relu"},
        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
        {"op": "add", "other": "data"}]})
    session = Session.new(chain, [Step("winograd", {"block": "conv2", "tile": 4}),
                                  Step("winograd", {"block": "conv1"})])
    sch = session.schedule()
    assert winograd_convs(sch, chain) == {"conv1": 2, "conv2": 4}
    assert winograd_convs(scheduled(chain, session.steps[:1]), chain) == {"conv2": 4}
    assert check_numerics(chain, sch.mod)["correct"]


def test_layers_it_cannot_compute_are_refused_with_the_reason():
    base = {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}
    assert winograd_refusal({**normalize_chain({"input": {"shape": [1, 4, 8, 8]},
                                                "layers": [base]})["layers"][0]}) is None
    for change, says in (({"kernel": 5, "padding": 2}, "5x5 kernel"),
                         ({"stride": 2}, "stride 2x2"), ({"groups": 4}, "grouped")):
        chain = _chain([1, 8, 8, 8], 1, 8)
        chain = normalize_chain({**chain, "layers": [{**base, **change}]})
        with pytest.raises(PlaygroundError, match=says) as e:
            Session.new(chain, []).apply(Step("winograd", {"block": "conv1"}))
        assert e.value.message.startswith("step 1 (winograd): conv1 ")
    chain = _chain([1, 4, 8, 8], 1, 8, {"op": "relu"})
    with pytest.raises(PlaygroundError, match="relu1 is a relu layer"):
        Session.new(chain, []).apply(Step("winograd", {"block": "relu1"}))
    with pytest.raises(PlaygroundError, match="conv1_pad is not a layer"):
        Session.new(chain, []).apply(Step("winograd", {"block": "conv1_pad"}))


def test_it_comes_before_every_other_step_and_only_once_per_conv():
    chain = _chain([1, 4, 8, 8], 1, 8, {"op": "relu"})
    s = Session.new(chain, [Step("parallel", {"block": "relu1", "loop": "c"})])
    with pytest.raises(PlaygroundError, match="must come before every other step"):
        s.apply(Step("winograd", {"block": "conv1"}))
    assert len(s.steps) == 1  # the session keeps what it had
    w = Session.new(chain, []).apply(Step("winograd", {"block": "conv1"}))
    with pytest.raises(PlaygroundError, match="already computed by Winograd F\\(2x2"):
        w.apply(Step("winograd", {"block": "conv1", "tile": 3}))
    after = w.apply(Step("parallel", {"block": "conv1_M", "loop": "e"}))
    assert "conv1_M" in after.schedule().mod.script()
    assert "conv1_M" not in after.undo().undo().schedule().mod.script()


def test_it_exports_runs_and_imports_back(tmp_path):
    import subprocess
    import sys

    chain = _chain([1, 8, 6, 6], 1, 16, {"op": "relu"})
    steps = [Step("winograd", {"block": "conv1", "tile": 2}),
             Step("parallel", {"block": "conv1_M", "loop": "e"})]
    text = export_script(chain, steps, weights="constant")
    assert '    sch = winograd(sch, CHAIN, sch.get_sblock("conv1"), tile=2)' in text
    got_chain, got_steps, _ = import_script(text)
    assert got_chain == chain and [s.to_dict() for s in got_steps] == \
        [s.to_dict() for s in Session.new(chain, steps).steps]
    path = tmp_path / "w.py"
    path.write_text(text)
    for weights in ("constant", "per-call"):
        run = subprocess.run([sys.executable, str(path), "--json", "--repeat", "2",
                              "--weights", weights], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0 and '"correct": true' in run.stdout, run.stdout + run.stderr
    bad = text.replace("winograd(sch, CHAIN, ", "winograd(sch, OTHER, ")
    with pytest.raises(PlaygroundError, match="expects winograd\\(sch, CHAIN"):
        import_script(bad)


def test_chain_module_without_winograd_is_unchanged():
    chain = _chain([1, 4, 8, 8], 1, 8)
    assert chain_module(chain).script() == chain_module(chain, {}).script()
