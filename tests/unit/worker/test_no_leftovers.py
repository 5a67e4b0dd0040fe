"""Killing the server (``kill -9``) while a worker runs leaves no process behind (issue 13).

A pool is started in a subprocess standing in for the web server; it starts a job whose
worker has children of its own (MetaSchedule's ``tvm.exec.popen_worker`` builders and runners,
or a sweep point's run), and is then killed with SIGKILL, which no code of the server can
catch. Every process that descended from it must be gone a few seconds later. A zombie (dead,
waiting to be reaped by whoever adopted it) counts as gone: it runs nothing and holds no memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import paths
import psutil
import pytest
from helpers import CONV_RELU

from playground.chain.spec import normalize_chain

ROOT = paths.ROOT
#: The coarse liveness bound of these tests: the survivors must be gone within it.
GONE_WITHIN_S = 10.0

SERVER = textwrap.dedent("""
    import json, sys
    from playground.worker.pools import WorkerPools
    job, payload, cap = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    pools = WorkerPools.sized(2, memory_limit_mb=cap, fault_jobs=True,
                              lock_dir=sys.argv[4])
    print("ready", flush=True)
    pools.run(job, payload, timeout_s=600, exclusive=True)
""")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_server_during(job: str, payload: dict, tmp_path: Path,
                        wanted) -> tuple[list[psutil.Process], list[str]]:
    """Start a server running ``job``; once ``wanted(descendants)`` holds, SIGKILL it.

    Returns the descendants seen just before the kill (to check they are gone) and their
    command lines, read before the kill (after it they may be gone already).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, job, json.dumps(payload), "6144", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    seen: list[psutil.Process] = []
    try:
        assert server.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 240
        while not wanted(seen):
            assert server.poll() is None, "the server exited by itself"
            assert time.monotonic() < deadline, f"never saw the job's processes: {seen}"
            time.sleep(0.2)
            seen = _descendants(server.pid)
        lines = _cmdlines(seen)
        server.kill()
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
    return seen, lines


def _assert_all_gone(procs: list[psutil.Process]) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for p in procs:
        if _running(p):
            try:
                left.append(f"{p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
    assert not left, "left behind:\n" + "\n".join(left)


def _cmdlines(procs: list[psutil.Process]) -> list[str]:
    lines = []
    for p in procs:
        try:
            lines.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return lines


@pytest.mark.slow
def test_kill_9_during_tuning_leaves_no_popen_worker(tmp_path):
    payload = {"chain": normalize_chain(CONV_RELU), "trials": 64, "seed": 0}

    def popen_workers_running(seen: list[psutil.Process]) -> bool:
        """A popen_worker busy building or running (idle ones would exit at EOF anyway)."""
        for proc in seen:
            try:
                busy = proc.cpu_times().user > 1.0
                if busy and "tvm.exec.popen_worker" in " ".join(proc.cmdline()):
                    return True
            except psutil.NoSuchProcess:
                continue
        return False

    seen, lines = _kill_server_during("tune", payload, tmp_path, popen_workers_running)
    assert any("playground.worker.main" in line for line in lines)
    _assert_all_gone(seen)


@pytest.mark.slow
def test_kill_9_during_a_job_with_grandchildren_leaves_nothing(tmp_path):
    """The fault job ``spawn`` starts real ``popen_worker`` children busy for a minute."""
    def grandchildren(seen: list[psutil.Process]) -> bool:
        return sum("tvm.exec.popen_worker" in line for line in _cmdlines(seen)) >= 2

    seen, lines = _kill_server_during("spawn", {"children": 2, "seconds": 60}, tmp_path,
                                      grandchildren)
    assert sum("tvm.exec.popen_worker" in line for line in lines) >= 2
    _assert_all_gone(seen)
