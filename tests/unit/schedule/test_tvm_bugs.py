"""docs/tvm_bugs.py still reproduces every documented TVM bug in plain TVM.

When a TVM upgrade fixes one, this fails and says which: its pre-check in
playground/schedule/prechecks.py can then be relaxed (and docs/tvm-bugs.md updated).
"""

import subprocess
import sys

import paths
import pytest

ROOT = paths.ROOT


@pytest.mark.slow
def test_documented_bugs_reproduce_in_plain_tvm():
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "tvm_bugs.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert len(lines) == 8, run.stdout + run.stderr
    assert all("REPRODUCED" in ln and "NOT REPRODUCED" not in ln for ln in lines), run.stdout
