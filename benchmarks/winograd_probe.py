"""How much a Winograd convolution would give on the deep 3x3 chains: the measured probe
that led to the product's ``winograd`` step and template (``playground/chain/winograd.py``,
``playground/templates/winograd.py``, which schedule the same stages the same way and are
what ``auto`` now measures); kept to time hand-made variants (F(4x4), chunk sizes) against
``auto`` and ONNX Runtime.

The 3x3 convolutions of the benchmark run at 85-98% of the measured FMA peak, as ONNX
Runtime's do: ``auto`` cannot pull far ahead of it there by scheduling the direct convolution
(issue 21's geomean target). Winograd's F(m x m, 3x3) does the same convolution with fewer
multiplies (2.25x fewer for m = 2, 4x for m = 4), by transforming the input tiles and the
weights, multiplying them channel by channel as a batched matrix product, and transforming
back. This probe builds that kernel for each chain of ``benchmarks/chains.py`` that is one
padded 3x3 stride-1 convolution followed by any of batch norm and relu, schedules it by hand
(the weight transform done once, as the constant-weight mode does with weight re-layouts;
the batch norm folded into a per-channel scale and shift), checks it against the chain's
float64 reference on NaN-filled output, and times it side by side with ``auto``'s best
schedule and ONNX Runtime in interleaved rounds (ratios with their bootstrap intervals).

Its stages, each a TensorIR block scheduled with ordinary primitives (which is what a
template would emit as steps):

* ``pad``: the input tile of one channel, zero-padded, computed under the channel loop;
* ``V[e, u, c, p] = (B^T d_p B)[e, u]``: the input transform, vectorized over a row of tiles
  (the transform is written out term by term, the zero coefficients left out);
* ``M[e, u, p, k] = sum_c V[e, u, c, p] U[e, u, c, k]``: 16 (m = 2) or 36 (m = 4) matrix
  products, register-tiled as the direct convolution's template (``pi`` tiles x 2 vectors of
  output channels), parallel over ``(e, u)``;
* ``Y[p, i, j, k] = (A^T M_p A)[i, j]``: the inverse transform, vectorized over channels;
* ``out``: scale, shift and relu, written back into NCHW (a blocked transpose).

Run it in the benchmark's environment (ONNX Runtime): ``PYTHONPATH=. .venv-bench/bin/python
benchmarks/winograd_probe.py [--only NAME ...] [--rounds 9] [--budget-s 30]``; with
``--stages`` it only splits F(2x2)'s time into its batched products and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import tvm  # noqa: E402
from auto_bench import CORES, Competitor, TimerProcess, tvm_competitor  # noqa: E402
from chains import CHAINS  # noqa: E402
from tvm import te, tirx  # noqa: E402
from tvm.topi.nn.winograd_util import (  # noqa: E402
    _cook_toom_convolution,
    _interpolation_points,
)

from playground.chain.reference import compare, make_inputs, reference_output  # noqa: E402
from playground.chain.spec import chain_flop, normalize_chain  # noqa: E402
from playground.compile.targets import cpu_target  # noqa: E402
from playground.measure.machine import machine_facts  # noqa: E402
from playground.measure.stats import compare_rounds  # noqa: E402
from playground.templates.search import finalize, search  # noqa: E402
from playground.worker.pool import WorkerPool  # noqa: E402

SETTLE_S = 0.3


def matrices(m: int):
    """Winograd's (A, B, G) for F(m x m, 3x3), float64 (TVM's Cook-Toom points)."""
    return _cook_toom_convolution(_interpolation_points(m + 1), m, 3)


def eligible(chain: dict):
    """(conv, batch norm or None, residual?, relu?) when the chain is one padded 3x3 stride-1
    dense convolution followed by any of batch norm, an add of the chain's input (a residual)
    and relu, in that order; else None."""
    layers = chain["layers"]
    conv = layers[0]
    if conv["op"] != "conv2d" or list(conv["kernel"]) != [3, 3] \
            or list(conv["stride"]) != [1, 1] or list(conv["dilation"]) != [1, 1] \
            or conv["groups"] != 1 or list(conv["padding"]) != [1, 1, 1, 1]:
        return None
    rest = [layer["op"] for layer in layers[1:]]
    bn = layers[1] if rest[:1] == ["batch_norm"] else None
    rest = rest[1:] if bn else rest
    residual = rest[:1] == ["add"]
    if residual and (layers[-len(rest)].get("other") != "data"
                     or conv["channels"] != chain["input"]["shape"][1]):
        return None
    rest = rest[1:] if residual else rest
    if rest not in ([], ["relu"]):
        return None
    return conv, bn, residual, rest == ["relu"]


def winograd_module(shape, channels_out: int, m: int, residual: bool, relu: bool):
    """``main(data, U, scale, shift, out)``: the convolution by F(m x m, 3x3) with the
    transformed weights ``U`` [alpha, alpha, C, K], then ``out = max(conv * scale + shift
    (+ data), 0)`` (the add with ``residual``, the max with ``relu``). Returns (module,
    tiles P)."""
    N, C, H, W = shape
    K, alpha = channels_out, m + 2
    nH, nW = (H + m - 1) // m, (W + m - 1) // m
    P = N * nH * nW
    A, B, _ = matrices(m)
    data = te.placeholder((N, C, H, W), name="data")
    U = te.placeholder((alpha, alpha, C, K), name="U")
    scale = te.placeholder((K,), name="scale")
    shift = te.placeholder((K,), name="shift")
    pad = te.compute((N, C, nH * m + 2, nW * m + 2), lambda n, c, y, x: tirx.if_then_else(
        tirx.all(y >= 1, y < H + 1, x >= 1, x < W + 1), data[n, c, y - 1, x - 1], 0.0),
        name="pad")

    def linear(terms):
        out = None
        for coef, x in terms:
            t = x if coef == 1 else -x if coef == -1 else x * tirx.const(float(coef), "float32")
            out = t if out is None else out + t
        return out

    def pick(i, j, table):  # table[i][j] for loop variables i, j (folded once unrolled)
        rows, cols = len(table), len(table[0])
        expr = table[-1][-1]
        for a in reversed(range(rows)):
            for b in reversed(range(cols)):
                if (a, b) != (rows - 1, cols - 1):
                    expr = tirx.Select(tirx.all(i == a, j == b), table[a][b], expr)
        return expr

    def v(e, u, c, p):
        n, th, tw = p // (nH * nW), p // nW % nH, p % nW
        return pick(e, u, [[linear([(B[a, i] * B[b, j], pad[n, c, th * m + a, tw * m + b])
                                    for a in range(alpha) for b in range(alpha)
                                    if B[a, i] * B[b, j] != 0])
                            for j in range(alpha)] for i in range(alpha)])

    V = te.compute((alpha, alpha, C, P), v, name="V")
    rc = te.reduce_axis((0, C), "rc")
    M = te.compute((alpha, alpha, P, K), lambda e, u, p, k: te.sum(
        V[e, u, rc, p] * U[e, u, rc, k], axis=[rc]), name="M")

    def y(p, i, j, k):
        return pick(i, j, [[linear([(A[a, ii] * A[b, jj], M[a, b, p, k])
                                    for a in range(alpha) for b in range(alpha)
                                    if A[a, ii] * A[b, jj] != 0])
                            for jj in range(m)] for ii in range(m)])

    Y = te.compute((P, m, m, K), y, name="Y")

    def out(n, k, h, w):
        x = Y[n * nH * nW + h // m * nW + w // m, h % m, w % m, k] * scale[k] + shift[k]
        x = x + data[n, k, h, w] if residual else x
        return te.max(x, 0.0) if relu else x

    result = te.compute((N, K, H, W), out, name="out")
    func = te.create_prim_func([data, U, scale, shift, result])
    return tvm.IRModule({"main": func}), P


def _inner_gemm(s, mb, pi: int, kb: int, lanes: int, parallel: bool):
    """The batched product's register tile: ``pi`` tiles x ``kb`` vectors of output
    channels, the channel sum around it; parallel over (e, u) when asked."""
    e, u, p, k, rc = s.get_loops(mb)[-5:]
    eu = s.fuse(e, u)
    po, pii = s.split(p, [None, pi])
    ko, k1, kv = s.split(k, [None, kb, lanes])
    s.reorder(eu, ko, po, rc, pii, k1, kv)
    if parallel:
        s.parallel(eu)  # before decompose_reduction (TVM 0.27 refuses it after)
    s.unroll(pii)
    s.unroll(k1)
    s.vectorize(kv)
    s.decompose_reduction(mb, rc)


def schedule(mod, shape, channels_out: int, m: int, lanes: int, P: int, rows: int = 0):
    """The hand schedule (see the module doc); returns the scheduled module.

    ``rows`` = 0: each stage over the whole image, parallel over its own outer loop. ``rows``
    = r > 0: the image in chunks of r rows of tiles, parallel over the chunks, every stage
    computed per chunk (its V and M stay in cache: at 56x56 the whole V is 3 MiB)."""
    W = shape[3]
    nW = (W + m - 1) // m
    chunk = rows * nW if rows else P
    pi = max(d for d in range(1, 9) if chunk % d == 0)
    kb = 2 if channels_out % (2 * lanes) == 0 else 1
    s = tvm.s_tir.Schedule(mod)
    ob = s.get_sblock("out")
    n, k, h, w = s.get_loops(ob)
    ko, ki = s.split(k, [None, lanes])
    if rows:
        hc, hr = s.split(h, [None, m * rows])
        s.reorder(n, hc, ko, hr, w, ki)
        at = s.fuse(n, hc)
        s.parallel(at)
        for name in ("Y", "M", "V"):
            s.compute_at(s.get_sblock(name), at)
    else:
        s.reorder(n, ko, h, w, ki)
        s.parallel(s.fuse(n, ko))
    s.unroll(ki)
    v = s.get_sblock("V")
    e, u, c, p = s.get_loops(v)[-4:]
    th, tw = s.split(p, [None, nW])
    s.reorder(c, th, e, u, tw)
    s.vectorize(tw)
    s.compute_at(s.get_sblock("pad"), c)
    s.unroll(e)
    s.unroll(u)
    if not rows:
        s.parallel(c)
    _inner_gemm(s, s.get_sblock("M"), pi, kb, lanes, parallel=not rows)
    yb = s.get_sblock("Y")
    p, i, j, k = s.get_loops(yb)[-4:]
    ko, kv = s.split(k, [None, lanes])
    s.reorder(p, ko, i, j, kv)
    s.vectorize(kv)
    s.unroll(i)
    s.unroll(j)
    if not rows:
        s.parallel(p)
    return s.mod


def winograd_competitor(chain: dict, m: int, lanes: int, rows: int = 0):
    """(Competitor, max relative error) for F(m x m, 3x3) on ``chain``, or (None, why) when
    its output is wrong. The weight transform and the batch norm's scale and shift are
    computed once here (constant weights)."""
    conv, bn, residual, relu = eligible(chain)
    shape = chain["input"]["shape"]
    inputs = dict(make_inputs(chain, 0))
    expected = reference_output(chain, list(inputs.items()))
    w = inputs[conv["name"] + "_weight"].astype(np.float64)
    K = w.shape[0]
    if bn is None:
        scale, shift = np.ones(K), np.zeros(K)
    else:
        g, b, mean, var = (inputs[bn["name"] + s].astype(np.float64)
                           for s in ("_gamma", "_beta", "_mean", "_var"))
        scale = g / np.sqrt(var + bn["eps"])
        shift = b - mean * scale
    _, _, G = matrices(m)
    U = np.einsum("ea,kcab,ub->euck", G, w, G)
    mod, P = winograd_module(shape, K, m, residual, relu)
    ex = tvm.compile(schedule(mod, shape, K, m, lanes, P, rows), target=cpu_target())
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(a.astype("float32")), dev)
            for a in (inputs["data"], U, scale, shift)]
    args.append(tvm.runtime.tensor(np.full(expected.shape, np.nan, "float32"), dev))
    ex["main"](*args)
    result = compare(args[-1].numpy(), expected, "float32")
    if not result["correct"]:
        return None, result["message"]
    timer = ex.mod.time_evaluator("main", dev, number=1, repeat=3)
    per_call = min(timer(*args).results)
    number = max(1, round(0.040 / max(per_call, 1e-6)))
    timer = ex.mod.time_evaluator("main", dev, number=number, repeat=3)

    def sample() -> float:
        time.sleep(SETTLE_S)
        return statistics.median(timer(*args).results) * 1e3

    label = f"Winograd F({m}x{m},3x3)" + (f" in {rows}-tile-row chunks" if rows else "")
    return Competitor(label, sample), result["max_rel_error"]


def products_alone(chain: dict, m: int, lanes: int) -> tuple[float, float]:
    """(ms, GFLOP/s) of the kernel's batched products alone (the ``M`` stage as a function of
    its own, scheduled as in the whole kernel, on random V and U): the rest of the whole
    kernel's time is the transforms'."""
    shape = chain["input"]["shape"]
    C, K, alpha = shape[1], chain["layers"][0]["channels"], m + 2
    P = shape[0] * ((shape[2] + m - 1) // m) * ((shape[3] + m - 1) // m)
    V = te.placeholder((alpha, alpha, C, P), name="V")
    U = te.placeholder((alpha, alpha, C, K), name="U")
    rc = te.reduce_axis((0, C), "rc")
    M = te.compute((alpha, alpha, P, K), lambda e, u, p, k: te.sum(
        V[e, u, rc, p] * U[e, u, rc, k], axis=[rc]), name="M")
    s = tvm.s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([V, U, M])}))
    pi = max(d for d in range(1, 9) if P % d == 0)
    _inner_gemm(s, s.get_sblock("M"), pi, 2 if K % (2 * lanes) == 0 else 1, lanes, True)
    ex = tvm.compile(s.mod, target=cpu_target())
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.random(sh, dtype=np.float32), dev)
            for sh in ((alpha, alpha, C, P), (alpha, alpha, C, K), (alpha, alpha, P, K))]
    ms = statistics.median(ex.mod.time_evaluator("main", dev, number=100, repeat=7)(
        *args).results) * 1e3
    return ms, 2 * alpha * alpha * P * C * K / ms / 1e6


def stages(names: list[str], facts) -> None:
    """Print, per chain, F(2x2)'s whole kernel against its products alone."""
    for name in names:
        chain = normalize_chain(CHAINS[name])
        if eligible(chain) is None:
            continue
        whole, _ = winograd_competitor(chain, 2, facts.lanes())
        ms = statistics.median(whole.sample() for _ in range(5))
        alone, gflops = products_alone(chain, 2, facts.lanes())
        print(f"{name}: F(2x2) whole {ms:.3f} ms, its products alone {alone:.3f} ms "
              f"({gflops:.0f} GFLOP/s), the rest (transforms, write-back) {ms - alone:.3f} ms",
              flush=True)


def probe(name: str, pool, ort, facts, args) -> dict | None:
    chain = normalize_chain(CHAINS[name])
    if eligible(chain) is None:
        return None
    flop = chain_flop(chain)
    row = {"chain": name, "gflop": flop / 1e9, "notes": []}
    print(f"\n== {name}: {flop / 1e9:.3f} GFLOP", flush=True)
    result = search(pool, chain, facts, budget_s=args.budget_s, weights="constant")
    best = finalize(pool, result)
    comps = []
    comp, why = tvm_competitor(pool, "auto", chain, best.steps, "constant")
    comps.append(comp) if comp else row["notes"].append(f"auto: {why}")
    row["auto_label"] = best.label
    for variant in args.variants:
        m, rows = (int(x) for x in variant.split(":"))
        comp, err = winograd_competitor(chain, m, facts.lanes(), rows)
        if comp is None:
            row["notes"].append(f"F({m}x{m}), {rows} rows: WRONG ({err})")
            continue
        row[f"max_rel_error {comp.name}"] = err
        comps.append(comp)
    comp, why = ort.competitor(chain)
    comps.append(comp) if comp else row["notes"].append(f"ONNX Runtime: WRONG ({why})")
    for _ in range(args.rounds):
        for c in comps:
            c.samples.append(c.sample())
    samples = {c.name: c.samples for c in comps}
    row["times_ms"] = {c.name: c.median_ms for c in comps}
    row["samples_ms"] = samples
    for c in comps:
        for base in ("auto", "ONNX Runtime"):
            if c.name.startswith("Winograd") and base in samples:
                r = compare_rounds(samples[base], c.samples)
                row[f"{c.name} vs {base}"] = [r.ratio, r.low, r.high]
    if "auto" in samples and "ONNX Runtime" in samples:
        r = compare_rounds(samples["ONNX Runtime"], samples["auto"])
        row["auto vs ONNX Runtime"] = [r.ratio, r.low, r.high]
    print("   " + ", ".join(f"{k} {v:.3f} ms" for k, v in row["times_ms"].items()), flush=True)
    for key, value in row.items():
        if " vs " in key:
            print(f"   {key}: {value[0]:.2f}x ({value[1]:.2f}-{value[2]:.2f})", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--variants", nargs="*", default=["2:0", "2:2", "4:0"],
                        help="Winograd kernels as m:r, F(m x m, 3x3) over the whole image "
                             "(r = 0) or in chunks of r rows of tiles")
    parser.add_argument("--budget-s", type=float, default=30.0, help="auto's search budget")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", type=Path, default=HERE / "winograd_probe_results.json")
    parser.add_argument("--stages", action="store_true",
                        help="only split F(2x2)'s time into its products and the rest")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(CORES))
    facts = machine_facts()
    print(f"machine: {facts.summary()}; load {os.getloadavg()}", flush=True)
    if args.stages:
        stages(args.only or list(CHAINS), facts)
        return 0
    rows = []
    ort = TimerProcess("ONNX Runtime")
    with WorkerPool(1, num_threads=CORES) as pool:
        for name in args.only or list(CHAINS):
            row = probe(name, pool, ort, facts, args)
            if row is not None:
                rows.append(row)
                args.json.write_text(json.dumps({"machine": facts.to_dict(),
                                                 "summary": facts.summary(), "rows": rows},
                                                indent=1))
    ort.close()
    print(f"\nwrote {args.json}; load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
