"""Write the fast presets into ``schedules/`` from the recipes in ``benchmarks/recipes.py``.

Usage: ``PYTHONPATH=. .venv/bin/python benchmarks/make_presets.py [--check]``. Each preset is
the text :func:`playground.io.export.export_script` gives for (chain, steps, title, description),
so it loads, re-exports identically and runs standalone like any exported script. The numbers
in the descriptions come from ``benchmarks/bench.py`` (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from descriptions import PRESETS, measured  # noqa: E402

from playground.io.export import export_script  # noqa: E402
from playground.schedule.session import Session  # noqa: E402

SCHEDULES = HERE.parent / "schedules"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, (make, title, description) in PRESETS.items():
        r = make()
        Session.new(r.chain, r.steps)  # every step replays by name on a fresh schedule
        description = description.format(**measured())
        text = export_script(r.chain, r.steps, title=title, description=description.strip())
        path = SCHEDULES / f"{name}.py"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"{path.relative_to(HERE.parent)}: {len(r.steps)} steps")
    if stale:
        print("stale presets (rerun without --check):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
