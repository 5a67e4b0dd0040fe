"""Winograd's F(m x m, 3x3): a 3x3 stride-1 convolution's stages with fewer multiplies.

Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016) computes an m x m tile of a 3x3 convolution's output from an (m + 2) x
(m + 2) tile of its input with (m + 2)^2 multiplies per channel pair instead of 9 m^2: 2.25x
fewer for m = 2, 4x for m = 4, at the price of transforms and of rounding (F(4x4)'s error is
a few times F(2x2)'s; both pass the float32 check). The 3x3 convolutions of the benchmark run
near the machine's FMA peak as direct convolutions, as ONNX Runtime's do: this is the one way
to do fewer of them. Its stages, for a conv layer ``conv1`` (loop names in brackets):

* ``conv1_pad`` [n, c, h, b, s]: the zero-padded input, grown to whole tiles, laid out by
  tile column (b: the column within the window of tile column s);
* ``conv1_U`` [e, u, c, k] = G w[k, c] G^T: the weight transform, which reads only the
  weights (the constant-weight build runs it once, before timing);
* ``conv1_V`` [e, u, c, p] = B^T d_p B: the input transform of tile ``p`` (images x tile
  rows x tile columns flattened), written out term by term without the zero coefficients;
* ``conv1_M`` [e, u, p, k, rc] = sum over rc of V[e, u, rc, p] U[e, u, rc, k]: (m + 2)^2
  independent matrix products, where the multiplies are;
* ``conv1_Y`` [p, i, j, k] = A^T M_p A: the inverse transform, an m x m output tile;
* ``conv1`` [n, k, h, w]: the tiles written back into NCHW, the block every later layer reads
  (an epilogue still inlines into it).

The transforms pick their coefficient by the loop variables (e, u / i, j) from a table of
selects that folds into one expression per iteration once those loops are unrolled.
Matrices are TVM's own (``tvm.topi.nn.winograd_util``, the Cook-Toom points its
``conv2d_winograd`` uses). This module imports only tvm: exported scripts embed it.
"""

from tvm import te, tirx
from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

#: Output tile sizes m of F(m x m, 3x3) a step may ask for.
TILES = (2, 3, 4)


def winograd_refusal(layer):
    """Why ``layer`` (normalized) cannot be computed by Winograd's F(m x m, 3x3); None when
    it can: a dense 3x3 convolution of stride 1 (any padding; a dilated one by phases)."""
    name = layer["name"]
    if layer["op"] != "conv2d":
        return f"{name} is a {layer['op']} layer: Winograd computes a 3x3 convolution"
    if list(layer["kernel"]) != [3, 3]:
        return f"{name} has a {layer['kernel'][0]}x{layer['kernel'][1]} kernel: Winograd's " \
               "F(m x m, 3x3) needs 3x3"
    if list(layer["stride"]) != [1, 1]:
        return f"{name} has stride {layer['stride'][0]}x{layer['stride'][1]}: Winograd needs " \
               "stride 1"
    if layer["groups"] != 1:
        return f"{name} is grouped (groups={layer['groups']}): Winograd's products need a " \
               "dense convolution"
    return None


def matrices(m):
    """Winograd's (A, B, G) for F(m x m, 3x3) as float64 arrays: Y = A^T [(G g G^T) *
    (B^T d B)] A."""
    return _cook_toom_convolution(_interpolation_points(m + 3 - 2), m, 3)  # as TVM: m + r - 2


def _terms_sum(terms):
    """sum of coef * x over ``terms`` [(coef, x)]: zeros left out, ones and minus ones
    without a multiply."""
    out = None
    for coef, x in terms:
        if coef == 0:
            continue
        t = x if coef == 1 else -x if coef == -1 else x * tirx.const(float(coef), x.dtype)
        out = t if out is None else out + t
    return out


def _table_pick(i, j, table):
    """``table[i][j]`` for loop variables ``i, j``: nested selects, folded once unrolled."""
    rows, cols = len(table), len(table[0])
    expr = table[-1][-1]
    for a in reversed(range(rows)):
        for b in reversed(range(cols)):
            if (a, b) != (rows - 1, cols - 1):
                expr = tirx.Select(tirx.all(i == a, j == b), table[a][b], expr)
    return expr


def _table(i, j, rows, cols, terms):
    """For loop variables ``i, j``: the sum ``terms(a, b)`` [(coef, x)] at a = i, b = j."""
    return _table_pick(i, j, [[_terms_sum(terms(a, b)) for b in range(cols)]
                              for a in range(rows)])


def tile_grid(layer, in_shape, m):
    """(rows, columns) of m x m tiles that cover conv ``layer``'s output on an input of
    ``in_shape``: with dilation d the output's rows are d interleaved phases (rows h = ph + d q,
    each phase an undilated 3x3 conv of its own), each cut into whole tiles."""
    (dh, dw), (pt, pl, pb, pr) = layer.get("dilation", (1, 1)), layer["padding"]
    oh, ow = int(in_shape[2]) + pt + pb - 2 * dh, int(in_shape[3]) + pl + pr - 2 * dw
    per_phase_h, per_phase_w = (oh + dh - 1) // dh, (ow + dw - 1) // dw
    return dh * ((per_phase_h + m - 1) // m), dw * ((per_phase_w + m - 1) // m)


def winograd_conv(x, layer, weight, m):
    """The te stages of conv layer ``layer`` on ``x`` by F(m x m, 3x3); returns its NCHW
    output (the stage named after the layer). ``weight`` is its [K, C, 3, 3] placeholder.

    A dilated conv is computed as its phases: tile row r = th * d + ph holds the output rows
    ph + d (th m + i), i < m, read from input rows ph + d (th m + a), a < m + 2 (so m d
    consecutive output rows are d consecutive tile rows: a chunk of rows is a range of
    tiles); tile column s = tw * d + pw likewise. The padded input is laid out by tile
    column, ``<conv>_pad[n, c, h, b, s]`` = column b of tile column s's window (each column
    twice: alpha / m = 2 for m = 2), so that the input transform, vectorized over a row of
    tiles, loads whole vectors instead of gathering every m-th value (what that gained is
    measured in ``benchmarks/README.md``, "Winograd in the product")."""
    name, dtype = layer["name"], x.dtype
    n_, c_, h_, w_ = (int(v) for v in x.shape)
    k_, alpha = layer["channels"], m + 2
    pt, pl, pb, pr = layer["padding"]
    dh, dw = layer.get("dilation", (1, 1))
    oh, ow = h_ + pt + pb - 2 * dh, w_ + pl + pr - 2 * dw
    rows, cols = tile_grid(layer, x.shape, m)
    nh = rows // dh  # tile rows per phase
    tiles = n_ * rows * cols
    A, B, G = matrices(m)

    def pad(n, c, h, b, s):  # padded input row h, column b of the tiles of tile column s
        w = s % dw + dw * (s // dw * m) + dw * b
        inside = tirx.all(h >= pt, h < h_ + pt, w >= pl, w < w_ + pl)
        return tirx.if_then_else(inside, x[n, c, h - pt, w - pl], tirx.const(0.0, dtype))

    padded = te.compute((n_, c_, dh * (nh * m + 2), alpha, cols),
                        lambda n, c, h, b, s: pad(n, c, h, b, s), name=name + "_pad")

    def u_(e, u, c, k):
        return _table(e, u, alpha, alpha, lambda i, j: [
            (G[i, a] * G[j, b], weight[k, c, a, b]) for a in range(3) for b in range(3)])

    U = te.compute((alpha, alpha, c_, k_), lambda e, u, c, k: u_(e, u, c, k), name=name + "_U")

    def v_(e, u, c, p):
        n, r, s = p // (rows * cols), p // cols % rows, p % cols
        y0 = r % dh + dh * (r // dh * m)  # the tile's first input row, its phase's
        return _table(e, u, alpha, alpha, lambda i, j: [
            (B[a, i] * B[b, j], padded[n, c, y0 + dh * a, b, s])
            for a in range(alpha) for b in range(alpha)])

    V = te.compute((alpha, alpha, c_, tiles), lambda e, u, c, p: v_(e, u, c, p),
                   name=name + "_V")
    rc = te.reduce_axis((0, c_), "rc")
    M = te.compute((alpha, alpha, tiles, k_), lambda e, u, p, k: te.sum(
        V[e, u, rc, p] * U[e, u, rc, k], axis=[rc]), name=name + "_M")

    def y_(p, i, j, k):
        return _table(i, j, m, m, lambda ii, jj: [
            (A[a, ii] * A[b, jj], M[a, b, p, k]) for a in range(alpha) for b in range(alpha)])

    Y = te.compute((tiles, m, m, k_), lambda p, i, j, k: y_(p, i, j, k), name=name + "_Y")

    def out(n, k, h, w):
        r = h // dh // m * dh + h % dh
        s = w // dw // m * dw + w % dw
        return Y[n * rows * cols + r * cols + s, h // dh % m, w // dw % m, k]

    return te.compute((n_, k_, oh, ow), lambda n, k, h, w: out(n, k, h, w), name=name)
