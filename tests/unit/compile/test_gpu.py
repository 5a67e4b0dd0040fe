"""CUDA: code generation and the pre-build checks (everywhere), validation and timing (GPU only).

The CUDA presets are the files ``schedules/cuda_*.py``, read back with the importer as a user
would. Code generation needs no GPU (nvcc and TVM's CUDA codegen run on any machine); tests
that run kernels are marked ``gpu`` and skipped where ``tvm.cuda().exist`` is False.
"""

from __future__ import annotations

import re

import pytest
import tvm
from helpers import cuda_fused_with_conv1_input_in_shared_memory

from playground.chain.reference import compare, make_inputs, reference_output
from playground.chain.spec import normalize_chain
from playground.compile.gpu import (
    check_cuda_lowered,
    check_cuda_schedule,
    serialize_threads,
    shared_memory,
)
from playground.compile.lowering import compile_module, generated_code, lower
from playground.errors import BuildError
from playground.io.presets import load_preset
from playground.jobs.kernel import codegen_job, run_job
from playground.schedule.replay import scheduled
from playground.schedule.steps import Step

HAS_GPU = bool(tvm.cuda(0).exist)
gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device on this machine")
PRESETS = ("cuda_conv_relu", "cuda_fused_two_conv")
KERNEL = re.compile(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\(')


def preset(name: str) -> tuple[dict, tuple[Step, ...]]:
    chain, steps, meta = load_preset(name)
    assert meta["target"] == "cuda"
    return chain, steps


def without(steps, primitive: str, block: str) -> list[Step]:
    return [s for s in steps if not (s.primitive == primitive and s.args["block"] == block)]


def cuda_source(chain: dict, steps) -> str:
    return generated_code(compile_module(scheduled(chain, steps).mod, "cuda"), "cuda", "cuda")


# ----------------------------------------------------------------------------- code generation

@pytest.mark.parametrize("name", PRESETS)
def test_preset_compiles_to_one_cuda_kernel_with_shared_memory(name):
    chain, steps = preset(name)
    assert check_cuda_schedule(scheduled(chain, steps)) == []
    source = cuda_source(chain, steps)
    kernels = set(KERNEL.findall(source))
    assert kernels == {("256", "main_kernel")}, kernels
    assert "__shared__" in source and "__syncthreads()" in source


def test_fused_two_conv_keeps_conv1_tile_with_halo_in_shared_memory():
    chain, steps = preset("cuda_fused_two_conv")
    sizes = shared_memory(lower(scheduled(chain, steps).mod, "cuda"))
    # 64 channels x (4 + 2) x (8 + 2) floats of relu(conv1), and conv2's weights per 4 channels.
    assert sizes == {"main_kernel": {"conv2_pad_shared": 64 * 6 * 10 * 4,
                                     "conv2_weight_shared": 64 * 4 * 9 * 4}}
    source = cuda_source(chain, steps)
    assert "__shared__ alignas(64) float conv2_pad_shared_ptr[3840];" in source


def test_conv_relu_shared_tiles():
    chain, steps = preset("cuda_conv_relu")
    sizes = shared_memory(lower(scheduled(chain, steps).mod, "cuda"))
    assert sizes == {"main_kernel": {"conv1_pad_shared": 8 * 10 * 10 * 4,
                                     "conv1_weight_shared": 16 * 8 * 9 * 4}}


def test_codegen_job_returns_cuda_source():
    chain, steps = preset("cuda_conv_relu")
    result = codegen_job({"chain": chain, "steps": [s.to_dict() for s in steps],
                          "target": "cuda", "kind": "cuda"})
    assert "__global__" in result["text"]


# ----------------------------------------------------------------------------- the checks

def test_unbound_schedule_is_refused_naming_block_and_step():
    chain = normalize_chain(preset("cuda_conv_relu")[0])
    mod = scheduled(chain, []).mod
    problems = check_cuda_schedule(mod)
    assert [p.split(" is ")[0] for p in problems] == ["block conv1_pad", "block conv1",
                                                      "block relu1"]
    assert "bound to blockIdx.*" in problems[0] and "host code" in problems[0]
    assert "fuse(block=conv1_pad, loops=[n, c]) then bind(block=conv1_pad, loop=n_c_fused, " \
           "thread=blockIdx.x)" in problems[0]
    for build in (compile_module, lower):
        with pytest.raises(BuildError, match=r"^not ready for CUDA: block conv1_pad is not "
                                             r"inside a CUDA kernel.*\(and 2 more problem"):
            build(mod, "cuda")


def test_block_without_threads_is_refused():
    chain, steps = preset("cuda_conv_relu")
    problems = check_cuda_schedule(scheduled(chain, steps[:8]))  # blockIdx bound, no threads
    assert any(p.startswith("block conv1 runs on one thread per thread block") for p in problems)


def test_global_intermediate_inside_kernel_is_refused():
    chain, steps = preset("cuda_conv_relu")
    mod = scheduled(chain, without(steps, "set_scope", "conv1")).mod
    with pytest.raises(BuildError) as info:
        compile_module(mod, "cuda")
    assert info.value.message == (
        "not ready for CUDA: buffer conv1 is in global memory, but block conv1_update writes it "
        "and block relu1 reads it inside the same kernel (TVM: 'Cannot allocate global memory "
        "when targeting CUDA'); add set_scope(block=conv1_update, buffer_index=0, "
        "storage_scope=shared), or local when each thread reads only what it wrote itself")


def test_shared_buffer_between_kernels_is_refused():
    chain, steps = preset("cuda_conv_relu")
    k = next(i for i, s in enumerate(steps)
             if s.primitive == "set_scope" and s.args["block"] == "conv1_pad")
    problems = check_cuda_schedule(scheduled(chain, steps[: k + 1]))  # before its compute_at
    assert any(p.startswith("buffer conv1_pad_shared is in shared memory, which lives for one "
                            "kernel only") for p in problems)


def test_mismatched_thread_extents_in_one_kernel_are_refused():
    # TVM compiles this without a word and launches too few threads for one of the loops.
    chain, steps = preset("cuda_conv_relu")
    steps = [Step("split", {**s.args, "factors": [None, 128]})
             if s.primitive == "split" and s.args["block"] == "conv1_pad" else s for s in steps]
    problems = check_cuda_schedule(scheduled(chain, steps))
    assert len(problems) == 1
    assert "bound to threadIdx.x with extent 128" in problems[0]
    assert "needs the same extent" in problems[0]


def test_too_many_threads_are_refused():
    chain = normalize_chain({"input": {"shape": [1, 8, 16, 16]}, "layers": [{"op": "relu"}]})
    steps = [Step("fuse", {"block": "relu1", "loops": ["n", "c", "h", "w"]}),
             Step("split", {"block": "relu1", "loop": "n_c_h_w_fused", "factors": [1, 2048]}),
             Step("bind", {"block": "relu1", "loop": "n_c_h_w_fused_0", "thread": "blockIdx.x"}),
             Step("bind", {"block": "relu1", "loop": "n_c_h_w_fused_1",
                           "thread": "threadIdx.x"})]
    problems = check_cuda_schedule(scheduled(chain, steps))
    assert any("extent 2048, above CUDA's 1024" in p for p in problems)
    assert any("needs 2048 threads per thread block" in p for p in problems)


def test_shared_tile_that_tvm_cannot_bound_is_refused():
    # conv1's input staged in shared memory per block: the halo is clipped at the border, TVM
    # cannot bound the tile and keeps the whole padded input (64 x 58 x 58 floats). (The
    # tile-local step, off here, bounds it: tests/unit/compile/test_tile_local.py.)
    chain, steps = cuda_fused_with_conv1_input_in_shared_memory()
    mod = scheduled(chain, steps).mod
    assert check_cuda_schedule(mod) == []
    problems = check_cuda_lowered(_lower_unchecked(mod, tile_local=False))
    assert len(problems) == 1
    assert problems[0].startswith("kernel main_kernel needs 885,760 bytes of shared memory "
                                  "(conv1_pad_shared 861,184 B, ")
    with pytest.raises(BuildError, match="bytes of shared memory"):
        compile_module(mod, "cuda", tile_local=False)


def _lower_unchecked(mod: tvm.IRModule, **options) -> tvm.IRModule:
    """The lowered module without the GPU checks (to look at what they refuse)."""
    import playground.compile.lowering as lowering

    saved = lowering.require_cuda_lowered
    lowering.require_cuda_lowered = lambda _: None
    try:
        return lower(mod, "cuda", **options)
    finally:
        lowering.require_cuda_lowered = saved


# ----------------------------------------------------------------------------- numerics

@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_arithmetic_matches_reference_on_cpu_emulation(name):
    """Thread loops made serial, the schedule's tiles, halos and scopes run on the CPU."""
    chain, steps = preset(name)
    ex = compile_module(serialize_threads(scheduled(chain, steps)), "cpu")
    inputs = make_inputs(chain, 0)
    expected = reference_output(chain, inputs)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    out = tvm.runtime.empty(expected.shape, "float32", dev)
    ex["main"](*args, out)
    result = compare(out.numpy(), expected, "float32")
    assert result["correct"], result["message"]


@pytest.mark.slow
@pytest.mark.skipif(HAS_GPU, reason="checks the message shown where there is no GPU")
def test_run_job_says_no_gpu_is_present():
    chain, steps = preset("cuda_conv_relu")
    result = run_job({"chain": chain, "steps": [s.to_dict() for s in steps], "target": "cuda"})
    assert result["valid"] and not result["ran"] and result["correct"] is None
    assert result["timing"] is None
    assert result["message"].startswith("cuda: no GPU is present: CUDA source is generated")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_times_on_gpu(name):
    chain, steps = preset(name)
    result = run_job({"chain": chain, "steps": [s.to_dict() for s in steps], "target": "cuda",
                      "measure": True, "repeat": 10, "min_repeat_ms": 20})
    assert result["correct"], result["message"]
    assert result["nonfinite"] == 0
    assert result["timing"]["median_ms"] > 0 and result["gflops"] > 0
