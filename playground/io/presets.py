"""Preset schedules: data in ``schedules/<name>.json``, rendered as runnable scripts beside them.

A preset is a JSON session, as the page downloads one (:func:`playground.io.script_import`
reads it): ``title``, ``description``, ``target``, ``weights``, the ``chain`` and its
``steps``. That file is the source of truth; ``schedules/<name>.py`` is the same preset
rendered by :func:`playground.io.export.export_script` (as TVM keeps ``as_json`` apart from
``as_python``), for people to run with only tvm and numpy (``python schedules/NAME.py``).
The scripts embed the playground's runtime (the op table, the builder, the reference...), so
a change there changes every script but no preset; render them again with::

    python -m playground presets render

(``tests/unit/io/test_presets.py`` checks that every script is its preset's current rendering.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from playground.chain.spec import normalize_chain
from playground.errors import PlaygroundError, ScriptError
from playground.io.export import TARGETS, WEIGHT_MODES, export_script
from playground.io.script_import import import_script
from playground.schedule.steps import Step, normalize_step

PRESET_DIR = Path(__file__).resolve().parents[2] / "schedules"
_KEYS = ("title", "description", "target", "weights", "chain", "steps")


def preset_paths() -> list[Path]:
    """Every preset's JSON file, sorted by name."""
    return sorted(p for p in PRESET_DIR.glob("*.json") if not p.name.startswith("_"))


def _path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.json"
    if not name.replace("_", "").isalnum() or not path.is_file():
        known = ", ".join(p.stem for p in preset_paths())
        raise ScriptError(f"no preset named {name!r} (presets: {known})", where="preset")
    return path


def read_preset(name: str) -> dict:
    """The preset's data, checked without replaying its steps: the chain normalized, each
    step normalized (:class:`Step`), ``title``, ``description``, ``target``, ``weights``."""
    path = _path(name)
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise ScriptError(f"{path.name}: not valid JSON ({e})", where="preset") from None
    if not isinstance(raw, dict) or sorted(raw) != sorted(_KEYS):
        raise ScriptError(f"{path.name}: a preset is an object with exactly "
                          f"{', '.join(_KEYS)}", where="preset")
    if raw["target"] not in TARGETS or raw["weights"] not in WEIGHT_MODES:
        raise ScriptError(f"{path.name}: target must be one of {', '.join(TARGETS)} and "
                          f"weights one of {', '.join(WEIGHT_MODES)}", where="preset")
    steps = tuple(normalize_step(Step.from_dict(s), i) for i, s in enumerate(raw["steps"]))
    return {**raw, "chain": normalize_chain(raw["chain"]), "steps": steps}


def list_presets() -> list[dict]:
    """Name, title, target, number of steps and path of every preset that reads (broken ones
    are reported). Read without replaying the steps: the page lists the presets on its first
    load; loading one replays and checks its steps."""
    out = []
    for path in preset_paths():
        try:
            data = read_preset(path.stem)
            out.append({"name": path.stem, "title": data["title"] or path.stem,
                        "target": data["target"], "steps": len(data["steps"]),
                        "path": str(path), "error": ""})
        except PlaygroundError as e:
            out.append({"name": path.stem, "title": path.stem, "target": "?", "steps": 0,
                        "path": str(path), "error": e.message})
    return out


def load_preset(name: str) -> tuple[dict, tuple, dict]:
    """(chain, steps, metadata) of the preset ``name``, its steps replayed and checked as an
    imported session's are (metadata: title, description, target, weights, cursor)."""
    raw = json.loads(_path(name).read_text())
    weights = raw.pop("weights")  # a preset's, not a page session's
    chain, steps, meta = import_script(json.dumps(raw))
    return chain, steps, {**meta, "weights": weights}


def _rows(items: Iterable[object], indent: str) -> str:
    """A JSON list, one item per line."""
    return "[\n" + ",\n".join(f"{indent}  {json.dumps(i, ensure_ascii=False)}"
                              for i in items) + f"\n{indent}]"


def preset_json(chain: dict, steps: Iterable[Step], *, title: str, description: str,
                target: str = "cpu", weights: str = "per-call") -> str:
    """A preset's file: the session as JSON, the chain normalized, one layer and one step a
    line (so that a diff of a preset reads)."""
    chain = normalize_chain(chain)
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in
                      (("title", title), ("description", description), ("target", target),
                       ("weights", weights)))
    rest = {k: v for k, v in chain.items() if k not in ("input", "layers")}
    chain_text = (f'{{\n    "input": {json.dumps(chain["input"])},\n'
                  + "".join(f"    {json.dumps(k)}: {json.dumps(v)},\n" for k, v in rest.items())
                  + f'    "layers": {_rows(chain["layers"], "    ")}\n  }}')
    return (f'{{\n{head},\n  "chain": {chain_text},\n'
            f'  "steps": {_rows((s.to_dict() for s in steps), "  ")}\n}}\n')


def render_preset(name: str) -> str:
    """The preset as a standalone script (what ``schedules/<name>.py`` must hold)."""
    data = read_preset(name)
    return export_script(data["chain"], data["steps"], target=data["target"],
                         title=data["title"], description=data["description"],
                         weights=data["weights"])


def render_presets() -> list[str]:
    """Write every preset's script anew; the names of those that changed."""
    changed = []
    for path in preset_paths():
        script = path.with_suffix(".py")
        text = render_preset(path.stem)
        if not script.is_file() or script.read_text() != text:
            script.write_text(text)
            changed.append(path.stem)
    return changed
