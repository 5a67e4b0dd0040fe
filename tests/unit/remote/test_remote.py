"""Tests of :mod:`playground.remote.device`: measuring through a real TVM RPC tracker on loopback.

The fast tests check the device's arguments and a tracker that is not there. The slow ones start
a real tracker and servers (each in its own process group), measure through them with the
``remote_run`` job in a :class:`~playground.worker.pool.WorkerPool` (never in this process), kill a
server mid-run, and check that no process of any group is left behind.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
from helpers import CONV_RELU

from playground import service
from playground.remote.cluster import LocalRpcCluster, free_port
from playground.remote.device import (
    RemoteDevice,
    RemoteError,
    open_session,
    tracker_keys,
    tracker_summary,
)
from playground.remote.run import remote_run
from playground.schedule.session import Session
from playground.worker.pool import WorkerPool

STEPS = [{"primitive": "split", "args": {"block": "conv1", "loop": "h", "factors": [None, 4]}},
         {"primitive": "parallel", "args": {"block": "conv1", "loop": "k"}}]

BAD_DEVICES = [
    ({"host": ""}, "remote.host"),
    ({"host": "bad host"}, "remote.host"),
    ({"host": "http://x"}, "remote.host"),
    ({"host": "-leading.example"}, "remote.host"),
    ({"host": "a" * 64 + ".example"}, "remote.host"),
    ({"host": "256.1.1.1"}, "remote.host"),
    ({"host": "1.2.3"}, "remote.host"),
    ({"host": "::1"}, "remote.host"),
    ({"host": "x;rm -rf /"}, "remote.host"),
    ({"host": 127001}, "remote.host"),
    ({"port": 0}, "remote.port"),
    ({"port": 65536}, "remote.port"),
    ({"port": -1}, "remote.port"),
    ({"port": True}, "remote.port"),
    ({"port": 9190.0}, "remote.port"),
    ({"port": "9190x"}, "remote.port"),
    ({"port": "99999999999"}, "remote.port"),
    ({"key": ""}, "remote.key"),
    ({"key": "a" * 65}, "remote.key"),
    ({"key": "no spaces"}, "remote.key"),
    ({"key": "key/../x"}, "remote.key"),
    ({"key": None}, "remote.key"),
    ({"timeout_s": 0}, "remote.timeout_s"),
    ({"timeout_s": "10"}, "remote.timeout_s"),
    ({"timeout_s": float("nan")}, "remote.timeout_s"),
    ({"via_tracker": "yes"}, "remote.via_tracker"),
    ({"target": "tpu"}, "remote.target"),
]


def _device(**changes) -> RemoteDevice:
    fields = {"host": "127.0.0.1", "port": 9190, "key": "local", **changes}
    return RemoteDevice.from_dict(fields)


@pytest.mark.parametrize(("changes", "where"), BAD_DEVICES)
def test_bad_device_argument_names_the_field(changes, where):
    with pytest.raises(RemoteError) as info:
        _device(**changes)
    assert info.value.where == where
    assert where.split(".")[1] in str(info.value)


def test_device_round_trip_and_label():
    remote = RemoteDevice("tracker.lab-1.example", "9190", "rk3399_v2", timeout_s=3)
    assert remote.port == 9190
    assert remote.label == "tracker.lab-1.example:9190/rk3399_v2"
    assert not remote.is_local
    assert RemoteDevice.from_dict(remote.to_dict()) == remote
    assert RemoteDevice("127.0.0.1", 1, "k").is_local
    with pytest.raises(RemoteError, match="unknown field 'command'"):
        RemoteDevice.from_dict({**remote.to_dict(), "command": "ls"})
    with pytest.raises(RemoteError, match="missing field 'key'"):
        RemoteDevice.from_dict({"host": "h", "port": 1})


def test_unreachable_tracker_fails_at_once():
    port = free_port()  # nobody listens there
    start = time.monotonic()
    with pytest.raises(RemoteError, match=r"RPC tracker 127\.0\.0\.1:\d+ is unreachable: "
                                          r"connection refused") as info:
        open_session(RemoteDevice("127.0.0.1", port, "local", timeout_s=30))
    assert time.monotonic() - start < 2.0
    assert info.value.where == "remote.host"
    with pytest.raises(RemoteError, match="unreachable"):
        tracker_summary("127.0.0.1", port)


# -- a real tracker and servers ------------------------------------------------------------------

def _groups_alive(pgids: set[int]) -> list[psutil.Process]:
    """Live processes (zombies excluded) in any of the process groups ``pgids``."""
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) in pgids and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


@pytest.fixture(scope="module")
def cluster():
    with LocalRpcCluster(servers=2, key="local", num_threads=1) as c:
        yield c
    pgids = {p.pid for p in c.processes}
    assert not _groups_alive(pgids), "RPC processes left behind"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with WorkerPool(1, num_threads=1, lock_dir=tmp_path_factory.mktemp("lock")) as p:
        yield p


@pytest.fixture(scope="module")
def session():
    return Session.new(CONV_RELU, STEPS)


def _wait_free(cluster: LocalRpcCluster, key: str, count: int, timeout_s: float = 30.0) -> None:
    """Wait until ``count`` servers of ``key`` are free again (a server re-registers after a
    session ends)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tracker_keys(cluster.host, cluster.port).get(key, {}).get("free", 0) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} servers of {key!r} not free: {cluster.summary()}")


@pytest.mark.slow
def test_cluster_registers_servers_in_their_own_groups(cluster):
    keys = tracker_keys(cluster.host, cluster.port)
    assert keys["local"]["servers"] == 2
    for proc in cluster.processes:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)


@pytest.mark.slow
def test_measure_through_the_tracker_in_a_worker(cluster, pool, session):
    result = service.remote_run(pool, session, cluster.host, cluster.port, "local",
                                repeat=5, min_repeat_ms=10)
    assert result.status == "ok", (result.message, result.detail)
    assert result.worker_pid != os.getpid()
    value = result.value
    assert value["correct"] and value["nonfinite"] == 0
    assert value["remote"] == f"127.0.0.1:{cluster.port}/local"
    assert value["server"] in {f"127.0.0.1:{s.port}" for s in cluster.servers}
    assert value["attempts"] == 1 and value["lost"] == []
    assert value["timing"]["repeats"] == 5 and value["median_ms"] > 0
    assert value["gflops"] > 0 and value["flop"] > 0


@pytest.mark.slow
def test_validation_only_needs_no_timing(cluster, session):
    _wait_free(cluster, "local", 2)
    value = remote_run(session.chain, session.active, cluster.remote(), measure=False)
    assert value["correct"] and value["timing"] is None and value["gflops"] is None


@pytest.mark.slow
def test_server_killed_mid_run_retries_on_the_other(cluster, pool, session):
    _wait_free(cluster, "local", 2)
    results = []
    run = threading.Thread(target=lambda: results.append(service.remote_run(
        pool, session, cluster.host, cluster.port, "local", repeat=20, min_repeat_ms=100)))
    run.start()
    victim = cluster.wait_busy(timeout_s=60)
    time.sleep(0.3)
    victim.kill()
    run.join(timeout=120)
    assert not run.is_alive()
    result = results[0]
    assert result.status == "ok", (result.message, result.detail)
    value = result.value
    assert value["attempts"] == 2 and value["correct"]
    assert value["server"] != f"127.0.0.1:{victim.port}"
    assert value["lost"][0].startswith(f"127.0.0.1:{victim.port}: ")
    assert not _groups_alive({victim.pid})
    cluster.add_server()  # back to two live servers for the tests after this one


@pytest.mark.slow
def test_only_server_killed_mid_run_is_a_clear_error(cluster, session):
    solo = cluster.add_server("solo")
    errors = []

    def run() -> None:
        try:
            remote_run(session.chain, session.active, cluster.remote("solo", timeout_s=2),
                       repeat=20, min_repeat_ms=100)
        except RemoteError as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    assert cluster.wait_busy(timeout_s=60) is solo
    time.sleep(0.3)
    solo.kill()
    thread.join(timeout=60)
    assert not thread.is_alive() and errors
    message = str(errors[0])
    assert message.startswith("RPC server for key 'solo' went away during the run: "
                              f"127.0.0.1:{solo.port}: ")
    assert "no RPC server with key 'solo' became free" in message


@pytest.mark.slow
def test_unknown_key_fails_within_the_timeout(cluster, pool, session):
    start = time.monotonic()
    result = service.remote_run(pool, session, cluster.host, cluster.port, "nokey",
                                timeout_s=2)
    elapsed = time.monotonic() - start
    assert result.status == "error"
    assert "no RPC server with key 'nokey' became free" in result.message
    assert "'local': " in result.message  # it lists the keys the tracker has
    assert result.where == "remote.key"
    assert 2.0 <= elapsed < 15.0


@pytest.mark.slow
def test_bad_tracker_address_fails_quickly(pool, session):
    start = time.monotonic()
    result = service.remote_run(pool, session, "127.0.0.1", free_port(), "local", timeout_s=30)
    assert result.status == "error"
    assert "unreachable: connection refused" in result.message
    assert result.where == "remote.host"
    assert time.monotonic() - start < 10.0  # worker start-up included; no 30 s wait


@pytest.mark.slow
def test_bad_arguments_never_reach_a_worker(pool, session):
    with pytest.raises(RemoteError, match="port must be an integer"):
        service.remote_run(pool, session, "127.0.0.1", 70000, "local")


@pytest.mark.slow
def test_direct_connection_with_a_wrong_key_is_refused(cluster):
    server = cluster.servers[-1]
    remote = RemoteDevice("127.0.0.1", server.port, "local", via_tracker=False)
    with pytest.raises(RemoteError, match="refused the session"):
        open_session(remote)  # a server behind a tracker only accepts the tracker's match key


@pytest.mark.slow
def test_cluster_cleanup_leaves_no_process(session):
    with LocalRpcCluster(servers=1, key="cleanup", num_threads=1) as c:
        remote_run(session.chain, session.active, c.remote(), measure=False)
        pgids = {p.pid for p in c.processes}
        descendants = [child.pid for p in c.processes
                       for child in psutil.Process(p.pid).children(recursive=True)]
        assert descendants  # the servers' and the tracker's popen_worker children
    assert not _groups_alive(pgids)
    assert not [pid for pid in descendants if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
