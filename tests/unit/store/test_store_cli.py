"""``python -m playground run FILE --record`` and ``experiments list|show|dump``, in process,
with the worker's answer patched in (the real worker runs in test_store_reliability.py).

A run is recorded whatever its outcome; a store that cannot save (a full disk here) never
changes the exit code, and says so in one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_client import CHAIN, MACHINE, split

from playground import service
from playground.__main__ import main
from playground.io.export import export_script
from playground.schedule.steps import Step
from playground.store import Store, api, record_run
from playground.worker.result import JobResult

GOOD = {"correct": True, "median_ms": 0.25, "gflops": 3.0, "max_abs_error": 1e-7,
        "timing": {"median_ms": 0.25, "p10_ms": 0.24, "p90_ms": 0.26, "repeats": 10,
                   "spread": 0.08, "number": 100}}


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "tiles.py"
    path.write_text(export_script(CHAIN, [Step.from_dict(s) for s in split(4)], target="cpu",
                                  title="tiles"))
    return path


def answer(monkeypatch, result: JobResult) -> None:
    monkeypatch.setattr(service, "run", lambda *a, **k: result)


def run_json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_a_recorded_run_lists_shows_and_dumps(data, script, monkeypatch, capsys):
    answer(monkeypatch, JobResult("ok", GOOD))
    code, out, err = run_json(capsys, "run", str(script), "--record", "--json")
    assert (code, err) == (0, "")
    r = Store(data).get(out["experiment"])
    assert (r["source"], r["label"], r["status"], r["median_ms"]) == ("cli", "tiles.py", "ok",
                                                                       0.25)
    assert r["result"]["timing"] == GOOD["timing"] and r["steps"] == split(4)
    assert set(r["machine"]) == {"cpu_model", "cores", "vector_bits", "mcpu", "tvm_version",
                                 "gpu"}

    assert main(["experiments", "list"]) == 0
    listed = capsys.readouterr().out
    assert "tiles.py" in listed and "0.25 ms" in listed and r["chain_name"] in listed
    assert main(["experiments", "list", "--target", "cuda", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["experiments", "show", str(r["id"])]) == 0
    shown = capsys.readouterr().out
    assert "split conv1.h factors=[None, 4]" in shown and "status: ok" in shown
    assert main(["experiments", "dump", "--csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 and rows[0].split(",")[:3] == ["id", "parent_id", "kind"]
    assert main(["experiments", "list", "--since", "not a date"]) == 1
    assert "not a date" in capsys.readouterr().err


def test_failed_runs_are_recorded_too(data, script, monkeypatch, capsys):
    answer(monkeypatch, JobResult("wrong_result", {"correct": False, "median_ms": None},
                                  message="3 elements differ"))
    code, out, _ = run_json(capsys, "run", str(script), "--record", "--json")
    assert code == 1
    r = Store(data).get(out["experiment"])
    assert (r["status"], r["correct"], r["error"]) == ("wrong_result", 0, "3 elements differ")


def test_a_file_that_does_not_load_never_runs_and_is_not_recorded(data, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(export_script(CHAIN, [Step("split", {"block": "conv1", "loop": "nope",
                                                        "factors": [None, 2]})],
                                 target="cpu", title="bad"))
    code, out, _ = run_json(capsys, "run", str(bad), "--record", "--json")
    assert code == 1 and "no loop 'nope'" in out["error"] and "experiment" not in out
    assert not data.exists()


def test_without_record_nothing_is_stored(data, script, monkeypatch, capsys):
    answer(monkeypatch, JobResult("ok", GOOD))
    code, out, _ = run_json(capsys, "run", str(script), "--json")
    assert code == 0 and "experiment" not in out
    assert not data.exists()


def test_a_full_disk_does_not_change_the_run(data, script, monkeypatch, capsys):
    full = Store(data, max_pages=30)
    for size in (4000, 400, 0):  # fill the pages, then the gaps left in them
        while record_run(CHAIN, [], "cpu", MACHINE, status="ok", detail="x" * size,
                         store=full):
            pass
    monkeypatch.setitem(api._stores, data, full)  # the CLI's store is this full one
    answer(monkeypatch, JobResult("ok", GOOD))
    code, plain, _ = run_json(capsys, "run", str(script), "--json")
    code_recorded, recorded, err = run_json(capsys, "run", str(script), "--json", "--record")
    assert code == code_recorded == 0
    assert recorded == plain
    assert err.count("\n") == 1 and "database or disk is full" in err
    assert err.startswith("warning: run not recorded, history is not being saved")
