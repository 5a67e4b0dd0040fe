"""Schedule recipes for the fast presets, written as playground Steps (loops by name).

Each ``recipe_*`` function returns ``(chain, steps)``: a raw chain and a list of
:class:`playground.schedule.steps.Step`. Steps are recorded while they are applied to a live
schedule
(:class:`Recorder`), so every loop name used is one the schedule really has at that point.
``benchmarks/make_presets.py`` exports them into ``schedules/``; the research behind them is
in ``benchmarks/README.md``.
"""

from __future__ import annotations

from playground.chain.spec import normalize_chain
from playground.schedule.loops import loop_names
from playground.schedule.replay import apply_step, fresh_schedule
from playground.schedule.steps import Step


class Recorder:
    """Applies steps to a fresh schedule of ``chain`` and keeps them, in order."""

    def __init__(self, raw_chain: dict) -> None:
        self.chain = normalize_chain(raw_chain)
        self.sch = fresh_schedule(self.chain)
        self.steps: list[Step] = []

    def __call__(self, primitive: str, block: str, **args) -> None:
        step = apply_step(self.sch, Step(primitive, {"block": block, **args}), len(self.steps))
        self.steps.append(step)

    def loops(self, block: str) -> list[str]:
        return loop_names(self.sch, block)

    def extent(self, block: str, name: str) -> int:
        i = self.loops(block).index(name)
        return int(self.sch.get(self.sch.get_loops(self.sch.get_sblock(block))[i]).extent)

    # ---- shorthands
    def split(self, block, loop, factors):
        """Split; return the new loops' names (``name#2`` where a name repeats in the nest)."""
        i = self.loops(block).index(loop)
        self("split", block, loop=loop, factors=list(factors))
        return self.loops(block)[i : i + len(factors)]

    def fuse(self, block, loops):
        """Fuse; return the fused loop's name."""
        i = self.loops(block).index(loops[0])
        self("fuse", block, loops=list(loops))
        return self.loops(block)[i]

    def vectorize_tail(self, block, wv=8):
        """Split the innermost loop of ``block`` by ``wv`` and vectorize the inner part."""
        last = self.loops(block)[-1]
        _, inner = self.split(block, last, [None, wv])
        self("vectorize", block, loop=inner)


def conv_tile(
    r: Recorder, name: str, kt=4, ht=2, wt=8, wv=8, epilogue=(), parallel=True, decompose=True
):
    """Register-tiled direct conv on block ``name`` whose last 6 loops are k,h,w,rc,rh,rw.

    Result: ``<prefix>, h_0, k_0, w_0 | rc, rh, rw, k_1, h_1, w_1_0, w_1_1(vector)``; the
    accumulator tile (``kt`` channels x ``ht`` rows x ``wt`` columns) lives in ``<name>_local``
    (registers), written back under ``w_0`` together with the ``epilogue`` blocks.
    Returns the names of (parallel/outer tile loop, reduction loop).
    """
    r("cache_write", name, write_buffer_index=0, storage_scope="local")
    ls = r.loops(name)
    prefix, (k, h, w, rc, rh, rw) = ls[:-6], ls[-6:]
    k0, k1 = r.split(name, k, [None, kt])
    h0, h1 = r.split(name, h, [None, ht])
    w0, w1 = r.split(name, w, [None, wt])
    w1a, w1b = r.split(name, w1, [None, wv])
    r("reorder", name, loops=[h0, k0, w0, rc, rh, rw, k1, h1, w1a, w1b])
    r("reverse_compute_at", name + "_local", target_block=name, target_loop=w0)
    for e in epilogue:
        r("reverse_compute_at", e, target_block=name, target_loop=w0)
    r("vectorize", name, loop=w1b)
    for lp in (w1a, h1, k1, rw):
        r("unroll", name, loop=lp)
    for blk in [name + "_local", *epilogue]:
        r.vectorize_tail(blk, wv)
    par = h0
    if parallel:
        if prefix:
            par = r.fuse(name, [*prefix, h0])
        r("parallel", name, loop=par)
    if decompose:
        r("decompose_reduction", name, loop=rc)
    return par, rc


# ----------------------------------------------------------------------------- chains

SEED_CONV_RELU = {
    "input": {"shape": [16, 3, 244, 244]},
    "layers": [{"op": "conv2d", "channels": 10, "kernel": 16}, {"op": "relu"}],
}
SEED_TWO_CONV = {
    "input": {"shape": [16, 3, 244, 244]},
    "layers": [
        {"op": "conv2d", "channels": 10, "kernel": 16},
        {"op": "relu"},
        {"op": "conv2d", "channels": 10, "kernel": 16},
    ],
}
RESNET_CONV_RELU_CONV = {
    "input": {"shape": [1, 64, 56, 56]},
    "layers": [
        {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
        {"op": "relu"},
        {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
    ],
}
RESNET_BLOCK_BN_ADD = {
    "input": {"shape": [1, 64, 56, 56]},
    "layers": [
        {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
        {"op": "batch_norm"},
        {"op": "relu"},
        {"op": "conv2d", "channels": 64, "kernel": 3, "padding": 1},
        {"op": "batch_norm"},
        {"op": "add", "other": "data"},
        {"op": "relu"},
    ],
}


def depthwise_pointwise(c=128, hw=112):
    return {
        "input": {"shape": [1, c, hw, hw]},
        "layers": [
            {"op": "conv2d", "channels": c, "kernel": 3, "padding": 1, "groups": c},
            {"op": "conv2d", "channels": c, "kernel": 1},
        ],
    }


def conv_bias_bn_relu(c=64, k=64, hw=56, kernel=3):
    return {
        "input": {"shape": [1, c, hw, hw]},
        "layers": [
            {"op": "conv2d", "channels": k, "kernel": kernel, "padding": kernel // 2},
            {"op": "bias_add"},
            {"op": "batch_norm"},
            {"op": "relu"},
        ],
    }


# ----------------------------------------------------------------------------- recipes


def _batch_vector_conv(r: Recorder, name: str, kt=5, nv=2, transpose_input=True):
    """Seed-style conv (output width 229 is prime, batch 16): vectorize over the batch.

    The input is copied to [c, h, w, n] (``data_global``) and the accumulators are laid out
    [k, h, w, n] so that the 8 batch lanes are contiguous; the register tile is ``kt``
    channels x ``nv`` vectors of 8 images.
    """
    if transpose_input:
        r("cache_read", name, read_buffer_index=0, storage_scope="global")
        r("transform_layout", name, buffer=["read", 0], index_map="lambda n, c, h, w: (c, h, w, n)")
    r("cache_write", name, write_buffer_index=0, storage_scope="local")
    r("transform_layout", name, buffer=["write", 0], index_map="lambda n, k, h, w: (k, h, w, n)")


def recipe_seed_conv_relu(kt=5, nv=2, fused=True):
    """fused=False: the same conv schedule, relu left as its own pass (for the benchmark)."""
    r = Recorder(SEED_CONV_RELU)
    _batch_vector_conv(r, "conv1", kt, nv)
    if fused:
        r("reverse_compute_inline", "relu1")  # the write-back applies relu, writes the output
    else:
        _elementwise_pass(r, "relu1")
    n0, n1 = r.split("conv1", "n", [None, 8])
    n00, n01 = r.split("conv1", n0, [None, nv])
    k0, k1 = r.split("conv1", "k", [None, kt])
    w0, w1 = r.split("conv1", "w", [None, 1])
    r("reorder", "conv1", loops=["h", n00, k0, w0, "rc", "rh", "rw", k1, w1, n01, n1])
    r("reverse_compute_at", "conv1_local", target_block="conv1", target_loop=w0)
    r("vectorize", "conv1", loop=n1)
    for lp in (n01, w1, k1, "rw"):
        r("unroll", "conv1", loop=lp)
    r("parallel", "conv1", loop="h")
    r("decompose_reduction", "conv1", loop="rc")
    ls = r.loops("data_global")  # n, c, h, w -> c, h, w, n (the copy writes n innermost)
    r("reorder", "data_global", loops=[ls[1], ls[2], ls[3], ls[0]])
    fused = r.fuse("data_global", [ls[1], ls[2]])
    r("parallel", "data_global", loop=fused)
    r("vectorize", "data_global", loop=ls[0])
    return r


def _batch_vector_tile(r: Recorder, name: str, outer: list[str], kt=5, nv=2):
    """Register tile of a batch-vectorized conv whose last 7 loops are n,k,h,w,rc,rh,rw:
    ``outer.., h, n_0_0, k_0, w_0 | rc, rh, rw, k_1, w_1, n_0_1, n_1(vector)``."""
    n, k, h, w, rc, rh, rw = r.loops(name)[-7:]
    n0, n1 = r.split(name, n, [None, 8])
    n00, n01 = r.split(name, n0, [None, nv])
    k0, k1 = r.split(name, k, [None, kt])
    w0, w1 = r.split(name, w, [None, 1])
    r("reorder", name, loops=[*outer, h, n00, k0, w0, rc, rh, rw, k1, w1, n01, n1])
    r("reverse_compute_at", name + "_local", target_block=name, target_loop=w0)
    r("vectorize", name, loop=n1)
    for lp in (n01, w1, k1, rw):
        r("unroll", name, loop=lp)
    return h, rc


def _transpose_input_pass(r: Recorder, block="data_global"):
    ls = r.loops(block)  # n, c, h, w -> c, h, w, n (the copy writes n innermost)
    r("reorder", block, loops=[ls[1], ls[2], ls[3], ls[0]])
    fused = r.fuse(block, [ls[1], ls[2]])
    r("parallel", block, loop=fused)
    r("vectorize", block, loop=ls[0])


def recipe_seed_two_conv(rows=107, kt=5, nv=2, fused=True):
    """fused=False: the same two conv schedules, each over the whole image (for the benchmark)."""
    r = Recorder(SEED_TWO_CONV)
    _batch_vector_conv(r, "conv1", kt, nv)
    # The intermediate (relu1) is written by conv1's write-back, batch innermost.
    r(
        "transform_layout",
        "conv1_local",
        buffer=["write", 0],
        index_map="lambda n, k, h, w: (k, h, w, n)",
    )
    r("reverse_compute_inline", "relu1")
    r("transform_layout", "conv2", buffer=["read", 0], index_map="lambda n, c, h, w: (c, h, w, n)")
    _batch_vector_conv(r, "conv2", kt, nv, transpose_input=False)
    if not fused:
        for conv in ("conv1", "conv2"):
            h, rc = _batch_vector_tile(r, conv, [], kt, nv)
            r("parallel", conv, loop=h)
            r("decompose_reduction", conv, loop=rc)
        _transpose_input_pass(r)
        return r
    h0, _h1 = r.split("conv2", "h", [None, rows])
    r("reorder", "conv2", loops=[h0, "n", "k"])
    _batch_vector_tile(r, "conv2", [h0], kt, nv)
    # conv1 (+relu) for the rows + 15 halo rows this tile of conv2 reads.
    r("compute_at", "conv1_local", target_block="conv2", target_loop=h0)
    r("compute_at", "conv1", target_block="conv2", target_loop=h0)
    _, rc1 = _batch_vector_tile(r, "conv1", [], kt, nv)
    r("parallel", "conv2", loop=h0)
    r("decompose_reduction", "conv1", loop=rc1)
    r("decompose_reduction", "conv2", loop="rc")
    _transpose_input_pass(r)
    return r


def recipe_resnet_conv_relu_conv(kt=4, ht=2, wt=8, fused=True):
    """fused=False: relu as its own pass instead of folded into conv2's padding."""
    r = Recorder(RESNET_CONV_RELU_CONV)
    if fused:
        r("compute_inline", "relu1")  # conv2_pad = pad(max(conv1, 0))
    for conv in ("conv1", "conv2"):
        par, _ = conv_tile(r, conv, kt, ht, wt)
        r("compute_at", conv + "_pad", target_block=conv + "_update", target_loop=par)
    if not fused:
        _elementwise_pass(r, "relu1")
    return r


def recipe_resnet_block_bn_add(kt=4, ht=2, wt=8, fused=True):
    """fused=False: the same conv schedules, bn/relu/add/relu as separate passes."""
    r = Recorder(RESNET_BLOCK_BN_ADD)
    if not fused:
        for conv in ("conv1", "conv2"):
            par, _ = conv_tile(r, conv, kt, ht, wt)
            r("compute_at", conv + "_pad", target_block=conv + "_update", target_loop=par)
        for b in ("bn1", "relu1", "bn2", "add1", "relu2"):
            _elementwise_pass(r, b)
        return r
    for b in ("bn1_shift", "bn1_scale", "bn2_shift", "bn2_scale"):
        r("compute_inline", b)  # per-channel scale/shift folded into the bn blocks
    r("reverse_compute_inline", "relu1")  # bn1 applies relu
    par, _ = conv_tile(r, "conv1", kt, ht, wt, epilogue=["bn1"])
    r("compute_at", "conv1_pad", target_block="conv1_update", target_loop=par)
    r("compute_inline", "bn2")  # add1 = conv2 * s + b + data
    r("reverse_compute_inline", "relu2")  # add1 applies relu
    par, _ = conv_tile(r, "conv2", kt, ht, wt, epilogue=["add1"])
    r("compute_at", "conv2_pad", target_block="conv2_update", target_loop=par)
    return r


def _depthwise_tile(r: Recorder, wv=8, vecs=1):
    """Depthwise conv1 (loops ``[outer.., c, h, w, (rc,) rh, rw]``): 8 columns per vector
    accumulated in a register (``conv1_local``), the 3x3 taps unrolled. Returns (c loop,
    first reduction loop)."""
    r("cache_write", "conv1", write_buffer_index=0, storage_scope="local")
    ls = r.loops("conv1")
    # compute_at drops unit loops (rc: one channel per group; h when the tile is 1 row).
    red = ls[-3:] if ls[-3] == "rc" else ls[-2:]
    c = ls[-len(red) - 3] if len(ls) > len(red) + 2 else None
    w = ls[-len(red) - 1]
    if vecs > 1:  # independent accumulators: the 9-tap FMA chains of several vectors overlap
        w0, wu, w1 = r.split("conv1", w, [None, vecs, wv])
        r("reorder", "conv1", loops=[w0, *red, wu, w1])
        r("unroll", "conv1", loop=wu)
    else:
        w0, w1 = r.split("conv1", w, [None, wv])
        r("reorder", "conv1", loops=[w0, *red, w1])
    r("unroll", "conv1", loop=red[-2])
    r("unroll", "conv1", loop=red[-1])
    r("vectorize", "conv1", loop=w1)
    r("reverse_compute_at", "conv1_local", target_block="conv1", target_loop=w0)
    r.vectorize_tail("conv1_local", wv)
    return c, red[0]


BLOCKED_INTERMEDIATE = "lambda n, c, h, w: (n, h, w // 8, c, w % 8)"


def recipe_depthwise_pointwise_fused(c=128, hw=224, kt=4, ht=2, wt=8, dwv=2):
    r = Recorder(depthwise_pointwise(c, hw))
    r("transform_layout", "conv2", buffer=["read", 0], index_map=BLOCKED_INTERMEDIATE)
    par, rc2 = conv_tile(r, "conv2", kt, ht, wt, decompose=False)
    r("compute_at", "conv1", target_block="conv2", target_loop=par)
    _, red1 = _depthwise_tile(r, vecs=dwv)
    r("compute_at", "conv1_pad", target_block="conv2", target_loop=par)
    r("decompose_reduction", "conv1", loop=red1)
    r("decompose_reduction", "conv2", loop=rc2)
    return r


def recipe_depthwise_pointwise_unfused(c=128, hw=224, kt=4, ht=2, wt=8, dwv=2):
    r = Recorder(depthwise_pointwise(c, hw))
    r("transform_layout", "conv2", buffer=["read", 0], index_map=BLOCKED_INTERMEDIATE)
    _, red1 = _depthwise_tile(r, vecs=dwv)
    r("fuse", "conv1", loops=["n", "k"])
    r("parallel", "conv1", loop="n_k_fused")
    r("compute_at", "conv1_pad", target_block="conv1", target_loop="n_k_fused")
    r("decompose_reduction", "conv1", loop=red1)
    _par, _ = conv_tile(r, "conv2", kt, ht, wt)
    return r


def _elementwise_pass(r: Recorder, block: str, wv=8):
    """A root-level NCHW elementwise block as its own pass: parallel over n*c, w vectorized."""
    n, c, _h, w = r.loops(block)
    r("fuse", block, loops=[n, c])
    r("parallel", block, loop=f"{n}_{c}_fused")
    _, inner = r.split(block, w, [None, wv])
    r("vectorize", block, loop=inner)


def recipe_conv_bias_bn_relu(fused: bool, c=64, k=64, hw=56, kernel=3, kt=4, ht=2, wt=8):
    """The same conv schedule; bias, batch norm and relu either fused into its write-back
    (one pass) or left as three separate parallel, vectorized passes."""
    r = Recorder(conv_bias_bn_relu(c, k, hw, kernel))
    if fused:
        for b in ("bn1_shift", "bn1_scale", "bias1"):
            r("compute_inline", b)  # bn1 = (conv1 + bias) * scale + shift
        r("reverse_compute_inline", "relu1")  # ... then max(., 0): bn1 writes the output
        par, _ = conv_tile(r, "conv1", kt, ht, wt, epilogue=["bn1"])
    else:
        par, _ = conv_tile(r, "conv1", kt, ht, wt)
        for b in ("bias1", "bn1", "relu1"):
            _elementwise_pass(r, b)
    if kernel > 1:
        r("compute_at", "conv1_pad", target_block="conv1_update", target_loop=par)
    return r


def recipe_conv_relu_conv_halo(rows=28, kt=4, ht=2, wt=8, kt1=8, ht1=1):
    """conv2 in tiles of ``rows`` output rows; conv1 (+ pads, relu) computed per tile for the
    rows + 2 halo rows that the tile reads (recomputed by the neighbouring tile)."""
    r = Recorder(RESNET_CONV_RELU_CONV)
    r("compute_inline", "relu1")
    h0, h1 = r.split("conv2", "h", [None, rows])
    r("reorder", "conv2", loops=["n", h0, "k", h1])
    conv_tile(r, "conv2", kt, ht, wt, parallel=False, decompose=False)
    tile = r.fuse("conv2", ["n", h0])
    for b in ("conv2_pad", "conv1", "conv1_pad"):
        r("compute_at", b, target_block="conv2", target_loop=tile)
    # ht1=1: the halo guard (first/last tile) then sits outside the unrolled register tile.
    _, rc1 = conv_tile(r, "conv1", kt1, ht1, wt, parallel=False, decompose=False)
    r("parallel", "conv2", loop=tile)
    r("decompose_reduction", "conv1", loop=rc1)
    r("decompose_reduction", "conv2", loop="rc")
    return r


def recipe_conv_bias_bn_relu_fused():
    return recipe_conv_bias_bn_relu(True, c=32, k=32, hw=224, kernel=1)


def recipe_conv_bias_bn_relu_separate():
    return recipe_conv_bias_bn_relu(False, c=32, k=32, hw=224, kernel=1)
