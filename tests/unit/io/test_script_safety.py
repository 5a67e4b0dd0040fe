"""Importing scripts never runs them: hostile text is refused by line, and nothing escapes but
PlaygroundError (property tests with hypothesis)."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.errors import PlaygroundError, ScriptError
from playground.io.export import RUNTIME_MARKER, export_script
from playground.io.script_import import import_script
from playground.io.script_scan import MAX_SCRIPT_BYTES
from playground.io.url_state import decode_state, encode_state, import_query
from playground.schedule.steps import CATALOG, Arg, Step

CHAIN = {"input": {"shape": [1, 4, 8, 8]},
         "layers": [{"op": "conv2d", "channels": 4, "kernel": 3, "padding": 1}, {"op": "relu"}]}
STEPS = [Step("split", {"block": "conv1", "loop": "w", "factors": [None, 4]}),
         Step("parallel", {"block": "conv1", "loop": "k"}),
         Step("vectorize", {"block": "relu1", "loop": "w"})]
VALID = export_script(CHAIN, STEPS, title="safety")
SCHEDULE_LINE = '    sch.parallel(loop(sch, "conv1", "k"))'
assert SCHEDULE_LINE in VALID


def _top(code: str) -> str:
    """``code`` inserted at top level, right after the imports."""
    return VALID.replace("TITLE = ", code + "\nTITLE = ", 1)


def _in_schedule(code: str) -> str:
    """``code`` (one statement) inserted into apply_schedule's body."""
    return VALID.replace(SCHEDULE_LINE, SCHEDULE_LINE + "\n    " + code, 1)


def _hostile(sentinel: Path) -> dict[str, str]:
    touch = f'os.system("touch {sentinel}")'
    return {
        "import os": _top(f"import os\n{touch}"),
        "import os in schedule": _in_schedule(f"import os; {touch}"),
        "from subprocess": _top(f'from subprocess import run\nrun(["touch", "{sentinel}"])'),
        "__import__": _top(f'__import__("os").system("touch {sentinel}")'),
        "__import__ in CHAIN": VALID.replace("CHAIN = {", 'CHAIN = __import__("os") or {', 1),
        "subclasses": _top("x = ().__class__.__bases__[0].__subclasses__()"),
        "getattr split": _in_schedule('getattr(sch, "spl" + "it")(loop(sch, "conv1", "h"), '
                                      "factors=[None, 2])"),
        "open": _top(f'open("{sentinel}", "w").write("x")'),
        "eval": _in_schedule('eval("1")'),
        "exec in schedule": _in_schedule(f'exec("import os; {touch}")'),
        "builtins": _top('import builtins\nbuiltins.open("x")'),
        "sys.modules": _top('sys.modules["os"].system("true")'),
        "format escape": _top('"{0.__class__}".format(1)'),
        "relative import": _top("from . import secrets"),
        "tvm global func": _top('tvm.get_global_func("runtime.x")'),
        "dunder keyword": _top("f(__x=1)"),
    }


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("name", list(_hostile(Path("/nonexistent"))))
def test_hostile_scripts_are_refused_without_side_effects(name: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    text = _hostile(sentinel)[name]
    with pytest.raises(ScriptError, match=r"^line \d+: ") as info:
        import_script(text)
    assert not sentinel.exists()
    assert info.value.where.startswith("script:line ")


def test_scan_names_the_right_line_and_thing() -> None:
    text = _top('import os\nos.system("true")')
    with pytest.raises(ScriptError, match=f"^line {_line_of(text, 'import os')}: import of "
                                          "'os' is not allowed"):
        import_script(text)
    text = _in_schedule('getattr(sch, "split")')
    with pytest.raises(ScriptError, match=f"^line {_line_of(text, 'getattr')}: 'getattr' is "
                                          "not allowed"):
        import_script(text)
    text = _top("y = ().__class__")
    with pytest.raises(ScriptError, match=r"name '__class__' is not allowed"):
        import_script(text)


def test_statements_other_than_calls_in_schedule() -> None:
    for code, found in [("for i in range(3): pass", "a for loop"),
                        ("while True: pass", "a while loop"),
                        ("if sch: pass", "an if statement"),
                        ("return sch", "a return statement"),
                        ("print(sch)", "a call of print(...)"),
                        ("sch.get_sblock('conv1')", "sch.get_sblock is not a playground")]:
        text = _in_schedule(code)
        line = _line_of(text, code)
        with pytest.raises(ScriptError, match=f"^line {line}: .*{found}"):
            import_script(text)


def test_chain_must_be_a_literal() -> None:
    text = VALID.replace("CHAIN = {", "CHAIN = dict(**{", 1).replace(
        '    "layout": "NCHW",\n}', '    "layout": "NCHW",\n})', 1)
    with pytest.raises(ScriptError, match=f"^line {_line_of(text, 'CHAIN = ')}: CHAIN must be "
                                          "a literal.*found a call of dict"):
        import_script(text)


@pytest.mark.parametrize(("text", "message"), [
    # cut inside the CHAIN literal (where a third falls depends on the runtime's length)
    (VALID[: VALID.index("CHAIN = {") + 20], r"^line \d+: not valid Python"),
    (VALID[: VALID.index("def apply_schedule")], "no 'def apply_schedule"),
    ("\x00\x01\x02garbage\xff\xfe", r"^line 1: not valid Python"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "not UTF-8"),
    ("x = 1\n" * (MAX_SCRIPT_BYTES // 6 + 1), "MAX_SCRIPT"),
    ("#" * (10 * 1024 * 1024), r"10,485,760 bytes, above the limit of 262,144"),
    ("\n" * 6000, "6,001 lines, above the limit"),
    ("(" * 100000, r"^line 1: not valid Python"),
    ("x = " + "-" * 100000 + "1", r"^line 1: not valid Python.*nested too deeply"),
    ("x = " + "[" * 250 + "]" * 250, r"^line 1: not valid Python"),
    ("a" + ".b" * 60000, "nested too deeply"),
    (VALID.replace("CHAIN = {", "CHAIN = " + "[" * 90 + "]" * 90 + " or {", 1),
     "CHAIN must be a literal"),
    (VALID.replace('"groups": 1', '"groups": 0x' + "f" * 5000, 1), "integer literal too large"),
])
def test_malformed_scripts(text: str | bytes, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        import_script(text)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties

_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])
_TOKENS = st.sampled_from([
    "(", ")", "[", "]", "{", "}", ":", ",", "\n", "    ", "sch.", "loop(sch, ", '"conv1"',
    '"w"', "None", "True", "0", "8", "-1", "0x" + "f" * 40, "lambda n, c, h, w: ", "__",
    "import ", "os", "=", "*", "**", "'", '"', "#", "\\", "def ", "apply_schedule", "CHAIN",
    "\x00", "\udcff", "é", "1e999", ".", "get_sblock", "split", "fuse", "factors=",
])


@_SETTINGS
@given(st.text(max_size=400))
def test_random_text_raises_only_playground_errors(text: str) -> None:
    try:
        import_script(text)
    except PlaygroundError:
        pass


@_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_playground_errors(data: bytes) -> None:
    try:
        import_script(data)  # type: ignore[arg-type]
    except PlaygroundError:
        pass


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, VALID.index(RUNTIME_MARKER)), st.integers(0, 40),
                          st.lists(_TOKENS, max_size=6).map("".join)), min_size=1, max_size=4))
def test_mutated_exports_raise_only_playground_errors(edits: list[tuple[int, int, str]]) -> None:
    text = VALID
    for start, length, insert in edits:
        start = min(start, len(text))
        text = text[:start] + insert + text[start + length:]
    try:
        chain, steps, _ = import_script(text)
    except PlaygroundError:
        return
    assert isinstance(chain, dict) and all(isinstance(s, Step) for s in steps)


_BLOCKS = st.sampled_from(["conv1", "conv1_pad", "relu1", "nope"])
_LOOPS = st.sampled_from(["n", "k", "c", "h", "w", "rc", "rh", "w_0", "w_1", "zz"])
_MAPS = st.sampled_from(["lambda n, c, h, w: (n, c // 2, h, w, c % 2)",
                         "lambda n, c, h, w: (w, h, c, n)", "lambda a: (a,)"])


def _arg_code(a: Arg) -> st.SearchStrategy[str]:
    """Source text for one argument, mostly well-formed, in step_code's forms."""
    if a.kind.name == "block":
        return _BLOCKS.map(lambda b: f'sch.get_sblock("{b}")')
    if a.kind.name == "loop":
        return st.tuples(_BLOCKS, _LOOPS).map(lambda p: f'loop(sch, "{p[0]}", "{p[1]}")')
    if a.kind.name == "loops":
        return st.tuples(_BLOCKS, st.lists(_LOOPS, min_size=1, max_size=4, unique=True)).map(
            lambda p: ", ".join(f'loop(sch, "{p[0]}", "{name}")' for name in p[1]))
    if a.kind.name == "factors":
        return st.lists(st.one_of(st.none(), st.integers(-1, 9)), min_size=1,
                        max_size=3).map(repr)
    if a.kind.name == "buffer":
        return st.tuples(st.sampled_from(["read", "write"]), st.integers(0, 3)).map(repr)
    if a.kind.name == "index_map":
        return _MAPS
    if a.kind.name == "choice":
        return st.sampled_from(list(a.kind.choices)).map(repr)
    return st.one_of(st.booleans(), st.integers(-1, 4)).map(repr)


def _call_code(name: str) -> st.SearchStrategy[str]:
    prim = CATALOG[name]
    parts = [_arg_code(prim.arg(arg)).map(lambda code, k=kw: code if k is None else f"{k}={code}")
             for kw, arg in prim.call]
    return st.tuples(*parts).map(lambda codes: f"sch.{name}({', '.join(codes)})")


@settings(_SETTINGS, max_examples=100)  # each example replays steps in TVM (~60 ms)
@given(st.lists(st.sampled_from(sorted(CATALOG)).flatmap(_call_code), min_size=1, max_size=5))
def test_random_schedules_raise_only_playground_errors(lines: list[str]) -> None:
    # Well-formed calls with random names and values reach TVM, which refuses most of them.
    text = VALID.replace(SCHEDULE_LINE, "\n".join("    " + line for line in lines), 1)
    try:
        _, steps, _ = import_script(text)
    except PlaygroundError:
        return
    assert len(steps) == len(STEPS) - 1 + len(lines)


@_SETTINGS
@given(st.one_of(
    st.text(max_size=300),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
            max_size=300),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(zlib.compress(b)).decode()),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from(["chain", "steps", "cursor", "input",
                                                    "layers", "shape", "op", "primitive",
                                                    "args"]), inner, max_size=4),
                 max_leaves=20).map(
        lambda v: base64.urlsafe_b64encode(zlib.compress(repr(v).replace("'", '"')
                                                         .replace("None", "null")
                                                         .replace("True", "true")
                                                         .replace("False", "false")
                                                         .encode())).decode()),
))
def test_random_query_strings_raise_only_playground_errors(text: str) -> None:
    for call in (lambda: decode_state(text), lambda: import_query({"state": text})):
        try:
            call()
        except PlaygroundError:
            pass


@_SETTINGS
@given(st.integers(0, 3), st.integers(0, 400), st.text(max_size=10))
def test_mutated_states_raise_only_playground_errors(cursor: int, at: int, insert: str
                                                     ) -> None:
    text = encode_state(CHAIN, STEPS, cursor)
    text = text[:at] + insert + text[at + len(insert):]
    try:
        import_query({"state": text})
    except PlaygroundError:
        pass
