"""CUDA fusion template: conv -> elementwise ops -> conv in one kernel, the intermediate in
shared memory per thread block.

For a chain ``conv1 [epilogue] -> conv2 [epilogue]`` (any shapes, strides, dilations,
padding, dense, grouped or depthwise convolutions), the template writes the steps that the
preset ``schedules/cuda_fused_two_conv.json`` spells out by hand, for any tile:

* conv2 is tiled ``rows x cols`` output pixels per thread block (all its output channels),
  the tiles fused with the images into ``blockIdx.x``; inside a block each thread computes
  ``kt`` channels x ``ht`` x ``wt`` pixels (``threadIdx.x``), accumulated in registers
  (``cache_write`` to ``local``) and written back with conv2's epilogue folded in;
* conv2's input (its padding block, or a ``cache_read`` of conv1's output where conv2 does
  not pad) lives in ``shared`` memory, computed at the thread block's loop: the tile plus the
  halo conv2's window reads, recomputed by neighbouring blocks instead of synchronizing
  between them. conv1's epilogue is inlined into it, and conv1 itself is computed per
  element of that tile by the thread that stores it (``local``), reading the input through
  its inlined padding;
* conv2's weights are staged in shared memory per slice of ``rc`` input channels when a
  slice fits next to the intermediate.

Where the tile does not divide the image, TVM guards the last tiles; the tile-local step
(:mod:`playground.compile.tile_local`) drops the border predicates of the shared tile so that
it is allocated at the tile's size, never the image's. (Where the threads do not divide the
tile's elements, that step may drop the guard of the last round of cooperative stores too:
the stores go pixel-major so that the tile then grows by a few rows, which the plan counts.)

:func:`cuda_fusion_plans` picks tiles whose static shared memory (intermediate plus weight
slice) stays within 48 KiB and whose threads per block stay within 1024, ranked by a simple
model of work, halo recomputation and idle hardware; it refuses, with one plain reason, a
chain it cannot fuse or where no tile fits. :func:`cuda_fusion_steps` writes a plan's steps.

Nothing here is timed: the ranking is the model's. :mod:`playground.templates.cuda_check`
builds the plans in the worker (compile-only without a GPU; validated and timed with one),
and :func:`playground.compile.gpu.kernel_resources` reads what a built kernel needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import tvm

from playground.chain.spec import INPUT_NAME, normalize_chain
from playground.compile.gpu import MAX_SHARED_BYTES, MAX_THREADS_PER_BLOCK
from playground.errors import PlaygroundError
from playground.templates.recorder import Recorder
from playground.templates.stages import Stage, stages

#: Thread blocks a GPU of about a hundred streaming multiprocessors needs to keep each busy;
#: fewer blocks leave multiprocessors idle (the model's penalty, not a measured number).
MIN_BLOCKS = 128
#: Threads a block needs to hide memory latency (the model's penalty below it).
MIN_THREADS = 128
#: Accumulators one thread keeps in registers.
MAX_OUTPUTS_PER_THREAD = 16
#: Largest tile edge tried (output pixels of conv2).
MAX_TILE = 32
#: Share of the shared memory the weight slice may take at most.
WEIGHT_SHARE = 0.5


class TemplateRefusal(PlaygroundError):
    """A chain the CUDA fusion template cannot fuse, with the reason in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, where="template:cuda")


@dataclass(frozen=True)
class CudaPlan:
    """One way to fuse the pair, with the model's numbers behind it.

    Attributes
    ----------
    rows, cols
        Output pixels of conv2 per thread block (``rows`` x ``cols``).
    kt, ht, wt
        Output channels, rows and columns each thread computes (``ht`` divides ``rows``,
        ``wt`` divides ``cols``, ``kt`` divides conv2's channels).
    rc
        conv2's input channels (per group) whose weights are staged in shared memory at a
        time; 0: the weights are read from global memory.
    threads
        Threads per block: ``K/kt * rows/ht * cols/wt``.
    intermediate_bytes, weight_bytes
        Static shared memory of the tile of conv2's input (with its halo) and of the weight
        slice. The tile's is an upper bound: exact where the threads divide its elements;
        otherwise the last round of cooperative stores may run a few rows past the window
        (see :func:`_bind_cooperative`), and this counts those rows.
    blocks
        Thread blocks of the launch.
    redundancy
        Elements of conv2's input the blocks compute / elements of conv2's input (its
        padding counted): above 1 by the halo neighbouring blocks recompute.
    cost
        The model's relative time (lower is better): both convolutions' work in all blocks,
        guarded tiles included, scaled up for fewer than :data:`MIN_BLOCKS` blocks, fewer
        than :data:`MIN_THREADS` threads and partial warps. A guess until timed on a GPU.
    """

    rows: int
    cols: int
    kt: int
    ht: int
    wt: int
    rc: int
    threads: int
    intermediate_bytes: int
    weight_bytes: int
    blocks: int
    redundancy: float
    cost: float

    @property
    def shared_bytes(self) -> int:
        return self.intermediate_bytes + self.weight_bytes

    def label(self) -> str:
        staged = f", weights staged per {self.rc} channel(s)" if self.rc else ""
        return (f"{self.rows}x{self.cols} tile per block, {self.threads} threads of "
                f"{self.kt}x{self.ht}x{self.wt}, {self.shared_bytes:,} B shared{staged}")

    def to_dict(self) -> dict:
        return {**asdict(self), "shared_bytes": self.shared_bytes, "template": "cuda_fusion"}


# ----------------------------------------------------------------------------- which chains

@dataclass(frozen=True)
class _Pair:
    lead: Stage | None  # elementwise layers before conv1
    producer: Stage
    consumer: Stage
    itemsize: int


def fusion_pair(chain: dict) -> _Pair:
    """The producer and consumer stages of a chain the template fuses.

    Raises
    ------
    TemplateRefusal
        When the chain is not ``[elementwise ops] -> conv -> [elementwise ops] -> conv ->
        [elementwise ops]``, or an ``add`` reads a tensor the fused kernel keeps per block.
    """
    chain = normalize_chain(chain)
    st = stages(chain)
    lead = st[0] if st and st[0].kind == "elementwise" else None
    windows = st[1:] if lead else st
    kinds = [s.kind for s in windows]
    if kinds != ["conv", "conv"]:
        names = ", ".join(s.name for s in windows) or "none"
        raise TemplateRefusal(
            "the CUDA fusion template fuses two convolutions (conv -> elementwise ops -> "
            f"conv); this chain's window layers are: {names}")
    for stage in st:
        layers = (stage.layer, *stage.epilogue) if stage.kind == "elementwise" \
            else stage.epilogue
        for layer in layers:
            other = layer.get("other")
            if layer["op"] == "add" and other != INPUT_NAME:
                raise TemplateRefusal(
                    f"{layer['name']} adds {other}, which the fused kernel keeps per thread "
                    f"block only (an add may read the chain's input, {INPUT_NAME})")
    dtype = chain["input"].get("dtype", "float32")
    return _Pair(lead, windows[0], windows[1], tvm.DataType(dtype).bits // 8)


# ----------------------------------------------------------------------------- the model

def _window(stage: Stage, axis: int, out: int) -> int:
    """Input rows (``axis`` 0) or columns (1) that ``out`` output rows of ``stage`` read."""
    layer = stage.layer
    k, s, d = layer["kernel"][axis], layer["stride"][axis], layer["dilation"][axis]
    return (out - 1) * s + (k - 1) * d + 1


def _per_output(stage: Stage) -> float:
    """FLOP of one output element of a conv stage."""
    _, k, oh, ow = stage.out_shape
    return stage.flop / (stage.out_shape[0] * k * oh * ow)


def _thread_tile(k: int, rows: int, cols: int, staged: int) -> tuple[int, int, int, int] | None:
    """``(kt, ht, wt, threads)`` for a block of ``k`` channels x ``rows`` x ``cols`` pixels:
    a multiple of 32 threads near 256 where one exists, preferably dividing the ``staged``
    elements of the shared tile (each thread then stores the same number), at most
    :data:`MAX_OUTPUTS_PER_THREAD` accumulators each; None when every split needs more than
    1024 threads."""
    best = None
    for kt in (d for d in range(1, k + 1) if k % d == 0):
        for ht in (d for d in range(1, rows + 1) if rows % d == 0):
            for wt in (d for d in range(1, cols + 1) if cols % d == 0):
                per = kt * ht * wt
                if per > MAX_OUTPUTS_PER_THREAD:
                    continue
                threads = (k // kt) * (rows // ht) * (cols // wt)
                if threads > MAX_THREADS_PER_BLOCK:
                    continue
                score = (abs(math.log2(threads / 256)) + (0.5 if threads % 32 else 0.0)
                         + 0.25 * abs(math.log2(per / 8)) + (0.1 if wt > ht else 0.0)
                         + (2.0 if staged % threads else 0.0))
                if best is None or score < best[0]:
                    best = (score, (kt, ht, wt, threads))
    return None if best is None else best[1]


def _plan(pair: _Pair, rows: int, cols: int) -> CudaPlan | None:
    """The plan of one tile shape, or None when it does not fit a thread block."""
    p, c, size = pair.producer, pair.consumer, pair.itemsize
    n, k, oh, ow = c.out_shape
    channels = c.in_shape[1]
    hs, ws = _window(c, 0, rows), _window(c, 1, cols)
    if channels * hs * ws * size > MAX_SHARED_BYTES:
        return None
    tile = _thread_tile(k, rows, cols, channels * hs * ws)
    if tile is None:
        return None
    kt, ht, wt, threads = tile
    # the window exactly: a last round of cooperative stores that the threads do not divide
    # keeps its guard (see _bind_cooperative)
    intermediate = channels * hs * ws * size
    per_group = channels // c.layer["groups"]
    kh, kw = c.layer["kernel"]
    room = min(MAX_SHARED_BYTES - intermediate, int(MAX_SHARED_BYTES * WEIGHT_SHARE))
    rc = max((d for d in range(1, per_group + 1)
              if per_group % d == 0 and k * d * kh * kw * size <= room), default=0)
    weight = k * rc * kh * kw * size
    blocks = n * math.ceil(oh / rows) * math.ceil(ow / cols)
    computed = blocks * channels * hs * ws
    pt, pl, pb, pr = c.layer["padding"]
    needed = n * channels * (c.in_shape[2] + pt + pb) * (c.in_shape[3] + pl + pr)
    work = computed * _per_output(p) + blocks * k * rows * cols * _per_output(c)
    # Idle hardware stretches the time: multiprocessors without a block, warps with idle
    # lanes (a partial warp), blocks too small to hide latency.
    warps = math.ceil(threads / 32)
    cost = work * max(1.0, MIN_BLOCKS / blocks) * (32 * warps / threads) * \
        max(1.0, MIN_THREADS / threads)
    return CudaPlan(rows, cols, kt, ht, wt, rc, threads, intermediate, weight, blocks,
                    computed / needed, cost)


def cuda_fusion_plans(chain: dict, limit: int = 6) -> list[CudaPlan]:
    """Tile shapes for the CUDA fusion template, best first by the model (never timed).

    Every plan keeps its static shared memory within 48 KiB and its threads per block within
    1024. Tiles that divide the image come before equal-cost ones that do not.

    Raises
    ------
    TemplateRefusal
        When the chain is not a pair of convolutions the template fuses
        (:func:`fusion_pair`), or when no tile fits (conv2's input channels too many for even
        a one-pixel tile and its halo in 48 KiB).
    """
    pair = fusion_pair(chain)
    c = pair.consumer
    _, _, oh, ow = c.out_shape
    plans = [plan for rows in range(1, min(oh, MAX_TILE) + 1)
             for cols in range(1, min(ow, MAX_TILE) + 1)
             if (plan := _plan(pair, rows, cols)) is not None]
    if not plans:
        smallest = c.in_shape[1] * _window(c, 0, 1) * _window(c, 1, 1) * pair.itemsize
        raise TemplateRefusal(
            f"no tile fits a thread block: even one output pixel of {c.name} needs its "
            f"{c.in_shape[1]} input channels x {_window(c, 0, 1)}x{_window(c, 1, 1)} pixels "
            f"in shared memory ({smallest:,} B), above the {MAX_SHARED_BYTES:,} B of static "
            "shared memory a thread block may allocate")
    scale = min(pl.cost for pl in plans) or 1.0
    plans.sort(key=lambda pl: (round(pl.cost / scale, 3), oh % pl.rows != 0 or ow % pl.cols != 0,
                               -pl.rows * pl.cols))
    return plans[:limit]


def cuda_fusion_plan(chain: dict, rows: int, cols: int) -> CudaPlan:
    """The plan of a given tile shape (the model picks the threads and the weight slice).

    Raises
    ------
    TemplateRefusal
        When the chain is not fusable, or the tile does not fit a thread block.
    """
    pair = fusion_pair(chain)
    plan = _plan(pair, rows, cols)
    if plan is None:
        c = pair.consumer
        need = c.in_shape[1] * _window(c, 0, rows) * _window(c, 1, cols) * pair.itemsize
        raise TemplateRefusal(
            f"a {rows}x{cols} tile of {c.name} does not fit a thread block: its input tile "
            f"needs {need:,} B of shared memory (at most {MAX_SHARED_BYTES:,} B), or more "
            f"than {MAX_THREADS_PER_BLOCK} threads")
    return plan


# ----------------------------------------------------------------------------- the steps

def _inline_all(r: Recorder, blocks: list[str], primitive: str, why: str) -> None:
    for block in blocks:
        if r.has(block) and not r.attempt(primitive, block):
            raise TemplateRefusal(f"{block} cannot be inlined ({why})")


def _bind_cooperative(r: Recorder, block: str, after: str, threads: int, *,
                      pixel_major: bool = False) -> str:
    """Fuse the loops of ``block`` below ``after`` and spread them over ``threads`` threads
    (``threadIdx.x``); returns the thread loop.

    Where ``threads`` do not divide the loops, TVM guards the last round of stores; the
    tile-local step keeps that guard and drops only the border's terms
    (:func:`~playground.compile.tile_local._border_free`), so the tile is its window.
    ``pixel_major`` puts the channels innermost first: the step's proof that dropping the
    border is harmless considers the block without any predicate, where the last round
    would run on into more rows of the tile (harmless) rather than more channels (which
    would read per-channel parameters out of bounds, so that the whole predicate would stay
    and the tile with it keep the image's size).
    """
    loops = r.loops(block)
    own = loops[loops.index(after) + 1:]
    extent = math.prod(r.extent(block, lp) for lp in own)
    if pixel_major and extent % threads:
        n, channels, *pixels = own  # the tile's (n, c, h, w): unit loops kept
        own = [n, *pixels, channels]
        r("reorder", block, loops=own)
    fused = r.fuse(block, own)
    _, inner = r.split(block, fused, [None, threads])
    r("bind", block, loop=inner, thread="threadIdx.x")
    return inner


def cuda_fusion_steps(chain: dict, plan: CudaPlan | None = None) -> Recorder:
    """The steps that fuse the chain's two convolutions in one CUDA kernel at ``plan``'s tile
    (by default the model's best); the :class:`Recorder` holds the steps and the schedule.

    Raises
    ------
    TemplateRefusal
        When the chain is not fusable or no tile fits (see :func:`cuda_fusion_plans`).
    """
    pair = fusion_pair(chain)
    plan = plan or cuda_fusion_plans(chain, limit=1)[0]
    p, c = pair.producer, pair.consumer
    r = Recorder(chain, target="cuda")
    # conv2 accumulates in registers; its epilogue is applied as the tile is written back.
    r("cache_write", c.name, write_buffer_index=0, storage_scope="local")
    write_back = f"{c.name}_local"
    _inline_all(r, list(c.helpers), "compute_inline", "a per-channel factor")
    _inline_all(r, c.epilogue_blocks, "reverse_compute_inline", "into the write-back")
    # Blocks of rows x cols pixels (with the images) -> blockIdx.x; threads over the tile.
    n, k, h, w, rc, rh, rw = r.loops(c.name)
    k0, k1 = r.split(c.name, k, [None, plan.kt])
    h0, h1, h2 = r.split(c.name, h, [None, plan.rows // plan.ht, plan.ht])
    w0, w1, w2 = r.split(c.name, w, [None, plan.cols // plan.wt, plan.wt])
    rc0, rc1 = r.split(c.name, rc, [None, plan.rc]) if plan.rc else (rc, None)
    inner = [rc0, rh, rw, *([rc1] if rc1 else []), k1, h2, w2]
    r("reorder", c.name, loops=[n, h0, w0, k0, h1, w1, *inner])
    bx = r.fuse(c.name, [n, h0, w0])
    r("bind", c.name, loop=bx, thread="blockIdx.x")
    tx = r.fuse(c.name, [k0, h1, w1])
    r("bind", c.name, loop=tx, thread="threadIdx.x")
    r("reverse_compute_at", write_back, target_block=c.name, target_loop=tx,
      preserve_unit_loops=False)
    # conv2's input tile with its halo, in shared memory, per block.
    if c.pad_block:
        tile = c.pad_block
        r("set_scope", tile, buffer_index=0, storage_scope="shared")
    else:
        source = r.reads(c.name)[0]
        r("cache_read", c.name, read_buffer_index=0, storage_scope="shared")
        tile = f"{source}_shared"
    r("compute_at", tile, target_block=c.name, target_loop=bx, preserve_unit_loops=True)
    _inline_all(r, list(p.helpers), "compute_inline", "a per-channel factor")
    _inline_all(r, p.epilogue_blocks[::-1], "compute_inline", "into the shared tile")
    thread = _bind_cooperative(r, tile, bx, plan.threads, pixel_major=True)
    # conv1: one element per store of the tile, by the thread that stores it.
    r("compute_at", p.name, target_block=tile, target_loop=thread, preserve_unit_loops=False)
    r("set_scope", p.name, buffer_index=0, storage_scope="local")
    if p.pad_block:
        _inline_all(r, [p.pad_block], "compute_inline", "conv1's padding")
    if pair.lead is not None:
        lead = [pair.lead.name, *pair.lead.epilogue_blocks]
        _inline_all(r, list(pair.lead.helpers), "compute_inline", "a per-channel factor")
        _inline_all(r, lead[::-1], "compute_inline", "into conv1's reads")
    if plan.rc:
        weight = f"{c.name}_weight"
        r("cache_read", c.name, read_buffer_index=r.reads(c.name).index(weight),
          storage_scope="shared")
        staged = f"{weight}_shared"
        r("compute_at", staged, target_block=c.name, target_loop=rc0,
          preserve_unit_loops=False)
        _bind_cooperative(r, staged, rc0, plan.threads)
    # Decompositions last: TVM 0.27 refuses loop transformations above a decomposed block.
    reduction = r.reduction_loops(p.name)
    if reduction:
        r.attempt("decompose_reduction", p.name, loop=reduction[0])
    r.attempt("decompose_reduction", c.name, loop=rc0)
    return r
