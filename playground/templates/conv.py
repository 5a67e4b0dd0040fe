"""Register-tiled window layers: convolutions (dense, grouped, depthwise) and pooling.

Two ways to fill the vector registers of a convolution's accumulator tile:

* **along output channels** (``vector="k"``), NCHWc style: the weights are copied once per call
  into a blocked layout ``[K/L, C, KH, KW, L]`` (``cache_read`` + ``transform_layout``: the
  kernel's own argument keeps its layout), the accumulators into ``[.., K/L, H, W, L]``; every
  multiply-add is one weight vector of ``L`` output channels times one input value broadcast.
  Any stride, dilation and padding are scalar loads. Needs a dense convolution whose output
  channels divide into ``kb * L``.
* **along output columns** (``vector="w"``): ``L`` neighbouring output pixels of a row per
  vector, one weight broadcast per multiply-add. Fits grouped and depthwise convolutions and
  channel counts that are not a multiple of the vector width.

Both compute a tile of accumulators in registers (``cache_write`` to ``local``), write it back
(with the stage's epilogue folded in: bias, batch norm, activations and residual adds, see
:func:`fold_epilogue`) once the reduction over ``rc, rh, rw`` is done, and pad per parallel
iteration. ``L`` and the register budget come from the machine
(:class:`~playground.build.machine.MachineFacts`), never from a constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from playground.templates.recorder import Recorder
from playground.templates.stages import Stage


@dataclass(frozen=True)
class Tile:
    """How one window layer is tiled.

    Attributes
    ----------
    vector
        ``"k"`` (output channels, blocked layout) or ``"w"`` (output columns).
    lanes
        Elements per vector (the machine's: 16 float32 on AVX-512, 8 on AVX2, 4 on NEON).
    kt
        ``vector="k"``: vectors of output channels per tile; ``"w"``: output channels.
    ht
        Output rows per tile.
    wt
        Output columns per tile (``"w"``: a multiple of ``lanes``).
    """

    vector: str
    lanes: int
    kt: int
    ht: int
    wt: int

    @property
    def accumulators(self) -> int:
        """Vector registers the tile's accumulators take."""
        if self.vector == "k":
            return self.kt * self.ht * self.wt
        return self.kt * self.ht * max(1, self.wt // self.lanes)

    def label(self) -> str:
        if self.vector == "k":
            return f"{self.kt}x{self.lanes} channels x {self.ht}x{self.wt} pixels"
        return f"{self.kt} channels x {self.ht}x{self.wt} pixels ({self.lanes}-wide)"

    def to_dict(self) -> dict:
        return asdict(self)


def fold_epilogue(r: Recorder, stage: Stage, into: str) -> list[str]:
    """Fold the stage's elementwise layers into the write-back block ``into``.

    Per-channel batch-norm factors are inlined into the batch norm (computed per element: a
    multiply and an add each), then each layer is inlined into the write-back in order, so
    the write-back applies bias, batch norm, activations and residual adds while it stores.
    Returns the epilogue blocks that could not be inlined (a residual add of an intermediate
    the write-back cannot read in place): callers move those under the tile loop instead.
    """
    for helper in stage.helpers:
        if r.has(helper):
            r.attempt("compute_inline", helper)
    left = []
    for block in stage.epilogue_blocks:
        if left or not r.attempt("reverse_compute_inline", block):
            left.append(block)
    return left


def prepare_conv(r: Recorder, stage: Stage, tile: Tile) -> str:
    """Layout steps of a conv stage (before any loop is touched); returns the write-back
    block. ``vector="k"`` copies the weights into the blocked layout and lays the accumulators
    out with the channel vector innermost."""
    name, lanes = stage.name, tile.lanes
    if tile.vector == "k":
        weight = f"{name}_weight"
        r("cache_read", name, read_buffer_index=r.reads(name).index(weight),
          storage_scope="global")
        r("transform_layout", f"{weight}_global", buffer=["write", 0],
          index_map=f"lambda k, c, h, w: (k // {lanes}, c, h, w, k % {lanes})")
    r("cache_write", name, write_buffer_index=0, storage_scope="local")
    if tile.vector == "k":
        r("transform_layout", name, buffer=["write", 0],
          index_map=f"lambda n, k, h, w: (n, k // {lanes}, h, w, k % {lanes})")
    return f"{name}_local"


def prepare_pool(r: Recorder, stage: Stage) -> str:
    """A pool accumulates its window in registers too (``cache_write`` to ``local``)."""
    r("cache_write", stage.name, write_buffer_index=0, storage_scope="local")
    return f"{stage.name}_local"


def _split(r: Recorder, block: str, loop: str, inner: int) -> tuple[str, str]:
    if inner <= 1:
        outer = r.split(block, loop, [None, 1])
        return outer[0], outer[1]
    a, b = r.split(block, loop, [None, inner])
    return a, b


def tile_conv(r: Recorder, stage: Stage, tile: Tile, write_back: list[str], *,
              outer: list[str] | None = None, parallel: bool = True,
              loops: list[str] | None = None) -> str:
    """Tile a prepared conv block whose ``loops`` are ``n, k, h, w, rc, rh, rw`` (by default
    its last 7).

    ``outer``: loops kept outermost (a fused group's tile loop and what encloses it); by
    default the image and row-tile loops, fused and made parallel. ``write_back``: the blocks
    that store the tile (the write-back with the folded epilogue, and epilogue blocks that were
    not folded), moved under the tile's column loop. Returns the outermost loop of the
    tiling (the parallel loop when ``parallel``).
    """
    name, lanes = stage.name, tile.lanes
    n, k, h, w, rc, rh, rw = loops or r.loops(name)[-7:]
    if tile.vector == "k":
        ko, kb, kv = r.split(name, k, [None, tile.kt, lanes])
        k_inner = [kb, kv]
    else:
        ko, kb = _split(r, name, k, tile.kt)
        k_inner = [kb]
    ho, hi = _split(r, name, h, tile.ht)
    if tile.vector == "k":
        wo, wi = _split(r, name, w, tile.wt)
        w_inner = [wi]
    else:
        wo, wi = _split(r, name, w, tile.wt)
        wu, wv = r.split(name, wi, [None, lanes]) if tile.wt > lanes else (None, wi)
        w_inner = [x for x in (wu, wv) if x]
    head = outer if outer is not None else [n, ho]
    rest = [x for x in (n, ho, ko) if x not in head]
    if tile.vector == "k":
        order = [*head, *rest, wo, rc, rh, rw, hi, *w_inner, *k_inner]
        vector_loop, unrolled = kv, [kb, wi, hi, rw]
    else:
        order = [*head, *rest, wo, rc, rh, rw, kb, hi, *w_inner]
        vector_loop, unrolled = w_inner[-1], [*w_inner[:-1], hi, kb, rw]
    r("reorder", name, loops=order)
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=wo)
    r("vectorize", name, loop=vector_loop)
    for loop in unrolled:
        if r.extent(name, loop) > 1:
            r("unroll", name, loop=loop)
    for block in write_back:
        r.vectorize_innermost(block, lanes)
    if not head:
        return order[0]
    top = r.fuse(name, head) if len(head) > 1 else head[0]
    if parallel:
        r("parallel", name, loop=top)
    return top


def tile_pool(r: Recorder, stage: Stage, lanes: int, write_back: list[str], *,
              outer: list[str] | None = None, parallel: bool = True,
              loops: list[str] | None = None) -> str:
    """Tile a prepared pool block whose ``loops`` are ``n, c, h, w, rh, rw`` (by default its
    last 6): one row of columns per vector, the window unrolled around it."""
    name = stage.name
    n, c, h, w, rh, rw = loops or r.loops(name)[-6:]
    ow = stage.out_shape[3]
    width = max((f for f in range(1, lanes + 1) if ow % f == 0), default=1)
    wo, wv = _split(r, name, w, width)
    head = outer if outer is not None else [n, c, h]
    rest = [x for x in (n, c, h) if x not in head]
    r("reorder", name, loops=[*head, *rest, wo, rh, rw, wv])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=wo)
    if width > 1:
        r("vectorize", name, loop=wv)
    for loop in (rh, rw):
        if r.extent(name, loop) > 1:
            r("unroll", name, loop=loop)
    for block in write_back:
        r.vectorize_innermost(block, lanes)
    if not head:
        return rest[0]
    top = r.fuse(name, head) if len(head) > 1 else head[0]
    if parallel:
        r("parallel", name, loop=top)
    return top


def elementwise_pass(r: Recorder, block: str, lanes: int) -> None:
    """A stand-alone elementwise block (NCHW): parallel over images x channels, the row
    vectorized."""
    loops = r.loops(block)
    if len(loops) != 4:
        return
    n, c, _, _ = loops
    r("parallel", block, loop=r.fuse(block, [n, c]))
    r.vectorize_innermost(block, lanes)


def finish(r: Recorder, stage: Stage, top: str) -> None:
    """Pad per parallel iteration (the rows this iteration's tiles read) and split the
    reduction's initialization off (after every loop transformation, as TVM 0.27 requires)."""
    if stage.pad_block and r.has(stage.pad_block) and top in r.loops(stage.name) \
            and top not in r.loops(stage.pad_block):
        r("compute_at", stage.pad_block, target_block=stage.name, target_loop=top,
          preserve_unit_loops=True)
    reduction = r.reduction_loops(stage.name)
    if reduction:
        r("decompose_reduction", stage.name, loop=reduction[0])
