"""Exported scripts: they import back to the same session and run on their own."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import tvm_ffi
from tvm import s_tir

from playground.chain.compute import chain_module
from playground.chain.spec import chain_flop, normalize_chain
from playground.errors import PlaygroundError, ScriptError
from playground.io.export import RUNTIME_MARKER, export_script
from playground.io.script_import import import_script
from playground.io.url_state import MAX_STATE_JSON, decode_state, encode_state, import_query
from playground.schedule import loops
from playground.schedule.replay import apply_step, scheduled
from playground.schedule.session import Session
from playground.schedule.steps import Step

FUSED = {"input": {"shape": [1, 16, 32, 32]},
         "layers": [{"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1},
                    {"op": "relu"},
                    {"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1}]}
FUSED_STEPS = [
    Step("split", {"block": "conv2", "loop": "h", "factors": [None, 8]}),
    Step("split", {"block": "conv2", "loop": "w", "factors": [None, 8]}),
    Step("reorder", {"block": "conv2", "loops": ["h_0", "w_0", "k", "h_1", "w_1"]}),
    *(Step("compute_at", {"block": b, "target_block": "conv2", "target_loop": "w_0"})
      for b in ("conv2_pad", "relu1", "conv1", "conv1_pad")),
    Step("parallel", {"block": "conv2", "loop": "h_0"}),
    Step("transform_layout", {"block": "conv1", "buffer": ["write", 0],
                              "index_map": "lambda n, c, h, w: (n, c // 8, h, w, c % 8)"}),
]
CONV_BIAS_RELU = {"input": {"shape": [1, 8, 16, 16]},
                  "layers": [{"op": "conv2d", "channels": 16, "kernel": 3, "padding": 1},
                             {"op": "bias_add"}, {"op": "relu"}]}
CONV_BIAS_RELU_STEPS = [
    Step("split", {"block": "conv1", "loop": "w", "factors": [None, 8]}),
    Step("reorder", {"block": "conv1", "loops": ["k", "h", "rc", "rh", "rw", "w_1"]}),
    Step("parallel", {"block": "conv1", "loop": "k"}),
    Step("vectorize", {"block": "conv1", "loop": "w_1"}),
    Step("decompose_reduction", {"block": "conv1", "loop": "rc"}),
    Step("compute_inline", {"block": "conv1_pad"}),
    Step("reverse_compute_inline", {"block": "relu1"}),
    Step("annotate", {"block": "bias1", "loop": "h", "key": "pragma_auto_unroll_max_step",
                      "value": 16}),
    Step("unroll", {"block": "bias1", "loop": "w"}),
]
CONV_BN = {"input": {"shape": [1, 16, 8, 8]},
           "layers": [{"op": "conv2d", "channels": 16, "kernel": 1}, {"op": "batch_norm"},
                      {"op": "relu6"}]}
CONV_BN_STEPS = [
    Step("cache_write", {"block": "conv1", "write_buffer_index": 0, "storage_scope": "global"}),
    Step("transform_layout", {"block": "conv1", "buffer": ["write", 0],
                              "index_map": "lambda n, c, h, w: (n, c // 4, h, w, c % 4)"}),
    Step("fuse", {"block": "relu6_1", "loops": ["n", "c", "h"]}),
    Step("compute_inline", {"block": "bn1"}),
    Step("cache_read", {"block": "conv1", "read_buffer_index": 1, "storage_scope": "global"}),
]
RELU = {"input": {"shape": [1, 4, 16, 16]}, "layers": [{"op": "relu"}]}
RELU_GPU_STEPS = [
    Step("fuse", {"block": "relu1", "loops": ["n", "c", "h", "w"]}),
    Step("split", {"block": "relu1", "loop": "n_c_h_w_fused", "factors": [None, 64]}),
    Step("bind", {"block": "relu1", "loop": "n_c_h_w_fused_0", "thread": "blockIdx.x"}),
    Step("bind", {"block": "relu1", "loop": "n_c_h_w_fused_1", "thread": "threadIdx.x"}),
]
CPU_CASES = {
    "unscheduled": (CONV_BIAS_RELU, []),
    "fused-convs": (FUSED, FUSED_STEPS),
    "conv-bias-relu": (CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS),
    "conv-bn-relu6": (CONV_BN, CONV_BN_STEPS),
}
ALL_CASES = {**CPU_CASES, "relu-gpu": (RELU, RELU_GPU_STEPS)}


def _exported_apply_schedule(text: str):
    """The exported apply_schedule function, compiled from our own (trusted) export alone."""
    head = text.split(RUNTIME_MARKER)[0]
    tree = ast.parse(head)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    namespace = {"loop": loops.loop}
    exec(compile(ast.Module([fn], []), "<export>", "exec"), namespace)
    return namespace["apply_schedule"]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TVM_NUM_THREADS"] = "2"
    return env


def _run_script(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], cwd=path.parent,
                          env=_clean_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_export_imports_back_to_the_same_session(name: str) -> None:
    chain, steps = ALL_CASES[name]
    target = "cuda" if name.endswith("gpu") else "cpu"
    text = export_script(chain, steps, target=target, title=f"case {name}",
                         description='with "quotes", """triples""" and a \\ backslash')
    got_chain, got_steps, meta = import_script(text)
    expected = Session.new(chain, steps)
    assert got_chain == normalize_chain(chain)
    assert got_steps == expected.steps
    assert meta == {"target": target, "title": f"case {name}", "cursor": len(steps),
                    "description": 'with "quotes", """triples""" and a \\ backslash',
                    "format": "script", "warnings": [], "weights": "per-call"}
    library = scheduled(got_chain, expected.steps).mod
    # The imported steps, replayed on a fresh schedule ...
    fresh = s_tir.Schedule(chain_module(got_chain))
    for i, step in enumerate(got_steps):
        apply_step(fresh, step, i)
    assert tvm_ffi.structural_equal(fresh.mod, library)
    # ... and the exported code itself, run on another fresh schedule, give the same IR.
    run = s_tir.Schedule(chain_module(got_chain))
    _exported_apply_schedule(text)(run)
    assert tvm_ffi.structural_equal(run.mod, library)


def test_export_needs_only_tvm_and_numpy() -> None:
    text = export_script(FUSED, FUSED_STEPS)
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"argparse", "json", "math", "sys", "numpy", "tvm"}  # + the stdlib


def test_export_checks_and_times_with_the_playgrounds_own_code() -> None:
    """The script embeds measure/sampling.py (warm-up, calibration, samples) with its method and
    compile/check.py (poisoned output, two seeds, the timing build checked again) verbatim, and
    calls them: `run` of an exported script checks and times as the playground does."""
    import inspect

    from playground.compile import check
    from playground.measure import sampling

    text = export_script(FUSED, FUSED_STEPS)
    for function in (sampling.take_samples, check.check, check.time_checked):
        assert inspect.getsource(function) in text
    assert "METHOD = " in text and "take_samples(kernel.mod" in text
    assert "check(checked, CHAIN, dev" in text and "time_checked(ex, CHAIN, dev" in text
    assert "import playground" not in text and "\nfrom playground" not in text  # dropped


def test_export_without_steps_returns_the_schedule_and_reimports() -> None:
    text = export_script(RELU, [])
    assert "def apply_schedule(sch):\n" in text and "loops named by block" in text
    assert "schedule to go on with).\"\"\"\n    return sch\n" in text
    chain, steps, meta = import_script(text)
    assert steps == () and meta["target"] == "cpu" and chain == normalize_chain(RELU)


def test_export_refuses_bad_arguments() -> None:
    with pytest.raises(ScriptError, match="target"):
        export_script(RELU, [], target="tpu")
    with pytest.raises(ScriptError, match="title"):
        export_script(RELU, [], title="x" * 1000)
    with pytest.raises(PlaygroundError, match="unknown primitive"):
        export_script(RELU, [Step("tile", {})])


def test_import_accepts_assignments_docstrings_and_pass() -> None:
    text = export_script(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS[:2])
    text = text.replace('    sch.split(loop(sch, "conv1", "w"), factors=[None, 8])',
                        '    pass\n    w0, w1 = sch.split(loop(sch, "conv1", "w"), '
                        'factors=(None, 8))')
    _, steps, _ = import_script(text)
    assert steps == Session.new(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS[:2]).steps


def _with_body(body: str, chain: dict = RELU) -> str:
    text = export_script(chain, [])
    return text.replace("    return sch\n", body.rstrip("\n") + "\n    return sch\n", 1)


@pytest.mark.parametrize(("body", "message"), [
    ("    for i in range(2):\n        pass", "found a for loop"),
    ("    x = 1", "found a constant"),
    ("    return sch.mod", "found"),  # only a last `return sch` is the export's own
    ("    sch.tile(loop(sch, 'relu1', 'h'))", "not a playground primitive"),
    ("    sch.split(sch.get_loops(sch.get_sblock('relu1'))[0], factors=[None, 4])",
     'expects loop\\(sch, "block", "loop"\\)'),
    ("    sch.split(loop(sch, 'relu1', 'h'))", "missing argument factors"),
    ("    sch.split(loop(sch, 'relu1', 'h'), factors=[None, 4], extra=1)",
     "unexpected keyword argument 'extra'"),
    ("    sch.split(loop(sch, 'relu1', 'h'), factors=[None, x])", "must be a literal"),
    ("    sch.parallel(loop(sch, 'relu1', 'zz'))", "has no loop 'zz'"),
    ("    sch.split(loop(sch, 'relu1', 'h'), factors=[3, 5])", "step 1 \\(split\\): TVM refused"),
    ("    sch.decompose_reduction(sch.get_sblock('relu1'), loop(sch, 'other', 'h'))",
     "belongs to block 'other'"),
    ("    sch.transform_layout(sch.get_sblock('relu1'), ('write', 0), 'lambda n: n')",
     "must be a lambda"),
    ("    sch.transform_layout(sch.get_sblock('relu1'), ('write', 0), lambda n, c, h, w: (q,))",
     "not one of its parameters"),
    ("    sch.vectorize(*[loop(sch, 'relu1', 'w')])", "\\* and \\*\\* arguments"),
])
def test_import_refuses_other_statements_naming_the_line(body: str, message: str) -> None:
    text = _with_body(body)
    line = text.splitlines().index(body.splitlines()[0]) + 1
    with pytest.raises(ScriptError, match=f"^line {line}: .*{message}"):
        import_script(text)


def test_import_refuses_missing_or_bad_top_level() -> None:
    text = export_script(RELU, [])
    with pytest.raises(ScriptError, match="no CHAIN"):
        import_script(text.replace("CHAIN = ", "CHAINS = "))
    with pytest.raises(ScriptError, match="no 'def apply_schedule"):
        import_script(text.replace("def apply_schedule(", "def other("))
    with pytest.raises(ScriptError, match=r"^line \d+: TARGET must be one of cpu, cuda"):
        import_script(text.replace("TARGET = 'cpu'", "TARGET = 'tpu'"))
    with pytest.raises(ScriptError, match=r"^line \d+: CHAIN: layer 1: unknown op"):
        import_script(text.replace('"op": "relu"', '"op": "softmax"'))
    with pytest.raises(ScriptError, match=r"^line \d+: CHAIN is defined twice"):
        import_script(text.replace("TARGET = 'cpu'", "TARGET = 'cpu'\nCHAIN = {}"))


def test_import_json_session() -> None:
    session = Session.new(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS).goto(4)
    chain, steps, meta = import_script(session.to_json())
    assert (chain, steps, meta["cursor"], meta["format"]) == \
        (session.chain, session.steps, 4, "json")
    with pytest.raises(ScriptError, match="line 1: not valid JSON"):
        import_script('{"chain": ')
    with pytest.raises(ScriptError, match="unknown field 'code'"):
        import_script('{"chain": {}, "code": 1}')
    bad = json.dumps({"chain": RELU, "steps": [{"primitive": "parallel",
                                                "args": {"block": "relu1", "loop": "q"}}]})
    with pytest.raises(PlaygroundError, match=r"step 1 \(parallel\).*no loop 'q'"):
        import_script(bad)


def test_state_round_trip_and_query() -> None:
    session = Session.new(FUSED, FUSED_STEPS).goto(5)
    text = encode_state(session.chain, session.steps, session.cursor)
    assert len(text) < 2000 and all(c.isalnum() or c in "-_" for c in text)
    state = decode_state(text)
    assert state["chain"] == session.chain and state["cursor"] == 5
    restored = import_query({"state": text})
    assert restored == session


@pytest.mark.parametrize(("text", "message"), [
    ("", "not base64url"),
    ("abc$%", "not base64url"),
    ("A" * 9000, "above the limit"),
    ("QUJD", "not compressed session data"),
    (base64.urlsafe_b64encode(zlib.compress(b"\0" * (10 * MAX_STATE_JSON))).decode(),
     "decompresses to more than"),
    (base64.urlsafe_b64encode(zlib.compress(b'{"chain": 1}')[:-6]).decode(), "truncated"),
    (base64.urlsafe_b64encode(zlib.compress(b"{not json")).decode(), "valid JSON"),
    (base64.urlsafe_b64encode(zlib.compress(b"[1, 2]")).decode(), "object with chain"),
])
def test_decode_state_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        decode_state(text)


def test_import_query_needs_the_parameter() -> None:
    with pytest.raises(ScriptError, match="no state= parameter"):
        import_query({})


# ----------------------------------------------------------------------------- running exports

@pytest.mark.slow
@pytest.mark.parametrize("name", list(CPU_CASES))
def test_exported_script_runs_standalone(name: str, tmp_path: Path) -> None:
    chain, steps = CPU_CASES[name]
    path = tmp_path / "kernel.py"
    path.write_text(export_script(chain, steps, title=name))
    proc = _run_script(path, "--json", "--repeat", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "correct", result
    assert result["flop"] == chain_flop(normalize_chain(chain))
    assert result["median_ms"] > 0 and result["gflops"] > 0


@pytest.mark.slow
def test_exported_script_prints_a_readable_report(tmp_path: Path) -> None:
    path = tmp_path / "kernel.py"
    path.write_text(export_script(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS))
    proc = _run_script(path, "--repeat", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "status: correct" in proc.stdout and "median_ms:" in proc.stdout


@pytest.mark.slow
def test_exported_cuda_script_without_gpu_prints_source(tmp_path: Path) -> None:
    path = tmp_path / "kernel.py"
    path.write_text(export_script(RELU, RELU_GPU_STEPS, target="cuda"))
    proc = _run_script(path, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["target"] == "cuda"
    if result["status"] == "no-gpu":
        assert "no CUDA GPU" in result["message"] and "__global__" in result["source"]
    else:
        assert result["status"] == "correct", result
    text = _run_script(path)
    assert text.returncode == 0 and ("__global__" in text.stdout or "correct" in text.stdout)


@pytest.mark.slow
def test_exported_script_reports_a_failing_build(tmp_path: Path) -> None:
    # A CPU schedule without thread bindings does not build for CUDA: status error, exit 1.
    path = tmp_path / "kernel.py"
    path.write_text(export_script(RELU, []))
    proc = _run_script(path, "--json", "--target", "cuda")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "error"


def test_export_keeps_odd_titles_exactly() -> None:
    title, description = "tab\there \udcff \x00 end", "line\r\nbreak \u2028 \\N{x} '''"
    text = export_script(RELU, [], title=title, description=description)
    text.encode("utf-8")  # writable as a file
    _, _, meta = import_script(text)
    assert (meta["title"], meta["description"]) == (title, description)


# ----------------------------------------------------------------------------- cut short

def _cut_points(text: str) -> dict[str, str]:
    """Prefixes of an export that are still valid Python: after each step of apply_schedule,
    inside the runtime section, and all but the last line."""
    lines = text.splitlines(keepends=True)
    body = lines.index("def apply_schedule(sch):\n")
    runtime = next(i for i, line in enumerate(lines) if line.startswith(RUNTIME_MARKER[:20]))
    cuts = {f"after line {n}": "".join(lines[:n]) for n in range(body + 3, runtime)}
    cuts["inside the runtime"] = "".join(lines[: runtime + 40])
    cuts["all but the last line"] = "".join(lines[:-1])
    return {k: v for k, v in cuts.items() if _parses(v)}


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def test_a_script_cut_short_never_imports_part_of_its_schedule() -> None:
    text = export_script(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS)
    assert "\nSTEPS = 9  #" in text
    whole = Session.new(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS).steps
    cuts = _cut_points(text)
    assert len(cuts) >= 9  # a cut after each step line, and two in the runtime
    for where, cut in cuts.items():
        try:
            _, steps, meta = import_script(cut)
        except ScriptError as e:
            assert "cut short: STEPS = 9, but apply_schedule has" in e.message, (where, e)
            assert "import the whole file" in e.message
            continue
        assert steps == whole, where  # the schedule is whole: only the runtime is missing
        assert "runtime section is cut short" in meta["warnings"][0], where
    _, _, meta = import_script(text)
    assert meta["warnings"] == []


def test_an_older_export_cut_short_is_refused_and_a_hand_written_script_is_not() -> None:
    old = re.sub(r"\nSTEPS = \d+ .*", "", export_script(CONV_BIAS_RELU, CONV_BIAS_RELU_STEPS))
    assert len(import_script(old)[1]) == 9  # a whole older export still imports
    two = old.splitlines().index("    )") + 1  # split, then reorder over several lines
    cut = _cut_points(old)[f"after line {two}"]
    with pytest.raises(ScriptError, match="older than the STEPS line"):
        import_script(cut)
    with_steps = cut.replace("\nCHAIN = ", "\nSTEPS = 2\n\nCHAIN = ", 1)  # the hint works
    assert len(import_script(with_steps)[1]) == 2
    by_hand = cut.replace("Generated by Schedule Playground.", "")  # no runtime to expect
    assert len(import_script(by_hand)[1]) == 2


def test_steps_edited_by_hand_import_with_a_note_and_a_bad_count_is_refused() -> None:
    text = export_script(RELU, [Step("split", {"block": "relu1", "loop": "h",
                                               "factors": [None, 2]})])
    edited = text.replace("factors=[None, 2])\n", "factors=[None, 2])\n    "
                          "sch.parallel(loop(sch, 'relu1', 'h_0'))\n", 1)
    _, steps, meta = import_script(edited)
    assert len(steps) == 2
    assert meta["warnings"] == ["STEPS = 1, but apply_schedule has 2 step(s) (edited?): "
                                "imported the 2."]
    with pytest.raises(ScriptError, match=r"^line \d+: STEPS must be the number of steps"):
        import_script(text.replace("STEPS = 1 ", "STEPS = 'one' "))


def test_the_embedded_modules_define_each_top_level_name_once():
    """An exported script holds the embedded modules in one namespace: a name defined by two
    of them would silently take the later one's definition (a ``_rewrite`` in two modules once
    made the poisoned build call the wrong function)."""
    import inspect

    from playground.io.export import EMBEDDED

    owners: dict[str, list[str]] = {}
    for module in EMBEDDED:
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                names = []
            for name in names:
                owners.setdefault(name, []).append(module.__name__)
    assert {n: m for n, m in owners.items() if len(m) > 1} == {}
