"""House rules checked in CI: ruff is clean, the library never imports streamlit, and modules
stay small enough to read in one sitting (a line budget, as tinygrad watches its own)."""

import subprocess
import sys

import paths

ROOT = paths.ROOT
#: Past this a module gets split along its seams (the layout issue split five at ~500-700).
MAX_MODULE_LINES = 500


def test_ruff_is_clean():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]


def test_library_never_imports_streamlit():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "playground").rglob("*.py")
                 if "import streamlit" in p.read_text() or "from streamlit" in p.read_text()]
    assert offenders == []


def test_modules_stay_within_the_line_budget():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for folder in ("playground", "ui") for p in (ROOT / folder).rglob("*.py")}
    sizes["app.py"] = len((ROOT / "app.py").read_text().splitlines())
    assert {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES} == {}
