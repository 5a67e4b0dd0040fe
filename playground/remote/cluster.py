""":class:`LocalRpcCluster`: a real TVM RPC tracker and servers on loopback, each in its own
process group, for the tests and for a demo in the UI.

Servers are started as process groups and killed as groups: SIGTERM to a server alone leaves
its ``popen_worker`` children behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from playground.errors import PlaygroundError
from playground.remote.device import (
    RemoteDevice,
    RemoteError,
    check_host,
    check_key,
    tracker_summary,
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RpcProcess:
    """A tracker or server started by :class:`LocalRpcCluster`; its pid is its process group."""

    role: str  # "tracker" or "server"
    port: int
    key: str
    popen: subprocess.Popen = field(repr=False)
    log_path: str = field(repr=False, default="")

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def kill(self, wait_s: float = 5.0) -> None:
        """SIGKILL the whole process group (the server's ``popen_worker`` children too), reap
        the leader, and wait up to ``wait_s`` until no member is left (killed processes take
        a moment to exit; the others are reaped by whoever adopted them)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.popen.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)


class LocalRpcCluster:
    """A real TVM RPC tracker and servers on loopback, each in its own process group.

    Ports are chosen free at start. ``with LocalRpcCluster(servers=2) as cluster:`` starts the
    tracker and the servers and waits until every server is registered; leaving the block
    kills every process group (SIGTERM would leave the servers' ``popen_worker`` children).

    Parameters
    ----------
    servers
        Number of servers with ``key``.
    key
        The servers' device key.
    host
        Address everything listens on.
    num_threads
        ``TVM_NUM_THREADS`` of the servers (default: all cores).
    start_timeout_s
        How long a process may take to start and register.
    """

    def __init__(self, servers: int = 2, key: str = "local", *, host: str = "127.0.0.1",
                 num_threads: int | None = None, start_timeout_s: float = 60.0) -> None:
        self.key = check_key(key)
        self.host = check_host(host)
        self.initial_servers = int(servers)
        self.num_threads = num_threads or os.cpu_count() or 1
        self.start_timeout_s = start_timeout_s
        self.tracker: RpcProcess | None = None
        self.servers: list[RpcProcess] = []
        self._logs = tempfile.TemporaryDirectory(prefix="playground-rpc-")

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> LocalRpcCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the tracker, then the servers, and wait until all are registered."""
        self.tracker = self._spawn_with_free_port("tracker", self.key, self._wait_tracker)
        self.add_servers(self.initial_servers)

    def close(self) -> None:
        """Kill every process group (servers first) and remove the logs; safe to call twice."""
        for proc in [*self.servers, *([self.tracker] if self.tracker else [])]:
            proc.kill()
        self._logs.cleanup()

    @property
    def processes(self) -> list[RpcProcess]:
        """The tracker and every server started (dead ones included)."""
        return [*([self.tracker] if self.tracker else []), *self.servers]

    @property
    def port(self) -> int:
        """The tracker's port."""
        if self.tracker is None:
            raise PlaygroundError("LocalRpcCluster: not started")
        return self.tracker.port

    def remote(self, key: str | None = None, **options: Any) -> RemoteDevice:
        """A :class:`RemoteDevice` on this cluster's tracker."""
        return RemoteDevice(self.host, self.port, key or self.key, **options)

    def summary(self) -> dict:
        """The tracker's summary (see :func:`tracker_summary`)."""
        return tracker_summary(self.host, self.port)

    # -- servers -------------------------------------------------------------------------------

    def add_server(self, key: str | None = None) -> RpcProcess:
        """Start one more server with ``key`` (default the cluster's) and wait until registered."""
        return self.add_servers(1, key)[0]

    def add_servers(self, count: int, key: str | None = None) -> list[RpcProcess]:
        """Start ``count`` servers at once (each imports TVM: ~4 s) and wait for all of them."""
        key = check_key(key or self.key)
        started = []
        for _ in range(5):  # a port taken between choosing and binding: start that one again
            pending = [self._spawn("server", free_port(self.host), key)
                       for _ in range(count - len(started))]
            self.servers.extend(pending)
            for server in pending:
                try:
                    self._wait_registered(server)
                    started.append(server)
                except PlaygroundError as e:
                    server.kill()
                    if "exited" not in e.message:
                        raise
            if len(started) == count:
                return started
        raise PlaygroundError(f"LocalRpcCluster: could not start {count} servers")

    def busy_servers(self) -> list[RpcProcess]:
        """Live servers holding a session now (a client connected to their port)."""
        import psutil

        busy = []
        for server in self.servers:
            if not server.alive:
                continue
            try:
                procs = [psutil.Process(server.pid)]
                procs += procs[0].children(recursive=True)
                conns = [c for p in procs for c in p.net_connections(kind="tcp")]
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == server.port
                   for c in conns):
                busy.append(server)
        return busy

    def wait_busy(self, timeout_s: float = 30.0) -> RpcProcess:
        """The first server seen holding a session, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = self.busy_servers()
            if busy:
                return busy[0]
            time.sleep(0.05)
        raise PlaygroundError(f"LocalRpcCluster: no server got a session within {timeout_s:g} s")

    # -- helpers -------------------------------------------------------------------------------

    def _spawn_with_free_port(self, role: str, key: str, wait) -> RpcProcess:
        """Start a process on a free port; try another port if it was taken meanwhile."""
        last = ""
        for _ in range(5):
            proc = self._spawn(role, free_port(self.host), key)
            try:
                wait(proc)
                return proc
            except PlaygroundError as e:
                proc.kill()
                last = e.message
                if "exited" not in last:
                    raise
        raise PlaygroundError(f"LocalRpcCluster: could not start the {role}: {last}")

    def _spawn(self, role: str, port: int, key: str) -> RpcProcess:
        log_path = os.path.join(self._logs.name, f"{role}-{port}.log")
        args = [sys.executable, "-m", f"tvm.exec.rpc_{role}", "--host", self.host,
                "--port", str(port), "--port-end", str(port + 1)]
        if role == "server":
            args += ["--tracker", f"{self.host}:{self.port}", "--key", key]
        env = {**os.environ, "TVM_NUM_THREADS": str(self.num_threads)}
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return RpcProcess(role, port, key, popen, log_path)

    def _poll(self, proc: RpcProcess, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not proc.alive:
                raise PlaygroundError(f"LocalRpcCluster: the {proc.role} on port {proc.port} "
                                      f"exited with code {proc.popen.returncode}",
                                      detail=proc.log_tail())
            try:
                if ready():
                    return
            except RemoteError:
                pass
            time.sleep(0.1)
        raise PlaygroundError(f"LocalRpcCluster: the {proc.role} on port {proc.port} was not "
                              f"{what} within {self.start_timeout_s:g} s", detail=proc.log_tail())

    def _wait_tracker(self, tracker: RpcProcess) -> None:
        self.tracker = tracker
        self._poll(tracker, lambda: tracker_summary(self.host, tracker.port, 1.0) is not None,
                   "answering")

    def _wait_registered(self, server: RpcProcess) -> None:
        def registered() -> bool:
            summary = tracker_summary(self.host, self.port, 1.0)
            ports = {int(s["addr"][1]) for s in summary.get("server_info", [])
                     if s.get("key") == f"server:{server.key}"}
            free = summary.get("queue_info", {}).get(server.key, {}).get("free", 0)
            return server.port in ports and free >= 1

        self._poll(server, registered, "registered with the tracker")
