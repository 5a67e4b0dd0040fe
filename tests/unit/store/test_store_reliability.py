"""The store under stress, with real processes: eight clients writing at once (four processes,
four threads) lose and duplicate nothing; a writer killed with SIGKILL in the middle of its
writes leaves a database that opens cleanly with every record it had committed; and
``python -m playground run FILE --record`` on a broken store still runs, exits as without
``--record`` and says so in one line.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import paths
import pytest
import store_client

from playground.store import Store
from playground.store.db import DB_NAME

pytestmark = pytest.mark.slow

ROOT = paths.ROOT
CLIENT = [sys.executable, str(paths.ROOT / "tests" / "support" / "store_client.py")]
PER_CLIENT = 24


def committed(lines: list[str]) -> dict[int, str]:
    """id -> label of every ``run ID LABEL`` / ``group ID LABEL`` line a client printed."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("run", "group") and parts[1] != "None":
            out[int(parts[1])] = parts[2]
    return out


def integrity(directory: Path) -> str:
    conn = sqlite3.connect(directory / DB_NAME)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def expected_labels(name: str, count: int) -> list[str]:
    out = []
    for i in range(count):
        label = f"{name}-{i}"
        out += [label, f"{label}/a", f"{label}/b"] if i % 4 == 3 else [label]
    return out


def test_eight_clients_at_once_lose_and_duplicate_nothing(tmp_path):
    directory = tmp_path / "shared"  # created by whichever client comes first
    procs = [subprocess.Popen([*CLIENT, str(directory), f"p{k}", str(PER_CLIENT)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    thread_lines: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def thread_client(name: str) -> None:
        store = Store(directory)  # its own connection, as another server would have
        lines = thread_lines.setdefault(name, [])
        try:
            for i in range(PER_CLIENT):
                label = f"{name}-{i}"
                if i % 4 == 3:
                    group = store_client.record_group(
                        "sweep", store_client.CHAIN, "cpu", store_client.MACHINE,
                        label=label, store=store)
                    for part, factor in (("a", 2), ("b", 4)):
                        group.add(store_client.split(factor), status="ok",
                                  label=f"{label}/{part}", value={"correct": True})
                    group.finish()
                    lines.append(f"group {group.id} {label}")
                else:
                    run_id = store.record_run(store_client.CHAIN, [], "cpu",
                                              store_client.MACHINE, status="ok", label=label)
                    lines.append(f"run {run_id} {label}")
        except BaseException as e:
            errors.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=thread_client, args=(f"t{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    outputs = [p.communicate(timeout=120) for p in procs]
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    printed = {}
    for out, _ in outputs:
        printed.update(committed(out.splitlines()))
    for lines in thread_lines.values():
        printed.update(committed(lines))

    store = Store(directory)
    rows = store.list_experiments(everything=True)
    labels = collections.Counter(r["label"] for r in rows)
    want = collections.Counter(label for name in [*(f"p{k}" for k in range(4)),
                                                  *(f"t{k}" for k in range(4))]
                               for label in expected_labels(name, PER_CLIENT))
    assert labels == want  # nothing lost, nothing twice
    by_id = {r["id"]: r["label"] for r in rows}
    assert all(by_id.get(i) == label for i, label in printed.items())
    groups = [r for r in rows if r["kind"] == "sweep"]
    assert groups and all(r["children"] == 2 and r["status"] == "done" for r in groups)
    assert integrity(directory) == "ok"


def test_a_writer_killed_mid_write_leaves_every_committed_record(tmp_path):
    directory = tmp_path / "killed"
    kept: dict[int, str] = {}
    for attempt in range(3):  # each writer starts on what the killed one left
        proc = subprocess.Popen([*CLIENT, str(directory), f"k{attempt}", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        try:
            for line in proc.stdout:  # each line is printed after its commit
                lines.append(line)
                if len(lines) >= 40:
                    break
            os.kill(proc.pid, signal.SIGKILL)  # it is writing its next record now
        finally:
            proc.kill()
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL, lines
        kept.update(committed(lines))
        assert len(committed(lines)) == 40

        store = Store(directory)
        store.check()  # opens cleanly: WAL recovery, no lock left behind
        assert integrity(directory) == "ok"
        by_id = {r["id"]: r for r in store.list_experiments(everything=True)}
        missing = {i: label for i, label in kept.items()
                   if i not in by_id or by_id[i]["label"] != label}
        assert not missing
        assert store.record_run(store_client.CHAIN, [], "cpu", store_client.MACHINE,
                                status="ok", label=f"after-{attempt}") > max(kept)
        store.close()


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def tiny_script(tmp_path_factory) -> Path:
    from playground.io.export import export_script
    from playground.schedule.steps import Step

    path = tmp_path_factory.mktemp("cli") / "tiny.py"
    steps = [Step.from_dict(s) for s in store_client.split(2)]
    path.write_text(export_script(store_client.CHAIN, steps, target="cpu", title="tiny"))
    return path


def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "playground", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "PLAYGROUND_DATA": str(data)})


def test_run_record_then_list_show_and_dump(tmp_path, tiny_script):
    data = tmp_path / "data"
    run = cli("run", str(tiny_script), "--record", "--json", "--repeat", "2", data=data)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["correct"] is True and isinstance(out["experiment"], int)
    listed = json.loads(cli("experiments", "list", "--json", data=data).stdout)
    assert [(r["id"], r["source"], r["label"], r["status"]) for r in listed] == [
        (out["experiment"], "cli", "tiny.py", "ok")]
    shown = cli("experiments", "show", str(out["experiment"]), data=data)
    assert shown.returncode == 0 and "tiny.py" in shown.stdout and "machine" in shown.stdout
    (dumped,) = json.loads(cli("experiments", "dump", data=data).stdout)
    assert dumped["result"]["timing"]["repeats"] == 2  # the whole timing record
    assert dumped["machine"]["tvm_version"].startswith("0.27")
    csv_text = cli("experiments", "dump", "--csv", data=data).stdout
    assert csv_text.splitlines()[0].startswith("id,parent_id,kind,created")
    assert len(csv_text.strip().splitlines()) == 2


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("a regular file")
    return tmp_path / "file" / "data"


def _corrupt(tmp_path: Path) -> Path:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_NAME).write_bytes(b"not a database " * 500)
    return tmp_path / "bad"


@pytest.mark.parametrize("broken", [_under_a_file, _corrupt])
def test_run_record_on_a_broken_store_still_runs(tmp_path, tiny_script, broken):
    data = broken(tmp_path)
    plain = cli("run", str(tiny_script), "--json", "--no-measure", data=data)
    recorded = cli("run", str(tiny_script), "--json", "--no-measure", "--record", data=data)
    assert recorded.returncode == plain.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)["correct"] is True
    assert "experiment" not in json.loads(recorded.stdout)
    lines = recorded.stderr.strip().splitlines()
    assert len(lines) == 1, recorded.stderr
    assert "not recorded" in lines[0] and "history is not being saved" in lines[0]
    assert "Traceback" not in recorded.stderr
    listed = cli("experiments", "list", data=data)
    assert listed.returncode == 1 and "history is not being saved" in listed.stderr
    assert "Traceback" not in listed.stderr
