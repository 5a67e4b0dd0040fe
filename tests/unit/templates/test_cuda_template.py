"""The CUDA fusion template: conv -> elementwise ops -> conv in one kernel, the intermediate in
shared memory per thread block.

No GPU here: each kernel is lowered and generated for CUDA, its threads per block and static
shared memory are read from the built module (the lowered kernel, the CUDA source and, where
nvcc is installed, ptxas) against CUDA's limits, and its arithmetic is checked on the CPU by
running its thread loops one after the other (:func:`playground.compile.gpu.serialize_threads`)
against the float64 reference, NaN-poisoned, on two seeds. Timing is for a GPU.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import paths
import pytest
import tvm
from fuzzing import HypothesisDraw, random_cuda_pair_chain
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.chain.spec import normalize_chain
from playground.compile.check import check
from playground.compile.gpu import (
    MAX_SHARED_BYTES,
    MAX_THREADS_PER_BLOCK,
    check_cuda_schedule,
    kernel_resources,
    serialize_threads,
)
from playground.compile.lowering import compile_module, generated_code, lower
from playground.compile.tile_local import TILE_LOCAL_ATTR
from playground.io.script_import import import_script
from playground.schedule.session import Session
from playground.templates.cuda import (
    TemplateRefusal,
    cuda_fusion_plan,
    cuda_fusion_plans,
    cuda_fusion_steps,
    fusion_pair,
)

ROOT = paths.ROOT
HAS_GPU = bool(tvm.cuda(0).exist)
LAUNCH = re.compile(r'__global__ void __launch_bounds__\((\d+)\) (\w+)\(')
SHARED = re.compile(r"__shared__ (?:alignas\(\d+\) )?(\w+) (\w+)\[(\d+)\];")
BYTES = {"float": 4, "half": 2}

#: conv1 -> relu -> conv2 of the preset cuda_fused_two_conv (64 channels, 56x56).
PRESET = {"input": {"shape": [1, 64, 56, 56]},
          "layers": [{"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
                     {"op": "relu"},
                     {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1}]}
#: name -> (chain, tile rows x cols or None for the model's best).
FIXED = {
    # the model's best on the preset's chain: 3-row tiles, which do not divide 56 rows
    "preset_chain": (PRESET, None),
    # 5x5 tiles on a 28x28 output: the last row and column of tiles are guarded
    "non_dividing_tile": ({"input": {"shape": [1, 32, 28, 28]}, "layers": [
        {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1}, {"op": "bias_add"},
        {"op": "relu"}, {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1},
        {"op": "relu"}]}, (5, 5)),
    # depthwise producer with stride 2, a 4x4 tile of a 15x15 output
    "stride_2_depthwise_producer": ({"input": {"shape": [1, 16, 30, 30]}, "layers": [
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "stride": 2,
         "groups": 16}, {"op": "batch_norm"}, {"op": "relu6"},
        {"op": "conv2d", "channels": 32, "kernel": 3, "padding": 1}]}, (4, 4)),
    # dense stride-2 producer, two images, an unpadded grouped consumer (its input staged by
    # cache_read, there is no padding block)
    "stride_2_producer_unpadded_grouped_consumer": ({"input": {"shape": [2, 8, 21, 17]},
                                                     "layers": [
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "stride": 2},
        {"op": "sigmoid"}, {"op": "conv2d", "channels": 16, "kernel": 3, "groups": 2},
        {"op": "bias_add"}]}, (3, 4)),
    # grouped producer with a residual add of the input, stride-2 consumer
    "grouped_producer_with_residual": ({"input": {"shape": [1, 16, 14, 14]}, "layers": [
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "groups": 4},
        {"op": "add", "other": "data"}, {"op": "relu"},
        {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1, "stride": 2}]}, (2, 4)),
}


def _plan(chain: dict, tile):
    return cuda_fusion_plan(chain, *tile) if tile else cuda_fusion_plans(chain, limit=1)[0]


def _window(chain: dict, rows: int, cols: int) -> tuple[int, int, int]:
    """conv2's input channels and the rows x columns a rows x cols tile of it reads."""
    c = fusion_pair(chain).consumer
    (kh, kw), (sh, sw), (dh, dw) = (c.layer["kernel"], c.layer["stride"],
                                    c.layer["dilation"])
    return c.in_shape[1], (rows - 1) * sh + (kh - 1) * dh + 1, (cols - 1) * sw + (kw - 1) * dw + 1


def built_kernel(chain: dict, plan) -> tuple[dict, dict, object]:
    """The template's steps for ``plan``, checked and lowered: (the one kernel's resources,
    the recorder)."""
    r = cuda_fusion_steps(chain, plan)
    assert check_cuda_schedule(r.sch) == []
    kernels = kernel_resources(lower(r.sch.mod, "cuda"))
    assert list(kernels) == ["main_kernel"], kernels
    return kernels["main_kernel"], r


def assert_tile_in_shared_memory(chain: dict, plan, kernel: dict) -> int:
    """Within CUDA's limits, the plan's numbers, and the intermediate exactly a tile with its
    halo (a last round of cooperative stores that the threads do not divide keeps its guard,
    and the tile its window); returns its bytes."""
    assert kernel["threads_per_block"] == plan.threads <= MAX_THREADS_PER_BLOCK
    assert kernel["shared_bytes"] <= plan.shared_bytes <= MAX_SHARED_BYTES
    c = fusion_pair(chain).consumer
    weights = kernel["shared"].pop(f"{c.name}_weight_shared", 0)
    assert weights == plan.weight_bytes
    ((name, tile_bytes),) = kernel["shared"].items()
    channels, hs, ws = _window(chain, plan.rows, plan.cols)
    assert tile_bytes == channels * hs * ws * 4 == plan.intermediate_bytes, name
    return tile_bytes


def assert_matches_reference_on_cpu(r) -> None:
    ex = compile_module(serialize_threads(r.sch), "cpu", validation=True)
    result = check(ex, r.chain, tvm.cpu())
    assert result["correct"], result["message"]


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("name", list(FIXED))
def test_every_plan_fits_a_thread_block(name):
    chain, _ = FIXED[name]
    plans = cuda_fusion_plans(chain, limit=20)
    assert plans
    for plan in plans:
        assert plan.shared_bytes <= MAX_SHARED_BYTES
        assert plan.threads <= MAX_THREADS_PER_BLOCK
        assert plan.kt * plan.ht * plan.wt * plan.threads == \
            fusion_pair(chain).consumer.out_shape[1] * plan.rows * plan.cols
    costs = [p.cost for p in plans]
    assert costs[0] == min(costs)


@pytest.mark.parametrize("name", ["non_dividing_tile", "grouped_producer_with_residual"])
def test_a_last_round_the_threads_do_not_divide_keeps_its_guard(name):
    """The tile's elements are no multiple of the threads: the copy's border terms go, its
    loop guard stays, and the shared tile is its window (it used to run on into a row more)."""
    chain, tile = FIXED[name]
    plan = _plan(chain, tile)
    channels, hs, ws = _window(chain, plan.rows, plan.cols)
    assert (channels * hs * ws) % plan.threads
    r = cuda_fusion_steps(chain, plan)
    said = str(lower(r.sch.mod, "cuda")["main"].attrs[TILE_LOCAL_ATTR])
    staged = fusion_pair(chain).consumer.pad_block
    assert f"{staged}: predicate dropped but for terms over the tile's own loops" in said, said
    kernel, _ = built_kernel(chain, plan)
    assert kernel["shared"][f"{staged}_shared"] == channels * hs * ws * 4


def test_the_preset_chain_gets_whole_warps_that_divide_the_shared_tile():
    plan = cuda_fusion_plans(PRESET, limit=1)[0]
    channels, hs, ws = _window(PRESET, plan.rows, plan.cols)
    assert plan.threads % 32 == 0 and (channels * hs * ws) % plan.threads == 0
    assert plan.intermediate_bytes == channels * hs * ws * 4
    assert "tile per block" in plan.label() and "threads" in plan.label()


@pytest.mark.parametrize("chain, reason", [
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
        {"op": "max_pool2d", "kernel": 2, "stride": 2},
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}]},
     "the CUDA fusion template fuses two convolutions (conv -> elementwise ops -> conv); "
     "this chain's window layers are: conv1, maxpool1, conv2"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}, {"op": "relu"}]},
     "this chain's window layers are: conv1"),
    ({"input": {"shape": [1, 8, 16, 16]}, "layers": [
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}, {"op": "relu"},
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
        {"op": "add", "other": "relu1"}]},
     "add1 adds relu1, which the fused kernel keeps per thread block only"),
    ({"input": {"shape": [1, 8, 8, 8]}, "layers": [
        {"op": "conv2d", "channels": 2048, "kernel": 1},
        {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}]},
     "no tile fits a thread block: even one output pixel of conv2 needs its 2048 input "
     "channels x 3x3 pixels in shared memory (73,728 B), above the 49,152 B of static shared "
     "memory a thread block may allocate"),
], ids=["pool_between", "one_conv", "add_of_an_intermediate", "too_many_channels"])
def test_refuses_what_it_cannot_fuse_with_one_reason(chain, reason):
    with pytest.raises(TemplateRefusal) as info:
        cuda_fusion_plans(chain)
    assert reason in info.value.message and "\n" not in info.value.message
    assert info.value.where == "template:cuda"


def test_refuses_a_tile_that_does_not_fit():
    with pytest.raises(TemplateRefusal, match=r"^a 16x16 tile of conv2 does not fit a thread "
                                              r"block: its input tile needs 82,944 B"):
        cuda_fusion_plan(PRESET, 16, 16)


# ----------------------------------------------------------------------------- the kernels

@pytest.mark.parametrize("name", list(FIXED))
def test_kernel_keeps_the_intermediate_tile_in_shared_memory(name):
    chain, tile = FIXED[name]
    plan = _plan(chain, tile)
    kernel, r = built_kernel(chain, plan)
    tile_bytes = assert_tile_in_shared_memory(chain, plan,
                                              dict(kernel, shared=dict(kernel["shared"])))
    c = fusion_pair(chain).consumer  # the whole padded input of conv2 would be (TVM's default)
    pt, pl, pb, pr = c.layer["padding"]
    image = c.in_shape[1] * (c.in_shape[2] + pt + pb) * (c.in_shape[3] + pl + pr) * 4
    assert tile_bytes < image / 2
    # the steps say so: the tile is shared, computed at the loop bound to blockIdx.x
    steps = [s.to_dict() for s in r.steps]
    tile_block = next(s["args"]["block"] for s in steps if s["primitive"] == "compute_at"
                      and s["args"]["target_loop"].endswith("_fused")
                      and not s["args"]["block"].endswith("_weight_shared"))
    binds = {s["args"]["loop"]: s["args"]["thread"] for s in steps if s["primitive"] == "bind"}
    at = next(s["args"]["target_loop"] for s in steps if s["primitive"] == "compute_at"
              and s["args"]["block"] == tile_block)
    assert binds[at] == "blockIdx.x"
    assert any(s["primitive"] in ("set_scope", "cache_read") and
               s["args"].get("storage_scope") == "shared" for s in steps)
    # the built module agrees: launch bounds and __shared__ arrays of the CUDA source
    source = generated_code(compile_module(r.sch.mod, "cuda"), "cuda", "cuda")
    assert set(LAUNCH.findall(source)) == {(str(plan.threads), "main_kernel")}
    declared = {name: int(n) * BYTES[t] for t, name, n in SHARED.findall(source)}
    assert sum(declared.values()) == kernel["shared_bytes"]
    # a user can replay, export and import the steps like any other schedule
    Session.new(r.chain, r.steps)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_ptxas_reads_the_same_shared_memory_and_the_registers_fit(tmp_path):
    """ptxas, compiling the generated source for sm_90, reports the static shared memory the
    lowered module says, and registers x threads stay within a multiprocessor's 64K."""
    plan = cuda_fusion_plans(PRESET, limit=1)[0]
    kernel, r = built_kernel(PRESET, plan)
    source = tmp_path / "kernel.cu"
    source.write_text(generated_code(compile_module(r.sch.mod, "cuda"), "cuda", "cuda"))
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "--resource-usage", "-w", "-o",
                           str(tmp_path / "kernel.cubin"), str(source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.stdout + done.stderr
    smem = re.search(r"(\d+) bytes smem", report)
    registers = re.search(r"Used (\d+) registers", report)
    assert smem and int(smem.group(1)) == kernel["shared_bytes"], report
    assert registers and int(registers.group(1)) * plan.threads <= 65536, report


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIXED))
def test_kernel_matches_reference_on_cpu_emulation(name):
    chain, tile = FIXED[name]
    _, r = built_kernel(chain, _plan(chain, tile))
    assert_matches_reference_on_cpu(r)


@settings(max_examples=examples(8, 150), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_random_chains_fit_a_block_and_match_reference(data):
    """Random producer (dense, grouped, depthwise; strides, dilation, padding or none),
    elementwise ops (an add of the input), consumer (dense, grouped, padded or not), and
    either the model's best tile or a random one (dividing the output or not)."""
    d = HypothesisDraw(data)
    chain = random_cuda_pair_chain(d)
    _, _, oh, ow = fusion_pair(chain).consumer.out_shape
    plan = cuda_fusion_plans(chain, limit=1)[0]
    if d.chance(50):
        try:
            plan = cuda_fusion_plan(chain, d.int(1, min(oh, 9)), d.int(1, min(ow, 9)))
        except TemplateRefusal:
            pass  # too many threads or bytes for that tile: the model's best it is
    kernel, r = built_kernel(chain, plan)
    assert_tile_in_shared_memory(chain, plan, dict(kernel, shared=dict(kernel["shared"])))
    assert_matches_reference_on_cpu(r)


# ----------------------------------------------------------------------------- reaching it

@pytest.mark.slow
@pytest.mark.skipif(HAS_GPU, reason="checks what is said where there is no GPU")
def test_command_line_auto_cuda_builds_the_plans_and_times_nothing(tmp_path):
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(FIXED["stride_2_depthwise_producer"][0]))
    out = tmp_path / "cuda.py"
    run = subprocess.run([sys.executable, "-m", "playground", "auto", str(chain), "--target",
                          "cuda", "--candidates", "2", "--json", "-o", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(run.stdout)
    assert data["valid"] and data["correct"] is None and data["median_ms"] is None
    assert data["timed"] is False and data["note"].startswith("not timed: no GPU")
    assert len(data["candidates"]) == 2
    for cand in data["candidates"]:
        assert cand["status"] == "built", cand["message"]
        (kernel,) = cand["kernels"].values()
        assert kernel["threads_per_block"] <= MAX_THREADS_PER_BLOCK
        assert kernel["shared_bytes"] <= MAX_SHARED_BYTES
    assert data["params"]["template"] == "cuda_fusion"
    chain2, steps2, meta = import_script(out.read_text())
    assert chain2 == normalize_chain(FIXED["stride_2_depthwise_producer"][0])
    assert meta["target"] == "cuda"
    assert [s.to_dict() for s in steps2] == data["steps"]
