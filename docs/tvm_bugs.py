"""Plain-TVM reproductions of the TVM 0.27 bugs that playground pre-checks stand in for.

Each function builds a small program with ``te``, schedules it with ``tvm.s_tir.Schedule``
exactly as described in ``docs/tvm-bugs.md``, and reports what happens. TVM accepts every one
of these schedules. Only tvm and numpy are needed::

    python docs/tvm_bugs.py            # all of them
    python docs/tvm_bugs.py pad-under-producer

A line ``REPRODUCED`` means TVM still misbehaves as documented; ``NOT REPRODUCED`` means a
newer TVM fixed it (and the matching rule in ``playground/schedule/prechecks.py`` may go).
Intermediates are filled with NaN first where the bug is a read of unwritten memory, so the
outcome does not depend on what the memory held.
"""

import sys

import numpy as np
import tvm
from tvm import s_tir, te, tirx


def compile_poisoned(mod):
    """Compile with every intermediate allocation NaN-filled (the playground's validation
    build: see playground/compile/poison.py), so unwritten memory reads as NaN every time."""
    sys.path.insert(0, __file__.rsplit("/docs/", 1)[0])
    from playground.compile.poison import compile_validation

    return compile_validation(mod, tvm.target.Target("llvm"))


def run(mod, arrays, out_shape):
    ex = compile_poisoned(mod)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a.astype("float32"), dev) for a in arrays]
    out = tvm.runtime.tensor(np.full(out_shape, np.nan, "float32"), dev)
    ex["main"](*args, out)
    return out.numpy()


def verdict(name, got, expected):
    bad = int(np.count_nonzero(~np.isclose(got, expected, rtol=1e-4, atol=1e-4)))
    if bad:
        print(f"{name}: REPRODUCED: {bad} of {got.size} elements wrong "
              f"({int(np.count_nonzero(np.isnan(got)))} NaN: never written)")
    else:
        print(f"{name}: NOT REPRODUCED (TVM computed the right numbers)")
    return bool(bad)


def pad_of(x, p, name):
    n, c, h, w = (int(d) for d in x.shape)
    return te.compute((n, c, h + 2 * p, w + 2 * p), lambda a, b, i, j: tirx.if_then_else(
        tirx.all(i >= p, i < h + p, j >= p, j < w + p), x[a, b, i - p, j - p],
        tirx.const(0.0, "float32")), name=name)


def conv(x, weight, stride, name):
    n, c, h, w = (int(d) for d in x.shape)
    k, _, kh, kw = (int(d) for d in weight.shape)
    rc, rh, rw = (te.reduce_axis((0, e), n_) for e, n_ in ((c, "rc"), (kh, "rh"), (kw, "rw")))
    return te.compute((n, k, (h - kh) // stride + 1, (w - kw) // stride + 1),
                      lambda a, b, i, j: te.sum(x[a, rc, i * stride + rh, j * stride + rw]
                                                * weight[b, rc, rh, rw], axis=[rc, rh, rw]),
                      name=name)


def conv_ref(x, weight, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k, _, kh, kw = weight.shape
    oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], k, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("ncij,kcij->nk", win, weight)
    return out


def schedule(tensors):
    return s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func(tensors)}))


RNG = np.random.default_rng(0)


def reverse_compute_at_non_reader():
    """relu -> add bias -> clip: relu1 moved under clip1's loop, though relu1 does not read
    clip1. TVM accepts; bias1 then reads relu1's buffer before relu1 wrote it."""
    x = te.placeholder((1, 4, 8, 8), "float32", name="x")
    b = te.placeholder((4,), "float32", name="b")
    relu = te.compute(x.shape, lambda n, c, h, w: te.max(x[n, c, h, w], 0.0), name="relu1")
    bias = te.compute(x.shape, lambda n, c, h, w: relu[n, c, h, w] + b[c], name="bias1")
    clip = te.compute(x.shape, lambda n, c, h, w: te.min(te.max(bias[n, c, h, w], -0.5), 0.5),
                      name="clip1")
    sch = schedule([x, b, clip])
    sch.reverse_compute_at(sch.get_sblock("relu1"), sch.get_loops(sch.get_sblock("clip1"))[2])
    xv, bv = RNG.uniform(-1, 1, (1, 4, 8, 8)), RNG.uniform(-1, 1, 4)
    expected = np.clip(np.maximum(xv, 0) + bv[None, :, None, None], -0.5, 0.5)
    return verdict("reverse_compute_at of a non-reader", run(sch.mod, [xv, bv], xv.shape),
                   expected)


def pad_under_producer():
    """bias_add -> 3x3 conv with padding 1: the pad block moved under bias1's h loop. TVM
    accepts; only the pad's interior is computed there, its zero border is never written."""
    x = te.placeholder((1, 4, 8, 8), "float32", name="x")
    b = te.placeholder((4,), "float32", name="b")
    wt = te.placeholder((4, 4, 3, 3), "float32", name="wt")
    bias = te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] + b[c], name="bias1")
    padded = pad_of(bias, 1, "conv1_pad")
    out = conv(padded, wt, 1, "conv1")
    sch = schedule([x, b, wt, out])
    sch.reverse_compute_at(sch.get_sblock("conv1_pad"),
                           sch.get_loops(sch.get_sblock("bias1"))[2])
    xv, bv, wv = (RNG.uniform(-1, 1, s) for s in ((1, 4, 8, 8), (4,), (4, 4, 3, 3)))
    expected = conv_ref(xv + bv[None, :, None, None], wv, 1, 1)
    return verdict("pad block under its producer's loop", run(sch.mod, [xv, bv, wv],
                                                              expected.shape), expected)


def compute_at_into_vectorized_loop():
    """conv -> relu: relu's innermost loop vectorized, then conv computed at that loop. TVM
    accepts and vectorizes the moved reduction as if its iterations were independent."""
    x = te.placeholder((1, 4, 8, 8), "float32", name="x")
    wt = te.placeholder((4, 4, 3, 3), "float32", name="wt")
    padded = pad_of(x, 1, "conv1_pad")
    out = conv(padded, wt, 1, "conv1")
    relu = te.compute(out.shape, lambda n, c, h, w: te.max(out[n, c, h, w], 0.0), name="relu1")
    sch = schedule([x, wt, relu])
    w_loop = sch.get_loops(sch.get_sblock("relu1"))[3]
    _, inner = sch.split(w_loop, [None, 8])
    sch.vectorize(inner)
    sch.compute_at(sch.get_sblock("conv1"), inner)
    xv, wv = RNG.uniform(-1, 1, (1, 4, 8, 8)), RNG.uniform(-1, 1, (4, 4, 3, 3))
    expected = np.maximum(conv_ref(xv, wv, 1, 1), 0)
    try:
        got = run(sch.mod, [xv, wv], expected.shape)
    except Exception as e:
        print(f"compute_at into a vectorized loop: REPRODUCED: accepted, then the build "
              f"fails: {str(e).strip().splitlines()[-1][:120]}")
        return True
    return verdict("compute_at into a vectorized loop", got, expected)


def decompose_reduction_outside_own_loops():
    """Depthwise 3x3 / stride 2 -> 1x1 conv: the depthwise conv computed at the 1x1 conv's
    reduction loop rc, then its reduction decomposed at the 1x1 conv's output-channel loop k
    (a loop the depthwise block does not iterate over). TVM accepts; the init runs once per k
    loop while the update repeats for every k, so the sums are doubled."""
    x = te.placeholder((1, 3, 8, 8), "float32", name="x")
    w1 = te.placeholder((3, 1, 3, 3), "float32", name="w1")
    w2 = te.placeholder((6, 3, 1, 1), "float32", name="w2")
    rh, rw = te.reduce_axis((0, 3), "rh"), te.reduce_axis((0, 3), "rw")
    dw = te.compute((1, 3, 3, 3), lambda n, c, h, w: te.sum(
        x[n, c, h * 2 + rh, w * 2 + rw] * w1[c, 0, rh, rw], axis=[rh, rw]), name="conv1")
    pw = conv(dw, w2, 1, "conv2")
    sch = schedule([x, w1, w2, pw])
    loops = sch.get_loops(sch.get_sblock("conv2"))
    sch.compute_at(sch.get_sblock("conv1"), loops[4])
    sch.decompose_reduction(sch.get_sblock("conv1"), loops[1])
    xv, w1v, w2v = (RNG.uniform(-1, 1, s) for s in ((1, 3, 8, 8), (3, 1, 3, 3), (6, 3, 1, 1)))
    dwv = np.stack([conv_ref(xv[:, c:c + 1], w1v[c:c + 1], 2, 0)[:, 0] for c in range(3)], 1)
    expected = conv_ref(dwv, w2v, 1, 0)
    return verdict("decompose_reduction outside the block's own loops",
                   run(sch.mod, [xv, w1v, w2v], expected.shape), expected)


def decompose_reduction_above_a_halo():
    """3x3 conv -> 3x3 conv: the first computed at the second's rows (each row of the second
    recomputes the three rows of the first it reads: a halo), then the first's reduction
    decomposed at that row loop. TVM accepts; the init runs once, before the rows, while
    every row's update adds onto the rows the row before it summed (the deep fuzz's seed
    992029, whose producer was a 1x1 grouped conv)."""
    x = te.placeholder((1, 2, 8, 8), "float32", name="x")
    w1 = te.placeholder((3, 2, 3, 3), "float32", name="w1")
    w2 = te.placeholder((2, 3, 3, 3), "float32", name="w2")
    out = conv(conv(x, w1, 1, "conv1"), w2, 1, "conv2")
    sch = schedule([x, w1, w2, out])
    h = sch.get_loops(sch.get_sblock("conv2"))[2]
    sch.compute_at(sch.get_sblock("conv1"), h)
    sch.decompose_reduction(sch.get_sblock("conv1"), h)
    xv, w1v, w2v = (RNG.uniform(-1, 1, s) for s in ((1, 2, 8, 8), (3, 2, 3, 3), (2, 3, 3, 3)))
    expected = conv_ref(conv_ref(xv, w1v, 1, 0), w2v, 1, 0)
    return verdict("decompose_reduction above a recomputed halo",
                   run(sch.mod, [xv, w1v, w2v], expected.shape), expected)


def vectorized_copy_with_its_producer():
    """The fuzzer's first cache_read case, reduced: a per-channel scale read through a local
    copy (cache_read), the scale computed at the copy's loop, that loop vectorized. Both
    blocks sit in one vectorized iteration; TVM shrinks the scale buffer to the one element an
    iteration needs and stores all eight lanes into it, so every channel gets one lane's
    scale."""
    x = te.placeholder((1, 8, 4, 4), "float32", name="x")
    g = te.placeholder((8,), "float32", name="g")
    scale = te.compute((8,), lambda c: g[c] * 2.0, name="scale")
    out = te.compute(x.shape, lambda n, c, h, w: x[n, c, h, w] * scale[c], name="out")
    sch = schedule([x, g, out])
    copy = sch.cache_read(sch.get_sblock("out"), 1, "local")
    ax0 = sch.get_loops(copy)[0]
    sch.compute_at(sch.get_sblock("scale"), ax0, preserve_unit_loops=False)
    sch.vectorize(ax0)
    xv, gv = RNG.uniform(-1, 1, (1, 8, 4, 4)), RNG.uniform(-1, 1, 8)
    return verdict("vectorized copy with its producer (scale)", run(sch.mod, [xv, gv], xv.shape),
                   xv * (gv * 2)[None, :, None, None])


def _vectorized_pad(title, reader, scope, move):
    """data -> pad 1 -> 1x1 conv, the input of ``reader`` read through a ``scope`` copy, the
    copy moved (``move``) to the pad block's innermost loop, that loop vectorized."""
    x = te.placeholder((1, 2, 6, 6), "float32", name="x")
    wt = te.placeholder((2, 2, 1, 1), "float32", name="wt")
    out = conv(pad_of(x, 1, "conv1_pad"), wt, 1, "conv1")
    sch = schedule([x, wt, out])
    copy = sch.cache_read(sch.get_sblock(reader), 0, scope)
    w = sch.get_loops(sch.get_sblock("conv1_pad"))[3]
    getattr(sch, move)(copy, w, preserve_unit_loops=False)
    sch.vectorize(w)
    xv, wv = RNG.uniform(-1, 1, (1, 2, 6, 6)), RNG.uniform(-1, 1, (2, 2, 1, 1))
    expected = conv_ref(xv, wv, 1, 1)
    return verdict(title, run(sch.mod, [xv, wv], expected.shape), expected)


def vectorized_pad_with_its_local_copy():
    """The fuzzer's second case, reduced: the conv's input read through a local copy
    (cache_read), the copy moved under the pad block's innermost loop (reverse_compute_at),
    that loop vectorized. The pad's guard keeps TVM from vectorizing: it splits the loop into
    one loop per block, and the copy loop reads the one element the pad loop left behind."""
    return _vectorized_pad("vectorized pad with its local copy", "conv1", "local",
                           "reverse_compute_at")


def vectorized_shared_copy_with_its_pad():
    """The fuzzer's third case, reduced: the pad's input read through a shared copy
    (cache_read), the copy computed at the pad's innermost loop (compute_at), that loop
    vectorized: as in the second case, the pad reads one element for the whole row."""
    return _vectorized_pad("vectorized shared copy with its pad", "conv1_pad", "shared",
                           "compute_at")

BUGS = {
    "reverse-compute-at-non-reader": reverse_compute_at_non_reader,
    "pad-under-producer": pad_under_producer,
    "compute-at-vectorized": compute_at_into_vectorized_loop,
    "decompose-outside": decompose_reduction_outside_own_loops,
    "decompose-above-halo": decompose_reduction_above_a_halo,
    "vectorized-scale-copy": vectorized_copy_with_its_producer,
    "vectorized-pad-local-copy": vectorized_pad_with_its_local_copy,
    "vectorized-shared-copy-pad": vectorized_shared_copy_with_its_pad,
}


def main(names):
    results = {name: BUGS[name]() for name in (names or BUGS)}
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
