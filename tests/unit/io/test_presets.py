"""Every preset: its JSON (the source of truth) reads in its canonical form and its script is
exactly its rendering (so the scripts are current: ``python -m playground presets render``);
it loads, applies, builds and validates (CPU) or generates CUDA source; its script runs as a
plain script with only tvm and numpy and reads back as the same preset; the command line
reads it."""

import json
import os
import subprocess
import sys

import paths
import pytest

from playground import service
from playground.io.export import export_script
from playground.io.presets import (
    list_presets,
    load_preset,
    preset_json,
    preset_paths,
    read_preset,
    render_preset,
)
from playground.io.script_import import read_header
from playground.schedule.session import Session

ROOT = paths.ROOT
PRESETS = [p.stem for p in preset_paths()]
# Presets whose reference check is heavy (the seed's 12.9 and 50 GFLOP chains).
HEAVY = {"seed_conv_relu_fused", "seed_two_conv_fused"}


def test_there_are_presets_and_all_load():
    rows = list_presets()
    assert len(rows) >= 5
    assert [r for r in rows if r["error"]] == []


@pytest.mark.parametrize("name", PRESETS)
def test_preset_script_is_its_json_rendered(name):
    data = read_preset(name)
    json_text = (ROOT / "schedules" / f"{name}.json").read_text()
    assert preset_json(data["chain"], data["steps"], title=data["title"],
                       description=data["description"], target=data["target"],
                       weights=data["weights"]) == json_text
    script = (ROOT / "schedules" / f"{name}.py").read_text()
    assert render_preset(name) == script, (
        f"schedules/{name}.py is not its preset rendered with this version's runtime: "
        "python -m playground presets render")
    # The script reads back as the preset (chain and number of steps, without a replay).
    assert read_header(script)[:2] == (data["chain"], len(data["steps"]))


def test_presets_render_writes_each_script_from_its_json(tmp_path, monkeypatch, capsys):
    """``python -m playground presets render``: a preset without its script (or with a stale
    one) gets it written; an up-to-date one is left alone."""
    from playground.__main__ import main
    from playground.io import presets

    name = PRESETS[0]
    (tmp_path / f"{name}.json").write_text((ROOT / "schedules" / f"{name}.json").read_text())
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    assert main(["presets", "render"]) == 0
    assert f"schedules/{name}.py" in capsys.readouterr().out
    assert (tmp_path / f"{name}.py").read_text() == (ROOT / "schedules" / f"{name}.py").read_text()
    assert presets.render_presets() == []


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_applies_builds_and_validates_in_the_worker(name, pool):
    chain, steps, meta = load_preset(name)
    session = Session.new(chain, steps)
    target = meta.get("target", "cpu")
    if target == "cuda":
        result = service.codegen(pool, session, "cuda", "cuda")
        assert result.status == "ok", result.message
        assert "__global__" in result.value["text"]
        return
    result = service.run(pool, session, target, measure=False)
    assert result.status == "ok", f"{result.status}: {result.message}\n{result.detail[-2000:]}"
    assert result.value["correct"] is True, result.value["message"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in PRESETS if n not in HEAVY])
def test_preset_runs_as_a_plain_script_without_playground(name, tmp_path):
    # Copied out of the repository and run without PYTHONPATH: only tvm and numpy.
    script = tmp_path / f"{name}.py"
    script.write_text((ROOT / "schedules" / f"{name}.py").read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(script), "--json", "--repeat", "3"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    if load_preset(name)[2].get("target", "cpu") == "cpu":
        assert json.loads(run.stdout)["correct"] is True


@pytest.mark.slow
def test_cli_lists_runs_and_lowers(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "playground"]
    listing = subprocess.run([*cli, "presets"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0 and all(n in listing.stdout for n in PRESETS)
    name = next(n for n in PRESETS if n not in HEAVY and load_preset(n)[2].get("target") != "cuda")
    run = subprocess.run([*cli, "run", f"schedules/{name}.py", "--json", "--repeat", "3"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for key in ("valid", "correct", "max_abs_error", "max_rel_error", "median_ms", "gflops",
                "target"):
        assert key in out
    assert out["valid"] and out["correct"] and out["median_ms"] > 0
    lower = subprocess.run([*cli, "lower", f"schedules/{name}.py"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert lower.returncode == 0 and "T.prim_func" in lower.stdout
    # A schedule that TVM refuses: exit 1 with valid false.
    chain, _steps, _ = load_preset(name)
    bad = export_script(chain, [], title="bad").replace(
        "def apply_schedule(sch):", "def apply_schedule(sch):\n    sch.vectorize(loop(sch, "
        "\"conv1\", \"rc\"))", 1)
    (tmp_path / "bad.py").write_text(bad)
    run = subprocess.run([*cli, "run", str(tmp_path / "bad.py"), "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and json.loads(run.stdout)["valid"] is False
