"""Schedule steps: typed, JSON-able calls of TensorIR primitives, and the catalog of primitives.

A :class:`Step` names a primitive and its arguments. Blocks are named (``"conv2"``) and loops are
named by their loop variable around a block (``{"block": "conv2", "loop": "h_0"}`` becomes the
arguments ``block="conv2", loop="h_0"``): names survive replay on a fresh schedule, handles do
not. Each primitive is described once, by a :class:`Primitive` in :data:`CATALOG`: its
arguments, whose kinds (:mod:`playground.schedule.kinds`) check, resolve, render and read
their values; its ``call`` template, which says how the arguments form the ``s_tir.Schedule``
call; what the call returns; the pre-check rules and plain-word explanations that apply to it;
how a MetaSchedule trace instruction of it becomes a step; and a before/after example. The same
record applies a step (:func:`playground.schedule.replay.apply_step`), prints it as a line of an
exported script (:func:`step_code`), reads such a line back
(:mod:`playground.io.script_import`), converts tuned traces (:mod:`playground.explore.tuning`)
and draws the page's form (``ui/schedule_ui.py``), so none of them can drift apart.

Example
-------
``Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]})`` is exported as
``sch.split(loop(sch, "conv2", "h"), factors=[None, 8])``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from playground.errors import StepError
from playground.schedule.kinds import (
    Block,
    Bool,
    Buffer,
    Choice,
    Factors,
    IndexMap,
    Int,
    Kind,
    Loop,
    Loops,
)

REQUIRED = object()
SCOPES = ("global", "shared", "local", "shared.dyn")
THREADS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y",
           "threadIdx.z", "vthread.x", "vthread.y", "vthread.z")
# Loop annotations a user may set, with the largest value accepted: unbounded unrolling was
# seen to hang compilation or eat 24 GB (see ../shared/notes/tvm-0.27.md).
ANNOTATIONS = {"pragma_auto_unroll_max_step": 1024, "pragma_unroll_explicit": 1}


@dataclass(frozen=True)
class Arg:
    """One argument of a primitive: its name, its :class:`~playground.schedule.kinds.Kind`
    (which checks, resolves, renders, reads and picks such values), a line of doc and its
    default (``REQUIRED`` if none)."""

    name: str
    kind: Kind
    doc: str
    default: Any = REQUIRED


@dataclass(frozen=True)
class TraceForm:
    """How a MetaSchedule trace instruction of the primitive maps onto its arguments.

    ``inputs`` and ``attrs`` name, in the instruction's order, the argument each input and
    attribute becomes (None: ignored; a leading ``*`` takes all remaining inputs, as
    ``split``'s factors and ``fuse``'s loops). Each value is read by the argument's kind
    (:meth:`Kind.from_trace`); what tuning drops or refuses is decided in
    :mod:`playground.explore.tuning`.
    """

    inputs: tuple[str | None, ...] = ()
    attrs: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class Example:
    """A before/after example, as TVM documents its primitives: on ``chain`` after ``setup``
    steps, ``step`` changes the program as ``says``; each of ``adds`` is text found in the
    TVMScript lines the step adds (checked by ``tests/unit/schedule/test_steps.py``)."""

    step: dict
    says: str
    adds: tuple[str, ...]
    setup: tuple[dict, ...] = ()
    chain: dict = field(default_factory=lambda: EXAMPLE_CHAIN)


#: The chain of the examples: a 3x3 convolution (its padding a block of its own, conv1_pad),
#: a bias and a relu: blocks conv1_pad (1, 4, 10, 10), conv1, bias1 and relu1 (1, 4, 8, 8).
EXAMPLE_CHAIN = {"input": {"shape": [1, 4, 8, 8]},
                 "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1},
                            {"op": "bias_add"}, {"op": "relu"}]}


@dataclass(frozen=True)
class Primitive:
    """A schedule primitive, with every fact the playground has about it.

    ``call`` lists the ``sch.<name>(...)`` call's arguments in order, each ``(keyword,
    arg)``: ``keyword`` is None for a positional argument; ``arg`` names an :class:`Arg` (a
    spread kind, ``loops``, is spread with ``*``). ``returns`` says what the call gives back
    (``"block"``, ``"loop"``, ``"loops"`` or ``""`` for nothing; checked against TVM by the
    examples' test). ``prechecks`` names the rules of :mod:`playground.schedule.prechecks`
    run before TVM is asked; ``explains`` the entries of :mod:`playground.explain` that put
    its refusals in plain words (entries for any primitive apply too); ``trace`` how a
    MetaSchedule instruction of it becomes a step (None: tuning stops at it); ``example`` a
    before/after example; ``gpu`` that it needs the cuda target. ``rewrite``: not a method
    of ``s_tir.Schedule`` but the playground's own rewrite of the chain's program (the
    function of that name in :mod:`playground.chain.compute`, called with the chain), written
    ``name(sch, CHAIN, ...)`` in exported scripts.
    """

    name: str
    doc: str
    args: tuple[Arg, ...]
    call: tuple[tuple[str | None, str], ...]
    example: Example
    returns: str = ""
    prechecks: tuple[str, ...] = ()
    explains: tuple[str, ...] = ()
    trace: TraceForm | None = None
    gpu: bool = False
    rewrite: bool = False

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


def _block(doc: str = "the block to transform") -> Arg:
    return Arg("block", Block(), doc)


def _loop(doc: str = "the loop, around the block") -> Arg:
    return Arg("loop", Loop(), doc)


def _index(name: str, doc: str) -> Arg:
    return Arg(name, Int(maximum=64), doc)


def _at(moved: str, into: str) -> tuple[Arg, ...]:
    return (_block(f"the {moved} block to move"),
            Arg("target_block", Block(), f"a {into} whose loop receives the block"),
            Arg("target_loop", Loop(of="target_block"), "the loop to compute at"),
            Arg("preserve_unit_loops", Bool(), "keep loops of extent 1", default=False))


_AT_CALL = ((None, "block"), (None, "target_loop"), ("preserve_unit_loops", "preserve_unit_loops"))
_AT_TRACE = TraceForm(("block", "target_loop"), ("preserve_unit_loops",))
_LOOP_TRACE = TraceForm(("loop",))
_SPLIT_H = {"primitive": "split", "args": {"block": "conv1", "loop": "h", "factors": [None, 4]}}
_REORDER_HW = {"primitive": "reorder", "args": {"block": "conv1",
                                                "loops": ["h_0", "w_0", "h_1", "w_1"]}}
_SPLIT_W = {"primitive": "split", "args": {"block": "conv1", "loop": "w", "factors": [None, 4]}}


def _cache(name: str, doc: str, side: str, index_doc: str, says: str, adds: str) -> Primitive:
    """cache_read or cache_write, which differ in the side of the block they cache."""
    index = f"{side[:-1]}_buffer_index"
    return Primitive(
        name, doc, (_block(f"the block that {side}"), _index(index, index_doc),
                    Arg("storage_scope", Choice(SCOPES), "scope of the cache")),
        ((None, "block"), (None, index), (None, "storage_scope")),
        _ex(name, {"block": "relu1", index: 0, "storage_scope": "local"}, says,
            'scope="local"', adds),
        returns="block", prechecks=("cache",), explains=("written-twice",),
        trace=TraceForm(("block", None), (index, "storage_scope")))


def _ex(primitive: str, args: dict, says: str, *adds: str, setup: tuple = ()) -> Example:
    return Example({"primitive": primitive, "args": args}, says, adds, setup)


_CATALOG = [
    Primitive("split", "Split a loop into nested loops with the given extents (one may be "
              "None: inferred). Non-dividing factors add guards (T.where).",
              (_block(), _loop(), Arg("factors", Factors(), "extents, outer to inner")),
              ((None, "loop"), ("factors", "factors")),
              _ex("split", _SPLIT_H["args"], "conv1's h loop (8) becomes h_0 (2) around h_1 (4)",
                  "v_h = T.axis.spatial(8, h_0 * 4 + h_1)"),
              returns="loops", trace=TraceForm(("loop", "*factors"))),
    Primitive("fuse", "Fuse consecutive perfectly nested loops into one.",
              (_block(), Arg("loops", Loops(), "loops to fuse, outer to inner")),
              ((None, "loops"),),
              _ex("fuse", {"block": "relu1", "loops": ["h", "w"]},
                  "relu1's h and w loops become one loop of 64 iterations",
                  "for n, c, h_w_fused in T.grid(1, 4, 64)"),
              returns="loop", explains=("fuse-not-only-child",), trace=TraceForm(("*loops",))),
    Primitive("reorder", "Reorder loops of one nest (the given loops take the given order).",
              (_block(), Arg("loops", Loops(), "loops in their new order, outer to inner")),
              ((None, "loops"),),
              _ex("reorder", {"block": "relu1", "loops": ["w", "h"]},
                  "relu1's w loop moves outside its h loop",
                  "for n, c, w, h in T.grid(1, 4, 8, 8)"),
              explains=("not-a-chain",), trace=TraceForm(("*loops",))),
    Primitive("parallel", "Run a loop's iterations on several CPU threads.",
              (_block(), _loop()), ((None, "loop"),),
              _ex("parallel", {"block": "relu1", "loop": "c"},
                  "relu1's channels run on several threads", "for c in T.parallel(4)"),
              prechecks=("parallel",), explains=("parallel-reduction",), trace=_LOOP_TRACE),
    Primitive("vectorize", "Turn an innermost loop into SIMD vector code.",
              (_block(), _loop()), ((None, "loop"),),
              _ex("vectorize", {"block": "relu1", "loop": "w"},
                  "relu1's innermost loop becomes vector code", "for w in T.vectorized(8)"),
              prechecks=("vectorize",), trace=_LOOP_TRACE),
    Primitive("unroll", "Unroll a loop completely.", (_block(), _loop()), ((None, "loop"),),
              _ex("unroll", {"block": "relu1", "loop": "w"},
                  "relu1's innermost loop is unrolled", "for w in T.unroll(8)"),
              prechecks=("unroll",), trace=_LOOP_TRACE),
    Primitive("bind", "Bind a loop to a GPU thread axis.",
              (_block(), _loop(), Arg("thread", Choice(THREADS), "thread axis")),
              ((None, "loop"), (None, "thread")),
              _ex("bind", {"block": "relu1", "loop": "c", "thread": "blockIdx.x"},
                  "relu1's channels become GPU thread blocks",
                  'for c in T.thread_binding(4, thread="blockIdx.x")'),
              gpu=True, trace=TraceForm(("loop",), ("thread",))),
    Primitive("compute_at", "Move a producer block under a loop of its consumer, computing "
              "only the region that the loop's iteration needs (halos are recomputed).",
              _at("producer", "consumer"), _AT_CALL,
              _ex("compute_at", {"block": "conv1", "target_block": "bias1",
                                 "target_loop": "h"},
                  "conv1 computes one row of its output under bias1's h loop, just before "
                  "bias1 reads it", "for ax0, ax1, ax2, ax3 in T.grid(8, 4, 3, 3)"),
              prechecks=("compute_at",), explains=("consumers-outside", "same-scope"),
              trace=_AT_TRACE),
    Primitive("reverse_compute_at", "Move a consumer block under a loop of its producer.",
              _at("consumer", "producer"), _AT_CALL,
              _ex("reverse_compute_at", {"block": "bias1", "target_block": "conv1",
                                         "target_loop": "h"},
                  "bias1 applies to each row of conv1's output right after it is computed",
                  "for ax0 in range(8)"),
              prechecks=("reverse_compute_at",), trace=_AT_TRACE,
              explains=("producers-outside", "window-under-producer", "same-scope")),
    Primitive("compute_inline", "Inline an elementwise block into its consumers.",
              (_block(),), ((None, "block"),),
              _ex("compute_inline", {"block": "conv1_pad"},
                  "the padding block disappears: conv1 reads the input with a bounds check",
                  "T.if_then_else("),
              explains=("inline-reduction", "inline-output"), trace=TraceForm(("block",))),
    Primitive("reverse_compute_inline", "Inline an elementwise block into its producer.",
              (_block(),), ((None, "block"),),
              _ex("reverse_compute_inline", {"block": "relu1"},
                  "relu1 disappears: bias1 writes max(conv1 + bias, 0) into the output",
                  "T.max("),
              prechecks=("reverse_compute_inline",),
              explains=("inline-reduction", "single-producer", "single-region", "inline-form"),
              trace=TraceForm(("block",))),
    _cache("cache_read", "Read a block's input buffer through a new cache block in a "
           "storage scope.", "reads", "index of the buffer among the block's reads",
           "a new block copies bias1's output into a local buffer that relu1 reads",
           'T.sblock("bias1_local")'),
    _cache("cache_write", "Write a block's output through a new cache block in a scope.",
           "writes", "index among the block's writes",
           "relu1 writes a local buffer; a new block copies it to the output",
           'T.sblock("relu1_local")'),
    Primitive("set_scope", "Set the storage scope of a buffer that a block writes.",
              (_block("the block that writes the buffer"),
               _index("buffer_index", "index among the block's writes"),
               Arg("storage_scope", Choice(SCOPES), "the new scope")),
              ((None, "block"), (None, "buffer_index"), (None, "storage_scope")),
              _ex("set_scope", {"block": "conv1", "buffer_index": 0, "storage_scope": "local"},
                  "conv1's output buffer is allocated in local memory",
                  'scope="local"'),
              trace=TraceForm(("block",), ("buffer_index", "storage_scope"))),
    Primitive("decompose_reduction", "Split a reduction block's initialization out, above "
              "the given loop.",
              (_block("the reduction block"), _loop("the loop above which init goes")),
              ((None, "block"), (None, "loop")),
              _ex("decompose_reduction", {"block": "conv1", "loop": "rc"},
                  "conv1's zero-initialization becomes a block of its own, above the "
                  "reduction loops", 'T.sblock("conv1_init")'),
              returns="block", prechecks=("decompose_reduction",),
              explains=("not-reduction", "decompose-position"),
              trace=TraceForm(("block", "loop"))),
    Primitive("annotate", "Annotate a loop with a pragma (unrolling hints).",
              (_block(), _loop(),
               Arg("key", Choice(tuple(ANNOTATIONS)), "the annotation"),
               Arg("value", Int(maximum=max(ANNOTATIONS.values())), "its value")),
              ((None, "loop"), (None, "key"), (None, "value")),
              _ex("annotate", {"block": "relu1", "loop": "w",
                               "key": "pragma_auto_unroll_max_step", "value": 16},
                  "relu1's w loop carries an unrolling hint for the compiler",
                  '"pragma_auto_unroll_max_step": 16'),
              trace=TraceForm(("loop", "value"), ("key",))),
    Primitive("transform_layout", "Change the layout of a buffer a block reads or writes, by "
              "an index map.",
              (_block(), Arg("buffer", Buffer(), '["read" or "write", index]'),
               Arg("index_map", IndexMap(), "lambda from old to new indices")),
              ((None, "block"), (None, "buffer"), (None, "index_map")),
              _ex("transform_layout", {"block": "conv1", "buffer": ["write", 0],
                                       "index_map": "lambda n, c, h, w: (n, h, w, c)"},
                  "conv1's output is stored channels-last (1, 8, 8, 4)",
                  "conv1 = T.sblock_alloc_buffer((1, 8, 8, 4))"),
              prechecks=("transform_layout",), explains=("index-map-arity", "layout-padding")),
    Primitive("storage_align", "Pad a buffer's axis stride to factor*k + offset elements.",
              (_block("the block that writes the buffer"),
               _index("buffer_index", "index among the block's writes"),
               Arg("axis", Int(maximum=16), "the axis"),
               Arg("factor", Int(minimum=1), "alignment factor"),
               Arg("offset", Int(), "offset")),
              ((None, "block"), (None, "buffer_index"), (None, "axis"), (None, "factor"),
               (None, "offset")),
              _ex("storage_align", {"block": "conv1", "buffer_index": 0, "axis": 2,
                                    "factor": 16, "offset": 1},
                  "rows of conv1's output start 16k+1 elements apart",
                  "buffer_dim_align"),
              explains=("not-allocated", "storage-align-axis"),
              trace=TraceForm(("block",), ("buffer_index", "axis", "factor", "offset"))),
    Primitive("winograd", "Compute a 3x3 stride-1 dense conv by Winograd's F(m x m, 3x3): "
              "transformed input tiles times transformed weights, channel by channel, "
              "2.25x (m=2) to 4x (m=4) fewer multiplies. Rebuilds the program: comes before "
              "every other step.",
              (_block("the conv layer's block"),
               Arg("tile", Int(minimum=2, maximum=4), "output tile size m", 2)),
              ((None, "block"), ("tile", "tile")),
              _ex("winograd", {"block": "conv1", "tile": 2},
                  "conv1 becomes a weight transform conv1_U, an input transform conv1_V, 16 "
                  "matrix products conv1_M over the channels, an inverse transform conv1_Y "
                  "and the write-back conv1", 'T.sblock("conv1_M")', 'T.sblock("conv1_U")'),
              rewrite=True),
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
        """A short human label, e.g. ``split conv2.h factors=[None, 8]``: each argument as
        its kind shows it (:meth:`Kind.label`), arguments at their default left out."""
        prim = CATALOG.get(self.primitive)
        if prim is None:
            return f"{self.primitive} {' '.join(f'{k}={v}' for k, v in self.args.items())}"
        args = dict(self.args)
        shown = [a for a in prim.args if a.name in args
                 and (a.default is REQUIRED or a.default != args[a.name])]
        parts = [p for a in shown if (p := a.kind.label(a, args)) is not None]
        # The block heads the label unless a loop of it names it already.
        named = any(getattr(a.kind, "of", None) == "block" for a in shown)
        block = args.get("block", "")
        head = f"{self.primitive} {block}" if block and not named else self.primitive
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


def normalize_step(step: Step, index: int | None = None) -> Step:
    """Check a step's form (names, types, ranges) before it reaches TVM; fill defaults.

    Each argument is checked by its kind (:meth:`Kind.normalize`). Existence of blocks and
    loops is checked against a schedule in :func:`playground.schedule.replay.apply_step`.
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
        if a.name in given:
            out[a.name] = a.kind.normalize(a, given[a.name], ctx)
        elif a.default is REQUIRED:
            raise StepError(f"{ctx}: missing argument {a.name!r} ({a.doc})", where=a.name)
        else:
            out[a.name] = a.default
    if prim.name == "annotate" and out["value"] > ANNOTATIONS[out["key"]]:
        raise StepError(f"{ctx}: {out['key']} must be at most {ANNOTATIONS[out['key']]}, got "
                        f"{out['value']}", where="value")
    return Step(prim.name, out)


# ----------------------------------------------------------------------------- exporting

def step_code(step: Step) -> str:
    """The step as one line of Python on an ``s_tir.Schedule`` named ``sch`` (a rewrite:
    ``name(sch, CHAIN, ...)``, the chain being the script's ``CHAIN``)."""
    prim = CATALOG[step.primitive]
    parts = ["sch", "CHAIN"] if prim.rewrite else []
    for keyword, name in prim.call:
        a = prim.arg(name)
        text = a.kind.render(a, step.args)
        parts.append(text if keyword is None else f"{keyword}={text}")
    return f"{'' if prim.rewrite else 'sch.'}{prim.name}({', '.join(parts)})"
