"""Reading sessions back: exported scripts, pasted JSON sessions and shareable URL state.

Nothing here executes user text. A script is parsed with :mod:`ast`, scanned as a whole for
anything a schedule script has no business containing (imports beyond tvm/numpy and a few
standard modules, dunder names, ``eval``/``open``/``getattr``, ``os`` ...), and then only three
things are read: the literal ``CHAIN``, the optional literal ``TARGET`` (and ``TITLE`` /
``DESCRIPTION``) and the body of ``apply_schedule(sch)``, whose every statement must be a call
of a schedule primitive in exactly the form :func:`playground.steps.step_code` writes. The
steps are then validated by replaying them on the chain, as the playground would.

Every failure is a :class:`~playground.errors.PlaygroundError` (almost always
:class:`~playground.errors.ScriptError`) whose message names the line.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import re
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

from playground import pyparse
from playground.chain import normalize_chain
from playground.errors import PlaygroundError, ScriptError
from playground.schedule import apply_step, scheduled
from playground.session import Session
from playground.steps import CATALOG, REQUIRED, Arg, Primitive, Step

MAX_SCRIPT_BYTES = 256 * 1024
MAX_SCRIPT_LINES = 5000
MAX_STEPS = 256
MAX_LITERAL_INT = 1 << 63
MAX_STATE_CHARS = 8 * 1024  # encoded URL state
MAX_STATE_JSON = 64 * 1024  # decompressed URL state
QUERY_KEY = "state"
ALLOWED_IMPORTS = ("tvm", "numpy", "json", "sys", "time", "argparse", "math")
# Names that may appear nowhere (as a variable or a called function), and attributes that
# may not be read: what a script would need to reach the file system, processes or eval.
BANNED_NAMES = frozenset({
    "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "input", "breakpoint", "help", "memoryview", "os", "subprocess", "shutil",
    "socket", "ctypes", "importlib", "pickle", "marshal", "builtins", "pathlib", "io",
})
BANNED_ATTRS = (BANNED_NAMES - {"compile", "input"}) | frozenset({
    "system", "popen", "spawn", "fork", "modules", "format", "format_map", "get_global_func",
    "load_module", "load_library", "export_library", "remove", "unlink", "rmtree",
})
TARGETS = ("cpu", "cuda")
_META = {"TARGET": "target", "TITLE": "title", "DESCRIPTION": "description"}
_JSON_KEYS = ("chain", "steps", "cursor", "target", "title", "description")
_B64_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def _err(line: int | None, message: str, detail: str = "") -> ScriptError:
    if line is None:
        return ScriptError(message, detail=detail, where="script")
    return ScriptError(f"line {line}: {message}", detail=detail, where=f"script:line {line}")


def _describe(node: ast.AST) -> str:
    """What a statement or expression is, in words, for error messages."""
    words = {
        ast.For: "a for loop", ast.AsyncFor: "a for loop", ast.While: "a while loop",
        ast.If: "an if statement", ast.With: "a with statement", ast.Try: "a try statement",
        ast.Return: "a return statement", ast.Import: "an import", ast.ImportFrom: "an import",
        ast.FunctionDef: "a function definition", ast.ClassDef: "a class definition",
        ast.Assign: "an assignment", ast.AugAssign: "an assignment",
        ast.AnnAssign: "an assignment", ast.Delete: "a del statement",
        ast.Raise: "a raise statement", ast.Global: "a global statement",
        ast.Lambda: "a lambda", ast.Name: "a name", ast.Constant: "a constant",
        ast.Subscript: "a subscript", ast.BinOp: "an arithmetic expression",
    }
    for kind, text in words.items():
        if isinstance(node, kind):
            return text
    if isinstance(node, ast.Call):
        return f"a call of {_snippet(node.func)}(...)"
    return f"a {type(node).__name__} expression"


def _snippet(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except (RecursionError, ValueError, AttributeError):  # pragma: no cover - absurd trees
        text = type(node).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- safety scan

def _check_size(text: Any) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_SCRIPT_BYTES:
            raise _err(None, f"the script is {len(text):,} bytes, above the limit of "
                             f"{MAX_SCRIPT_BYTES:,} bytes (MAX_SCRIPT_BYTES)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _err(None, f"the script is not UTF-8 text (byte {e.start})") from None
    if not isinstance(text, str):
        raise _err(None, f"a script must be text, got {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SCRIPT_BYTES:
        raise _err(None, f"the script is {size:,} bytes, above the limit of "
                         f"{MAX_SCRIPT_BYTES:,} bytes (MAX_SCRIPT_BYTES)")
    lines = text.count("\n") + 1
    if lines > MAX_SCRIPT_LINES:
        raise _err(None, f"the script has {lines:,} lines, above the limit of "
                         f"{MAX_SCRIPT_LINES:,} lines (MAX_SCRIPT_LINES)")
    return text


def _parse(text: str) -> ast.Module:
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" in user text is not ours
            warnings.simplefilter("ignore")
            return pyparse.parse(text, filename="<script>")
    except SyntaxError as e:
        raise _err(e.lineno or 1, f"not valid Python: {e.msg}") from None
    except ValueError as e:  # null bytes (Python < 3.12)
        raise _err(1, f"not valid Python: {e}") from None
    except (RecursionError, MemoryError):
        raise _err(1, "not valid Python: expressions nested too deeply") from None


def _violation(node: ast.AST) -> str | None:
    """Why ``node`` is not allowed in a playground script, or None."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        if isinstance(node, ast.ImportFrom) and (node.level or not node.module):
            return "relative imports are not allowed"
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORTS:
                return (f"import of {module!r} is not allowed (only "
                        f"{', '.join(ALLOWED_IMPORTS)})")
        if any(a.name == "*" for a in node.names):
            return "'import *' is not allowed"
    names: list[str] = []
    if isinstance(node, ast.Name):
        if node.id in BANNED_NAMES:
            return f"{node.id!r} is not allowed in a playground script"
        names.append(node.id)
    elif isinstance(node, ast.Attribute):
        if node.attr in BANNED_ATTRS:
            return f"attribute {node.attr!r} is not allowed in a playground script"
        names.append(node.attr)
    elif isinstance(node, ast.alias):
        names += [node.name.split(".")[-1], node.asname or ""]
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        names.append(node.name)
    elif isinstance(node, ast.arg):
        names.append(node.arg)
    elif isinstance(node, ast.keyword):
        names.append(node.arg or "")
    for name in names:
        if name.startswith("__"):
            return f"name {name!r} is not allowed (names starting with '__')"
    return None


def scan(tree: ast.Module) -> None:
    """Refuse the script if any node is not allowed; the first (by line) is reported."""
    found: tuple[int, str] | None = None
    for node in ast.walk(tree):
        why = _violation(node)
        if why is not None:
            line = getattr(node, "lineno", 1)
            if found is None or line < found[0]:
                found = (line, why)
    if found is not None:
        raise _err(*found)


# ----------------------------------------------------------------------------- reading calls

def _literal(node: ast.AST, line: int, what: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise _err(line, f"{what} must be a literal (numbers, strings, lists, dicts, True, "
                         f"False, None); found {_describe(node)}") from None
    # Huge integers (0x... with thousands of digits) cannot even be printed in an error message.
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, int) and \
                abs(sub.value) > MAX_LITERAL_INT:
            raise _err(getattr(sub, "lineno", line), f"{what}: integer literal too large")
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
    raise _err(line, f'{ctx} expects sch.get_sblock("name"); found {_snippet(node)}')


def _read_loop(node: ast.AST, line: int, ctx: str) -> tuple[str, str]:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "loop"
            and len(node.args) == 3 and not node.keywords and _is_sch(node.args[0])):
        block, name = _str_const(node.args[1]), _str_const(node.args[2])
        if block is not None and name is not None:
            return block, name
    raise _err(line, f'{ctx} expects loop(sch, "block", "loop"); found {_snippet(node)}')


def _set_owner(args: dict, key: str, block: str, line: int, ctx: str) -> None:
    if args.setdefault(key, block) != block:
        raise _err(line, f"{ctx}: the loop belongs to block {block!r} but {key} is "
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
            raise _err(line, f"{ctx} argument {a.name} must be a lambda; found "
                             f"{_describe(node)}")
        return _snippet(node, limit=10_000)
    value = _literal(node, line, f"{ctx} argument {a.name}")
    return list(value) if isinstance(value, tuple) else value


def _read_call(node: ast.AST, line: int) -> Step:
    """A ``sch.<primitive>(...)`` call, in step_code's form, as a Step (not yet checked)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and _is_sch(node.func.value)):
        raise _err(line, f"apply_schedule may only call sch.<primitive>(...); found "
                         f"{_describe(node)}")
    prim: Primitive | None = CATALOG.get(node.func.attr)
    if prim is None:
        raise _err(line, f"sch.{node.func.attr} is not a playground primitive (known: "
                         f"{', '.join(CATALOG)})")
    ctx = f"sch.{prim.name}"
    if any(isinstance(x, ast.Starred) for x in node.args) or \
            any(k.arg is None for k in node.keywords):
        raise _err(line, f"{ctx}: * and ** arguments are not allowed")
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
                raise _err(line, f"{ctx}: missing argument {name} ({a.doc})")
            args[name] = found
            continue
        if keyword is None:
            value_node = positional.pop(0) if positional else None
        else:
            value_node = keywords.pop(keyword, None)
        if value_node is None:
            if a.default is REQUIRED:
                raise _err(line, f"{ctx}: missing argument {name} ({a.doc})")
            continue
        args[name] = _read_value(a, value_node, args, line, ctx)
    if positional:
        raise _err(line, f"{ctx}: unexpected argument {_snippet(positional[0])}")
    if keywords:
        raise _err(line, f"{ctx}: unexpected keyword argument {next(iter(keywords))!r}")
    return Step(prim.name, args)


def _read_schedule(fn: ast.FunctionDef) -> list[tuple[int, Step]]:
    a = fn.args
    if fn.decorator_list or [p.arg for p in a.args] != ["sch"] or a.vararg or a.kwarg or \
            a.kwonlyargs or a.posonlyargs or a.defaults:
        raise _err(fn.lineno, "apply_schedule must be defined as 'def apply_schedule(sch):'")
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
            raise _err(stmt.lineno, f"apply_schedule may only call sch.<primitive>(...); "
                                    f"found {_describe(stmt)}")
        steps.append((stmt.lineno, _read_call(call, stmt.lineno)))
        if len(steps) > MAX_STEPS:
            raise _err(stmt.lineno, f"more than {MAX_STEPS} steps (MAX_STEPS)")
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
            raise _err(node.lineno, f"{name} is defined twice (first on line {seen[name]})")
        seen[name] = node.lineno
        if name == "apply_schedule":
            if isinstance(node, ast.AsyncFunctionDef):
                raise _err(node.lineno, "apply_schedule must not be async")
            fn = node
        elif name == "CHAIN":
            chain_raw, chain_line = _literal(node.value, node.lineno, "CHAIN"), node.lineno
        else:
            meta[_META[name]] = _literal(node.value, node.lineno, name)
    if chain_line == 0:
        raise _err(None, "the script has no CHAIN = {...} assignment at top level")
    if fn is None:
        raise _err(None, "the script has no 'def apply_schedule(sch):' at top level")
    meta = _check_meta(meta, seen)
    try:
        chain = normalize_chain(chain_raw)
    except PlaygroundError as e:
        raise _err(chain_line, f"CHAIN: {e.message}", e.detail) from None
    return chain, meta, fn


def _check_meta(meta: dict, lines: Mapping[str, int]) -> dict:
    target = meta.get("target", "cpu")
    if target not in TARGETS:
        raise _err(lines.get("TARGET"), f"TARGET must be one of {', '.join(TARGETS)}, got "
                                        f"{target!r:.60}")
    out = {"target": target}
    for key in ("title", "description"):
        value = meta.get(key, "")
        if not isinstance(value, str):
            raise _err(lines.get(key.upper()), f"{key.upper()} must be a string")
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
            raise _err(line, e.message, e.detail) from None
    return tuple(done)


def _import_json(text: str) -> tuple[dict, tuple[Step, ...], dict]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise _err(e.lineno, f"not valid JSON: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise _err(1, f"not valid JSON: {type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise _err(1, "a JSON session must be an object with chain and steps")
    unknown = sorted(set(raw) - set(_JSON_KEYS))
    if unknown:
        raise _err(None, f"JSON session: unknown field {unknown[0]!r} (known: "
                         f"{', '.join(_JSON_KEYS)})")
    steps_raw = raw.get("steps", [])
    if not isinstance(steps_raw, list) or len(steps_raw) > MAX_STEPS:
        raise _err(None, f"JSON session: steps must be a list of at most {MAX_STEPS} steps")
    meta = _check_meta({k: raw[k] for k in ("target", "title", "description") if k in raw}, {})
    chain = normalize_chain(raw.get("chain"))
    steps = _replay(chain, [(None, Step.from_dict(s)) for s in steps_raw])
    cursor = raw.get("cursor", len(steps))
    if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(steps):
        raise _err(None, f"JSON session: cursor must be an integer from 0 to {len(steps)}, "
                         f"got {cursor!r:.40}")
    return chain, steps, {**meta, "cursor": cursor, "format": "json"}


def import_script(text: str) -> tuple[dict, tuple[Step, ...], dict]:
    """Read an exported script (or a JSON session) back, without executing it.

    Parameters
    ----------
    text
        The script's source as written by :func:`playground.export.export_script` (possibly
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
        text = _check_size(text)
        if text.lstrip().startswith("{"):
            return _import_json(text)
        tree = _parse(text)
        scan(tree)
        chain, meta, fn = _top_level(tree)
        steps = _replay(chain, _read_schedule(fn))
        return chain, steps, {**meta, "cursor": len(steps), "format": "script"}
    except (RecursionError, MemoryError):
        raise _err(None, "the script is nested too deeply to read") from None


# ----------------------------------------------------------------------------- URL state

def encode_state(chain: dict, steps: tuple[Step, ...] | list[Step], cursor: int | None = None
                 ) -> str:
    """A session as compact URL-safe text: JSON, zlib, base64url without padding.

    Raises
    ------
    ScriptError
        When the encoded state is longer than ``MAX_STATE_CHARS`` (export a script instead).
    """
    payload = {"chain": chain, "steps": [s.to_dict() for s in steps]}
    if cursor is not None:
        payload["cursor"] = cursor
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    text = base64.urlsafe_b64encode(zlib.compress(data, 9)).decode().rstrip("=")
    if len(text) > MAX_STATE_CHARS or len(data) > MAX_STATE_JSON:
        raise ScriptError(f"the session is too large for a URL ({len(text):,} characters "
                          f"encoded, the limit is {MAX_STATE_CHARS:,}): export a script "
                          "instead", where="query")
    return text


def decode_state(text: str) -> dict:
    """The ``{"chain", "steps", "cursor"?}`` dict of :func:`encode_state`'s text (not replayed).

    Raises
    ------
    ScriptError
        For text that is too long, not base64url, not zlib data, decompresses to more than
        ``MAX_STATE_JSON`` bytes (a zip bomb stops there), or is not a session object.
    """
    if not isinstance(text, str):
        raise ScriptError(f"URL state must be text, got {type(text).__name__}", where="query")
    text = text.strip()
    if len(text) > MAX_STATE_CHARS:
        raise ScriptError(f"URL state is {len(text):,} characters, above the limit of "
                          f"{MAX_STATE_CHARS:,}", where="query")
    if not text or not _B64_RE.match(text):
        raise ScriptError("URL state is not base64url text (A-Z a-z 0-9 - _)", where="query")
    try:
        body = text.rstrip("=")
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ScriptError("URL state is not valid base64url (truncated?)", where="query") from None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_STATE_JSON + 1)
    except zlib.error as e:
        raise ScriptError(f"URL state is not compressed session data ({e})",
                          where="query") from None
    if len(raw) > MAX_STATE_JSON or inflater.unconsumed_tail:
        raise ScriptError(f"URL state decompresses to more than {MAX_STATE_JSON:,} bytes",
                          where="query")
    if not inflater.eof:
        raise ScriptError("URL state is truncated (incomplete compressed data)", where="query")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ScriptError("URL state does not hold valid JSON", where="query") from None
    if not isinstance(state, dict) or not isinstance(state.get("chain"), dict) or \
            not isinstance(state.get("steps", []), list):
        raise ScriptError("URL state must be an object with chain and steps", where="query")
    unknown = sorted(set(state) - {"chain", "steps", "cursor"})
    if unknown:
        raise ScriptError(f"URL state: unknown field {unknown[0]!r}", where="query")
    return state


def import_query(params: Mapping[str, Any]) -> Session:
    """The session encoded in a shareable URL's query parameters (key ``QUERY_KEY``).

    Raises
    ------
    PlaygroundError
        ScriptError for a missing or undecodable state; ChainError / StepError for a chain or
        steps that do not apply.
    """
    value = params.get(QUERY_KEY)
    if isinstance(value, list | tuple):
        value = value[-1] if value else None
    if value is None:
        raise ScriptError(f"the URL has no {QUERY_KEY}= parameter", where="query")
    state = decode_state(value)
    if "steps" in state and len(state["steps"]) > MAX_STEPS:
        raise ScriptError(f"URL state has more than {MAX_STEPS} steps", where="query")
    try:
        return Session.from_dict(state)
    except (RecursionError, MemoryError):
        raise ScriptError("URL state is nested too deeply", where="query") from None
