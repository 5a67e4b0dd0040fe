"""Schedule steps: typed, JSON-able calls of TensorIR primitives, and the catalog of primitives.

A :class:`Step` names a primitive and its arguments. Blocks are named (``"conv2"``) and loops are
named by their loop variable around a block (``{"block": "conv2", "loop": "h_0"}`` becomes the
arguments ``block="conv2", loop="h_0"``): names survive replay on a fresh schedule, handles do
not. Each primitive is described once, by a :class:`Primitive` whose ``call`` template says how
the step's arguments become the ``s_tir.Schedule`` call. The same template applies a step
(:func:`apply_step`), prints it as a line of an exported script (:func:`step_code`) and reads
such a line back (:mod:`playground.io.script_import`), so the three cannot drift apart.

Example
-------
``Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]})`` is exported as
``sch.split(loop(sch, "conv2", "h"), factors=[None, 8])``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from playground import pyparse
from playground.errors import StepError

REQUIRED = object()
SCOPES = ("global", "shared", "local", "shared.dyn")
THREADS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y",
           "threadIdx.z", "vthread.x", "vthread.y", "vthread.z")
# Loop annotations a user may set, with the largest value accepted: unbounded unrolling was
# seen to hang compilation or eat 24 GB (see ../shared/notes/tvm-0.27.md).
ANNOTATIONS = {"pragma_auto_unroll_max_step": 1024, "pragma_unroll_explicit": 1}
MAX_FACTOR = 1 << 16


@dataclass(frozen=True)
class Arg:
    """One argument of a primitive.

    ``kind`` is one of: ``block`` (a block name), ``loop`` / ``loops`` (loop names around the
    block given by the argument ``of``), ``factors`` (ints, at most one ``None``), ``int``,
    ``bool``, ``choice`` (one of ``choices``), ``buffer`` (``["read" | "write", index]``),
    ``index_map`` (the source of a lambda, e.g. ``"lambda n, c, h, w: (n, c // 16, h, w,
    c % 16)"``).
    """

    name: str
    kind: str
    doc: str
    default: Any = REQUIRED
    choices: tuple = ()
    of: str = "block"
    minimum: int = 0
    maximum: int = MAX_FACTOR


@dataclass(frozen=True)
class Primitive:
    """A schedule primitive: its arguments and how they form the ``sch.<name>(...)`` call.

    ``call`` lists the call's arguments in order, each ``(keyword, arg)``: ``keyword`` is None
    for a positional argument; ``arg`` names an :class:`Arg` (a ``loops`` arg is spread with
    ``*``). ``returns`` says what the call gives back, for the docs.
    """

    name: str
    doc: str
    args: tuple[Arg, ...]
    call: tuple[tuple[str | None, str], ...]
    gpu: bool = False

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


def _block(doc: str = "the block to transform") -> Arg:
    return Arg("block", "block", doc)


def _loop(doc: str = "the loop, around the block") -> Arg:
    return Arg("loop", "loop", doc)


_CATALOG = [
    Primitive("split", "Split a loop into nested loops with the given extents (one may be "
              "None: inferred). Non-dividing factors add guards (T.where).",
              (_block(), _loop(), Arg("factors", "factors", "extents, outer to inner")),
              ((None, "loop"), ("factors", "factors"))),
    Primitive("fuse", "Fuse consecutive perfectly nested loops into one.",
              (_block(), Arg("loops", "loops", "loops to fuse, outer to inner")),
              ((None, "loops"),)),
    Primitive("reorder", "Reorder loops of one nest (the given loops take the given order).",
              (_block(), Arg("loops", "loops", "loops in their new order, outer to inner")),
              ((None, "loops"),)),
    Primitive("parallel", "Run a loop's iterations on several CPU threads.",
              (_block(), _loop()), ((None, "loop"),)),
    Primitive("vectorize", "Turn an innermost loop into SIMD vector code.",
              (_block(), _loop()), ((None, "loop"),)),
    Primitive("unroll", "Unroll a loop completely.", (_block(), _loop()), ((None, "loop"),)),
    Primitive("bind", "Bind a loop to a GPU thread axis.",
              (_block(), _loop(), Arg("thread", "choice", "thread axis", choices=THREADS)),
              ((None, "loop"), (None, "thread")), gpu=True),
    Primitive("compute_at", "Move a producer block under a loop of its consumer, computing "
              "only the region that the loop's iteration needs (halos are recomputed).",
              (_block("the producer block to move"),
               Arg("target_block", "block", "a consumer whose loop receives the block"),
               Arg("target_loop", "loop", "the loop to compute at", of="target_block"),
               Arg("preserve_unit_loops", "bool", "keep loops of extent 1", default=False)),
              ((None, "block"), (None, "target_loop"),
               ("preserve_unit_loops", "preserve_unit_loops"))),
    Primitive("reverse_compute_at", "Move a consumer block under a loop of its producer.",
              (_block("the consumer block to move"),
               Arg("target_block", "block", "a producer whose loop receives the block"),
               Arg("target_loop", "loop", "the loop to compute at", of="target_block"),
               Arg("preserve_unit_loops", "bool", "keep loops of extent 1", default=False)),
              ((None, "block"), (None, "target_loop"),
               ("preserve_unit_loops", "preserve_unit_loops"))),
    Primitive("compute_inline", "Inline an elementwise block into its consumers.",
              (_block(),), ((None, "block"),)),
    Primitive("reverse_compute_inline", "Inline an elementwise block into its producer.",
              (_block(),), ((None, "block"),)),
    Primitive("cache_read", "Read a block's input buffer through a new cache block in a "
              "storage scope.",
              (_block("the block that reads"),
               Arg("read_buffer_index", "int", "index of the buffer among the block's reads",
                   maximum=64),
               Arg("storage_scope", "choice", "scope of the cache", choices=SCOPES)),
              ((None, "block"), (None, "read_buffer_index"), (None, "storage_scope"))),
    Primitive("cache_write", "Write a block's output through a new cache block in a scope.",
              (_block("the block that writes"),
               Arg("write_buffer_index", "int", "index among the block's writes", maximum=64),
               Arg("storage_scope", "choice", "scope of the cache", choices=SCOPES)),
              ((None, "block"), (None, "write_buffer_index"), (None, "storage_scope"))),
    Primitive("set_scope", "Set the storage scope of a buffer that a block writes.",
              (_block("the block that writes the buffer"),
               Arg("buffer_index", "int", "index among the block's writes", maximum=64),
               Arg("storage_scope", "choice", "the new scope", choices=SCOPES)),
              ((None, "block"), (None, "buffer_index"), (None, "storage_scope"))),
    Primitive("decompose_reduction", "Split a reduction block's initialization out, above "
              "the given loop.",
              (_block("the reduction block"), _loop("the loop above which init goes")),
              ((None, "block"), (None, "loop"))),
    Primitive("annotate", "Annotate a loop with a pragma (unrolling hints).",
              (_block(), _loop(),
               Arg("key", "choice", "the annotation", choices=tuple(ANNOTATIONS)),
               Arg("value", "int", "its value", maximum=max(ANNOTATIONS.values()))),
              ((None, "loop"), (None, "key"), (None, "value"))),
    Primitive("transform_layout", "Change the layout of a buffer a block reads or writes, by "
              "an index map.",
              (_block(), Arg("buffer", "buffer", '["read" or "write", index]'),
               Arg("index_map", "index_map", "lambda from old to new indices")),
              ((None, "block"), (None, "buffer"), (None, "index_map"))),
    Primitive("storage_align", "Pad a buffer's axis stride to factor*k + offset elements.",
              (_block("the block that writes the buffer"),
               Arg("buffer_index", "int", "index among the block's writes", maximum=64),
               Arg("axis", "int", "the axis", maximum=16),
               Arg("factor", "int", "alignment factor", minimum=1),
               Arg("offset", "int", "offset")),
              ((None, "block"), (None, "buffer_index"), (None, "axis"), (None, "factor"),
               (None, "offset"))),
]
CATALOG: dict[str, Primitive] = {p.name: p for p in _CATALOG}


@dataclass(frozen=True)
class Step:
    """One schedule step: a primitive's name and its arguments (plain JSON values)."""

    primitive: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"primitive": self.primitive, "args": json.loads(json.dumps(dict(self.args)))}

    @staticmethod
    def from_dict(raw: Any) -> Step:
        if not isinstance(raw, dict) or "primitive" not in raw:
            raise StepError(f"a step must be an object with primitive and args, got {raw!r}")
        args = raw.get("args", {})
        if not isinstance(args, dict):
            raise StepError(f"step {raw.get('primitive')!r}: args must be an object, "
                            f"got {args!r}")
        return Step(str(raw["primitive"]), dict(args))

    def label(self) -> str:
        """A short human label, e.g. ``split conv2.h [None, 8]``."""
        a = dict(self.args)
        prim = CATALOG.get(self.primitive)
        if prim is not None:  # arguments at their default say nothing
            a = {k: v for k, v in a.items() if not any(
                x.name == k and x.default is not REQUIRED and x.default == v for x in prim.args)}
        block = a.pop("block", "")
        parts = []
        for k, v in a.items():
            if k in ("loop", "target_loop"):
                owner = a.get("target_block", block) if k == "target_loop" else block
                parts.append(f"{owner}.{v}")
            elif k == "loops":
                parts.append(f"{block}.({', '.join(map(str, v))})")
            elif k == "target_block":
                continue
            else:
                parts.append(f"{k}={v}")
        head = f"{self.primitive} {block}" if block and "loop" not in a and "loops" not in a \
            else self.primitive
        return f"{head} {' '.join(parts)}".strip()


def steps_to_json(steps: tuple[Step, ...] | list[Step]) -> str:
    """Canonical JSON text of a list of steps: a cache key and the URL form."""
    return json.dumps([s.to_dict() for s in steps], sort_keys=True, separators=(",", ":"))


def steps_from_json(text: str) -> tuple[Step, ...]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StepError(f"steps are not valid JSON: {e}") from None
    if not isinstance(raw, list):
        raise StepError(f"steps must be a JSON list, got {type(raw).__name__}")
    return tuple(Step.from_dict(r) for r in raw)


# ----------------------------------------------------------------------------- checking args

def _where(index: int | None, prim: str) -> str:
    return f"step {index + 1} ({prim})" if index is not None else prim


def _check_int(v: Any, a: Arg, ctx: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise StepError(f"{ctx}: {a.name} must be an integer, got {v!r}", where=a.name)
    if not a.minimum <= v <= a.maximum:
        raise StepError(f"{ctx}: {a.name} must be between {a.minimum} and {a.maximum}, "
                        f"got {v}", where=a.name)
    return v


def check_index_map(source: Any, ctx: str = "transform_layout") -> str:
    """Check that ``source`` is a lambda of integer index arithmetic and nothing else."""
    if not isinstance(source, str) or len(source) > 400:
        raise StepError(f"{ctx}: index_map must be the text of a lambda (at most 400 "
                        f"characters), got {source!r:.80}", where="index_map")
    try:
        tree = pyparse.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise StepError(f"{ctx}: index_map is not valid Python: {e.msg}",
                        where="index_map") from None
    lam = tree.body
    if not isinstance(lam, ast.Lambda) or lam.args.vararg or lam.args.kwarg or \
            lam.args.kwonlyargs or lam.args.defaults or lam.args.posonlyargs:
        raise StepError(f"{ctx}: index_map must be 'lambda i, j, ...: (expr, ...)'",
                        where="index_map")
    params = {p.arg for p in lam.args.args}
    allowed = (ast.Tuple, ast.List, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load,
               ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.USub)
    for node in ast.walk(lam.body):
        if not isinstance(node, allowed):
            raise StepError(f"{ctx}: index_map may use only its parameters, integers, "
                            f"+ - * // % and tuples; found {type(node).__name__}",
                            where="index_map")
        if isinstance(node, ast.Name) and node.id not in params:
            raise StepError(f"{ctx}: index_map uses {node.id!r}, which is not one of its "
                            f"parameters", where="index_map")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                                or not isinstance(node.value, int)):
            raise StepError(f"{ctx}: index_map constants must be integers, got "
                            f"{node.value!r}", where="index_map")
    return ast.unparse(lam)


def normalize_step(step: Step, index: int | None = None) -> Step:
    """Check a step's form (names, types, ranges) before it reaches TVM; fill defaults.

    Existence of blocks and loops is checked against a schedule in :func:`apply_step`.
    """
    prim = CATALOG.get(step.primitive)
    if prim is None:
        raise StepError(f"{_where(index, step.primitive)}: unknown primitive "
                        f"{step.primitive!r} (known: {', '.join(CATALOG)})", where="primitive")
    ctx = _where(index, prim.name)
    given = dict(step.args)
    unknown = sorted(set(given) - {a.name for a in prim.args})
    if unknown:
        raise StepError(f"{ctx}: unknown argument {unknown[0]!r} (takes "
                        f"{', '.join(a.name for a in prim.args)})", where=unknown[0])
    out: dict[str, Any] = {}
    for a in prim.args:
        if a.name not in given:
            if a.default is REQUIRED:
                raise StepError(f"{ctx}: missing argument {a.name!r} ({a.doc})", where=a.name)
            out[a.name] = a.default
            continue
        v = given[a.name]
        if a.kind in ("block", "loop"):
            if not isinstance(v, str) or not v or len(v) > 128:
                raise StepError(f"{ctx}: {a.name} must be a {a.kind} name, got {v!r}",
                                where=a.name)
        elif a.kind == "loops":
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise StepError(f"{ctx}: {a.name} must be a non-empty list of loop names, "
                                f"got {v!r}", where=a.name)
            if len(set(v)) != len(v):
                raise StepError(f"{ctx}: {a.name} names a loop twice: {v}", where=a.name)
        elif a.kind == "factors":
            if not isinstance(v, list) or not 2 <= len(v) <= 8:
                raise StepError(f"{ctx}: factors must be a list of 2 to 8 integers (one may "
                                f"be None), got {v!r}", where=a.name)
            for f in v:
                if f is not None and (isinstance(f, bool) or not isinstance(f, int)
                                      or not 1 <= f <= MAX_FACTOR):
                    raise StepError(f"{ctx}: factor {f!r} must be an integer from 1 to "
                                    f"{MAX_FACTOR} or None", where=a.name)
            if sum(f is None for f in v) > 1:
                raise StepError(f"{ctx}: at most one factor may be None, got {v}",
                                where=a.name)
        elif a.kind == "int":
            v = _check_int(v, a, ctx)
        elif a.kind == "bool":
            if not isinstance(v, bool):
                raise StepError(f"{ctx}: {a.name} must be true or false, got {v!r}",
                                where=a.name)
        elif a.kind == "choice":
            if v not in a.choices:
                raise StepError(f"{ctx}: {a.name} must be one of {', '.join(a.choices)}, "
                                f"got {v!r}", where=a.name)
        elif a.kind == "buffer":
            if (not isinstance(v, list | tuple) or len(v) != 2 or v[0] not in ("read", "write")
                    or isinstance(v[1], bool) or not isinstance(v[1], int) or not 0 <= v[1] < 64):
                raise StepError(f'{ctx}: buffer must be ["read" or "write", index], got {v!r}',
                                where=a.name)
            v = [v[0], v[1]]
        elif a.kind == "index_map":
            v = check_index_map(v, ctx)
        out[a.name] = v
    if prim.name == "annotate" and out["value"] > ANNOTATIONS[out["key"]]:
        raise StepError(f"{ctx}: {out['key']} must be at most {ANNOTATIONS[out['key']]}, got "
                        f"{out['value']}", where="value")
    return Step(prim.name, out)


# ----------------------------------------------------------------------------- exporting

def _render(prim: Primitive, arg: Arg, args: Mapping[str, Any]) -> str:
    v = args[arg.name]
    if arg.kind == "block":
        return f"sch.get_sblock({json.dumps(v)})"
    if arg.kind == "loop":
        return f"loop(sch, {json.dumps(args[arg.of])}, {json.dumps(v)})"
    if arg.kind == "loops":
        owner = json.dumps(args[arg.of])
        return ", ".join(f"loop(sch, {owner}, {json.dumps(x)})" for x in v)
    if arg.kind == "buffer":
        return f"({json.dumps(v[0])}, {v[1]})"
    if arg.kind == "index_map":
        return str(v)
    if arg.kind == "factors":
        return "[" + ", ".join("None" if f is None else str(f) for f in v) + "]"
    return json.dumps(v) if isinstance(v, str) else repr(v)


def step_code(step: Step) -> str:
    """The step as one line of Python on an ``s_tir.Schedule`` named ``sch``."""
    prim = CATALOG[step.primitive]
    parts = []
    for keyword, name in prim.call:
        text = _render(prim, prim.arg(name), step.args)
        parts.append(text if keyword is None else f"{keyword}={text}")
    return f"sch.{prim.name}({', '.join(parts)})"
