"""The library's layering: which subpackage may import which, read from every import.

Every ``import`` and ``from ... import`` in ``playground/`` counts, including those inside
functions (lazy imports are how a module avoids loading TVM early, not a way around the
layers). The allowed edges are the ones each subpackage's ``__init__`` docstring states; a
new edge means either a wrong dependency or a docstring (and this table) to update.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import paths
import pytest

ROOT = paths.ROOT
LIB = ROOT / "playground"

#: Layer of a module, by the longest matching prefix of its dotted name.
UNITS = {
    "playground.errors": "base",
    "playground.pyparse": "base",
    "playground.explain": "base",
    "playground.chain": "chain",
    "playground.schedule": "schedule",
    "playground.compile": "compile",
    "playground.measure": "measure",
    "playground.worker": "worker",
    "playground.jobs": "jobs",
    "playground.io": "io",
    "playground.remote": "remote",
    "playground.service": "service",
    "playground.store": "store",
    "playground.explore": "explore",
    "playground.templates": "templates",
    "playground.model": "model",
    "playground.__main__": "cli",
    "playground": "api",
}

_LIBRARY = {"base", "chain", "schedule", "compile", "measure", "worker", "io", "remote",
            "service", "store", "explore", "templates", "model"}

#: unit -> the units it may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "chain": {"base"},
    "schedule": {"base", "chain"},
    "compile": {"base", "chain", "schedule"},
    "measure": {"base", "worker"},
    "worker": {"base"},
    "io": {"base", "chain", "schedule", "compile", "measure"},
    "remote": {"base", "chain", "schedule", "compile", "measure"},
    "store": {"base", "chain", "schedule"},
    "service": {"base", "chain", "schedule", "compile", "measure", "worker", "remote"},
    "explore": {"base", "chain", "schedule", "compile", "measure", "worker", "service", "io",
                "store"},
    "templates": {"base", "chain", "schedule", "compile", "measure", "worker", "service", "explore",
                  "store"},
    "model": {"base", "chain", "schedule", "compile", "measure", "worker", "service",
              "templates", "store", "io"},
    "jobs": _LIBRARY,
    "cli": _LIBRARY | {"jobs"},
    "api": set(),  # lazy re-exports by name only: `import playground` imports nothing else
}


def unit_of(module: str) -> str | None:
    best = None
    for prefix in UNITS:
        if (module == prefix or module.startswith(prefix + ".")) and \
                (best is None or len(prefix) > len(best)):
            best = prefix
    return UNITS[best] if best else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from playground.x import y` may import the module playground.x.y
            for a in node.names:
                full = f"{mod}.{a.name}"
                if (LIB.parent / (full.replace(".", "/") + ".py")).exists() or \
                        (LIB.parent / full.replace(".", "/") / "__init__.py").exists():
                    out.append((node.lineno, full))
                else:
                    out.append((node.lineno, mod))
    return out


def library_files() -> list[Path]:
    return sorted(LIB.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in library_files() if unit_of(module_name(p)) is None]
    assert not missing


def test_layering():
    violations = []
    for path in library_files():
        me = module_name(path)
        mine = unit_of(me)
        for line, mod in imports_of(path):
            if mod.split(".")[0] in ("streamlit", "ui", "app"):
                violations.append(f"{path.relative_to(ROOT)}:{line}: imports {mod} (the "
                                  "library never imports the page)")
                continue
            if not mod.startswith("playground"):
                continue
            theirs = unit_of(mod)
            if theirs == mine or theirs in ALLOWED[mine]:
                continue
            violations.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {mod} "
                              f"({theirs}); {mine} may import {sorted(ALLOWED[mine])}")
    assert not violations, "\n".join(violations)


def test_subpackages_say_what_they_own_and_may_import():
    for init in sorted(LIB.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.relative_to(ROOT)}: say what the subpackage owns"
        if init.parent.name != "jobs":
            assert "May import" in doc, f"{init.relative_to(ROOT)}: say what it may import"


def test_layer_table_matches_the_docstrings():
    """Each subpackage's 'May import' line names exactly the units this test allows."""
    names = {"errors": "base", "pyparse": "base", "chain": "chain", "schedule": "schedule",
             "compile": "compile", "measure": "measure", "worker": "worker", "io": "io",
             "remote": "remote",
             "service": "service", "store": "store", "explore": "explore",
             "templates": "templates", "model": "model"}
    for init in sorted(LIB.glob("*/__init__.py")):
        unit = UNITS.get(f"playground.{init.parent.name}")
        if unit in (None, "jobs"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        stated = doc.split("May import", 1)[1]
        stated = stated.split("except", 1)[0]
        said = {names[w] for w in names if f"playground.{w}`" in stated}
        assert said == ALLOWED[unit], (f"{init.relative_to(ROOT)} says it may import "
                                       f"{sorted(said)}, the test allows {sorted(ALLOWED[unit])}")


def _code_files() -> list[Path]:
    """Every Python file that is not a test: the library, the page, scripts and benchmarks."""
    found = [*library_files(), ROOT / "app.py"]
    for folder in ("ui", "scripts", "benchmarks"):
        found += sorted((ROOT / folder).rglob("*.py"))
    return [p for p in found if p.exists()]


def calls_by_job_name(source: str) -> list[tuple[int, str]]:
    """``(line, job)`` of every ``<anything>.run("<declared job>", ...)`` call in ``source``."""
    from playground.worker.job_table import JOBS

    return [(node.lineno, node.args[0].value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run" and node.args and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in JOBS]


def test_jobs_are_called_through_their_declaration():
    """No code calls a pool by a job's name (``pool.run("run", ...)``): a job is called through
    its :class:`~playground.worker.job_table.Job` (``RUN.call(pool, ...)``), which carries its
    pool and time limit. Only the worker itself (``playground/worker/``) passes names on."""
    worker = LIB / "worker"
    violations = [f"{path.relative_to(ROOT)}:{line}: runs job {name!r} by name; call its Job "
                  "(playground.worker.job_table) instead"
                  for path in _code_files() if worker not in path.parents
                  for line, name in calls_by_job_name(path.read_text())]
    assert not violations, "\n".join(violations)


def test_the_name_rule_sees_calls_by_name():
    source = ('result = pool.run("run", payload, timeout_s=300.0)\n'
              'other = service.run(pool, session)\n'
              'sub = subprocess.run("ls")\n'
              'res = state.pools().run("analyze", {})\n')
    assert calls_by_job_name(source) == [(1, "run"), (4, "analyze")]


@pytest.mark.parametrize("module", ["playground", "playground.worker.pool",
                                    "playground.worker.registry", "playground.worker.job_table",
                                    "playground.schedule.steps",
                                    "playground.chain.spec", "playground.errors"])
def test_light_imports_do_not_load_tvm(module):
    """The server and the worker's parent never need TVM to import these."""
    code = f"import sys, {module}; print('tvm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_resolves():
    import playground

    for name in playground.__all__:
        assert getattr(playground, name) is not None, name


def test_architecture_picture_is_current():
    """docs/architecture.svg is drawn from this import graph (python scripts/architecture.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import architecture

    assert architecture.OUT.read_text() == architecture.render(architecture.unit_graph()), \
        "the import graph changed: run python scripts/architecture.py"


def import_cycles() -> list[list[str]]:
    """Groups of library modules that import each other (directly or around a loop)."""
    modules = {module_name(p): p for p in library_files()}
    graph = {me: {m for _, m in imports_of(p) if m in modules and m != me}
             for me, p in modules.items()}
    order, low, stack, cycles = {}, {}, [], []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return cycles


def test_no_import_cycles():
    """A module that needs another's helper takes it from a module below both (the pre-checks
    read block names from schedule/ir.py, not from replay, which imports them; the ONNX reader
    and the layer mapping take the ONNX ops' parameter slots from model/graph.py)."""
    assert import_cycles() == []
