"""The tile-local step (playground/compile/tile_local.py): which predicates it drops and why the
others stay, tile-sized allocations in the lowered TIR, and randomized proof that fused chains
stay correct with it (validated in the worker on NaN-poisoned buffers, two input seeds).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tvm
from helpers import (
    CONV_RELU_CONV,
    cuda_fused_with_conv1_input_in_shared_memory,
    examples,
    fuse_two_convs,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from playground import service
from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain, tensor_shapes
from playground.compile import tile_local
from playground.compile.lowering import compile_module, lower
from playground.compile.poison import compile_validation
from playground.compile.targets import resolve
from playground.errors import PlaygroundError
from playground.schedule.replay import blocks, scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step

pytestmark = pytest.mark.slow

#: conv1 -> relu1 -> conv2 with a residual add of the chain's input after conv1.
RESIDUAL = {"input": {"shape": [1, 4, 12, 12]},
            "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                       {"op": "add", "other": "data"}, {"op": "relu"},
                       {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}]}


def _decisions(chain: dict, steps, target: str = "cpu") -> dict[str, str]:
    text = str(lower(scheduled(normalize_chain(chain), tuple(steps)).mod, target)["main"]
               .attrs[tile_local.TILE_LOCAL_ATTR])
    out = {}
    for part in text.split("; "):
        name, _, said = part.partition(": ")
        out[name] = said
    return out


def _allocations(mod: tvm.IRModule) -> dict[str, int]:
    """Elements of every buffer allocated in the lowered module, by name."""
    return _allocations_in(mod.script())


def test_fused_producers_lose_predicates_and_shrink_to_the_tile():
    chain = normalize_chain(CONV_RELU_CONV)  # 8 x 16 x 16, fused at 8 x 8 tiles
    said = _decisions(chain, fuse_two_convs(8))
    assert all(said[b].startswith("predicate dropped") for b in ("conv1_pad", "conv1", "relu1"))
    mod = scheduled(chain, tuple(fuse_two_convs(8))).mod
    on, off = _allocations(lower(mod, "cpu")), _allocations(lower(mod, "cpu", tile_local=False))
    assert on["conv1_pad"] == 8 * 12 * 12 and on["conv1"] == 8 * 10 * 10
    assert off["conv1_pad"] == 8 * 18 * 18 and off["conv1"] == 8 * 16 * 16


def test_the_output_and_a_residual_read_keep_their_predicates():
    chain = normalize_chain(RESIDUAL)
    said = _decisions(chain, [s for s in fuse_two_convs(5) if s.primitive != "compute_at"] + [
        Step("compute_at", {"block": b, "target_block": "conv2", "target_loop": "w_0"})
        for b in ("conv2_pad", "relu1", "add1", "conv1", "conv1_pad")])
    assert "reads data unguarded outside its bounds" in said["add1"]
    assert "writes conv2, which is not allocated under a loop" in said["conv2"]
    assert said["conv1"].startswith("predicate dropped")


@pytest.mark.parametrize("tile_local_on", [True, False])
def test_fused_two_convs_validate_with_and_without_the_step(pool, tile_local_on):
    session = Session.new(CONV_RELU_CONV, fuse_two_convs(5))
    result = service.run(pool, session, "cpu", measure=False, tile_local=tile_local_on)
    assert result.status == "ok" and result.value["correct"], result


@pytest.mark.parametrize("factors", [[None, 2, 2], [None, 2]])
def test_a_split_guard_joined_to_the_border_stays(pool, factors):
    """Found by the deep schedule fuzz: the halo preset with its conv1 initialization's image
    loop (extent 1) split. The split guards that loop in every block under it; the
    write-back, whose image index is the constant 0, ran again for every extra round once the
    step dropped the guard with the border: a wrong result. Now only the border's terms go; a
    guard the iteration domain does not imply stays. The split by 2 alone (a later fuzz run)
    names its loops ``ax0_0`` and ``ax0_1``, as the write-back names its own vector loops: the
    step tells loops apart by identity, not by name."""
    from playground.io.presets import load_preset

    chain, steps, _ = load_preset("conv_relu_conv_halo")
    steps = [*steps, Step("split", {"block": "conv1_init", "loop": "ax0", "factors": factors})]
    said = str(lower(scheduled(chain, tuple(steps)).mod, "cpu")["main"]
               .attrs[tile_local.TILE_LOCAL_ATTR])
    assert "conv1_local: predicate dropped but for terms over the tile's own loops" in said, said
    result = service.run(pool, Session.new(chain, steps), "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result


@tvm.transform.module_pass(opt_level=0, name="test.DropLastRow")
def _drop_last_row(mod, ctx):
    """The conv1_pad tile's last row left unwritten, as a buffer one row too short leaves it:
    the producer loop over the tile's rows (the outer one of extent 12) runs one row fewer."""
    done = []

    def visit(stmt):
        if isinstance(stmt, tvm.tirx.SeqStmt):
            return tvm.tirx.SeqStmt([visit(s) for s in stmt.seq])
        if isinstance(stmt, tvm.tirx.For):
            extent = stmt.extent
            if not done and "conv1_pad" in stmt.script() and "conv1\"" not in stmt.script() \
                    and isinstance(extent, tvm.tirx.IntImm) and int(extent) == 12:
                extent = tvm.tirx.const(11, str(extent.ty))
                done.append(stmt.loop_var.name)
            body = visit(stmt.body)
            return tvm.tirx.For(stmt.loop_var, stmt.min, extent, stmt.kind, body,
                                stmt.thread_binding, stmt.annotations)
        if isinstance(stmt, tvm.s_tir.SBlockRealize):
            b = stmt.block
            block = tvm.s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint, visit(b.body),
                                     b.init, b.alloc_buffers, b.match_buffers, b.annotations)
            return tvm.s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, block)
        return stmt

    func = mod["main"]
    body = visit(func.body)
    assert done, "no conv1_pad row loop of extent 12"
    return tvm.IRModule({"main": func.with_body(body)})


def test_a_tile_one_row_short_is_caught_by_poisoned_validation():
    tvm.tirx.register_tir_pipeline("test_one_row_short", lambda: (
        tvm.transform.Sequential([tile_local.tile_local, _drop_last_row,
                                  tvm.tirx.get_tir_pipeline("s_tir")[0]]),
        *tvm.tirx.get_tir_pipeline("s_tir")[1:]))
    chain = normalize_chain(CONV_RELU_CONV)
    mod = scheduled(chain, tuple(fuse_two_convs(8))).mod
    inputs = make_inputs(chain, 0)
    expected = reference_output(chain, inputs)
    dev = tvm.cpu()

    def run(ex) -> dict:
        args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
        out = tvm.runtime.tensor(np.full(expected.shape, np.nan, "float32"), dev)
        ex["main"](*args, out)
        return compare(out.numpy(), expected, "float32")

    assert run(compile_module(mod, "cpu", validation=True))["correct"]
    assert not run(compile_validation(mod, resolve("cpu"), "test_one_row_short"))["correct"]


# ----------------------------------------------------------------------------- randomized

#: ``PLAYGROUND_TILE_LOCAL_EXAMPLES=200`` (or ``PLAYGROUND_FUZZ=deep``) scales the randomized
#: test up (a longer proof run).
CASES = settings(max_examples=int(os.environ.get("PLAYGROUND_TILE_LOCAL_EXAMPLES",
                                                 examples(10, 200))),
                 derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck), print_blob=True)


def _conv(draw, channels_in: int, last: bool = False) -> dict:
    k = draw(st.sampled_from((1, 3, 3)))
    dilation = draw(st.sampled_from((1, 1, 2))) if k > 1 else 1
    layer = {"op": "conv2d", "channels": draw(st.sampled_from((2, 4))), "kernel": k,
             "stride": 1 if last else draw(st.sampled_from((1, 1, 2))), "dilation": dilation,
             "padding": draw(st.sampled_from((0, (k // 2) * dilation, (k // 2) * dilation)))}
    groups = draw(st.sampled_from(("dense", "dense", "grouped", "depthwise")))
    if groups == "depthwise":
        layer.update(groups=channels_in, channels=channels_in)
    elif groups == "grouped" and channels_in % 2 == 0:
        layer.update(groups=2, channels=4)
    return layer


@st.composite
def fused_chains(draw) -> dict:
    """conv [bn] relu [pool] conv, small: 2-4 channels, 8-14 pixels a side."""
    c = draw(st.sampled_from((2, 4)))
    h = draw(st.integers(8, 14))
    layers = [_conv(draw, c)]
    if draw(st.booleans()):
        layers.append({"op": "batch_norm"})
    layers.append({"op": "relu"})
    if draw(st.integers(0, 3)) == 0:
        k = draw(st.sampled_from((2, 3)))
        layers.append({"op": draw(st.sampled_from(("max_pool2d", "avg_pool2d"))), "kernel": k,
                       "stride": draw(st.sampled_from((1, 2))),
                       "padding": draw(st.sampled_from((0, k // 2)))})
    try:
        chain = normalize_chain({"input": {"shape": [1, c, h, h]}, "layers": layers})
        mid = tensor_shapes(chain)[chain["layers"][-1]["name"]][1]
        return normalize_chain({"input": {"shape": [1, c, h, h]},
                                "layers": [*layers, _conv(draw, mid, last=True)]})
    except PlaygroundError:  # a window larger than its input: not a chain
        assume(False)


def _fusion_steps(chain: dict, rows: int, cols: int | None, vectorize: bool) -> list[Step]:
    """Tile the last conv's output (rows x cols, or rows only) and compute every earlier
    block (batch-norm parameter folds aside) at the tile loop; optionally vectorize the
    innermost loop of the elementwise producers."""
    last = chain["layers"][-1]["name"]
    steps = [Step("split", {"block": last, "loop": "h", "factors": [None, rows]})]
    if cols is None:
        steps.append(Step("reorder", {"block": last, "loops": ["h_0", "k"]}))
        at = "h_0"
    else:
        steps += [Step("split", {"block": last, "loop": "w", "factors": [None, cols]}),
                  Step("reorder", {"block": last,
                                   "loops": ["n", "h_0", "w_0", "k", "h_1", "w_1"]})]
        at = "w_0"
    names = []
    for layer in chain["layers"]:
        if layer["op"] in ("conv2d", "max_pool2d", "avg_pool2d") and any(layer["padding"]):
            names.append(layer["name"] + "_pad")
        names.append(layer["name"])
    steps += [Step("compute_at", {"block": b, "target_block": last, "target_loop": at})
              for b in reversed(names[:-1])]
    if vectorize:
        session = Session.new(chain, steps)
        for info in blocks(session.schedule()):
            if info.name in names[:-1] and not info.is_reduction and info.loops:
                steps.append(Step("vectorize", {"block": info.name,
                                                "loop": info.loops[-1].name}))
    return steps


@CASES
@given(chain=fused_chains(), data=st.data())
def test_random_fused_chains_stay_correct_with_the_step(pool, chain, data):
    out_h = tensor_shapes(chain)[chain["layers"][-1]["name"]][2]
    rows = data.draw(st.integers(1, out_h), label="rows")
    cols = data.draw(st.one_of(st.none(), st.integers(1, out_h)), label="cols")
    steps = _fusion_steps(chain, rows, cols, data.draw(st.booleans(), label="vectorize"))
    try:
        session = Session.new(chain, steps)
    except PlaygroundError as e:  # a vectorize TVM refuses: drop those steps
        steps = [s for s in steps if s.primitive != "vectorize"]
        session = Session.new(chain, steps)
        assert steps, e.message
    result = service.run(pool, session, "cpu", measure=False, tile_local=True)
    assert result.status == "ok", (result.status, result.message)
    assert result.value["correct"], result.value.get("message")
    if os.environ.get("PLAYGROUND_TILE_LOCAL_LOG"):  # which predicates went, for the notes
        said = pool.run("lower", service.payload(session, "cpu")).value["tile_local"]
        with open(os.environ["PLAYGROUND_TILE_LOCAL_LOG"], "a") as log:
            log.write(f"{rows}x{cols} {[ly['op'] for ly in chain['layers']]}: {said}\n")


def test_cli_lowers_the_halo_preset_with_tile_sized_intermediates(capsys):
    from playground.__main__ import main

    sizes = {}
    for flag in ([], ["--no-tile-local"]):
        assert main(["lower", "schedules/conv_relu_conv_halo.py", *flag]) == 0
        sizes[bool(flag)] = _allocations_in(capsys.readouterr().out)
    full = {"conv1_pad": 64 * 58 * 58, "relu1": 64 * 56 * 56}
    assert {k: sizes[True][k] for k in full} == full  # TVM's default: whole images
    for name, whole in full.items():  # 14x14 tiles: 18x18 and 16x16 of the image
        assert sizes[False][name] < whole / 4, (name, sizes[False][name])
    # the fused kernel's workspace per parallel iteration (one tile) shrinks at least 10x
    assert sum(full.values()) >= 10 * sum(sizes[False][k] for k in full), sizes[False]


def _allocations_in(text: str) -> dict[str, int]:
    """Floats allocated per buffer (a vector dtype such as float32x16 counts its lanes)."""
    return {name: int(n) * int(lanes or 1) for name, n, lanes in re.findall(
        r"(\w+) = T\.alloc_(?:buffer|local)\(\((\d+),\)(?:, \"float32x(\d+)\")?", text)}


def test_max_pool_padding_with_minus_infinity_is_dropped_and_stays_correct(pool):
    # -inf padding never reaches the output either: in-image results read in-image values
    chain = normalize_chain({"input": {"shape": [1, 4, 12, 12]}, "layers": [
        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}, {"op": "relu"},
        {"op": "max_pool2d", "kernel": 3, "stride": 1, "padding": 1},
        {"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}]})
    steps = _fusion_steps(chain, 5, 5, vectorize=True)
    said = _decisions(chain, steps)
    assert said["maxpool1_pad"].startswith("predicate dropped")
    assert said["maxpool1"].startswith("predicate dropped")
    result = service.run(pool, Session.new(chain, steps), "cpu", measure=False)
    assert result.status == "ok" and result.value["correct"], result


# ----------------------------------------------------------------------------- CUDA

@pytest.mark.parametrize("staged", [False, True], ids=["preset", "conv1_input_staged"])
def test_cuda_fused_convs_fit_a_thread_block_and_match_on_cpu_emulation(staged):
    from playground.compile.gpu import serialize_threads
    from playground.compile.lowering import generated_code
    from playground.errors import BuildError
    from playground.io.presets import load_preset

    chain, steps = (cuda_fused_with_conv1_input_in_shared_memory() if staged
                    else load_preset("cuda_fused_two_conv")[:2])
    mod = scheduled(chain, tuple(steps)).mod
    source = generated_code(compile_module(mod, "cuda"), "cuda", "cuda")
    threads = {int(n) for n in re.findall(r"__launch_bounds__\((\d+)\)", source)}
    shared = sum(int(n) * 4 for n in re.findall(r"__shared__ alignas\(\d+\) float \w+\[(\d+)\]",
                                                source))
    assert threads == {256} and max(threads) <= 1024
    assert 0 < shared <= 48 * 1024, shared
    if staged:  # relu(conv1) with halo and conv1's input with halo, both per block
        assert shared == 64 * 8 * 12 * 4 + 64 * 6 * 10 * 4
        with pytest.raises(BuildError, match="bytes of shared memory"):
            compile_module(mod, "cuda", tile_local=False)  # TVM alone keeps a whole image
    emulated = compile_module(serialize_threads(mod), "cpu", validation=True)
    inputs = make_inputs(chain, 0)
    expected = reference_output(chain, inputs)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, "float32"), dev)
    emulated["main"](*args, out)
    result = compare(out.numpy(), expected, "float32")
    assert result["correct"], result["message"]


def test_an_exported_script_builds_with_and_without_the_step(tmp_path):
    """Scripts embed the step (tvm + numpy only): both builds validate on poisoned buffers."""
    import json
    import subprocess
    import sys

    from playground.io.export import export_script

    path = tmp_path / "fused.py"
    path.write_text(export_script(CONV_RELU_CONV, fuse_two_convs(5)))
    assert "TILE_LOCAL_PIPELINE" in path.read_text()
    for flag in ([], ["--no-tile-local"]):
        proc = subprocess.run([sys.executable, str(path), "--json", "--repeat", "1", *flag],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "correct"
