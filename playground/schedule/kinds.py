"""Argument kinds: everything the playground knows about one kind of primitive argument.

A primitive's argument (:class:`playground.schedule.steps.Arg`) has a kind, and the kind is the
one place that says how such an argument

* is checked as a plain JSON value and put in canonical form (:meth:`Kind.normalize`),
* becomes the value TVM's ``sch.<primitive>(...)`` call takes, on a given schedule
  (:meth:`Kind.resolve`: names become handles; an unknown name is refused here),
* is written in an exported script (:meth:`Kind.render`) and read back from one
  (:meth:`Kind.read`, on the :mod:`ast` of the call, never executed),
* is read from a MetaSchedule trace instruction's input or attribute (:meth:`Kind.from_trace`),
* appears in a step's short label (:meth:`Kind.label`),
* is picked in the page's form (:attr:`Kind.widget`: the UI maps widget names to Streamlit
  calls and knows nothing else about kinds).

Adding a kind is one subclass here; the step format, replay, export, import, tuning and the
form all go through these methods (``tests/unit/schedule/test_steps.py`` adds one in a test).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from playground import pyparse
from playground.errors import StepError

MAX_FACTOR = 1 << 16


@dataclass(frozen=True)
class On:
    """A schedule as the kinds see it: the schedule, its block names in program order, and
    how messages name the step (``"step 3 (split)"``)."""

    sch: Any
    blocks: tuple[str, ...]
    ctx: str = ""


class Unreadable(Exception):
    """A script's argument is not in the form :meth:`Kind.render` writes.

    ``expected`` says what was expected (``'expects sch.get_sblock("name")'``); the importer
    adds the line, the argument and what it found.
    ``found`` False means the message is complete (no "found ..." to add)."""

    def __init__(self, expected: str, found: bool = True) -> None:
        super().__init__(expected)
        self.expected, self.found = expected, found


class Kind:
    """The base kind: a JSON literal passed to TVM as it is (an int, bool, string ...)."""

    #: Short name, for the docs and messages.
    name = "value"
    #: The form field the page draws for it (see ``ui/schedule_ui.py``).
    widget = "text"
    #: True when the value is a list spread into the call (``sch.fuse(l0, l1)``).
    spread = False

    def normalize(self, arg: Any, value: Any, ctx: str) -> Any:
        """``value`` checked (types, ranges) and in canonical form; StepError otherwise."""
        return value

    def resolve(self, arg: Any, args: Mapping[str, Any], on: On) -> Any:
        """The value TVM's call takes, on the schedule ``on.sch``."""
        return args[arg.name]

    def render(self, arg: Any, args: Mapping[str, Any]) -> str:
        """The value as Python source in an exported script."""
        v = args[arg.name]
        return json.dumps(v) if isinstance(v, str) else repr(v)

    def read(self, arg: Any, node: ast.AST, args: dict, literal: Callable[[ast.AST], Any]) -> Any:
        """The value back from the :mod:`ast` node :meth:`render` wrote (``literal`` reads a
        literal safely); :class:`Unreadable` when it is in another form. May fill in the
        argument naming the owner block of a loop (``args``)."""
        value = literal(node)
        return list(value) if isinstance(value, tuple) else value

    def from_trace(self, arg: Any, value: Any, args: dict, on: On) -> Any:
        """The value from a MetaSchedule instruction's input or attribute (``value``, already
        translated to the schedule ``on.sch`` the trace is being replayed on)."""
        return _plain(value)

    def label(self, arg: Any, args: Mapping[str, Any]) -> str | None:
        """This argument in a step's short label, or None to leave it out."""
        return f"{arg.name}={args[arg.name]}"


def _plain(value: Any) -> Any:
    """A TVM attribute (IntImm, String, Bool) as a plain Python value."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "value"):
        return value.value
    return str(value)


def _int(value: Any, on: On) -> int:
    """An integer input of a trace instruction: a constant, or a sampled variable of the
    schedule (its decision, e.g. a tile size from ``sample_perfect_tile``)."""
    if isinstance(value, int):
        return value
    if hasattr(value, "value"):
        return int(value.value)
    return int(on.sch.get(value))


def _owner(args: dict, key: str, block: str) -> None:
    if args.setdefault(key, block) != block:
        raise Unreadable(f": the loop belongs to block {block!r} but {key} is {args[key]!r}",
                         found=False)


def _name_check(arg: Any, value: Any, ctx: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise StepError(f"{ctx}: {arg.name} must be a {what} name, got {value!r}",
                        where=arg.name)
    return value


class Block(Kind):
    """A block, by name (``"conv2"``); a handle from ``sch.get_sblock`` in the call."""

    name = widget = "block"

    def normalize(self, arg, value, ctx):
        return _name_check(arg, value, ctx, "block")

    def resolve(self, arg, args, on):
        v = args[arg.name]
        if v not in on.blocks:
            raise StepError(f"{on.ctx}: {arg.name} {v!r} does not exist (blocks: "
                            f"{', '.join(on.blocks)})", where=arg.name)
        return on.sch.get_sblock(v)

    def render(self, arg, args):
        return f"sch.get_sblock({json.dumps(args[arg.name])})"

    def read(self, arg, node, args, literal):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get_sblock" and is_sch(node.func.value)
                and len(node.args) == 1 and not node.keywords):
            name = str_const(node.args[0])
            if name is not None:
                _owner(args, arg.name, name)
                return name
        raise Unreadable('expects sch.get_sblock("name")')

    def from_trace(self, arg, value, args, on):
        return on.sch.get(value).name_hint

    def label(self, arg, args):
        return None  # the block heads the label, or its loops name it


class Loop(Kind):
    """A loop, by its name around the block in the argument ``of`` (``"h_0"``)."""

    name = widget = "loop"

    def __init__(self, of: str = "block") -> None:
        self.of = of

    def normalize(self, arg, value, ctx):
        return _name_check(arg, value, ctx, "loop")

    def _handles(self, arg, args, on, names: list[str]) -> list:
        from playground.schedule.loops import loop, loop_names

        owner = args[self.of]
        known = loop_names(on.sch, owner)
        for x in names:
            if x not in known:
                raise StepError(f"{on.ctx}: block {owner} has no loop {x!r} (its loops: "
                                f"{', '.join(known) or 'none'})", where=arg.name)
        return [loop(on.sch, owner, x) for x in names]

    def resolve(self, arg, args, on):
        return self._handles(arg, args, on, [args[arg.name]])[0]

    def _render_one(self, args, name: str) -> str:
        return f"loop(sch, {json.dumps(args[self.of])}, {json.dumps(name)})"

    def render(self, arg, args):
        return self._render_one(args, args[arg.name])

    def read(self, arg, node, args, literal):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "loop" and len(node.args) == 3 and not node.keywords
                and is_sch(node.args[0])):
            block, name = str_const(node.args[1]), str_const(node.args[2])
            if block is not None and name is not None:
                _owner(args, self.of, block)
                return name
        raise Unreadable('expects loop(sch, "block", "loop")')

    def from_trace(self, arg, value, args, on):
        return self._names(args, on, [value])[0]

    def _names(self, args, on, rvs: list) -> list[str]:
        """Names of the loops ``rvs`` around one block under them all: the block in the
        argument ``of`` when the instruction gave it, else the deepest other block (the main
        computation rather than a pad computed under its tile), which becomes ``of``."""
        from playground.schedule.loops import loop_names

        taken = {v for v in args.values() if isinstance(v, str)}
        if self.of in args:
            owners = [args[self.of]]
        else:
            depth = {b: len(on.sch.get_loops(on.sch.get_sblock(b))) for b in on.blocks}
            owners = sorted((b for b in on.blocks if b not in taken), key=lambda b: -depth[b])
        targets = [on.sch.get(rv) for rv in rvs]
        for block in owners:
            around = list(zip(loop_names(on.sch, block),
                              on.sch.get_loops(on.sch.get_sblock(block)), strict=True))
            names = [next((n for n, r in around if on.sch.get(r).same_as(t)), None)
                     for t in targets]
            if None not in names:
                args.setdefault(self.of, block)
                return names
        raise ValueError("no block lies under the loops "
                         f"{', '.join(t.loop_var.name for t in targets)}")

    def label(self, arg, args):
        return f"{args[self.of]}.{args[arg.name]}"


class Loops(Loop):
    """Several loops around one block, spread into the call (``sch.fuse(l0, l1)``)."""

    name = widget = "loops"
    spread = True

    def normalize(self, arg, value, ctx):
        if not isinstance(value, list) or not value or \
                not all(isinstance(x, str) for x in value):
            raise StepError(f"{ctx}: {arg.name} must be a non-empty list of loop names, "
                            f"got {value!r}", where=arg.name)
        if len(set(value)) != len(value):
            raise StepError(f"{ctx}: {arg.name} names a loop twice: {value}", where=arg.name)
        return value

    def resolve(self, arg, args, on):
        return self._handles(arg, args, on, args[arg.name])

    def render(self, arg, args):
        return ", ".join(self._render_one(args, x) for x in args[arg.name])

    def from_trace(self, arg, value, args, on):
        return self._names(args, on, list(value))

    def label(self, arg, args):
        return f"{args[self.of]}.({', '.join(map(str, args[arg.name]))})"


class Factors(Kind):
    """Split factors: 2 to 8 extents, outer to inner, at most one None (inferred)."""

    name = widget = "factors"

    def normalize(self, arg, value, ctx):
        if not isinstance(value, list) or not 2 <= len(value) <= 8:
            raise StepError(f"{ctx}: factors must be a list of 2 to 8 integers (one may "
                            f"be None), got {value!r}", where=arg.name)
        for f in value:
            if f is not None and (isinstance(f, bool) or not isinstance(f, int)
                                  or not 1 <= f <= MAX_FACTOR):
                raise StepError(f"{ctx}: factor {f!r} must be an integer from 1 to "
                                f"{MAX_FACTOR} or None", where=arg.name)
        if sum(f is None for f in value) > 1:
            raise StepError(f"{ctx}: at most one factor may be None, got {value}",
                            where=arg.name)
        return value

    def render(self, arg, args):
        return "[" + ", ".join("None" if f is None else str(f) for f in args[arg.name]) + "]"

    def from_trace(self, arg, value, args, on):
        return [None if f is None else _int(f, on) for f in value]


class Int(Kind):
    """An integer from ``minimum`` to ``maximum``."""

    name = widget = "int"

    def __init__(self, minimum: int = 0, maximum: int = MAX_FACTOR) -> None:
        self.minimum, self.maximum = minimum, maximum

    def normalize(self, arg, value, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StepError(f"{ctx}: {arg.name} must be an integer, got {value!r}",
                            where=arg.name)
        if not self.minimum <= value <= self.maximum:
            raise StepError(f"{ctx}: {arg.name} must be between {self.minimum} and "
                            f"{self.maximum}, got {value}", where=arg.name)
        return value

    def from_trace(self, arg, value, args, on):
        return _int(value, on)


class Bool(Kind):
    """True or false."""

    name = widget = "bool"

    def normalize(self, arg, value, ctx):
        if not isinstance(value, bool):
            raise StepError(f"{ctx}: {arg.name} must be true or false, got {value!r}",
                            where=arg.name)
        return value

    def from_trace(self, arg, value, args, on):
        return bool(_plain(value))


class Choice(Kind):
    """One of a fixed tuple of strings."""

    name = widget = "choice"

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = tuple(choices)

    def normalize(self, arg, value, ctx):
        if value not in self.choices:
            raise StepError(f"{ctx}: {arg.name} must be one of {', '.join(self.choices)}, "
                            f"got {value!r}", where=arg.name)
        return value

    def from_trace(self, arg, value, args, on):
        return str(_plain(value))


class Buffer(Kind):
    """A buffer of the block: ``["read" | "write", index]``, a tuple in the call."""

    name = widget = "buffer"

    def normalize(self, arg, value, ctx):
        if (not isinstance(value, list | tuple) or len(value) != 2
                or value[0] not in ("read", "write") or isinstance(value[1], bool)
                or not isinstance(value[1], int) or not 0 <= value[1] < 64):
            raise StepError(f'{ctx}: buffer must be ["read" or "write", index], got '
                            f'{value!r}', where=arg.name)
        return [value[0], value[1]]

    def resolve(self, arg, args, on):
        side, index = args[arg.name]
        return (side, index)

    def render(self, arg, args):
        side, index = args[arg.name]
        return f"({json.dumps(side)}, {index})"


class IndexMap(Kind):
    """The source of a lambda of integer index arithmetic
    (``"lambda n, c, h, w: (n, c // 16, h, w, c % 16)"``), a function in the call."""

    name = "index_map"
    widget = "text"

    def normalize(self, arg, value, ctx):
        return check_index_map(value, ctx)

    def resolve(self, arg, args, on):
        # Safe: check_index_map admitted only a lambda of integer arithmetic on its params.
        return eval(compile(args[arg.name], "<index_map>", "eval"), {"__builtins__": {}})

    def render(self, arg, args):
        return str(args[arg.name])

    def read(self, arg, node, args, literal):
        if not isinstance(node, ast.Lambda):
            raise Unreadable("must be a lambda")
        return ast.unparse(node)


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


def is_sch(node: ast.AST) -> bool:
    """Is ``node`` the name ``sch`` (the schedule, in an exported script)?"""
    return isinstance(node, ast.Name) and node.id == "sch"


def str_const(node: ast.AST) -> str | None:
    """The string of a string constant node, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None
