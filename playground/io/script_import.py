"""Reading sessions back: exported scripts, pasted JSON sessions and shareable URL state.

Nothing here executes user text. A script is parsed with :mod:`ast`, scanned as a whole for
anything a schedule script has no business containing (imports beyond tvm/numpy and a few
standard modules, dunder names, ``eval``/``open``/``getattr``, ``os`` ...), and then only three
things are read: the literal ``CHAIN``, the optional literal ``TARGET`` (and ``TITLE`` /
``DESCRIPTION``) and the body of ``apply_schedule(sch)``, whose every statement must be a call
of a schedule primitive in exactly the form :func:`playground.schedule.steps.step_code` writes. The
steps are then validated by replaying them on the chain, as the playground would.

Every failure is a :class:`~playground.errors.PlaygroundError` (almost always
:class:`~playground.errors.ScriptError`) whose message names the line.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

from playground.chain.spec import normalize_chain
from playground.errors import PlaygroundError
from playground.io.script_scan import (
    MAX_LITERAL_INT,
    check_size,
    describe,
    err,
    parse_script,
    scan,
    snippet,
)
from playground.schedule.replay import apply_step, scheduled
from playground.schedule.steps import CATALOG, REQUIRED, Arg, Primitive, Step

MAX_STEPS = 256


TARGETS = ("cpu", "cuda")
_META = {"TARGET": "target", "TITLE": "title", "DESCRIPTION": "description",
         "WEIGHTS": "weights"}
_JSON_KEYS = ("chain", "steps", "cursor", "target", "title", "description")


# ----------------------------------------------------------------------------- reading calls

def _literal(node: ast.AST, line: int, what: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise err(line, f"{what} must be a literal (numbers, strings, lists, dicts, True, "
                         f"False, None); found {describe(node)}") from None
    # Huge integers (0x... with thousands of digits) cannot even be printed in an error message.
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, int) and \
                abs(sub.value) > MAX_LITERAL_INT:
            raise err(getattr(sub, "lineno", line), f"{what}: integer literal too large")
    return value


def _is_sch(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "sch"


def _str_const(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _read_block(node: ast.AST, line: int, ctx: str) -> str:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get_sblock" and _is_sch(node.func.value)
            and len(node.args) == 1 and not node.keywords):
        name = _str_const(node.args[0])
        if name is not None:
            return name
    raise err(line, f'{ctx} expects sch.get_sblock("name"); found {snippet(node)}')


def _read_loop(node: ast.AST, line: int, ctx: str) -> tuple[str, str]:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "loop"
            and len(node.args) == 3 and not node.keywords and _is_sch(node.args[0])):
        block, name = _str_const(node.args[1]), _str_const(node.args[2])
        if block is not None and name is not None:
            return block, name
    raise err(line, f'{ctx} expects loop(sch, "block", "loop"); found {snippet(node)}')


def _set_owner(args: dict, key: str, block: str, line: int, ctx: str) -> None:
    if args.setdefault(key, block) != block:
        raise err(line, f"{ctx}: the loop belongs to block {block!r} but {key} is "
                         f"{args[key]!r}")


def _read_value(a: Arg, node: ast.AST, args: dict, line: int, ctx: str) -> Any:
    if a.kind == "block":
        name = _read_block(node, line, f"{ctx} argument {a.name}")
        _set_owner(args, a.name, name, line, ctx)
        return name
    if a.kind == "loop":
        block, name = _read_loop(node, line, f"{ctx} argument {a.name}")
        _set_owner(args, a.of, block, line, ctx)
        return name
    if a.kind == "index_map":
        if not isinstance(node, ast.Lambda):
            raise err(line, f"{ctx} argument {a.name} must be a lambda; found "
                             f"{describe(node)}")
        return snippet(node, limit=10_000)
    value = _literal(node, line, f"{ctx} argument {a.name}")
    return list(value) if isinstance(value, tuple) else value


def _read_call(node: ast.AST, line: int) -> Step:
    """A ``sch.<primitive>(...)`` call, in step_code's form, as a Step (not yet checked)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and _is_sch(node.func.value)):
        raise err(line, f"apply_schedule may only call sch.<primitive>(...); found "
                         f"{describe(node)}")
    prim: Primitive | None = CATALOG.get(node.func.attr)
    if prim is None:
        raise err(line, f"sch.{node.func.attr} is not a playground primitive (known: "
                         f"{', '.join(CATALOG)})")
    ctx = f"sch.{prim.name}"
    if any(isinstance(x, ast.Starred) for x in node.args) or \
            any(k.arg is None for k in node.keywords):
        raise err(line, f"{ctx}: * and ** arguments are not allowed")
    positional = list(node.args)
    keywords = {k.arg: k.value for k in node.keywords}
    args: dict[str, Any] = {}
    for keyword, name in prim.call:
        a = prim.arg(name)
        if a.kind == "loops":
            found = []
            while positional:
                block, loop_name = _read_loop(positional.pop(0), line, f"{ctx} argument {name}")
                _set_owner(args, a.of, block, line, ctx)
                found.append(loop_name)
            if not found:
                raise err(line, f"{ctx}: missing argument {name} ({a.doc})")
            args[name] = found
            continue
        if keyword is None:
            value_node = positional.pop(0) if positional else None
        else:
            value_node = keywords.pop(keyword, None)
        if value_node is None:
            if a.default is REQUIRED:
                raise err(line, f"{ctx}: missing argument {name} ({a.doc})")
            continue
        args[name] = _read_value(a, value_node, args, line, ctx)
    if positional:
        raise err(line, f"{ctx}: unexpected argument {snippet(positional[0])}")
    if keywords:
        raise err(line, f"{ctx}: unexpected keyword argument {next(iter(keywords))!r}")
    return Step(prim.name, args)


def _read_schedule(fn: ast.FunctionDef) -> list[tuple[int, Step]]:
    a = fn.args
    if fn.decorator_list or [p.arg for p in a.args] != ["sch"] or a.vararg or a.kwarg or \
            a.kwonlyargs or a.posonlyargs or a.defaults:
        raise err(fn.lineno, "apply_schedule must be defined as 'def apply_schedule(sch):'")
    steps: list[tuple[int, Step]] = []
    for k, stmt in enumerate(fn.body):
        if isinstance(stmt, ast.Pass):
            continue
        if k == 0 and isinstance(stmt, ast.Expr) and _str_const(stmt.value) is not None:
            continue  # docstring
        if isinstance(stmt, ast.Expr):
            call = stmt.value
        elif isinstance(stmt, ast.Assign) and all(_is_name_target(t) for t in stmt.targets):
            call = stmt.value  # `l0, l1 = sch.split(...)`: the names are not used
        else:
            raise err(stmt.lineno, f"apply_schedule may only call sch.<primitive>(...); "
                                    f"found {describe(stmt)}")
        steps.append((stmt.lineno, _read_call(call, stmt.lineno)))
        if len(steps) > MAX_STEPS:
            raise err(stmt.lineno, f"more than {MAX_STEPS} steps (MAX_STEPS)")
    return steps


def _is_name_target(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return True
    return isinstance(node, ast.Tuple | ast.List) and all(isinstance(e, ast.Name)
                                                          for e in node.elts)


# ----------------------------------------------------------------------------- top level

def _top_level(tree: ast.Module) -> tuple[Any, dict, ast.FunctionDef]:
    chain_raw, chain_line, meta, fn = None, 0, {}, None
    seen: dict[str, int] = {}
    for node in tree.body:
        name = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                node.name == "apply_schedule":
            name = "apply_schedule"
        if name not in ("CHAIN", "apply_schedule", *_META):
            continue
        if name in seen:
            raise err(node.lineno, f"{name} is defined twice (first on line {seen[name]})")
        seen[name] = node.lineno
        if name == "apply_schedule":
            if isinstance(node, ast.AsyncFunctionDef):
                raise err(node.lineno, "apply_schedule must not be async")
            fn = node
        elif name == "CHAIN":
            chain_raw, chain_line = _literal(node.value, node.lineno, "CHAIN"), node.lineno
        else:
            meta[_META[name]] = _literal(node.value, node.lineno, name)
    if chain_line == 0:
        raise err(None, "the script has no CHAIN = {...} assignment at top level")
    if fn is None:
        raise err(None, "the script has no 'def apply_schedule(sch):' at top level")
    meta = _check_meta(meta, seen)
    try:
        chain = normalize_chain(chain_raw)
    except PlaygroundError as e:
        raise err(chain_line, f"CHAIN: {e.message}", e.detail) from None
    return chain, meta, fn


def _check_meta(meta: dict, lines: Mapping[str, int]) -> dict:
    target = meta.get("target", "cpu")
    if target not in TARGETS:
        raise err(lines.get("TARGET"), f"TARGET must be one of {', '.join(TARGETS)}, got "
                                        f"{target!r:.60}")
    weights = meta.get("weights", "per-call")
    if weights not in ("per-call", "constant"):
        raise err(lines.get("WEIGHTS"), "WEIGHTS must be 'per-call' or 'constant', got "
                                         f"{weights!r:.60}")
    out = {"target": target, "weights": weights}
    for key in ("title", "description"):
        value = meta.get(key, "")
        if not isinstance(value, str):
            raise err(lines.get(key.upper()), f"{key.upper()} must be a string")
        out[key] = value
    return out


def _replay(chain: dict, steps: list[tuple[int | None, Step]]) -> tuple[Step, ...]:
    """Apply the steps in order as the playground does; errors name the step's line."""
    done: list[Step] = []
    for i, (line, step) in enumerate(steps):
        try:
            sch = scheduled(chain, tuple(done)).copy()
            done.append(apply_step(sch, step, i))
        except PlaygroundError as e:
            if line is None:
                raise
            raise err(line, e.message, e.detail) from None
    return tuple(done)


def _import_json(text: str) -> tuple[dict, tuple[Step, ...], dict]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise err(e.lineno, f"not valid JSON: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise err(1, f"not valid JSON: {type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise err(1, "a JSON session must be an object with chain and steps")
    unknown = sorted(set(raw) - set(_JSON_KEYS))
    if unknown:
        raise err(None, f"JSON session: unknown field {unknown[0]!r} (known: "
                         f"{', '.join(_JSON_KEYS)})")
    steps_raw = raw.get("steps", [])
    if not isinstance(steps_raw, list) or len(steps_raw) > MAX_STEPS:
        raise err(None, f"JSON session: steps must be a list of at most {MAX_STEPS} steps")
    meta = _check_meta({k: raw[k] for k in ("target", "title", "description") if k in raw}, {})
    chain = normalize_chain(raw.get("chain"))
    steps = _replay(chain, [(None, Step.from_dict(s)) for s in steps_raw])
    cursor = raw.get("cursor", len(steps))
    if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(steps):
        raise err(None, f"JSON session: cursor must be an integer from 0 to {len(steps)}, "
                         f"got {cursor!r:.40}")
    return chain, steps, {**meta, "cursor": cursor, "format": "json"}


def import_script(text: str) -> tuple[dict, tuple[Step, ...], dict]:
    """Read an exported script (or a JSON session) back, without executing it.

    Parameters
    ----------
    text
        The script's source as written by :func:`playground.io.export.export_script` (possibly
        edited), or a JSON session ``{"chain": ..., "steps": [...], "cursor": k}``.

    Returns
    -------
    (chain, steps, meta)
        The normalized chain, the steps (normalized, each checked by replaying it) and
        ``{"target", "title", "description", "cursor", "format"}`` (``format`` is
        ``"script"`` or ``"json"``).

    Raises
    ------
    PlaygroundError
        :class:`ScriptError` naming the line (``"line 14: apply_schedule may only call
        sch.<primitive>(...); found a for loop"``) for anything outside the format or not
        allowed; ChainError / StepError for a JSON session's invalid chain or step.
    """
    try:
        text = check_size(text)
        if text.lstrip().startswith("{"):
            return _import_json(text)
        tree = parse_script(text)
        scan(tree)
        chain, meta, fn = _top_level(tree)
        steps = _replay(chain, _read_schedule(fn))
        return chain, steps, {**meta, "cursor": len(steps), "format": "script"}
    except (RecursionError, MemoryError):
        raise err(None, "the script is nested too deeply to read") from None
