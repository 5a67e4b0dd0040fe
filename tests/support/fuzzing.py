"""Random chains and random step sequences, validated end to end: the schedule fuzzer.

One generator, two drivers. Every random choice goes through a :class:`Draw`; hypothesis drives
it in the test suite (``tests/unit/schedule/test_fuzz_schedules.py``, fixed seeds, shrinking)
and ``random.Random`` drives it in ``benchmarks/fuzz.py`` (thousands of cases, counted). A case
is a random chain plus up to ``max_steps`` random steps picked from what the current schedule
offers (real block and loop names, mostly sensible arguments, some not): each step is applied
through :class:`~playground.schedule.session.Session` exactly as the page applies it.

:func:`run_case` classifies what happened. The oracle:

* a step is either applied or refused with a :class:`~playground.errors.PlaygroundError`
  whose message is one plain line (:func:`bad_message` lists what a message must not do);
  anything else escaping is a bug (``exception``);
* every schedule that was accepted builds, runs and matches the float64 reference in the
  worker (NaN-poisoned intermediates, two input seeds); otherwise it is ``wrong_result`` (TVM
  miscompiled an accepted schedule: a missing pre-check) or ``cannot_build`` (an accepted
  step that cannot build: a missing pre-check too).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from playground.chain.ops import OPS
from playground.chain.spec import normalize_chain, tensor_shapes
from playground.errors import PlaygroundError
from playground.measure.machine import MachineFacts
from playground.schedule.replay import blocks
from playground.schedule.session import Session
from playground.schedule.steps import SCOPES, Step


class Draw:
    """The random choices a case is made of (subclassed per driver)."""

    def int(self, lo: int, hi: int) -> int:  # inclusive bounds
        raise NotImplementedError

    def choice(self, items: Sequence[Any]) -> Any:
        return items[self.int(0, len(items) - 1)]

    def chance(self, percent: int) -> bool:
        return self.int(0, 99) < percent


class RandomDraw(Draw):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisDraw(Draw):
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


# ----------------------------------------------------------------------------- chains

#: Every elementwise op of the table: an op added there is fuzzed too.
ELEMENTWISE = tuple(name for name, op in OPS.items() if op.kind == "elementwise")


def random_chain(d: Draw, *, max_layers: int = 5, max_hw: int = 12) -> dict:
    """A small valid chain: 1-2 images, 1-8 channels, H x W up to ``max_hw``; convolutions
    (dense, grouped, depthwise), pools and elementwise layers."""
    n = d.int(1, 2) if d.chance(20) else 1
    c0 = c = d.choice((1, 2, 3, 4, 8))
    h = d.int(3, max_hw)
    w = h if d.chance(60) else d.int(3, max_hw)
    layers: list[dict] = []
    for _ in range(d.int(1, max_layers)):
        if d.chance(45) or not layers:
            layers.append(_random_conv(d, c))
        elif d.chance(12):  # a pooling window: max or average, often stride 2
            k = d.choice((2, 2, 3))
            layers.append({"op": d.choice(("max_pool2d", "avg_pool2d")), "kernel": k,
                           "stride": d.choice((1, 2, 2)), "padding": d.choice((0, 0, k // 2))})
        else:
            op = d.choice(ELEMENTWISE)
            layer: dict = {"op": op}
            if op == "clip":
                layer.update(min=-0.5, max=0.5)
            if op == "add":
                layer["other"] = "data"  # replaced below by a shape-compatible tensor
            layers.append(layer)
        chain = _fix_adds({"input": {"shape": [n, c0, h, w]}, "layers": layers}, d)
        try:
            chain = normalize_chain(chain)
        except PlaygroundError:
            layers.pop()
            continue
        c = tensor_shapes(chain)[chain["layers"][-1]["name"]][1]
    return normalize_chain(_fix_adds({"input": {"shape": [n, c0, h, w]}, "layers": layers}, d))


def _random_conv(d: Draw, c: int) -> dict:
    k = d.choice((1, 1, 2, 3, 3, 5)) if d.chance(90) else d.int(1, 4)
    layer: dict = {"op": "conv2d", "channels": d.choice((1, 2, 4, 6, 8)), "kernel": k,
                   "stride": 2 if d.chance(20) else 1, "padding": d.choice((0, 0, 1, k // 2)),
                   "dilation": 2 if d.chance(10) else 1}
    if d.chance(15) and c > 1:  # grouped or depthwise
        layer["groups"] = c
        layer["channels"] = c * d.choice((1, 2))
    return layer


def _fix_adds(chain: dict, d: Draw) -> dict:
    """Point every add at an earlier tensor of the same shape (or drop it)."""
    layers, out = chain["layers"], []
    for layer in layers:
        if layer["op"] != "add":
            out.append(layer)
            continue
        probe = {"input": chain["input"], "layers": out}
        try:
            shapes = tensor_shapes(normalize_chain(probe)) if out else {}
        except PlaygroundError:
            continue
        if not out:
            continue
        last = shapes[normalize_chain(probe)["layers"][-1]["name"]]
        same = [name for name, shape in shapes.items() if shape == last and name != list(
            shapes)[-1]]
        if same:
            out.append({"op": "add", "other": d.choice(same)})
    chain = dict(chain)
    chain["layers"] = out or [{"op": "relu"}]
    return chain


# ----------------------------------------------------------------------------- steps

PRIMITIVES = ("split", "split", "split", "fuse", "reorder", "reorder", "parallel",
              "vectorize", "vectorize", "unroll", "bind", "compute_at", "compute_at",
              "compute_at", "reverse_compute_at", "reverse_compute_at", "compute_inline",
              "compute_inline", "reverse_compute_inline", "cache_read", "cache_write",
              "set_scope", "decompose_reduction", "annotate", "transform_layout",
              "storage_align")


def random_step(d: Draw, session: Session) -> Step:
    """A step of a random primitive with arguments taken from the current schedule."""
    infos = blocks(session.schedule())
    info = d.choice(infos)
    loops = [lp.name for lp in info.loops]
    prim = d.choice(PRIMITIVES)
    if prim in ("split", "parallel", "vectorize", "unroll", "decompose_reduction",
                "annotate") and not loops:
        prim = "compute_inline"
    if prim == "split":
        loop = d.choice(info.loops)
        extent = loop.extent or 4
        if d.chance(70):
            divisors = [f for f in range(2, extent + 1) if extent % f == 0] or [2]
            factor = d.choice(divisors)
        else:
            factor = d.int(2, max(2, extent + 1))
        factors = [None, factor] if d.chance(80) else [factor, None]
        if d.chance(10):
            factors = [None, 2, 2]
        return Step("split", {"block": info.name, "loop": loop.name, "factors": factors})
    if prim == "fuse" and len(loops) >= 2:
        i = d.int(0, len(loops) - 2)
        return Step("fuse", {"block": info.name, "loops": loops[i:i + 2]})
    if prim == "reorder" and len(loops) >= 2:
        i = d.int(0, len(loops) - 2)
        j = d.int(i + 1, len(loops) - 1)
        return Step("reorder", {"block": info.name, "loops": [loops[j], loops[i]]})
    if prim in ("parallel", "vectorize", "unroll", "decompose_reduction"):
        loop = loops[-1] if prim == "vectorize" and d.chance(70) else d.choice(loops)
        if prim == "parallel" and d.chance(60):
            loop = loops[0]
        return Step(prim, {"block": info.name, "loop": loop})
    if prim == "bind":
        return Step("bind", {"block": info.name, "loop": d.choice(loops or ["n"]),
                             "thread": d.choice(("blockIdx.x", "threadIdx.x"))})
    if prim in ("compute_at", "reverse_compute_at"):
        other = _related(d, info, infos, consumer=(prim == "compute_at"))
        if other is None or not other.loops:
            return Step("compute_inline", {"block": info.name})
        return Step(prim, {"block": info.name, "target_block": other.name,
                           "target_loop": d.choice([lp.name for lp in other.loops]),
                           "preserve_unit_loops": d.chance(20)})
    if prim == "cache_read" and info.reads:
        return Step("cache_read", {"block": info.name,
                                   "read_buffer_index": d.int(0, len(info.reads) - 1),
                                   "storage_scope": d.choice(("global", "local"))})
    if prim in ("cache_write", "set_scope"):
        key = "write_buffer_index" if prim == "cache_write" else "buffer_index"
        return Step(prim, {"block": info.name, key: 0,
                           "storage_scope": d.choice(SCOPES[:3] if d.chance(10)
                                                     else ("global", "local"))})
    if prim == "annotate":
        return Step("annotate", {"block": info.name, "loop": d.choice(loops),
                                 "key": "pragma_auto_unroll_max_step",
                                 "value": d.choice((4, 16, 64))})
    if prim == "transform_layout":
        side = d.choice(("read", "write"))
        count = len(info.reads if side == "read" else info.writes)
        if count == 0:
            return Step("compute_inline", {"block": info.name})
        return Step("transform_layout", {
            "block": info.name, "buffer": [side, d.int(0, count - 1)],
            "index_map": d.choice(("lambda n, c, h, w: (n, h, w, c)",
                                   "lambda n, c, h, w: (n, c // 2, h, w, c % 2)",
                                   "lambda i: (i,)"))})
    if prim == "storage_align":
        return Step("storage_align", {"block": info.name, "buffer_index": 0,
                                      "axis": d.int(0, 3), "factor": d.choice((4, 8, 16)),
                                      "offset": d.int(0, 2)})
    if prim == "reverse_compute_inline":
        return Step("reverse_compute_inline", {"block": info.name})
    return Step("compute_inline", {"block": info.name})


def _related(d: Draw, info: Any, infos: list, *, consumer: bool) -> Any:
    """Mostly a block that consumes (or produces) ``info``'s buffers; sometimes any block."""
    if consumer:
        related = [b for b in infos if set(info.writes) & set(b.reads) and b.name != info.name]
    else:
        related = [b for b in infos if set(info.reads) & set(b.writes) and b.name != info.name]
    if related and d.chance(80):
        if d.chance(50):  # the last one: where fusion is useful
            return related[-1]
        return d.choice(related)
    others = [b for b in infos if b.name != info.name]
    return d.choice(others) if others else None


# ----------------------------------------------------------------------------- oracle

#: What a refusal must not look like: cut off, or TVM's internals instead of plain words.
_BAD = re.compile(r"CanProveEqual|pattern match failed|SBlock#\d|For#\d|Check failed|"
                  r"InternalError|Traceback|\bTVMError\b|object at 0x")


def bad_message(message: str) -> str | None:
    """Why a refusal's one-line message is not good enough, or None."""
    text = message.strip()
    if not text:
        return "empty message"
    if "\n" in text:
        return "more than one line"
    if text.endswith((":", "(", ",")):
        return "cut off"
    if _BAD.search(text):
        return f"shows TVM internals: {_BAD.search(text).group(0)}"
    return None


@dataclass
class CaseResult:
    """What one (chain, steps) case did."""

    chain: dict
    tried: list[Step] = field(default_factory=list)
    accepted: list[Step] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    bad_refusals: list[tuple[str, str]] = field(default_factory=list)
    exception: str = ""
    outcome: str = ""  # validated | wrong_result | cannot_build | crash | no_steps | exception
    message: str = ""

    def describe(self) -> str:
        steps = "\n".join(f"  {s.to_dict()}" for s in self.accepted)
        return (f"{self.outcome}: {self.message}\nchain: {self.chain}\naccepted steps:\n"
                f"{steps}")


def build_case(d: Draw, *, max_steps: int = 6, chain: dict | None = None,
               start: Sequence[Step] = ()) -> CaseResult:
    """Draw a chain (unless given) and up to ``max_steps`` steps, applying each as the page
    does; refused steps are recorded and left out."""
    chain = chain or random_chain(d)
    result = CaseResult(chain=chain)
    session = Session.new(chain, list(start))
    result.accepted = list(start)
    draws: list[Step | None] = [None] * d.int(1, max_steps)
    convs = [x["name"] for x in chain["layers"] if x["op"] == "conv2d"]
    if convs and d.chance(25):  # a conv by Winograd first (or refused: not 3x3, a start)
        draws.insert(0, Step("winograd", {"block": d.choice(convs), "tile": d.int(2, 4)}))
    for drawn in draws:
        try:
            step = drawn or random_step(d, session)
        except PlaygroundError as e:  # reading the schedule refused (must be plain too)
            result.refusals.append(e.message)
            continue
        result.tried.append(step)
        try:
            session = session.apply(step, target="cpu")
            result.accepted.append(session.steps[-1])
        except PlaygroundError as e:
            result.refusals.append(e.message)
            why = bad_message(e.message)
            if why:
                result.bad_refusals.append((e.message, why))
        except Exception as e:
            result.exception = f"{type(e).__name__}: {e}"[:500]
            result.outcome = "exception"
            return result
    return result


def validate_case(pool: Any, result: CaseResult, timeout_s: float = 120.0) -> CaseResult:
    """Build, run and check the accepted schedule in the worker; set ``outcome``."""
    if result.outcome:
        return result
    if not result.accepted:
        result.outcome = "no_steps"
        return result
    payload = {"chain": result.chain, "steps": [s.to_dict() for s in result.accepted],
               "target": "cpu", "measure": False}
    job = pool.run("run", payload, timeout_s=timeout_s)
    if job.status == "ok" and job.value and job.value.get("correct"):
        result.outcome = "validated"
    elif job.status == "wrong_result":
        result.outcome, result.message = "wrong_result", job.message
    elif job.status in ("build_error", "schedule_error", "error"):
        result.outcome, result.message = "cannot_build", job.message
    else:
        result.outcome, result.message = job.status, job.message
    return result


def run_case(pool: Any, d: Draw, **kwargs: Any) -> CaseResult:
    return validate_case(pool, build_case(d, **kwargs))


Check = Callable[[CaseResult], None]


def facts_with(bits: int, cores: int = 2) -> MachineFacts:
    """Machine facts of a made-up CPU with ``bits``-wide vectors (templates follow them)."""
    return MachineFacts("test cpu", cores, "test", "x86_64", bits, True,
                        {"L1": 48 << 10, "L2": 2 << 20, "L3": 32 << 20}, "0.27")


def random_template_chain(d: HypothesisDraw) -> dict:
    """A random chain a template must handle: dense, grouped, depthwise and pointwise convs,
    strides, dilations, odd sizes, batch 2, elementwise epilogues and pools."""
    n = 2 if d.chance(20) else 1
    c = d.choice((3, 8, 16, 32))
    hw = d.choice((7, 9, 12, 16, 17))
    layers: list[dict] = []
    channels = c
    for _ in range(d.int(1, 3)):
        kind = d.choice(("dense", "dense", "depthwise", "grouped", "pointwise"))
        k = d.choice((1, 3, 5)) if kind != "pointwise" else 1
        layer = {"op": "conv2d", "channels": d.choice((8, 16, 32)), "kernel": k,
                 "padding": k // 2 if d.chance(80) else 0,
                 "stride": 2 if d.chance(20) else 1,
                 "dilation": 2 if d.chance(10) and k > 1 else 1}
        if kind == "depthwise":
            layer.update(groups=channels, channels=channels)
        elif kind == "grouped" and channels % 4 == 0:
            layer.update(groups=4, channels=4 * d.choice((2, 4)))
        layers.append(layer)
        channels = layer["channels"]
        for op in ("bias_add", "batch_norm", "relu", "relu6", "clip"):
            if d.chance(25):
                layers.append({"op": op})
        if d.chance(15):
            layers.append({"op": d.choice(("max_pool2d", "avg_pool2d")),
                           "kernel": d.choice((2, 3)), "stride": 2})
    try:
        return normalize_chain({"input": {"shape": [n, c, hw, hw]}, "layers": layers})
    except Exception:
        return normalize_chain({"input": {"shape": [n, c, hw, hw]},
                                "layers": [{"op": "conv2d", "channels": 8, "kernel": 3}]})


def random_cuda_pair_chain(d: Draw) -> dict:
    """A random chain the CUDA fusion template fuses: ``[elementwise ops] -> conv ->
    [elementwise ops] -> conv -> [elementwise ops]``, the producer dense, grouped or depthwise
    (strides, dilations, padding or none, odd sizes, batch 2), the consumer dense or grouped;
    an ``add`` of the chain's input where the shapes allow it."""
    n = 2 if d.chance(20) else 1
    c = d.choice((3, 4, 8, 16))
    h = d.int(5, 19)
    w = h if d.chance(50) else d.int(5, 19)

    def conv(channels_in: int, *, producer: bool) -> dict:
        k = d.choice((1, 3, 3, 5)) if producer else d.choice((1, 2, 3, 3))
        layer = {"op": "conv2d", "channels": d.choice((4, 8, 16, 32)), "kernel": k,
                 "padding": d.choice((0, k // 2, k // 2)), "stride": 2 if d.chance(25) else 1,
                 "dilation": 2 if d.chance(10) and k > 1 else 1}
        kind = d.choice(("dense", "dense", "grouped", "depthwise"))
        if kind == "depthwise" and producer:
            layer.update(groups=channels_in, channels=channels_in * d.choice((1, 2)))
        elif kind != "dense" and channels_in % 2 == 0:
            groups = 2 if kind == "grouped" or not producer else channels_in
            layer.update(groups=groups, channels=groups * d.choice((1, 2, 4)))
        return layer

    def epilogue(shape_matches: bool) -> list[dict]:
        ops = [{"op": op} for op in ("bias_add", "batch_norm", "relu", "relu6", "sigmoid")
               if d.chance(25)]
        if shape_matches and d.chance(40):
            ops.insert(d.int(0, len(ops)), {"op": "add", "other": "data"})
        return ops

    lead = [{"op": "relu"}] if d.chance(10) else []
    first = conv(c, producer=True)
    if d.chance(30):  # keeps the input's shape: an add of the input may follow
        k = first["kernel"]
        first.update(channels=c, stride=1, dilation=1, padding=k // 2, groups=1, kernel=k | 1)
    layers = [*lead, first]
    try:
        chain = normalize_chain({"input": {"shape": [n, c, h, w]}, "layers": layers})
    except PlaygroundError:  # the window does not fit the image: a 1x1 producer always does
        layers[-1] = {"op": "conv2d", "channels": 8, "kernel": 1}
        chain = normalize_chain({"input": {"shape": [n, c, h, w]}, "layers": layers})
    shape = tensor_shapes(chain)[chain["layers"][-1]["name"]]
    layers += epilogue(shape == [n, c, h, w])
    second = conv(shape[1], producer=False)
    layers.append(second)
    try:
        chain = normalize_chain({"input": {"shape": [n, c, h, w]}, "layers": layers})
    except PlaygroundError:  # the window does not fit: a 1x1 consumer always does
        layers[-1] = {"op": "conv2d", "channels": 8, "kernel": 1}
        chain = normalize_chain({"input": {"shape": [n, c, h, w]}, "layers": layers})
    out = tensor_shapes(chain)[chain["layers"][-1]["name"]]
    layers += epilogue(out == [n, c, h, w])
    return normalize_chain({"input": {"shape": [n, c, h, w]}, "layers": layers})
