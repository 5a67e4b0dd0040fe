"""Shared test helpers: small chains, the fused-conv steps, numeric checks in-process, and
reading the page (the chain editor's keys, escaped Markdown)."""

from __future__ import annotations

import os
import re

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir

from playground.chain.compute import chain_module, winograd_convs
from playground.chain.reference import compare, make_inputs, reference_output
from playground.schedule.steps import Step

#: ``PLAYGROUND_FUZZ=deep`` runs the randomized (hypothesis) tests with many more examples than
#: the test run's small, fixed budget (the suite stays near 10 minutes on 2 cores).
DEEP = os.environ.get("PLAYGROUND_FUZZ", "") == "deep"


def examples(quick: int, deep: int) -> int:
    """A hypothesis ``max_examples``: ``quick`` in the test run, ``deep`` with
    ``PLAYGROUND_FUZZ=deep``."""
    return deep if DEEP else quick


CONV_RELU = {"input": {"shape": [1, 8, 16, 16]},
             "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                        {"op": "relu"}]}
CONV_RELU_CONV = {"input": {"shape": [1, 8, 16, 16]},
                  "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
                             {"op": "relu"},
                             {"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1}]}


def fuse_two_convs(tile: int = 8) -> list[Step]:
    """conv1 (and relu1 and both pads) computed at a tile x tile tile of conv2."""
    return [
        Step("split", {"block": "conv2", "loop": "h", "factors": [None, tile]}),
        Step("split", {"block": "conv2", "loop": "w", "factors": [None, tile]}),
        Step("reorder", {"block": "conv2", "loops": ["n", "h_0", "w_0", "k", "h_1", "w_1"]}),
        *[Step("compute_at", {"block": b, "target_block": "conv2", "target_loop": "w_0"})
          for b in ("conv2_pad", "relu1", "conv1", "conv1_pad")],
    ]


def cuda_fused_with_conv1_input_in_shared_memory() -> tuple[dict, list[Step]]:
    """The CUDA preset ``cuda_fused_two_conv`` with conv1's padded input also staged per
    thread block in shared memory (its 64 channels of (6 + 2) x (10 + 2) pixels) instead of
    inlined into conv1's reads of global memory."""
    from playground.io.presets import load_preset

    chain, steps, _ = load_preset("cuda_fused_two_conv")
    steps = list(steps)
    k = next(i for i, s in enumerate(steps)
             if s.primitive == "compute_inline" and s.args["block"] == "conv1_pad")
    stage = [Step("set_scope", {"block": "conv1_pad", "buffer_index": 0,
                                "storage_scope": "shared"}),
             Step("compute_at", {"block": "conv1_pad", "target_block": "conv2",
                                 "target_loop": "n_h_0_w_0_fused"}),
             Step("fuse", {"block": "conv1_pad", "loops": ["ax0", "ax1", "ax2"]}),
             Step("split", {"block": "conv1_pad", "loop": "ax0_ax1_ax2_fused",
                            "factors": [None, 256]}),
             Step("bind", {"block": "conv1_pad", "loop": "ax0_ax1_ax2_fused_1",
                           "thread": "threadIdx.x"})]
    return chain, [*steps[:k], *stage, *steps[k + 1:]]


def check_numerics(chain: dict, mod: tvm.IRModule) -> dict:
    """Build ``mod`` for the CPU here (tests only), run it, compare with the reference."""
    ex = tvm.compile(mod, target="llvm")
    inputs = make_inputs(chain, 0)
    expected = reference_output(chain, inputs)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, dtype="float32"), dev)
    ex["main"](*args, out)
    return compare(out.numpy(), expected, "float32")


def assert_trace_round_trip(chain: dict, sch: s_tir.Schedule) -> None:
    """Replaying the schedule's own trace on a fresh schedule gives the same IR (a schedule
    rewritten by ``winograd`` traces from the rewritten program)."""
    fresh = s_tir.Schedule(chain_module(chain, winograd_convs(sch, chain)))
    sch.trace.apply_to_schedule(fresh, remove_postproc=False)
    assert tvm_ffi.structural_equal(fresh.mod, sch.mod)


def editor_key(at, field: str) -> str:
    """The chain editor's widget key for ``field`` (``"input.h"``, ``"0.channels"``) in the
    AppTest's current generation (see ``ui.state.editor_key``)."""
    return f"chain.{field}.v{at.session_state['ui'].editor_generation}"


def shown(markdown: str) -> str:
    """What escaped Markdown (``ui.text.escape``) reads as: the backslashes dropped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)
