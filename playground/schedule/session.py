"""A session: a chain plus an immutable sequence of steps, with undo and redo.

``steps`` holds every step the user applied, ``cursor`` how many of them are active: undo moves
the cursor back, redo forward, applying a new step drops the undone ones after the cursor.
Every operation returns a new :class:`Session` or raises :class:`PlaygroundError` and leaves
the old one as it was, so a UI that keeps one session object never shows half-applied state.
Everything else (IR, lowered code, timings, exported script) is derived from it.

Replacing the whole session (an import, a preset, a loaded search result, a link) is a history
entry too: :meth:`Session.replacing` keeps the session it replaced in a :class:`Replaced`
record, and Undo at the replacement's own steps brings that session back whole (Redo the
replacement again), so no import or load loses what the user built. The record is not part of
the session's JSON, its key or its equality: the exported and linked formats are unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from playground.chain.spec import chain_to_json, normalize_chain
from playground.errors import PlaygroundError, StepError
from playground.schedule.replay import apply_step, replay_prefix, scheduled
from playground.schedule.steps import Step, normalize_step, steps_from_json, steps_to_json


@dataclass(frozen=True)
class Replaced:
    """The history entry of a replacement: what replaced the session, and the session before.

    ``steps`` is how many of the new session's first steps came with the replacement (Undo
    with exactly those active goes back to ``before``).
    """

    label: str
    before: Session
    steps: int


@dataclass(frozen=True)
class Session:
    """A chain (normalized) and its steps; ``cursor`` steps are active."""

    chain: dict
    steps: tuple[Step, ...] = ()
    cursor: int = 0
    # Set when a chain edit left later steps inactive: why the first of them no longer applies.
    notice: str = field(default="", compare=False)
    #: The replacement this session came from (Undo can go back past it), if any.
    replaced: Replaced | None = field(default=None, compare=False, repr=False)
    #: After undoing a replacement: the replacing session, which Redo brings back.
    redo_replace: Session | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def new(chain: Any, steps: Any = ()) -> Session:
        """A session on ``chain`` (raw or normalized) with ``steps`` all applied (validated)."""
        chain = normalize_chain(chain)
        steps = tuple(normalize_step(s if isinstance(s, Step) else Step.from_dict(s), i)
                      for i, s in enumerate(steps))
        # Applies each step once (checked as apply_step checks it) and caches every prefix:
        # the same steps again (a short link opened twice, undo after redo) cost nothing.
        scheduled(chain, steps)
        return Session(chain, steps, len(steps))

    @property
    def active(self) -> tuple[Step, ...]:
        return self.steps[: self.cursor]

    def schedule(self):
        """The scheduled ``s_tir.Schedule`` after the active steps (cached; read-only)."""
        return scheduled(self.chain, self.active)

    def apply(self, step: Step | dict, target: str | None = None) -> Session:
        """Apply a step after the active ones (dropping undone steps).

        ``target`` (``"cpu"``/``"cuda"``), when the caller knows it, lets steps that cannot
        work there (a GPU thread binding on the CPU) be refused at once.
        """
        step = step if isinstance(step, Step) else Step.from_dict(step)
        sch = scheduled(self.chain, self.active).copy()
        step = apply_step(sch, step, self.cursor, target, chain=self.chain)
        new_steps = (*self.active, step)
        scheduled(self.chain, new_steps)  # cache the result for the views
        return replace(self, steps=new_steps, cursor=len(new_steps), notice="",
                       replaced=self._kept_replaced(self.cursor), redo_replace=None)

    def _kept_replaced(self, kept: int) -> Replaced | None:
        """The replacement record once only the first ``kept`` steps stay."""
        r = self.replaced
        return r if r is None or r.steps <= kept else replace(r, steps=kept)

    # -- replacing the whole session, as one history entry -----------------------------------
    def replacing(self, before: Session, label: str) -> Session:
        """This session as the replacement of ``before`` (``label``: what replaced it, e.g.
        "imported schedule.py"): Undo with this session's own steps active restores
        ``before``, whole."""
        return replace(self, replaced=Replaced(label, before, self.cursor), redo_replace=None)

    @property
    def at_replacement(self) -> bool:
        """Undo now goes back to the session before the replacement."""
        return self.replaced is not None and self.cursor == self.replaced.steps

    @property
    def can_undo(self) -> bool:
        return self.cursor > 0 or self.at_replacement

    @property
    def can_redo(self) -> bool:
        return self.cursor < len(self.steps) or (
            self.redo_replace is not None and self.cursor == len(self.steps))

    def before_replacement(self) -> Session:
        """The session this one replaced, with this one to Redo."""
        if self.replaced is None:
            raise StepError("this session replaced none")
        return replace(self.replaced.before, redo_replace=self, notice="")

    def undo(self) -> Session:
        if self.at_replacement:
            return self.before_replacement()
        if not self.can_undo:
            raise StepError("nothing to undo")
        return replace(self, cursor=self.cursor - 1, notice="")

    def redo(self) -> Session:
        if self.cursor == len(self.steps) and self.redo_replace is not None:
            return self.redo_replace
        if not self.can_redo:
            raise StepError("nothing to redo")
        scheduled(self.chain, self.steps[: self.cursor + 1])
        return replace(self, cursor=self.cursor + 1, notice="")

    def goto(self, k: int) -> Session:
        """Make the first ``k`` steps active (0: the unscheduled chain)."""
        if not 0 <= k <= len(self.steps):
            raise StepError(f"step {k} does not exist (0 to {len(self.steps)})")
        scheduled(self.chain, self.steps[:k])
        return replace(self, cursor=k, notice="")

    def delete(self, index: int) -> Session:
        """Remove step ``index`` (0-based); the steps after it must still apply."""
        if not 0 <= index < len(self.steps):
            raise StepError(f"step {index + 1} does not exist (1 to {len(self.steps)})")
        steps = self.steps[:index] + self.steps[index + 1:]
        cursor = self.cursor - 1 if index < self.cursor else self.cursor
        _, error = replay_prefix(self.chain, steps[:cursor])
        if error is not None:
            raise StepError(f"cannot delete step {index + 1}: {error.message}",
                            detail=error.detail) from None
        r = self.replaced
        if r is not None and index < r.steps:
            r = replace(r, steps=r.steps - 1)
        return replace(self, steps=steps, cursor=cursor, notice="", replaced=r,
                       redo_replace=None)

    def with_chain(self, chain: Any) -> Session:
        """The same steps on an edited chain.

        Steps that no longer apply stay in the history, undone (redo-able once fixed), and
        ``notice`` says why: nothing the user built is lost.
        """
        chain = normalize_chain(chain)
        ok, error = replay_prefix(chain, self.active)
        notice = ""
        if error is not None:
            notice = (f"{len(self.active) - ok} step(s) undone because the chain changed: "
                      f"{error.message}")
        return replace(self, chain=chain, cursor=ok, notice=notice,
                       replaced=self._kept_replaced(ok), redo_replace=None)

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"chain": self.chain, "steps": [s.to_dict() for s in self.steps],
                "cursor": self.cursor}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(raw: Any) -> Session:
        if not isinstance(raw, dict):
            raise PlaygroundError("a session must be an object with chain and steps")
        steps = raw.get("steps", [])
        if isinstance(steps, str):
            steps = [s.to_dict() for s in steps_from_json(steps)]
        session = Session.new(raw.get("chain"), steps)
        cursor = raw.get("cursor", len(session.steps))
        if isinstance(cursor, bool) or not isinstance(cursor, int):
            raise PlaygroundError(f"cursor must be an integer, got {cursor!r}")
        return session.goto(cursor)

    def key(self) -> str:
        """A cache key for everything derived from the active steps."""
        return chain_to_json(self.chain) + "|" + steps_to_json(self.active)
