"""Tests of :mod:`playground.measure.load`: the load a time was measured under, and the rule that
flags it.

The rule is tested on made-up numbers (fast). The probe is tested against processes that spin
on purpose; on a machine shared with others, only lower bounds on what the spinners used are
asserted, never that the rest of the machine was quiet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from playground.measure.load import UNDER_LOAD_CORES, Load, LoadProbe, server_pids, threads_of
from playground.measure.timing import Timing


def _load(**changes) -> Load:
    fields = {"cores": 2, "threads": 2, "seconds": 0.5, "busy_cores": 2.0, "own_cores": 2.0,
              "others_cores": 0.0, "loadavg_1m": 1.0, **changes}
    return Load(**fields)


@pytest.mark.parametrize(("changes", "under"), [
    ({}, False),                                             # alone on every core
    ({"others_cores": 0.2}, False),                          # a little noise
    ({"others_cores": 0.6, "own_cores": 1.4}, True),         # another process took cores
    ({"threads": 1, "others_cores": 1.0}, False),            # on the core the kernel left free
    ({"threads": 1, "others_cores": 1.5}, True),             # beyond it
    ({"cores": 64, "threads": 64, "others_cores": UNDER_LOAD_CORES + 0.05}, True),
    ({"loadavg_1m": 9.0}, False),                            # the lagging average alone: no
    # one 30 ms paired round: a tick of the counters reads as a third of a core (seen on a
    # quiet machine); within the counters' resolution, it is not load
    ({"seconds": 0.03, "others_cores": 0.33, "own_cores": 1.67}, False),
])
def test_under_load_rule(changes, under):
    load = _load(**changes)
    assert load.under_load is under
    assert load.contention_cores == pytest.approx(
        load.others_cores - max(0, load.cores - load.threads))
    assert ("under load" in load.summary()) is under


def test_short_rounds_are_judged_together():
    """Fourteen 30 ms rounds: each alone is within the counters' resolution; together they
    say whether another process really took a core (and one tick's noise stays noise)."""
    busy = [_load(seconds=0.03, others_cores=0.9, own_cores=1.1) for _ in range(14)]
    assert not any(x.under_load for x in busy)
    together = Load.combine(busy)
    assert together.seconds == pytest.approx(0.42)
    assert together.others_cores == pytest.approx(0.9) and together.under_load
    noise = [_load(seconds=0.03, others_cores=0.33 if i == 3 else 0.0) for i in range(14)]
    assert not Load.combine(noise).under_load
    assert Load.combine([]) is None
    assert Load.combine([None, busy[0]]) == busy[0]


def test_load_and_timing_round_trip():
    load = _load(others_cores=0.7, where="127.0.0.1:9091")
    data = load.to_dict()
    assert data["under_load"] is True
    assert Load.from_dict({**data, "from_a_newer_version": 1}) == load
    timing = Timing.from_samples([1.0, 2.0, 3.0], 4, load)
    assert timing.under_load is True
    assert Timing.from_dict(timing.to_dict()) == timing


def test_timing_records_without_load_still_read():
    old = {"median_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0, "p10_ms": 1.2, "p90_ms": 2.8,
           "spread": 0.8, "repeats": 3, "number": 4, "samples_ms": [1.0, 2.0, 3.0]}
    timing = Timing.from_dict(old)
    assert timing.load is None and timing.under_load is None
    assert Timing.from_dict(timing.to_dict()) == timing


SPIN = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n" \
       "while time.monotonic() < end: pass\n"


def _spinners(count: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)]) for _ in range(count)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def test_probe_sees_other_processes_and_its_own():
    spinner = _spinners(1, 30)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)  # let them start
        with LoadProbe([sleeper.pid], threads=1) as quiet:  # the spinner is "others"
            time.sleep(1.0)
        with LoadProbe([spinner[0].pid], threads=1, where="spinner") as own:
            time.sleep(1.0)
    finally:
        _stop([*spinner, sleeper])
    assert quiet.load.others_cores >= 0.25 and quiet.load.own_cores < 0.2
    assert own.load.own_cores >= 0.25 and own.load.where == "spinner"
    for load in (quiet.load, own.load):
        assert load.cores >= 1 and load.seconds >= 0.9 and load.loadavg_1m >= 0
        assert load.busy_cores == pytest.approx(load.own_cores + load.others_cores)


def test_a_child_that_ends_inside_the_probe_is_still_own(tmp_path):
    """A job's short-lived subprocess (a compiler, a linker) that starts and ends while the
    probe runs is the probed tree's work, not another user's: counted via its reaped times.

    The child spins 0.6 s of CPU time (not of wall time: on a loaded machine it gets less
    than a core), and the probe ends only after the parent has reaped it."""
    spin_cpu = ("import time\nend = time.process_time() + 0.6\n"
                "while time.process_time() < end: pass\n")
    done = tmp_path / "reaped"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import pathlib, subprocess, sys, time; time.sleep(0.3); "
                               f"subprocess.run([sys.executable, '-c', {spin_cpu!r}]); "
                               f"pathlib.Path({str(done)!r}).touch(); time.sleep(60)"])
    try:
        time.sleep(0.1)
        with LoadProbe([parent.pid], threads=1, descendants=True) as probe:
            deadline = time.monotonic() + 60
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        _stop([parent])
    assert done.exists(), "the child did not finish within 60 s"
    assert probe.load.own_cores * probe.load.seconds >= 0.5, probe.load


def test_server_pids_and_threads_of_a_listener():
    code = ("import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
            "print(s.getsockname()[1], flush=True)\ntime.sleep(30)\n")
    env = {**os.environ, "TVM_NUM_THREADS": "3"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        port = int(proc.stdout.readline())
        assert server_pids(port) == [proc.pid]
        assert threads_of(proc.pid) == 3
    finally:
        _stop([proc])
    assert threads_of(proc.pid) is None


@pytest.mark.slow
def test_a_time_measured_while_the_cores_spin_is_flagged():
    tvm = pytest.importorskip("tvm")
    import numpy as np
    from tvm import te

    from playground.measure.timing import measure

    n = 1 << 16
    a = te.placeholder((n,), name="A")
    c = te.compute((n,), lambda i: a[i] * 2.0, name="C")
    ex = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, c])}), target="llvm")
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ones(n, "float32"), dev), tvm.runtime.empty((n,), "float32",
                                                                              dev)]
    alone = measure(ex, args, dev, repeat=5, min_repeat_ms=20)
    assert alone.load is not None and alone.load.where == "local"
    spinners = _spinners(os.cpu_count() or 1, 30)
    try:
        time.sleep(0.2)
        busy = measure(ex, args, dev, repeat=5, min_repeat_ms=100)
    finally:
        _stop(spinners)
    assert busy.load.others_cores >= 0.5
    assert busy.under_load is True
