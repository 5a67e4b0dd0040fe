"""Tests of the measurement farm (:mod:`playground.remote.farm`): ``PLAYGROUND_TRACKER`` sends
every timing of a server to a TVM RPC tracker's servers.

The fast tests read the variable and build the server's pools. The slow ones start a real
tracker with two servers on loopback (:class:`~playground.remote.cluster.LocalRpcCluster`) and
check that both servers get work, that the timings still queue on this machine's measurement
lock (loopback servers share its cores), and that each time carries the load of the server
that measured it. The server process group of the cluster is killed at the end.
"""

from __future__ import annotations

import threading
import time

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
