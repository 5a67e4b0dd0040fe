"""Tests of the measurement farm (:mod:`playground.remote.farm`): ``PLAYGROUND_TRACKER`` sends
every timing of a server to a TVM RPC tracker's servers.

The fast tests read the variable and build the server's pools. The slow ones start a real
tracker with two servers on loopback (:class:`~playground.remote.cluster.LocalRpcCluster`) and
check that both servers get work, that the timings still queue on this machine's measurement
lock (loopback servers share its cores), and that each time carries the load of the server
that measured it. The server process group of the cluster is killed at the end.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

import pytest
from helpers import CONV_RELU

from playground import service
from playground.explore.tuning import TuneResult, tune
from playground.remote.cluster import LocalRpcCluster
from playground.remote.device import RemoteError
from playground.remote.farm import TRACKER_ENV, farm_from_env, parse_tracker
from playground.schedule.session import Session
from playground.worker.lock import measurement_lock
from playground.worker.pool import WorkerPool
from playground.worker.pools import WorkerPools
from playground.worker.result import JobResult

STEPS = [{"primitive": "split", "args": {"block": "conv1", "loop": "h", "factors": [None, 4]}},
         {"primitive": "parallel", "args": {"block": "conv1", "loop": "k"}}]


def test_tracker_variable_is_read_and_checked():
    farm = parse_tracker("10.0.0.5:9190:x86-farm")
    assert (farm.host, farm.port, farm.key, farm.via_tracker) == ("10.0.0.5", 9190, "x86-farm",
                                                                  True)
    assert not farm.is_local and parse_tracker(" 127.0.0.1:9190:local ").is_local
    assert farm_from_env({}) is None and farm_from_env({TRACKER_ENV: "  "}) is None
    assert farm_from_env({TRACKER_ENV: "localhost:9190:k"}).host == "localhost"


@pytest.mark.parametrize("text", ["127.0.0.1:9190", "127.0.0.1:9190:k:x", "::k",
                                  "bad host:9190:k", "127.0.0.1:port:k", "127.0.0.1:9190:a b"])
def test_bad_tracker_variable_names_it(text):
    with pytest.raises(RemoteError) as info:
        parse_tracker(text)
    assert info.value.where == TRACKER_ENV and TRACKER_ENV in info.value.message


def test_server_pools_read_sizes_and_farm_from_the_environment():
    env = {TRACKER_ENV: "10.0.0.5:9190:x86", "PLAYGROUND_QUICK_WORKERS": "1",
           "PLAYGROUND_LONG_WORKERS": "3"}
    with service.server_pools(env) as pools:  # workers start lazily: nothing runs here
        assert pools.sizes == (1, 3) and pools.farm.label == "10.0.0.5:9190/x86"
    with service.server_pools({}) as pools:
        assert pools.farm is None and min(pools.sizes) >= 2


# -- a real tracker and two servers on loopback ---------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    with LocalRpcCluster(servers=2) as c:
        yield c


@pytest.fixture
def farm_pools(cluster, tmp_path):
    options = {"lock_dir": tmp_path / "lock", "memory_limit_mb": 4096}
    with WorkerPools(WorkerPool(1, num_threads=1, **options), WorkerPool(2, **options),
                     farm=cluster.remote(timeout_s=120)) as pools:
        yield pools


@pytest.mark.slow
def test_both_servers_get_work_and_timings_queue_on_this_machine(cluster, farm_pools, tmp_path):
    session = Session.new(CONV_RELU, STEPS)
    results, events = {}, {}

    def user(name: str) -> None:
        events[name] = []
        results[name] = [service.run(farm_pools, session, repeat=3, min_repeat_ms=10,
                                     on_event=events[name].append) for _ in range(2)]

    # Hold the measurement lock: both users' first timings must queue for it, since the
    # loopback servers share this machine's cores.
    with measurement_lock(tmp_path / "lock"):
        threads = [threading.Thread(target=user, args=(n,)) for n in ("a", "b")]
        for thread in threads:
            thread.start()
        for name in ("a", "b"):
            while not any(e["event"] == "queued" for e in events.get(name, [])):
                assert all(t.is_alive() for t in threads)
                time.sleep(0.05)
    for thread in threads:
        thread.join(300)
    values = [r.value for rs in results.values() for r in rs]
    assert all(r.status == "ok" for rs in results.values() for r in rs), results
    servers = {v["server"] for v in values}
    assert servers == {f"127.0.0.1:{s.port}" for s in cluster.servers}  # both got work
    for value in values:
        assert value["correct"] is True and value["median_ms"] > 0
        load = value["timing"]["load"]
        assert load["where"] == value["server"]  # measured as the server's load, not ours
        assert load["own_cores"] > 0 and isinstance(load["under_load"], bool)
    assert all(v["remote"] == cluster.remote().label for v in values)


@pytest.mark.slow
def test_validation_alone_stays_on_this_machine(farm_pools):
    result = service.run(farm_pools, Session.new(CONV_RELU, STEPS), measure=False)
    assert result.status == "ok" and result.value["correct"] is True
    assert "server" not in result.value and result.value["timing"] is None


@pytest.mark.slow
def test_tuning_runs_its_candidates_on_the_farm(cluster, farm_pools):
    result = tune(farm_pools, Session.new(CONV_RELU), trials=16, seed=0)
    assert result.status == "ok", (result.message, result.detail[-2000:])
    tuned = TuneResult.from_value(result.value)
    assert tuned.runner == cluster.remote().label
    assert tuned.trials > 0 and tuned.best_ms is not None


# -- a wrong kernel timed on the farm is refused as it is here ------------------------------


class InProcessPools:
    """The server's pools, with the worker's jobs run in this process (so that a test's patch
    of the compiler reaches them) and the farm kept: ``service.run`` sends a timing to the
    farm's servers exactly as with ``PLAYGROUND_TRACKER`` set."""

    def __init__(self, farm=None) -> None:
        self.farm = farm
        self.jobs: list[str] = []

    def run(self, job: str, payload: dict | None = None, **options) -> JobResult:
        from playground.worker.registry import load_jobs

        self.jobs.append(job)
        value = load_jobs()[job](payload or {})
        if value.get("correct") is False:
            return JobResult("wrong_result", value, value.get("message", ""), "", 0.0,
                             os.getpid())
        return JobResult("ok", value, "", "", 0.0, os.getpid())


def _conv1_init_short_by_one():
    """A TIR pass: the outermost loop that zeroes conv1's accumulators (and does not
    accumulate) runs one iteration fewer, so some accumulators start from whatever their
    memory held, as a tile one row short leaves them."""
    import tvm

    def shortened(stmt, done: list):
        if isinstance(stmt, tvm.tirx.SeqStmt):
            return tvm.tirx.SeqStmt([shortened(s, done) for s in stmt.seq])
        if isinstance(stmt, tvm.s_tir.SBlockRealize):
            b = stmt.block
            block = tvm.s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint,
                                     shortened(b.body, done), b.init, b.alloc_buffers,
                                     b.match_buffers, b.annotations)
            return tvm.s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, block)
        if isinstance(stmt, tvm.tirx.For):
            text, extent = stmt.script(), stmt.extent
            if not done and 'sblock("conv1_init")' in text and "conv1_update" not in text \
                    and isinstance(extent, tvm.tirx.IntImm) and int(extent) > 1:
                extent = tvm.tirx.const(int(extent) - 1, str(extent.ty))
                done.append(stmt.loop_var.name)
            return tvm.tirx.For(stmt.loop_var, stmt.min, extent, stmt.kind,
                                shortened(stmt.body, done), stmt.thread_binding,
                                stmt.annotations)
        return stmt

    @tvm.transform.module_pass(opt_level=0, name="test.Conv1InitShortByOne")
    def short(mod, ctx):
        done: list = []
        funcs = {g: f.with_body(shortened(f.body, done)) for g, f in mod.functions.items()}
        assert done, "no loop zeroes conv1's accumulators alone"
        return tvm.IRModule(funcs, attrs=mod.attrs)

    return short


@pytest.mark.slow
def test_a_wrong_search_candidate_timed_on_the_farm_is_refused_like_a_local_one(
        cluster, monkeypatch):
    """With a farm, a search candidate is validated and timed on the farm's servers; there
    it must be checked as the local ``run`` job checks it (a NaN-poisoned validation build on
    two input seeds, then the timing build once more), so a kernel that reads accumulators it
    never zeroed is refused on the farm as it is here, and never timed."""
    import tvm

    from playground.chain.spec import normalize_chain
    from playground.compile import lowering, tile_local
    from playground.jobs import kernel
    from playground.measure.machine import machine_facts
    from playground.templates.search import candidate_plans, measure_candidate

    chain = normalize_chain(CONV_RELU)
    label, plan, _ = next(candidate_plans(chain, machine_facts(), fused=False))
    farm = InProcessPools(cluster.remote(timeout_s=120))
    right = measure_candidate(farm, chain, label, plan, repeat=3, min_repeat_ms=5)
    assert right.status == "ok" and right.median_ms > 0, right.message
    assert farm.jobs == ["remote_run"]  # timed on the farm

    builds = []
    compile_module = lowering.compile_module

    def spied(mod, target_name="cpu", **options):
        builds.append(bool(options.get("validation")))
        return compile_module(mod, target_name, **options)

    def short_pipeline():
        # Made at every build, as TVM's are: a validation build poisons inside the pipeline.
        default, *finalize = tile_local.tile_local_pipeline()
        return tvm.transform.Sequential([_conv1_init_short_by_one(), default]), *finalize

    tvm.tirx.register_tir_pipeline("test_conv1_short", short_pipeline)
    monkeypatch.setattr(lowering, "pipeline_name", lambda tile_local=True: "test_conv1_short")
    monkeypatch.setattr(lowering, "compile_module", spied)
    monkeypatch.setattr(kernel, "compile_module", spied)
    monkeypatch.setattr(kernel, "_EXECUTABLES", OrderedDict())  # nothing built before reused
    for pools in (InProcessPools(), farm):
        wrong = measure_candidate(pools, chain, label, plan, repeat=3, min_repeat_ms=5)
        assert wrong.status == "wrong_result" and wrong.median_ms is None, wrong.message
        assert wrong.max_abs_error > 0
    assert farm.jobs == ["remote_run", "remote_run"]
    assert builds.count(True) == 2  # the farm, like the run job, checked a poisoned build
