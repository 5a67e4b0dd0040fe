"""TVM's refusals and build errors in plain words: the catalogue.

TVM's messages are written for TVM's developers: ``Check failed: (var.has_value()) is false:
TensorRegion pattern match failed: v_h + v_rh``, or a sentence cut off at a colon. Every
message the schedule fuzzer (``benchmarks/fuzz.py``) met is an entry here: a pattern over
TVM's full text, and a sentence that says what is wrong with the block and loop names of the
step, and what to do instead. :func:`explain_step` is used when a primitive refuses a step,
:func:`explain_build` when compiling or calling a kernel fails. TVM's full text always stays
in the error's ``detail`` (one click away on the page); :func:`plain` is the last resort for a
message no entry knows, so that no message ends in a colon or shows TVM internals.

Each entry is tested with a step that triggers it (``tests/unit/test_explain.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Args = Mapping[str, Any]


@dataclass(frozen=True)
class Entry:
    """One kind of TVM message: where it applies, how to recognise it, what to say."""

    name: str
    pattern: re.Pattern
    say: Callable[[re.Match, Args], str]
    #: Applies to a step of any primitive; otherwise only to the primitives whose catalog
    #: record names it (``Primitive.explains`` in :mod:`playground.schedule.steps`).
    general: bool = False


def _a(args: Args, key: str, default: str = "?") -> str:
    return str(args.get(key, default))


def _loop(args: Args) -> str:
    return f"{_a(args, 'block')}.{_a(args, 'loop')}"


def _target(args: Args) -> str:
    return f"{_a(args, 'target_block')}.{_a(args, 'target_loop')}"


STEP_ENTRIES: tuple[Entry, ...] = (
    Entry("inline-reduction", re.compile(r"The block has init statement"),
          lambda m, a: f"{_a(a, 'block')} is a reduction (it accumulates with an init), and "
                       "only elementwise blocks can be inlined — compute_at it under its "
                       "consumer's loops (or reverse_compute_at its consumer under it) instead"),
    Entry("inline-output", re.compile(r"The block ([\w#]+) is an output block"),
          lambda m, a: f"{m.group(1)} writes the kernel's output, so there is no consumer to "
                       "inline it into — fuse it into its producer with reverse_compute_inline "
                       "or reverse_compute_at instead"),
    Entry("not-allocated", re.compile(r"The input buffer ([\w#]+) is not allocated by a block"),
          lambda m, a: f"{m.group(1)} is an argument of the kernel, whose layout is fixed by "
                       "the caller — storage_align applies to intermediates: cache_write (or "
                       "cache_read) it into a copy first"),
    Entry("not-reduction", re.compile(r"The block ([\w#]+) is not a reduction block - it "
                                      r"violates condition #(\d)"),
          lambda m, a: _not_reduction(m.group(1), m.group(2))),
    Entry("consumers-outside",
          re.compile(r"requires all the consumer\(s\) of the given block to be present under "
                     r"the target loop.*List of the consumer\(s\):\s*(.*)", re.S),
          lambda m, a: _consumers_outside(_block_list(m.group(1)), a)),
    Entry("producers-outside",
          re.compile(r"requires all the producer\(s\) of the given block to be present under "
                     r"the target loop.*List of the producer\(s\):\s*(.*)", re.S),
          lambda m, a: f"{_a(a, 'block')} also reads what {_names(m.group(1))} compute"
                       f"{'s' if _count(m.group(1)) == 1 else ''}, not under {_target(a)} — "
                       "move those producers there first, or pick a loop that encloses them"),
    Entry("window-under-producer",
          re.compile(r"TensorRegion pattern match failed: (.+)|CanProveEqual\(prim::IntegerAbs"),
          lambda m, a: f"{_a(a, 'block')} reads a window of {_a(a, 'target_block')} "
                       f"({(m.group(1) or 'strided').strip()}), and TVM cannot compute a "
                       "windowed consumer under its producer's loops — fuse the other way: "
                       f"compute_at {_a(a, 'target_block')} under {_a(a, 'block')}'s loops"),
    Entry("index-map-arity", re.compile(r"args\.size\(\) == initial_indices_orig\.size\(\)"),
          lambda m, a: "the index map's parameters do not match the buffer's dimensions — "
                       "write one lambda parameter per dimension of the buffer"),
    Entry("layout-padding", re.compile(r"would result in shape (\([^)]*\))\.\s*However, this "
                                       r"would introduce padding"),
          lambda m, a: f"the new shape {m.group(1)} does not tile the buffer exactly (a "
                       "divisor does not divide its dimension) — use factors that divide the "
                       "dimension"),
    Entry("single-producer",
          re.compile(r"required to have only a single producer block, and the producer block "
                     r"should be a complete block"),
          lambda m, a: f"{_a(a, 'block')} must read exactly one block's output, written once "
                       "by a complete (non-reduction) block — reverse_compute_inline fits an "
                       "elementwise consumer of an elementwise producer; use reverse_compute_at "
                       "to fuse it under a convolution"),
    Entry("single-region",
          re.compile(r"only allowed to read a single buffer region, but it reads \d+ region"),
          lambda m, a: f"{_a(a, 'block')} reads several elements of its producer per output "
                       "(a window or a gather): only an elementwise consumer can be inlined "
                       "into its producer — use reverse_compute_at instead"),
    Entry("inline-form", re.compile(r"The body of the inlined block should be in form of"),
          lambda m, a: f"{_a(a, 'block')} is not a plain elementwise copy of its producer "
                       "(it pads, or mixes several inputs): it cannot be inlined into its "
                       "producer — compute_at or compute_inline it into its consumer instead"),
    Entry("not-complete", re.compile(r"The block ([\w#]+) is not a complete block"),
          lambda m, a: f"{m.group(1)} is not a complete block (decompose_reduction split it "
                       "into an init and an update) — do this step before decompose_reduction",
          general=True),
    Entry("parallel-reduction", re.compile(r"is not a data parallel block iter"),
          lambda m, a: f"{_loop(a)} carries a reduction of {_a(a, 'block')} (its iterations "
                       "add into the same outputs), so they cannot run at the same time — "
                       "parallelize a spatial loop (n, k, h or w)"),
    Entry("compact-dataflow", re.compile(r"does not have compact dataflow"),
          lambda m, a: f"{_loop(a)} holds a block TVM cannot transform it over: one split "
                       "into init and update by decompose_reduction, or one computed at this "
                       "loop over an irregular region — do parallel, vectorize and unroll "
                       "before decompose_reduction and compute_at, or leave this loop as it "
                       "is", general=True),
    Entry("decompose-position",
          re.compile(r"decompose_reduction expect the loop ([\w#]+) to be higher than all the "
                     r"loops related to reduce block var"),
          lambda m, a: f"{m.group(1)} is inside or among {_a(a, 'block')}'s reduction loops — "
                       "decompose_reduction needs a loop above all of them (a spatial loop "
                       "such as h or w, outside rc, rh, rw)"),
    Entry("storage-align-axis",
          re.compile(r"has (\d+) dimension\(s\), so `axis` is required to be in"),
          lambda m, a: f"the buffer has {m.group(1)} dimension(s): axis must be from 0 to "
                       f"{int(m.group(1)) - 1}"),
    Entry("same-scope",
          re.compile(r"Expected block ([\w#]+) and loop ([\w#]+) to be under the same block scope, "
                     r"and loop not to be the ancestor of block"),
          lambda m, a: f"{m.group(1)} is already inside loop {m.group(2)} (or the loop is in "
                       "another block's scope) — pick a loop that does not enclose "
                       f"{m.group(1)}"),
    Entry("not-a-chain",
          re.compile(r"The loops are not in a chain because there is a non-single-branch stmt "
                     r"in between\. Problematic stmt: loop ([\w#]+)"),
          lambda m, a: f"the loops are not perfectly nested: loop {m.group(1)} holds more than "
                       "one statement (another block was computed at it) — reorder before "
                       "compute_at, or reorder loops of one nest only"),
    Entry("written-twice",
          re.compile(r"The buffer ([\w#]+) is expected to be written by single block, but got"),
          lambda m, a: f"{m.group(1)} is written by two blocks (decompose_reduction split its "
                       "init from its update) — cache it before decompose_reduction"),
    Entry("fuse-not-only-child",
          re.compile(r"inner loop ([\w#]+) is not the only child of outer loop ([\w#]+)"),
          lambda m, a: f"loop {m.group(2)} holds more than loop {m.group(1)} (another block "
                       "was computed at it), so the two cannot become one loop — fuse before "
                       "compute_at, or fuse loops of one nest only"),
    Entry("annotated-loop",
          re.compile(r"the loop ([\w#]+) has annotation or thread binding"),
          lambda m, a: f"loop {m.group(1)} is already parallel, vectorized, unrolled, bound or "
                       "annotated — transform loops before marking them", general=True),
    Entry("affine-binding",
          re.compile(r"The block ([\w#]+) is required to have an? partial affine binding"),
          lambda m, a: f"in that order {m.group(1)}'s indices would not be affine in the "
                       "loops any more (a block computed inside them, or a split that does not "
                       "divide, depends on their order) — reorder before that compute_at or "
                       "split", general=True),
)

BUILD_ENTRIES: tuple[Entry, ...] = (
    Entry("gpu-loop-on-cpu",
          re.compile(r"not implemented|Unknown device id in current IR|thread_scope_ == op|"
                     r"threadIdx|blockIdx"),
          lambda m, a: "a loop is bound to a GPU thread (blockIdx/threadIdx), but the target "
                       "is the CPU — undo the bind step (use parallel for CPU threads), or "
                       "switch the target to cuda"),
    Entry("used-before-definition", re.compile(r"Buffer ([\w#]+) is used before its definition"),
          lambda m, a: f"{m.group(1)} is read before the block that writes it runs (an inline "
                       "or a move removed or reordered its producer) — undo the last "
                       "compute_inline / reverse_compute_inline or move"),
    Entry("vectorize-alloc", re.compile(r"VectorizeLoop before LiftStorageAlloc"),
          lambda m, a: "a vectorized loop holds a whole block with its own buffer — vectorize "
                       "only the innermost loop of a single block"),
    Entry("argument-layout",
          re.compile(r"Mismatched (\S+?)\.(strides|ndim|shape\[\d+\]) on argument"),
          lambda m, a: f"the kernel's argument {m.group(1)} no longer has its caller's layout "
                       "(transform_layout changed it) — change the layout of a cache_read / "
                       "cache_write copy instead of the argument"),
)


def _block_list(listing: str) -> list[str]:
    """Block names from TVM's run-together listing ``block conv1block bn1_scale``."""
    parts = re.split(r"block\s+", listing.strip().splitlines()[0] if listing.strip() else "")
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _not_reduction(block: str, condition: str) -> str:
    if condition == "1":
        return (f"{block} is not a reduction, so it has no initialization to split off — "
                "decompose_reduction applies to convolution and pooling blocks")
    return (f"{block} is a reduction, but TVM cannot split its initialization off here (its "
            "index arithmetic is no longer simple in these loops, after a split that does not "
            "divide or a compute_at) — decompose before that step, or leave it: the "
            "initialization then stays a branch inside the loop")


def _consumers_outside(listed: list[str], a: Args) -> str:
    others = [n for n in listed if n != a.get("target_block")] or listed
    one = len(others) == 1
    return (f"{_a(a, 'block')} is also read by {', '.join(others)}, which "
            f"{'is' if one else 'are'} not under {_target(a)} — move {'it' if one else 'them'} "
            f"there first, or compute {_a(a, 'block')} at a loop that encloses all its "
            "consumers")


def _names(listing: str) -> str:
    return ", ".join(_block_list(listing)) or listing.strip()


def _count(listing: str) -> int:
    return len(_block_list(listing)) or 1


def _match(entries: tuple[Entry, ...], text: str, names: tuple[str, ...] | None,
           args: Args) -> str | None:
    for entry in entries:
        if names is not None and not entry.general and entry.name not in names:
            continue
        m = entry.pattern.search(text)
        if m:
            return entry.say(m, args)
    return None


def explain_step(text: str, explains: tuple[str, ...], args: Args) -> str | None:
    """A plain sentence for TVM's refusal of a step, or None when no entry knows it.

    ``explains`` names the entries of the step's primitive (its catalog record's
    ``explains``); general entries apply to every primitive."""
    return _match(STEP_ENTRIES, text, explains, args)


def explain_build(text: str) -> str | None:
    """A plain sentence for a build or call failure, or None when no entry knows it."""
    return _match(BUILD_ENTRIES, text, None, {})


_INTERNAL = re.compile(r"Check failed: \((.*?)\) is false:?\s*")


def plain(reason: str) -> str:
    """TVM's one-line reason without its internals: no ``Check failed: (...)`` prefix, no
    trailing colon (the rest of the text is in the error's detail)."""
    text = _INTERNAL.sub("", reason).strip()
    text = re.sub(r"\bs_tir\.SBlock#\d+|\btirx\.For#\d+", "a block", text)
    text = text.rstrip(":").strip()
    if not text:
        return "TVM's internal check failed (its full text is in the details)"
    return text
