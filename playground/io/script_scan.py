"""The safety scan of an uploaded script: size, syntax, and nothing a schedule script has no
business containing.

A script is never executed. Before anything is read from it, :func:`scan` walks its whole
syntax tree and refuses imports beyond tvm/numpy and a few standard modules, dunder names,
``eval``/``open``/``getattr``, ``os`` and the like, naming the line. Errors are
:class:`~playground.errors.ScriptError` with ``where="script:line N"``.
"""

from __future__ import annotations

import ast
import warnings
from typing import Any

from playground import pyparse
from playground.errors import ScriptError

MAX_SCRIPT_BYTES = 256 * 1024
MAX_SCRIPT_LINES = 5000


MAX_LITERAL_INT = 1 << 63


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


def err(line: int | None, message: str, detail: str = "") -> ScriptError:
    if line is None:
        return ScriptError(message, detail=detail, where="script")
    return ScriptError(f"line {line}: {message}", detail=detail, where=f"script:line {line}")


def describe(node: ast.AST) -> str:
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
        return f"a call of {snippet(node.func)}(...)"
    return f"a {type(node).__name__} expression"


def snippet(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except (RecursionError, ValueError, AttributeError):  # pragma: no cover - absurd trees
        text = type(node).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- safety scan

def check_size(text: Any) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_SCRIPT_BYTES:
            raise err(None, f"the script is {len(text):,} bytes, above the limit of "
                             f"{MAX_SCRIPT_BYTES:,} bytes (MAX_SCRIPT_BYTES)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise err(None, f"the script is not UTF-8 text (byte {e.start})") from None
    if not isinstance(text, str):
        raise err(None, f"a script must be text, got {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SCRIPT_BYTES:
        raise err(None, f"the script is {size:,} bytes, above the limit of "
                         f"{MAX_SCRIPT_BYTES:,} bytes (MAX_SCRIPT_BYTES)")
    lines = text.count("\n") + 1
    if lines > MAX_SCRIPT_LINES:
        raise err(None, f"the script has {lines:,} lines, above the limit of "
                         f"{MAX_SCRIPT_LINES:,} lines (MAX_SCRIPT_LINES)")
    return text


def parse_script(text: str) -> ast.Module:
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" in user text is not ours
            warnings.simplefilter("ignore")
            return pyparse.parse(text, filename="<script>")
    except SyntaxError as e:
        raise err(e.lineno or 1, f"not valid Python: {e.msg}") from None
    except ValueError as e:  # null bytes (Python < 3.12)
        raise err(1, f"not valid Python: {e}") from None
    except (RecursionError, MemoryError):
        raise err(1, "not valid Python: expressions nested too deeply") from None


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
        raise err(*found)
