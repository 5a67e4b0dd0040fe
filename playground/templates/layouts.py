"""Layouts of the buffers a templated kernel allocates (never its arguments).

Two choices, both ordinary ``transform_layout`` steps visible in History and the lowered TIR:

* **channel blocks** (NCHWc, :func:`block_intermediate`): the tensor between a channel-vector
  conv and the channel-vector conv or pool that reads it, so that the producer's write-back
  stores contiguous vectors and the reader's padding copy keeps them (:func:`blocked_pad`);
* **column phases** (:func:`deinterleave_pad`): the padded input of a strided window layer
  vectorized along its output row, so that every tap is one vector load; or kept in rows
  (:func:`rows_pad`), its copy one vector per row.

:mod:`playground.templates.conv` decides where (it tiles the layers); this module only lays
out.
"""

from __future__ import annotations

from playground.templates.recorder import Recorder
from playground.templates.stages import Stage


def channel_blocks(lanes: int, channel: str = "k") -> str:
    """The index map of the channel-blocked layout (NCHWc): ``[n, c // L, h, w, c % L]``, for
    a buffer whose second axis is named ``channel``."""
    return (f"lambda n, {channel}, h, w: (n, {channel} // {lanes}, h, w, "
            f"{channel} % {lanes})")


def block_intermediate(r: Recorder, write_back: str, lanes: int) -> bool:
    """Lay the tensor ``write_back`` stores out in channel blocks, ``[n, k // L, h, w, k % L]``
    (NCHWc), as ONNX Runtime keeps its activations between convolutions.

    A channel-vector conv (``vector="k"``) holds ``L`` output channels per accumulator; storing
    them to NCHW is a transpose (each vector of ``L`` channels scattered ``H*W`` apart, or
    gathered back ``L`` apart in the write-back), while in NCHWc it is one contiguous vector
    store. The caller decides where it applies: the next reader is a channel-vector conv (it
    broadcasts single values; its padding copy is blocked too, in
    :func:`~playground.templates.conv.finish`) or a pool
    (:func:`~playground.templates.conv.tile_pool` then vectorizes it along the channel
    blocks), and the tensor is an intermediate (a kernel argument keeps its layout). Returns
    whether it was applied (the channels must divide into ``L``)."""
    buffer = r.writes(write_back)[0]
    if not r.attempt("transform_layout", write_back, buffer=["write", 0],
                     index_map=channel_blocks(lanes)):
        return False
    r.blocked.add(write_back)
    r.blocked_buffers.add(buffer)
    r.blocked_lanes = lanes
    return True


def blocked_write_back(r: Recorder, block: str, anchor: str, lanes: int) -> None:
    """The write-back of a blocked output under its tile loop ``anchor``: its first loop is the
    tile's channels (``n`` is a unit loop there), split into ``L``-channel vectors that go
    innermost, so that the store and the accumulator read are both contiguous."""
    loops = r.loops(block)
    own = loops[loops.index(anchor) + 1:]
    if not own or r.extent(block, own[0]) % lanes:
        return
    k0, k1 = r.split(block, own[0], [None, lanes])
    rest = [x for x in r.loops(block)[loops.index(anchor) + 1:] if x not in (k0, k1)]
    r.attempt("reorder", block, loops=[k0, *rest, k1])
    r.attempt("vectorize", block, loop=k1)


def blocked_pad(r: Recorder, stage: Stage, lanes: int) -> None:
    """A padding copy that reads a blocked tensor (:func:`block_intermediate`) writes blocked
    too, channel vectors innermost: the copy is contiguous on both sides, and what reads it (a
    conv's broadcasts, a pool's channel vectors) reads the blocks."""
    pad = stage.pad_block
    channels = stage.in_shape[1]
    if channels % lanes or not r.attempt("transform_layout", pad, buffer=["write", 0],
                                         index_map=channel_blocks(lanes, "c")):
        return
    _, c, h, w = r.loops(pad)[-4:]
    c0, c1 = r.split(pad, c, [None, lanes])
    r.attempt("reorder", pad, loops=[c0, h, w, c1])
    r.attempt("vectorize", pad, loop=c1)


def deinterleave_pad(r: Recorder, stage: Stage) -> bool:
    """Lay a strided window layer's padded input out by column phase:
    ``[n, c, h, w % s, w // s]``.

    In a pool, and in a conv with ``vector="w"``, a vector holds ``L`` neighbouring output
    columns, which read input columns ``s`` apart: in NCHW a gather (LLVM loads each lane on
    its own). De-interleaved, the columns one tap reads are contiguous in their phase
    (``(s*w + d*kw) % s`` is fixed by the tap, ``(s*w + d*kw) // s`` steps by one), so every
    tap is one vector load; the padding copy, which runs once per element where the taps read
    each element ``KH*KW / s`` times, does the strided part. Measured on an AVX-512 Xeon
    (2 cores), paired rounds: 1.25x on MobileNet v2's fused depthwise 3x3/2 block, 1.12x on
    ResNet's stem (its 3x3/2 max pool).

    Only the padding block's own buffer changes (the kernel's arguments keep NCHW). Left as
    they are: a layer without padding (it reads its input in place), a padded width the
    stride does not divide (TVM's layout step would need a pad value), and anything TVM
    refuses (the gathers stay: correct, slower). Returns whether the layout was applied.
    """
    s = stage.layer["stride"][1] if stage.kind in ("conv", "pool") else 1
    if s <= 1 or not stage.pad_block or not r.has(stage.pad_block):
        return False
    return r.attempt("transform_layout", stage.pad_block, buffer=["write", 0],
                     index_map=f"lambda n, c, h, w: (n, c, h, w % {s}, w // {s})")


def rows_pad(r: Recorder, stage: Stage) -> bool:
    """Keep a strided window layer's padded input in rows (NCHW), and copy each row as one
    vector (of the row's padded width, which LLVM splits into the machine's vectors and a
    masked tail): the alternative to :func:`deinterleave_pad` that the search measures, where
    the copy into phases, one strided element at a time, costs more than the taps' strided
    loads it saves. Returns whether the copy was vectorized."""
    if not stage.pad_block or not r.has(stage.pad_block):
        return False
    last = r.loops(stage.pad_block)[-1]
    return r.attempt("vectorize", stage.pad_block, loop=last)
