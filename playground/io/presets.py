"""Preset schedules: the scripts in ``schedules/``, in the same format users export.

Presets are read like any uploaded script (parsed, never executed), so a preset that loads here
also runs standalone with only tvm and numpy (``python schedules/NAME.py``).
"""

from __future__ import annotations

from pathlib import Path

from playground.errors import PlaygroundError, ScriptError
from playground.io.script_import import import_script, read_header

PRESET_DIR = Path(__file__).resolve().parents[2] / "schedules"


def preset_paths() -> list[Path]:
    """Every preset file, sorted by name."""
    return sorted(p for p in PRESET_DIR.glob("*.py") if not p.name.startswith("_"))


def list_presets() -> list[dict]:
    """Name, title, target and path of every preset that reads (broken ones are reported).
    Read without replaying the steps (:func:`read_header`): the page lists the presets on
    its first load; loading one replays and checks its steps."""
    out = []
    for path in preset_paths():
        try:
            _, steps, meta = read_header(path.read_text())
            out.append({"name": path.stem, "title": meta.get("title") or path.stem,
                        "target": meta.get("target", "cpu"), "steps": steps,
                        "path": str(path), "error": ""})
        except PlaygroundError as e:
            out.append({"name": path.stem, "title": path.stem, "target": "?", "steps": 0,
                        "path": str(path), "error": e.message})
    return out


def load_preset(name: str) -> tuple[dict, tuple, dict]:
    """(chain, steps, metadata) of the preset ``name`` (file stem)."""
    path = PRESET_DIR / f"{name}.py"
    if not name.replace("_", "").isalnum() or not path.is_file():
        known = ", ".join(p.stem for p in preset_paths())
        raise ScriptError(f"no preset named {name!r} (presets: {known})", where="preset")
    return import_script(path.read_text())
