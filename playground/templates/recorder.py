"""Writing steps against a live schedule: what every template is built on.

A :class:`Recorder` applies each step to a schedule of the chain as it is written (with the
playground's pre-checks, exactly as a user's step), keeps the normalized step, and answers
questions about the schedule as it is *now* (loop names, extents, blocks), so that a template
never guesses a loop name: it reads it. The result is an ordinary list of steps: editable,
undoable, exportable.
"""

from __future__ import annotations

from typing import Any

from playground.chain.spec import normalize_chain
from playground.errors import StepError
from playground.schedule.loops import loop_names
from playground.schedule.replay import apply_step, block_names, fresh_schedule, scheduled
from playground.schedule.steps import Step


class Recorder:
    """Applies steps to a schedule of ``chain`` and keeps them, in order.

    Parameters
    ----------
    chain
        A chain (raw or normalized).
    start
        Steps already applied (a user's schedule to extend), replayed first.
    target
        ``"cpu"`` or ``"cuda"``: the target the steps are checked for.
    """

    def __init__(self, chain: dict, start: tuple[Step, ...] | list[Step] = (),
                 target: str = "cpu") -> None:
        self.chain = normalize_chain(chain)
        self.target = target
        #: Templates leave weight copies at the top level (constant weights: built once).
        self.hoist_weights = False
        #: Write-back blocks whose output a template laid out in channel blocks (NCHWc), and
        #: those outputs (:func:`playground.templates.layouts.block_intermediate`).
        self.blocked: set[str] = set()
        self.blocked_buffers: set[str] = set()
        self.blocked_lanes = 0
        self.steps: list[Step] = list(start)
        self.sch = scheduled(self.chain, tuple(start)).copy() if start else \
            fresh_schedule(self.chain)

    def __call__(self, primitive: str, block: str, **args: Any) -> Step:
        """Apply one step (to a copy: a refused step leaves the schedule as it was)."""
        sch = self.sch.copy()
        step = apply_step(sch, Step(primitive, {"block": block, **args}), len(self.steps),
                          self.target, chain=self.chain)
        self.sch = sch
        self.steps.append(step)
        return step

    def attempt(self, primitive: str, block: str, **args: Any) -> bool:
        """Apply a step if the schedule allows it; False (nothing changed) when refused."""
        try:
            self(primitive, block, **args)
        except StepError:
            return False
        return True

    # ---- reading the schedule as it is now
    def blocks(self) -> list[str]:
        return block_names(self.sch)

    def has(self, block: str) -> bool:
        return block in self.blocks()

    def loops(self, block: str) -> list[str]:
        return loop_names(self.sch, block)

    def extent(self, block: str, name: str) -> int:
        i = self.loops(block).index(name)
        return int(self.sch.get(self.sch.get_loops(self.sch.get_sblock(block))[i]).extent)

    def loop_kinds(self, block: str) -> list[str]:
        """``serial``, ``parallel``, ``vectorized`` ... of the loops around ``block`` (read by
        the IR reader, like :meth:`reduction_loops`)."""
        from playground.schedule.prechecks import Facts

        return [lp.kind for lp in Facts(self.sch).blocks[block].loops]

    def reduction_loops(self, block: str) -> list[str]:
        """The loops of ``block`` (outer first) whose variables feed its reduction axes."""
        from playground.schedule.ir import var_key
        from playground.schedule.prechecks import Facts, reduce_vars

        mine = Facts(self.sch).blocks[block]
        keys = reduce_vars(mine)
        names = self.loops(block)
        return [name for name, lp in zip(names, mine.loops, strict=True)
                if var_key(lp.var) in keys]

    def reads(self, block: str) -> list[str]:
        return [str(r.source.name) for r in self.sch.get(self.sch.get_sblock(block)).reads]

    def writes(self, block: str) -> list[str]:
        return [str(w.source.name) for w in self.sch.get(self.sch.get_sblock(block)).writes]

    # ---- shorthands that return the names of what they made
    def split(self, block: str, loop: str, factors: list[int | None]) -> list[str]:
        """Split; return the new loops' names (``name#2`` where a name repeats in the nest)."""
        i = self.loops(block).index(loop)
        self("split", block, loop=loop, factors=list(factors))
        return self.loops(block)[i: i + len(factors)]

    def fuse(self, block: str, loops: list[str]) -> str:
        """Fuse consecutive loops; return the fused loop's name (a single loop is kept)."""
        if len(loops) == 1:
            return loops[0]
        i = self.loops(block).index(loops[0])
        self("fuse", block, loops=list(loops))
        return self.loops(block)[i]

    def vectorize_innermost(self, block: str, lanes: int) -> None:
        """Vectorize the innermost loop of ``block``: whole when it is at most ``lanes`` long,
        else split by the largest divisor of its extent up to ``lanes`` (no guards)."""
        last = self.loops(block)[-1]
        extent = self.extent(block, last)
        if extent <= 1:
            return
        if extent > lanes:
            width = max((f for f in range(2, lanes + 1) if extent % f == 0), default=1)
            if width == 1:
                return
            last = self.split(block, last, [None, width])[1]
        self.attempt("vectorize", block, loop=last)
