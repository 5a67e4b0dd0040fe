"""The experiment store: records, groups, filters, leaderboard, sessions, short links,
migrations from an old schema, and the ways it degrades (corrupt file, a directory where the
file should be, a full disk, a data path that cannot be created, a newer schema).

Each test gets its own store in ``tmp_path``; tests run as root, so an unusable path is made
by putting it under a regular file, never by permissions.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading

import pytest
from store_client import CHAIN, MACHINE, split

from playground import store as store_api
from playground.store import Store, StoreError, record_group, record_run, records
from playground.store import db as store_db
from playground.store.schema import LATEST, MIGRATIONS

OTHER_MACHINE = {**MACHINE, "cpu_model": "other CPU", "cores": 8}
BIG = {"input": {"shape": [1, 3, 32, 32]}, "layers": [{"op": "conv2d", "channels": 8}]}


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def ok(ms: float, **extra) -> dict:
    return {"correct": True, "median_ms": ms, "gflops": 1.0 / ms,
            "timing": {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "repeats": 10,
                       "load": {"loadavg_1m": 0.5}}, **extra}


def test_created_on_first_use_in_wal_mode_with_the_latest_schema(tmp_path):
    s = Store(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # constructing opens nothing
    s.check()
    assert s.path.is_file()
    assert s.schema_version() == LATEST
    conn = sqlite3.connect(s.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_versions ORDER BY 1")]
    assert versions == sorted(MIGRATIONS)


def test_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_DATA", str(tmp_path / "here"))
    assert store_db.data_dir() == tmp_path / "here"
    assert store_api.get_store().directory == tmp_path / "here"
    assert store_api.get_store() is store_api.get_store()
    monkeypatch.delenv("PLAYGROUND_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_db.data_dir() == tmp_path / "xdg" / "schedule-playground"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_db.data_dir() == tmp_path / "home" / ".local" / "share" / "schedule-playground"


def test_a_run_is_stored_whole_and_read_back(store):
    value = ok(2.5, max_abs_error=1e-7, compile_s=0.1)
    run_id = record_run(CHAIN, split(4), "cpu", MACHINE, status="ok", value=value,
                        label="1: split conv1.h", source="page", store=store)
    r = store.get(run_id)
    assert r["kind"] == "run" and r["source"] == "page" and r["label"] == "1: split conv1.h"
    assert r["status"] == "ok" and r["correct"] == 1 and r["median_ms"] == 2.5
    assert r["steps"] == split(4) and r["n_steps"] == 1 and r["target"] == "cpu"
    assert r["machine"] == MACHINE
    assert r["machine_name"] == "test CPU (test), 2 cores"
    assert r["result"] == value  # the timing record whole, load fields included
    assert r["chain"]["layers"][0]["name"] == "conv1"  # stored normalized
    assert r["chain_name"] == "1×3×16×16 → conv1 4ch 3×3 → relu1"
    assert r["children"] == [] and r["starred"] == 0 and r["note"] == ""
    assert abs(r["created"] - dt.datetime.now().timestamp()) < 60


def test_failures_are_stored_with_their_error_and_no_time(store):
    wrong = record_run(CHAIN, split(3), "cpu", MACHINE, status="wrong_result",
                       value={"correct": False, "median_ms": 0.1, "max_abs_error": 3.0},
                       error="mismatch at 12 elements", store=store)
    crash = record_run(CHAIN, split(5), "cpu", MACHINE, status="crash", value=None,
                       error="worker died (SIGSEGV)", detail="stderr tail", store=store)
    w, c = store.get(wrong), store.get(crash)
    assert (w["correct"], w["median_ms"], w["error"]) == (0, None, "mismatch at 12 elements")
    assert (c["correct"], c["result"], c["detail"]) == (None, {}, "stderr tail")
    assert store.leaderboard(w["chain_key"]) == []  # neither is a validated time


def test_same_chain_same_key_whatever_its_spelling():
    normalized = records.canonical_chain(CHAIN)
    assert records.chain_key(normalized) == records.chain_key(records.canonical_chain(
        json.loads(json.dumps(normalized))))
    assert records.chain_key(normalized) != records.chain_key(records.canonical_chain(BIG))
    assert records.machine_key(MACHINE) != records.machine_key(OTHER_MACHINE)
    assert records.machine_name({"remote": "127.0.0.1:9190/local"}) == \
        "remote 127.0.0.1:9190/local"


def test_a_chain_that_does_not_normalize_is_still_recorded(store):
    broken = {"input": {"shape": [1, 3]}, "layers": [{"op": "nope"}]}
    run_id = record_run(broken, [], "cpu", MACHINE, status="chain_error", error="bad",
                        store=store)
    assert store.get(run_id)["chain"] == broken


def test_a_group_holds_its_candidates_and_takes_the_fastest(store):
    group = record_group("sweep", CHAIN, "cpu", MACHINE, label="split conv1.h factor[1]",
                         source="sweep", info={"values": [2, 4, 8]}, store=store)
    group.add(split(2), status="ok", value=ok(3.0), label="2")
    group.add(split(4), status="ok", value=ok(1.5), label="4")
    group.add(split(8), status="wrong_result", value={"correct": False}, label="8")
    group.finish("done")
    g = store.get(group.id)
    assert g["kind"] == "sweep" and g["is_group"] == 1 and g["status"] == "done"
    assert [c["label"] for c in g["children"]] == ["8", "4", "2"]  # newest first
    assert g["median_ms"] == 1.5 and g["steps"] == split(4)  # restoring gives the winner
    assert g["result"] == {"values": [2, 4, 8]}
    top = store.list_experiments()
    assert [r["id"] for r in top] == [group.id] and top[0]["children"] == 3
    assert len(store.list_experiments(everything=True)) == 4
    assert [r["label"] for r in store.list_experiments(parent=group.id)] == ["8", "4", "2"]
    store.delete(group.id)
    assert store.count() == 0  # the candidates go with their group


def test_filters_by_chain_machine_target_kind_star_and_date(store):
    day = dt.datetime(2026, 11, 20, 12).timestamp()
    ids = {}
    for name, chain, machine, target, created in (
            ("a", CHAIN, MACHINE, "cpu", day), ("b", BIG, MACHINE, "cpu", day + 86400),
            ("c", CHAIN, OTHER_MACHINE, "cuda", day + 2 * 86400)):
        ids[name] = store.record_run(chain, [], target, machine, status="ok", value=ok(1.0),
                                     label=name, created=created)
    store.star(ids["b"])

    def labels(**filters) -> list[str]:
        return [r["label"] for r in store.list_experiments(**filters)]

    key = records.chain_key(records.canonical_chain(CHAIN))
    assert labels() == ["c", "b", "a"]
    assert labels(chain=key) == ["c", "a"]
    assert labels(chain="32×32") == ["b"]  # part of the name
    assert labels(chain="1x3x32x32") == ["b"]  # as people type it
    assert labels(machine="other") == ["c"]
    assert labels(machine=records.machine_key(MACHINE)) == ["b", "a"]
    assert labels(target="cuda") == ["c"]
    assert labels(starred=True) == ["b"]
    assert labels(since="2026-11-21") == ["c", "b"]
    assert labels(until="2026-11-21") == ["b", "a"]  # the day itself included
    assert labels(since=dt.date(2026, 11, 21), until=dt.date(2026, 11, 21)) == ["b"]
    assert labels(chain="%") == []  # LIKE wildcards are text
    assert labels(newest_first=False, limit=2) == ["a", "b"]
    with pytest.raises(StoreError, match="not a date"):
        store.list_experiments(since="yesterday")
    facets = store.facets()
    assert {f["name"] for f in facets["machines"]} == {"test CPU (test), 2 cores",
                                                       "other CPU (test), 8 cores"}
    assert {f["key"] for f in facets["targets"]} == {"cpu", "cuda"}
    assert len(facets["chains"]) == 2


def test_lists_for_charts_carry_the_spread(store):
    store.record_run(CHAIN, [], "cpu", MACHINE, status="ok",
                     value=ok(2.0) | {"timing": {"p10_ms": 1.9, "p90_ms": 2.2}})
    store.record_run(CHAIN, [], "cpu", MACHINE, status="crash")
    rows = store.list_experiments(timing=True, newest_first=False)
    assert [(r["median_ms"], r["p10_ms"], r["p90_ms"]) for r in rows] == [(2.0, 1.9, 2.2),
                                                                          (None, None, None)]
    assert "p10_ms" not in store.list_experiments()[0]


def test_star_annotate_delete_and_missing_ids(store):
    run_id = store.record_run(CHAIN, [], "cpu", MACHINE, status="ok", value=ok(1.0))
    store.star(run_id)
    store.annotate(run_id, "tile 8 is <b>best</b> [link](http://x)")
    r = store.get(run_id)
    assert r["starred"] == 1 and r["note"] == "tile 8 is <b>best</b> [link](http://x)"
    store.star(run_id, False)
    assert store.get(run_id)["starred"] == 0
    store.delete(run_id)
    for call in (store.get, store.delete, store.star, lambda i: store.annotate(i, "x")):
        with pytest.raises(StoreError, match=f"no experiment #{run_id}") as e:
            call(run_id)
        assert e.value.where == "experiment"
    with pytest.raises(StoreError, match="not an experiment id"):
        store.get("seven")
    assert store.problem is None  # a missing record is not a broken store


def test_leaderboard_fastest_validated_per_chain_and_machine(store):
    for factor, ms, machine in ((2, 3.0, MACHINE), (4, 1.0, MACHINE), (4, 1.2, MACHINE),
                                (8, 0.5, OTHER_MACHINE), (16, 0.1, MACHINE)):
        correct = factor != 16  # the fastest one is wrong: it never leads
        store.record_run(CHAIN, split(factor), "cpu", machine, status="ok",
                         value=ok(ms, correct=correct), label=f"f{factor}")
    store.record_run(BIG, split(2), "cpu", MACHINE, status="ok", value=ok(0.01))
    chain = records.chain_key(records.canonical_chain(CHAIN))
    mine = store.leaderboard(chain, records.machine_key(MACHINE), "cpu")
    assert [(r["label"], r["median_ms"], r["runs"]) for r in mine] == [("f4", 1.0, 2),
                                                                      ("f2", 3.0, 1)]
    assert mine[0]["steps"] == split(4)
    assert [r["slowest_ms"] for r in mine] == [1.2, 3.0]  # the spread of its re-runs
    everywhere = store.leaderboard(chain)
    assert [r["median_ms"] for r in everywhere] == [0.5, 1.0, 3.0]
    assert store.leaderboard(chain, records.machine_key(MACHINE), "cuda") == []


def test_sessions_saved_by_name_with_a_note(store):
    session = {"chain": CHAIN, "steps": split(4), "cursor": 1}
    first = store.save_session("tiles of 4", session, note="before vectorize", target="cpu")
    again = store.save_session("tiles of 4", {**session, "cursor": 0}, note="undone")
    assert first == again  # saved again under its name: replaced
    store.save_session("other", {"chain": BIG, "steps": []})
    assert [s["name"] for s in store.list_sessions()] == ["other", "tiles of 4"]
    loaded = store.load_session("tiles of 4")
    assert loaded["note"] == "undone" and loaded["session"]["cursor"] == 0
    assert loaded["session"]["steps"] == split(4)
    store.delete_session("other")
    for call in (store.load_session, store.delete_session):
        with pytest.raises(StoreError, match="no saved session") as e:
            call("other")
        assert e.value.where == "session"
    with pytest.raises(StoreError, match="name"):
        store.save_session("  ", session)
    with pytest.raises(StoreError, match="chain"):
        store.save_session("x", {"steps": []})


class FakeSession:
    """Anything with ``to_dict()`` stores like a Session."""

    def to_dict(self) -> dict:
        return {"chain": CHAIN, "steps": split(2), "cursor": 1}


def test_short_links_are_unguessable_and_round_trip(store):
    ids = {store.share(FakeSession(), target="cpu") for _ in range(20)}
    assert len(ids) == 20
    for link in ids:
        assert store_db.SHARE_ID_RE.fullmatch(link)
        assert len(link) * 6 >= 128  # base64url: 6 bits a character
    link = ids.pop()
    shared = store.load_shared(link)
    assert shared["session"] == FakeSession().to_dict() and shared["target"] == "cpu"


@pytest.mark.parametrize("bad", ["", "abc", "x" * 200, "../../etc/passwd",
                                 "AAAAAAAAAAAAAAAAAAAAAAAA'--", None, 42])
def test_malformed_short_link_ids_are_refused_without_a_query(store, bad):
    with pytest.raises(StoreError, match="not a short-link id") as e:
        store.load_shared(bad)
    assert e.value.where == "link"


def test_a_missing_short_link_says_so(store):
    store.share(FakeSession())
    with pytest.raises(StoreError, match="no shared session has this link") as e:
        store.load_shared("A" * 24)
    assert e.value.where == "link" and store.problem is None
    assert "A" * 24 not in e.value.message  # never echoes what came in the URL


def test_threads_sharing_one_store_lose_and_duplicate_nothing(store):
    def client(k: int) -> None:
        for i in range(25):
            store.record_run(CHAIN, split(2), "cpu", MACHINE, status="ok", value=ok(1.0),
                             label=f"t{k}-{i}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    labels = [r["label"] for r in store.list_experiments()]
    assert sorted(labels) == sorted(f"t{k}-{i}" for k in range(4) for i in range(25))


# ----------------------------------------------------------------------------- migrations

def v1_database(directory) -> None:
    """A database as version 1 of the schema left it, holding one run."""
    directory.mkdir(parents=True)
    conn = sqlite3.connect(directory / store_db.DB_NAME)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE schema_versions (version INTEGER PRIMARY KEY, applied REAL)")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_versions VALUES (1, 0)")
    normalized = records.canonical_chain(CHAIN)
    conn.execute(
        "INSERT INTO experiments (uid, kind, created, chain_key, chain_name, chain, steps, "
        "n_steps, target, machine_key, machine_name, machine, status, correct, median_ms, "
        "result, label) VALUES ('u1', 'run', 1.0, ?, 'old chain', ?, ?, 1, 'cpu', ?, 'old', "
        "?, 'ok', 1, 2.0, '{}', 'from v1')",
        (records.chain_key(normalized), json.dumps(normalized), json.dumps(split(2)),
         records.machine_key(MACHINE), json.dumps(MACHINE)))
    conn.commit()
    conn.close()


def test_an_old_schema_is_migrated_forward_keeping_its_records(tmp_path):
    v1_database(tmp_path / "old")
    s = Store(tmp_path / "old")
    assert s.schema_version() == LATEST
    (old,) = s.list_experiments()
    assert (old["label"], old["starred"], old["note"]) == ("from v1", 0, "")
    s.annotate(old["id"], "migrated")  # version 2's columns work on the old row
    assert s.leaderboard(old["chain_key"])[0]["label"] == "from v1"  # version 3's index
    assert s.load_shared(s.share(FakeSession()))["session"]["steps"] == split(2)
    s.close()
    assert Store(tmp_path / "old").schema_version() == LATEST  # reopening applies nothing


def test_a_newer_schema_is_left_alone(tmp_path):
    s = Store(tmp_path / "new")
    s.check()
    s.close()
    conn = sqlite3.connect(s.path)
    conn.execute("INSERT INTO schema_versions VALUES (?, 0)", (LATEST + 1,))
    conn.commit()
    conn.close()
    newer = Store(tmp_path / "new")
    with pytest.raises(StoreError, match="newer than this version") as e:
        newer.check()
    assert e.value.where == "store" and "history is not being saved" in newer.problem
    assert record_run(CHAIN, [], "cpu", MACHINE, status="ok", store=newer) is None


# ----------------------------------------------------------------------------- degrading

def corrupt(directory) -> None:
    directory.mkdir(parents=True)
    (directory / store_db.DB_NAME).write_bytes(b"this is not a database, " * 400)


def unreadable(directory) -> None:
    (directory / store_db.DB_NAME).mkdir(parents=True)  # a directory where the file should be


def uncreatable(directory) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.parent.joinpath("file").write_text("a regular file")


@pytest.mark.parametrize("breakage", [corrupt, unreadable, uncreatable])
def test_an_unusable_database_degrades_and_says_why(tmp_path, breakage):
    directory = tmp_path / "data"
    breakage(directory)
    if breakage is uncreatable:
        directory = tmp_path / "file" / "data"  # under a regular file: root cannot either
    s = Store(directory)
    run_id = record_run(CHAIN, split(2), "cpu", MACHINE, status="ok", value=ok(1.0), store=s)
    assert run_id is None
    assert s.problem.startswith("history is not being saved: ")
    assert "\n" not in s.problem
    group = record_group("sweep", CHAIN, "cpu", MACHINE, store=s)
    assert group.id is None
    assert group.add(split(2), status="ok") is None
    group.finish()  # does nothing, raises nothing
    for call in (s.check, s.list_experiments, s.facets, lambda: s.share(FakeSession()),
                 lambda: s.load_shared("A" * 24), lambda: s.save_session("n", FakeSession())):
        with pytest.raises(StoreError, match="history is not being saved") as e:
            call()
        assert e.value.where == "store"


def test_a_full_disk_keeps_what_was_committed(tmp_path):
    s = Store(tmp_path / "full", max_pages=40)
    saved = []
    for i in range(200):
        run_id = record_run(CHAIN, split(2), "cpu", MACHINE, status="ok", value=ok(1.0),
                            detail="x" * 4000, label=f"r{i}", store=s)
        if run_id is None:
            break
        saved.append(f"r{i}")
    assert saved and len(saved) < 200, "the quota never filled"
    assert "full" in s.problem and s.problem.startswith("history is not being saved")
    assert sorted(r["label"] for r in s.list_experiments()) == sorted(saved)
    assert "full" in store_api.problem(s)  # reading works, and says nothing about writing
    s.delete(s.list_experiments()[0]["id"])  # a write that frees pages succeeds
    assert store_api.problem(s) is None


def test_the_store_comes_back_when_the_file_is_fixed(tmp_path):
    directory = tmp_path / "data"
    unreadable(directory)
    s = Store(directory)
    with pytest.raises(StoreError):
        s.check()
    (directory / store_db.DB_NAME).rmdir()
    assert record_run(CHAIN, [], "cpu", MACHINE, status="ok", store=s) is not None
    assert s.problem is None
