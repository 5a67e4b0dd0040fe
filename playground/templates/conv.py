"""Register-tiled window layers: convolutions (dense, grouped, depthwise) and pooling.

Two ways to fill the vector registers of a convolution's accumulator tile:

* **along output channels** (``vector="k"``), NCHWc style: the weights are copied once per call
  into a blocked layout ``[K/L, C, KH, KW, L]`` (``cache_read`` + ``transform_layout``: the
  kernel's own argument keeps its layout), the accumulators into ``[.., K/L, H, W, L]``; every
  multiply-add is one weight vector of ``L`` output channels times one input value broadcast.
  Any stride, dilation and padding are scalar loads. Needs a dense convolution whose output
  channels divide into ``kb * L``. Where the weights outweigh the activations, the blocks of
  output channels go outermost (``Tile.order="channels"``) and each copies its own weights.
* **along output columns** (``vector="w"``): ``L`` neighbouring output pixels of a row per
  vector, one weight broadcast per multiply-add. Fits grouped and depthwise convolutions and
  channel counts that are not a multiple of the vector width.
* **along the batch** (``vector="n"``): ``L`` images per vector, for a batch of ``L`` or more
  images whose output width no vector divides (the forum's seed program: 16 images, 229
  columns, 10 channels). The input is copied once per call to ``[C, H, W, N]`` and the
  accumulators laid out ``[K, H, W, N]``, so every multiply-add is a contiguous vector of
  images times a broadcast weight.

Both compute a tile of accumulators in registers (``cache_write`` to ``local``), write it back
(with the stage's epilogue folded in: bias, batch norm, activations and residual adds, see
:func:`fold_epilogue`) once the reduction over ``rc, rh, rw`` is done, and pad per parallel
iteration. ``L`` and the register budget come from the machine
(:class:`~playground.measure.machine.MachineFacts`), never from a constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from playground.errors import PlaygroundError
from playground.templates.layouts import (
    blocked_pad,
    blocked_write_back,
    channel_blocks,
    deinterleave_pad,
    rows_pad,
)
from playground.templates.recorder import Recorder
from playground.templates.stages import Stage


@dataclass(frozen=True)
class Tile:
    """How one window layer is tiled.

    Attributes
    ----------
    vector
        ``"k"`` (output channels, blocked layout), ``"w"`` (output columns), ``"n"``
        (images of the batch) or ``"p"`` (pixels: a 1x1, stride-1, unpadded dense conv is a
        matrix product over the image's pixels, and ``ht`` whole rows of them, fused into
        one loop, are ``ht * W / lanes`` contiguous vectors of the NCHW input and output,
        whatever the width: a 28-wide image that no column vector divides gives 7 vectors
        per 4 rows; no layout copy, and the output is stored as it is computed).
    lanes
        Elements per vector (the machine's: 16 float32 on AVX-512, 8 on AVX2, 4 on NEON).
    kt
        ``vector="k"``: vectors of output channels per tile; ``"w"``/``"n"``: output channels.
    ht
        Output rows per tile (``"n"``: 1; its tiles are whole rows of the whole batch).
    wt
        Output columns per tile (``"w"``: a multiple of ``lanes``).
    order
        ``"rows"``: images and row tiles outermost (each tile of pixels sweeps all the
        weights); ``"channels"`` (``vector="k"`` only): blocks of output channels outermost,
        so a block's weights stay in cache while it sweeps the whole image, the way to go
        when the weights outweigh the activations (ResNet's 512-channel 7x7 stage: 9 MB of
        weights, 100 KB of input).
    nt
        ``vector="n"`` only: vectors of images per tile (1 for the other vectors).

    rc
        ``vector="p"`` only: input channels per block of the reduction (0: all of them). Each
        block of ``kt`` output channels reads the tile's input pixels of every input channel;
        where those overflow L1 (128 channels x 112 pixels = 57 KB), the reduction goes in
        blocks of ``rc`` channels outside the output channels, so a block's input stays in
        L1 while every output channel's accumulators take their share, the partial sums kept
        in the tile's (L2-resident) accumulator buffer between blocks: 2x128x28x28 -> 256
        ran 0.41 ms unblocked, 0.22 ms in blocks of 64 (a 2-core AVX-512 machine).
    phases
        ``vector="w"`` on a strided conv: its padded input laid out by column phase
        (:func:`~playground.templates.layouts.deinterleave_pad`: every tap one vector load,
        the copy strided), or, ``False``, kept in rows (the copy vectorized, every tap a
        strided load). Which is faster depends on the machine: MobileNet's depthwise 3x3/2 at
        112x112 ran 0.14 ms in rows against 0.18 ms in phases on one AVX-512 machine, the
        reverse of what an AVX-512 Xeon measured, so the search measures both.

    ``vector="winograd"``: the conv computed by Winograd's F(ht x ht, 3x3), its products
    register-tiled ``wt`` tiles x ``kt`` vectors of output channels, over the whole image
    (``order="rows"``) or in chunks of ``nt`` rows of tiles (``order="chunks"``)
    (:mod:`playground.templates.winograd`).
    """

    vector: str
    lanes: int
    kt: int
    ht: int
    wt: int
    order: str = "rows"
    nt: int = 1
    phases: bool = True
    rc: int = 0

    @property
    def accumulators(self) -> int:
        """Vector registers the tile's accumulators take."""
        if self.vector in ("k", "n"):
            return self.kt * self.ht * self.nt * self.wt
        return self.kt * self.ht * max(1, self.wt // self.lanes)

    def label(self) -> str:
        if self.vector == "winograd":
            where = f", in chunks of {self.nt} tile rows" if self.order == "chunks" else ""
            return (f"Winograd F({self.ht}x{self.ht}, 3x3), products {self.wt} tiles x "
                    f"{self.kt}x{self.lanes} channels{where}")
        if self.vector == "k":
            outermost = ", channel blocks outermost" if self.order == "channels" else ""
            return f"{self.kt}x{self.lanes} channels x {self.ht}x{self.wt} pixels{outermost}"
        if self.vector == "n":
            return (f"{self.kt} channels x {self.wt} pixels x {self.nt}x{self.lanes} images")
        if self.vector == "p":
            blocks = f", input channels in blocks of {self.rc}" if self.rc else ""
            return (f"{self.kt} channels x {self.ht}x{self.wt} pixels as "
                    f"{self.ht * self.wt // self.lanes} pixel vectors{blocks}")
        rows = "" if self.phases else ", input in rows"
        return f"{self.kt} channels x {self.ht}x{self.wt} pixels ({self.lanes}-wide){rows}"

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
        copy = f"{weight}_global"
        r("transform_layout", copy, buffer=["write", 0],
          index_map=f"lambda k, c, h, w: (k // {lanes}, c, h, w, k % {lanes})")
        # The copy runs every call (a 512x512x3x3 weight is 9 MB): vector stores of lanes
        # output channels, parallel over the blocks of channels.
        k, c, h, w = r.loops(copy)
        k_out, k_in = r.split(copy, k, [None, lanes])
        r("reorder", copy, loops=[k_out, c, h, w, k_in])
        r("parallel", copy, loop=k_out)
        r.attempt("vectorize", copy, loop=k_in)
    if tile.vector == "n":
        r("cache_read", name, read_buffer_index=0, storage_scope="global")
        r("transform_layout", name, buffer=["read", 0],
          index_map="lambda n, c, h, w: (c, h, w, n)")
    r("cache_write", name, write_buffer_index=0, storage_scope="local")
    if tile.vector == "k":
        r("transform_layout", name, buffer=["write", 0], index_map=channel_blocks(lanes))
    elif tile.vector == "n":
        r("transform_layout", name, buffer=["write", 0],
          index_map="lambda n, k, h, w: (k, h, w, n)")
    return f"{name}_local"


def input_copy(r: Recorder, stage: Stage) -> str | None:
    """The block that copies a batch-vectorized conv's input into ``[C, H, W, N]``."""
    buffer = r.reads(stage.name)[0]
    return next((b for b in r.blocks() if r.writes(b) == [buffer] and b != stage.name), None)


def batch_copy(r: Recorder, stage: Stage, *, parallel: bool = True) -> None:
    """The ``[C, H, W, N]`` copy of a batch-vectorized conv's input: images innermost
    (vectorized), rows in parallel (unless it sits inside a parallel tile already)."""
    writer = input_copy(r, stage)
    if writer is None:
        return
    n, c, h, w = r.loops(writer)[-4:]
    r("reorder", writer, loops=[c, h, w, n])
    if parallel and not any(k == "parallel" for k in r.loop_kinds(writer)):
        r("parallel", writer, loop=r.fuse(writer, [c, h]))
    r.vectorize_innermost(writer, stage.out_shape[0])


def prepare_pool(r: Recorder, stage: Stage) -> str:
    """A pool accumulates its window in registers too (``cache_write`` to ``local``)."""
    r("cache_write", stage.name, write_buffer_index=0, storage_scope="local")
    return f"{stage.name}_local"


def _fit(extent: int, want: int, multiple: int = 1) -> int:
    """The largest divisor of ``extent`` up to ``want`` that is a multiple of ``multiple``
    (0 when there is none): a tile extent that needs no guard."""
    return max((d for d in range(multiple, min(want, extent) + 1, multiple)
                if extent % d == 0), default=0)


def split_loop(r: Recorder, block: str, loop: str, inner: int) -> tuple[str, str]:
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
    if tile.vector == "p":
        if outer is not None and not outer:
            raise PlaygroundError(f"{name}: a pixel-vector tile ({tile.label()}) is never "
                                  "computed under another layer's tile (only the last layer "
                                  "of a fused group can have one)")
        return _tile_pixels(r, stage, tile, write_back, (n, k, h, w, rc, rh, rw),
                            outer=outer, parallel=parallel)
    if tile.vector == "n":
        head = [h] if outer is None else [x for x in outer if x != n]
        return _tile_batch(r, stage, tile, write_back, (n, k, h, w, rc, rh, rw), head,
                           parallel=parallel)
    # Inside a fused group a stage computes the rows and columns its consumer's tile needs,
    # which the stage's own tile may not divide: a guarded tile cannot be vectorized, so the
    # tile shrinks to what divides (its shape was ranked for the whole tensor).
    ht = tile.ht if r.extent(name, h) % tile.ht == 0 else 1
    ew = r.extent(name, w)
    if tile.vector == "k":
        ko, kb, kv = r.split(name, k, [None, tile.kt, lanes])
        k_inner = [kb, kv]
    else:
        ko, kb = split_loop(r, name, k, tile.kt)
        k_inner = [kb]
    ho, hi = split_loop(r, name, h, ht)
    if tile.vector == "k":
        wo, wi = split_loop(r, name, w, _fit(ew, tile.wt))
        w_inner = [wi]
    else:
        wt = _fit(ew, tile.wt, lanes) or _fit(ew, lanes)
        lanes = min(lanes, wt)
        wo, wi = split_loop(r, name, w, wt)
        wu, wv = r.split(name, wi, [None, lanes]) if wt > lanes else (None, wi)
        w_inner = [x for x in (wu, wv) if x]
    if outer is not None:
        head = outer
    else:
        head = [n, ko] if tile.order == "channels" and tile.vector == "k" else [n, ho]
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
        if block in r.blocked:
            blocked_write_back(r, block, wo, lanes)
    top = vectorize_unroll_parallel(r, name, vector_loop, unrolled, write_back, lanes, head,
                                    order[0], parallel)
    if outer is None and tile.order == "channels" and tile.vector == "k":
        _copy_weights_per_block(r, stage, top, lanes)
    return top


def pixel_vectors_fit(stage: Stage) -> bool:
    """Whether ``vector="p"`` applies: a dense 1x1 conv, stride 1, no padding (its input
    pixels are its output pixels, so a run of pixels is contiguous in both)."""
    layer = stage.layer
    return (stage.kind == "conv" and layer["groups"] == 1
            and tuple(layer["kernel"]) == (1, 1) and tuple(layer["stride"]) == (1, 1)
            and not any(layer["padding"]))


def _tile_pixels(r: Recorder, stage: Stage, tile: Tile, write_back: list[str],
                 loops: tuple[str, ...], *, outer: list[str] | None, parallel: bool) -> str:
    """``vector="p"``: ``[n, h_0 (parallel), k_0 | rc, rh, rw, p_0, k_1, p_1]`` where ``p`` is
    the ``ht`` rows of the tile and their columns fused, ``p_1`` the vector: per input
    channel, ``ht * W / lanes`` vector loads of contiguous input pixels and ``kt`` broadcast
    weights feed ``kt * ht * W / lanes`` accumulators. The write-back (epilogue folded)
    stores each channel's ``ht`` rows as vectors, after the tile's channels. As the last
    layer of a group fused at row tiles (``outer``: the group's tile loops), the same within
    each row tile; whole rows only (a 2-D tile's rows are not contiguous)."""
    name, lanes = stage.name, tile.lanes
    n, k, h, w, rc, rh, rw = loops
    ow = r.extent(name, w)
    if ow != stage.out_shape[3]:
        raise PlaygroundError(f"{name}: a pixel-vector tile needs whole rows; a tile of "
                              f"{ow} of {stage.out_shape[3]} columns is not contiguous")
    if r.extent(name, h) % tile.ht or (tile.ht * ow) % lanes:
        raise PlaygroundError(f"{name}: {tile.ht} rows of {ow} pixels are not whole vectors "
                              f"of {lanes} in a tile of {r.extent(name, h)} rows")
    ko, kb = split_loop(r, name, k, tile.kt)
    ho, hi = split_loop(r, name, h, tile.ht)
    head = [n, ho] if outer is None else outer
    rest = [x for x in (n, ho, ko) if x not in head]
    channels = r.extent(name, rc)
    if tile.rc and tile.rc < channels:
        if channels % tile.rc:
            raise PlaygroundError(f"{name}: blocks of {tile.rc} input channels do not divide "
                                  f"its {channels}")
        rc_o, rc = r.split(name, rc, [None, tile.rc])
        around = [x for x in rest if x != ko]
        r("reorder", name, loops=[*head, *around, rc_o, ko, rc, rh, rw, kb, hi, w])
        store_at = (head + around)[-1]  # the write-back waits for the last channel block
    else:
        r("reorder", name, loops=[*head, *rest, rc, rh, rw, kb, hi, w])
        store_at = ko
    pixels = r.fuse(name, [hi, w])
    pu, pv = r.split(name, pixels, [None, lanes])
    # pixel vectors outside the channels: one input vector live at a time, the weights
    # broadcast from memory (28 accumulators fit; channels outside spilled, 0.52 vs 0.38 ms)
    r("reorder", name, loops=[pu, kb])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=store_at)
        inner = r.loops(block)[-2:]  # the tile's rows and columns: whole vectors
        if tile.ht > 1 and [r.extent(block, x) for x in inner] == [tile.ht, ow]:
            r.fuse(block, inner)
    return vectorize_unroll_parallel(r, name, pv, [pu, kb], write_back, lanes, head,
                                     head[0] if head else rest[0], parallel)


def _copy_weights_per_block(r: Recorder, stage: Stage, top: str, lanes: int) -> None:
    """With channel blocks outermost, each block copies its own weights into the blocked
    layout just before it uses them (the copy's writes stay in cache, and the copy runs in
    the conv's parallel loop). Only for one image: with more, each image would copy again;
    never with constant weights (the copy stays top-level, run once before the kernel)."""
    if stage.out_shape[0] != 1 or r.hoist_weights:
        return
    copy = f"{stage.name}_weight_global"
    if not r.attempt("compute_at", copy, target_block=stage.name, target_loop=top,
                     preserve_unit_loops=True):
        return
    k, c, h, w = r.loops(copy)[-4:]
    if r.extent(copy, k) % lanes == 0:
        k_out, k_in = r.split(copy, k, [None, lanes])
        r("reorder", copy, loops=[k_out, c, h, w, k_in])
        r.attempt("vectorize", copy, loop=k_in)


def vectorize_unroll_parallel(r: Recorder, name: str, vector_loop: str | None,
                              unrolled: list[str], write_back: list[str], lanes: int,
                              head: list[str], first: str, parallel: bool) -> str:
    """The end of every tiling: vectorize, unroll, vectorize the write-back, fuse ``head``
    into the parallel loop; returns the tiling's outermost loop (``first`` without a head).

    Vectorizing and unrolling only make it faster: where TVM cannot (a block whose bindings
    a fused group made non-affine, say) the tile stays scalar and correct."""
    if vector_loop is not None and r.extent(name, vector_loop) > 1:
        r.attempt("vectorize", name, loop=vector_loop)
    for loop in unrolled:
        if r.extent(name, loop) > 1:
            r.attempt("unroll", name, loop=loop)
    for block in write_back:
        if block not in r.blocked:  # a blocked write-back is vectorized along its channels
            r.vectorize_innermost(block, lanes)
    if not head:
        return first
    top = r.fuse(name, head) if len(head) > 1 else head[0]
    if parallel:
        r("parallel", name, loop=top)
    return top


def _tile_batch(r: Recorder, stage: Stage, tile: Tile, write_back: list[str],
                loops: tuple[str, ...], head: list[str], *, parallel: bool) -> str:
    """``vector="n"``: ``[head | h, n_0, k_0, w_0 | rc, rh, rw, k_1, w_1, n_vectors, n_lanes]``:
    the whole batch is in every tile; rows (``head``: the rows, or a fused group's row tile)
    in parallel. Inside a fused group (``head`` empty) the input copy is its tile's."""
    name, lanes = stage.name, tile.lanes
    n, k, h, w, rc, rh, rw = loops
    n0, nl = r.split(name, n, [None, lanes])
    n00, nv = split_loop(r, name, n0, tile.nt)
    k0, k1 = split_loop(r, name, k, tile.kt)
    w0, w1 = split_loop(r, name, w, tile.wt)
    rows = [x for x in (h,) if x not in head]
    r("reorder", name, loops=[*head, *rows, n00, k0, w0, rc, rh, rw, k1, w1, nv, nl])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=w0)
    r.attempt("vectorize", name, loop=nl)
    for loop in (nv, w1, k1, rw):
        if r.extent(name, loop) > 1:
            r.attempt("unroll", name, loop=loop)
    top = (head or rows)[0]
    if parallel:
        r("parallel", name, loop=top)
    batch_copy(r, stage, parallel=bool(head))
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
    source = stage.pad_block if stage.pad_block and r.has(stage.pad_block) else name
    if set(r.reads(source)) & r.blocked_buffers:
        return _tile_blocked_pool(r, stage, lanes, write_back, (n, c, h, w, rh, rw), outer,
                                  parallel, width)
    wo, wv = split_loop(r, name, w, width)
    head = outer if outer is not None else [n, c, h]
    rest = [x for x in (n, c, h) if x not in head]
    r("reorder", name, loops=[*head, *rest, wo, rh, rw, wv])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=wo)
    return vectorize_unroll_parallel(r, name, wv if width > 1 else None, [rh, rw], write_back,
                                     lanes, head, (rest or head)[0], parallel)


def _tile_blocked_pool(r: Recorder, stage: Stage, lanes: int, write_back: list[str],
                       loops: tuple[str, ...], outer: list[str] | None, parallel: bool,
                       width: int) -> str:
    """A pool whose input is in channel blocks
    (:func:`~playground.templates.layouts.block_intermediate`): ``L`` channels per vector
    (each window tap one contiguous load, where a row vector would gather), ``width``
    output columns per tile, the accumulators laid out channel-innermost too; the write-back
    stores rows of the tile into the NCHW output."""
    name = stage.name
    n, c, h, w, rh, rw = loops
    r("transform_layout", name, buffer=["write", 0], index_map=channel_blocks(lanes, "c"))
    c0, c1 = r.split(name, c, [None, lanes])
    wo, wi = split_loop(r, name, w, width)
    head = outer if outer is not None else [n, c0, h]
    rest = [x for x in (n, c0, h) if x not in head]
    r("reorder", name, loops=[*head, *rest, wo, rh, rw, wi, c1])
    for block in write_back:
        r("reverse_compute_at", block, target_block=name, target_loop=wo)
    return vectorize_unroll_parallel(r, name, c1, [wi, rh, rw], write_back, lanes, head,
                                     (rest or head)[0], parallel)


def elementwise_pass(r: Recorder, block: str, lanes: int) -> None:
    """A stand-alone elementwise block (NCHW): parallel over images x channels, the row
    vectorized."""
    loops = r.loops(block)
    if len(loops) != 4:
        return
    n, c, _, _ = loops
    r("parallel", block, loop=r.fuse(block, [n, c]))
    r.vectorize_innermost(block, lanes)


def finish(r: Recorder, stage: Stage, top: str, tile: Tile | None = None) -> None:
    """Pad per parallel iteration (the rows this iteration's tiles read), lay the padded input
    out in channel blocks where it copies a blocked tensor
    (:func:`~playground.templates.layouts.blocked_pad`), else by column phase for a strided
    pool or row-vectorized conv (:func:`~playground.templates.layouts.deinterleave_pad`), and
    split the reduction's initialization off (after every loop transformation, as TVM 0.27
    requires)."""
    if stage.pad_block and r.has(stage.pad_block) and top in r.loops(stage.name) \
            and top not in r.loops(stage.pad_block):
        r("compute_at", stage.pad_block, target_block=stage.name, target_loop=top,
          preserve_unit_loops=True)
    if stage.pad_block and r.has(stage.pad_block) and \
            set(r.reads(stage.pad_block)) & r.blocked_buffers:
        blocked_pad(r, stage, r.blocked_lanes)
    elif tile is not None and tile.vector == "w" and not tile.phases:
        rows_pad(r, stage)
    elif stage.kind == "pool" or (tile is not None and tile.vector == "w"):
        deinterleave_pad(r, stage)
    reduction = r.reduction_loops(stage.name)
    if reduction:  # where TVM cannot, the initialization stays a branch inside the loop
        r.attempt("decompose_reduction", stage.name, loop=reduction[0])
