"""Remote devices through TVM RPC: validate, build here, run and time on a tracker's server.

A :class:`RemoteDevice` names a TVM RPC tracker (or one server) and a device key. The worker job
``remote_run`` (:mod:`playground.remote_jobs`) calls :func:`remote_run`, which compiles the
scheduled chain here, exports it as a shared library, asks the tracker for a free server with
the key, uploads and loads the library there, runs it once on a NaN-poisoned output, compares
the output with the numpy reference computed here, and times it on the server with
:func:`playground.timing.measure` (TVM's ``time_evaluator`` runs on the remote device itself)::

    remote = RemoteDevice("127.0.0.1", 9190, "local")
    result = remote_run(chain, steps, remote, repeat=10)   # inside a worker only
    result["median_ms"], result["server"]                  # e.g. 0.11, "127.0.0.1:9091"

When the server dies during the run, the run is retried once on the server the tracker hands
out next; every failure reaches the caller as a :class:`RemoteError` naming the tracker, the key
and what happened. The tracker protocol is spoken here directly (not with
``tvm.rpc.connect_tracker``) so that an unreachable tracker fails at once and a key that no
server offers fails after ``timeout_s`` instead of blocking forever.

:class:`LocalRpcCluster` starts a real tracker and servers on loopback, each in its own process
group, for the tests and for a demo in the UI.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any

import numpy as np

from playground.errors import PlaygroundError

KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: Messages of TVM's RPC client that mean the connection to the server is gone.
_LOST = ("kShutdown", "Socket", "Broken pipe", "Connection reset", "connection reset",
         "Connection refused", "EOF", "closed")
_LOCAL_HOSTS = ("localhost", "127.0.0.1")


class RemoteError(PlaygroundError):
    """A remote device that cannot be reached, has no free server, or went away mid-run."""


def _first_line(exc: BaseException | str) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "[bt]")):
            return line if len(line) <= 300 else line[:297] + "..."
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


# -- the device ----------------------------------------------------------------------------------

def check_host(host: Any) -> str:
    """A hostname (RFC 1123 labels) or a dotted IPv4 address; anything else is refused."""
    if not isinstance(host, str) or not 1 <= len(host) <= 253:
        raise RemoteError(f"remote: host must be a hostname or an IPv4 address, got {host!r}",
                          where="remote.host")
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise RemoteError(f"remote: host {host!r} is not a valid IPv4 address",
                              where="remote.host") from None
        return host
    if not all(_LABEL_RE.match(label) for label in labels):
        raise RemoteError(f"remote: host {host!r} is not a valid hostname (letters, digits, "
                          "'-' and dots only) or IPv4 address", where="remote.host")
    return host


def check_port(port: Any) -> int:
    """An integer 1..65535 (an int, or a string of decimal digits as from a query string)."""
    value = None
    if isinstance(port, int) and not isinstance(port, bool):
        value = port
    elif isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
        value = int(port)
    if value is None or not 1 <= value <= 65535:
        raise RemoteError(f"remote: port must be an integer from 1 to 65535, got {port!r}",
                          where="remote.port")
    return value


def check_key(key: Any) -> str:
    """A device key: 1 to 64 of ``A-Z a-z 0-9 _ . -``."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise RemoteError(f"remote: key must be 1 to 64 characters of letters, digits, '_', '.' "
                          f"and '-', got {key!r}", where="remote.key")
    return key


def _check_seconds(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise RemoteError(f"remote: {name} must be a number of seconds from {low:g} to "
                          f"{high:g}, got {value!r}", where=f"remote.{name}")
    return float(value)


@dataclass(frozen=True)
class RemoteDevice:
    """A device reached through TVM RPC; the arguments are checked on construction.

    Parameters
    ----------
    host, port
        The tracker (``via_tracker``) or the RPC server itself: a hostname or IPv4 address and a
        port 1..65535.
    key
        The device key the servers registered with (``--key``).
    via_tracker
        Ask the tracker at ``host:port`` for a free server; ``False`` connects to the server.
    timeout_s
        Seconds to wait for a free server (or a connection), 0.1..600.
    session_timeout_s
        Seconds after which the server ends a session (a hung kernel must not hold it forever).
    target
        The target name to compile for (:data:`playground.targets.TARGETS`); ``"cpu"`` is the
        host CPU of *this* machine, right for a server on the same kind of machine.

    Raises
    ------
    RemoteError
        Naming the field (``where="remote.<field>"``) and the value.
    """

    host: str
    port: int
    key: str
    _: KW_ONLY
    via_tracker: bool = True
    timeout_s: float = 10.0
    session_timeout_s: float = 300.0
    target: str = "cpu"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "host", check_host(self.host))
        set_(self, "port", check_port(self.port))
        set_(self, "key", check_key(self.key))
        if not isinstance(self.via_tracker, bool):
            raise RemoteError(f"remote: via_tracker must be true or false, got "
                              f"{self.via_tracker!r}", where="remote.via_tracker")
        set_(self, "timeout_s", _check_seconds("timeout_s", self.timeout_s, 0.1, 600))
        set_(self, "session_timeout_s",
             _check_seconds("session_timeout_s", self.session_timeout_s, 1, 3600))
        from playground.targets import TARGETS

        if self.target not in TARGETS:
            raise RemoteError(f"remote: unknown target {self.target!r} (choose one of "
                              f"{', '.join(TARGETS)})", where="remote.target")

    @property
    def label(self) -> str:
        """``host:port/key``, as results and messages show it."""
        return f"{self.host}:{self.port}/{self.key}"

    @property
    def is_local(self) -> bool:
        """True when the device is this machine (its timings then share our CPU)."""
        return self.host in _LOCAL_HOSTS or self.host.startswith("127.")

    def to_dict(self) -> dict:
        """Plain JSON-able fields (the worker job's payload)."""
        return asdict(self)

    @staticmethod
    def from_dict(raw: Any) -> RemoteDevice:
        """Inverse of :meth:`to_dict`, checking every field again."""
        if not isinstance(raw, dict):
            raise RemoteError(f"remote: expected an object with host, port and key, got {raw!r}",
                              where="remote")
        allowed = {"host", "port", "key", "via_tracker", "timeout_s", "session_timeout_s",
                   "target"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise RemoteError(f"remote: unknown field {unknown[0]!r}", where=f"remote.{unknown[0]}")
        missing = [k for k in ("host", "port", "key") if k not in raw]
        if missing:
            raise RemoteError(f"remote: missing field {missing[0]!r}", where=f"remote.{missing[0]}")
        return RemoteDevice(raw["host"], raw["port"], raw["key"],
                            **{k: v for k, v in raw.items() if k not in ("host", "port", "key")})


# -- the tracker protocol ------------------------------------------------------------------------

def _tracker_socket(host: str, port: int, timeout_s: float) -> socket.socket:
    """A connection to the tracker that has passed the magic-number handshake."""
    from tvm.rpc import base

    where = f"RPC tracker {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        raise RemoteError(f"{where} did not answer within {timeout_s:g} s",
                          where="remote.host") from None
    except OSError as e:
        reason = e.strerror or _first_line(e)
        raise RemoteError(f"{where} is unreachable: {reason.lower()}",
                          where="remote.host") from None
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except OSError as e:
        sock.close()
        raise RemoteError(f"{where} closed the connection during the handshake: "
                          f"{_first_line(e)} (is it an RPC tracker?)",
                          where="remote.port") from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise RemoteError(f"{where} is not an RPC tracker (wrong handshake)", where="remote.port")
    return sock


def tracker_summary(host: str, port: int, timeout_s: float = 5.0) -> dict:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``.

    ``server_info`` lists every registered server as ``{"key": "server:<key>", "addr": [host,
    port]}``, busy or not; ``free`` counts the servers of a key waiting for a session.

    Raises
    ------
    RemoteError
        When the tracker cannot be reached or does not answer within ``timeout_s``.
    """
    from tvm.rpc import base

    host, port = check_host(host), check_port(port)
    sock = _tracker_socket(host, port, timeout_s)
    try:
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        value = base.recvjson(sock)
    except OSError as e:
        raise RemoteError(f"RPC tracker {host}:{port} failed to send its summary: "
                          f"{_first_line(e)}", where="remote.host") from None
    finally:
        sock.close()
    if not (isinstance(value, list) and value and value[0] == base.TrackerCode.SUCCESS):
        raise RemoteError(f"RPC tracker {host}:{port} answered {value!r} to a summary request")
    return value[1]


def tracker_keys(host: str, port: int, timeout_s: float = 5.0) -> dict[str, dict]:
    """Per device key: ``{"servers": n, "free": n, "pending": n}`` (for a key picker in the UI)."""
    summary = tracker_summary(host, port, timeout_s)
    keys: dict[str, dict] = {}
    for info in summary.get("server_info", []):
        key = str(info.get("key", "")).removeprefix("server:")
        keys.setdefault(key, {"servers": 0, "free": 0, "pending": 0})["servers"] += 1
    for key, queue in summary.get("queue_info", {}).items():
        entry = keys.setdefault(key, {"servers": 0, "free": 0, "pending": 0})
        entry["free"], entry["pending"] = int(queue.get("free", 0)), int(queue.get("pending", 0))
    return keys


def _describe_keys(remote: RemoteDevice) -> str:
    try:
        keys = tracker_keys(remote.host, remote.port, 2.0)
    except RemoteError:
        return ""
    keys = {k: v for k, v in keys.items() if v["servers"]}
    if not keys:
        return " (no server is registered with the tracker)"
    listed = ", ".join(f"{k!r}: {v['free']} of {v['servers']} free"
                       for k, v in sorted(keys.items()))
    return f" (the tracker has {listed})"


def _request(remote: RemoteDevice, deadline: float) -> tuple[str, int, str]:
    """Ask the tracker for a free server of ``remote.key``: ``(host, port, matchkey)``."""
    from tvm.rpc import base

    sock = _tracker_socket(remote.host, remote.port, max(0.1, deadline - time.monotonic()))
    try:
        base.sendjson(sock, [base.TrackerCode.REQUEST, remote.key, "", 1])
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        value = base.recvjson(sock)
    except TimeoutError:
        value = None
    except OSError as e:
        raise RemoteError(f"RPC tracker {remote.host}:{remote.port} dropped the request for key "
                          f"{remote.key!r}: {_first_line(e)}", where="remote.host") from None
    finally:
        sock.close()  # the tracker then skips this request when a server frees up
    if value is None:
        raise RemoteError(f"no RPC server with key {remote.key!r} became free on tracker "
                          f"{remote.host}:{remote.port} within {remote.timeout_s:g} s"
                          f"{_describe_keys(remote)}", where="remote.key")
    if not (isinstance(value, list) and len(value) == 2 and value[0] == base.TrackerCode.SUCCESS):
        raise RemoteError(f"RPC tracker {remote.host}:{remote.port} answered {value!r}")
    host, port, matchkey = value[1]
    return str(host), int(port), str(matchkey)


def open_session(remote: RemoteDevice) -> tuple[Any, str]:
    """An RPC session on a free server for ``remote``: ``(tvm.rpc.RPCSession, "host:port")``.

    Through a tracker, a server that refuses the connection (it died after registering) is
    skipped and the tracker asked again until ``timeout_s`` has passed.

    Raises
    ------
    RemoteError
        Tracker unreachable, no free server for the key within ``timeout_s``, server refused.
    """
    import tvm.rpc

    deadline = time.monotonic() + remote.timeout_s
    session_timeout = remote.session_timeout_s
    if not remote.via_tracker:
        try:
            sess = tvm.rpc.connect(remote.host, remote.port, remote.key, session_timeout)
        except (RuntimeError, OSError) as e:
            raise RemoteError(f"RPC server {remote.host}:{remote.port} (key {remote.key!r}) "
                              f"refused the session: {_first_line(e)}", where="remote.host",
                              detail=str(e)) from None
        return sess, f"{remote.host}:{remote.port}"
    while True:
        host, port, matchkey = _request(remote, deadline)
        try:
            return tvm.rpc.connect(host, port, matchkey, session_timeout), f"{host}:{port}"
        except (RuntimeError, OSError) as e:
            if time.monotonic() >= deadline:
                raise RemoteError(f"RPC server {host}:{port} for key {remote.key!r} refused the "
                                  f"session: {_first_line(e)}", where="remote.key",
                                  detail=str(e)) from None


# -- running on the remote -----------------------------------------------------------------------

def _lost(exc: BaseException) -> bool:
    """Did this error come from the connection to the server breaking (not from the kernel)?"""
    text = str(exc)
    return "RPCSessionTimeoutError" not in text and any(m in text for m in _LOST)


def _run_on(sess: Any, library: str, remote: RemoteDevice, inputs: list, expected: np.ndarray,
            dtype: str, measure: bool, repeat: int, min_repeat_ms: float) -> dict:
    """Upload, load, run once on a poisoned output, compare, and time on the server."""
    import tvm

    from playground.reference import compare
    from playground.timing import measure as measure_module

    t0 = time.perf_counter()
    sess.upload(library)
    module = sess.load_module(os.path.basename(library))
    dev = sess.cuda(0) if remote.target == "cuda" else sess.cpu(0)
    if not dev.exist:
        raise RemoteError(f"the RPC server has no {remote.target} device", where="remote.target")
    result: dict = {"upload_s": time.perf_counter() - t0}
    args = [tvm.runtime.tensor(a, dev) for _, a in inputs]
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, dtype=dtype), dev)
    module["main"](*args, out)
    dev.sync()
    result.update(compare(out.numpy(), expected, dtype))
    if result["correct"] and measure:
        result["timing"] = measure_module(module, [*args, out], dev, func_name="main",
                                          repeat=repeat, min_repeat_ms=min_repeat_ms).to_dict()
    return result


def _attempt(remote: RemoteDevice, library: str, run_args: tuple) -> tuple[dict | None, str, str]:
    """One session: ``(result, server, "")``, or ``(None, server, why)`` if the server went away.

    The session and every remote object are dropped before returning, which closes the
    connection and frees the server for the next client.
    """
    sess, server = open_session(remote)
    try:
        return _run_on(sess, library, remote, *run_args), server, ""
    except RemoteError:
        raise
    except (RuntimeError, OSError) as e:
        if "RPCSessionTimeoutError" in str(e):
            raise RemoteError(f"the session on RPC server {server} ran past its "
                              f"session_timeout_s of {remote.session_timeout_s:g} s and was ended "
                              "by the server", where="remote.session_timeout_s",
                              detail=str(e)) from None
        if not _lost(e):
            raise RemoteError(f"RPC server {server} (key {remote.key!r}) failed to run the "
                              f"kernel: {_first_line(e)}", detail=str(e)) from None
        return None, server, _first_line(e)
    finally:
        del sess


def remote_run(chain: dict, steps: Any, remote: RemoteDevice, *, measure: bool = True,
               repeat: int = 10, min_repeat_ms: float = 50.0, seed: int = 0) -> dict:
    """Build here, then validate and (if ``measure``) time the kernel on a remote server.

    Call it inside a worker process only (:mod:`playground.remote_jobs`): it compiles the
    user's schedule. If the server dies during the run, the run is retried once on the server
    the tracker hands out next.

    Parameters
    ----------
    chain, steps
        The normalized chain and its schedule steps (``Step`` objects).
    remote
        Where to run.
    measure, repeat, min_repeat_ms
        As for the ``run`` job and :func:`playground.timing.measure` (ms per sample).
    seed
        Seed of the random inputs.

    Returns
    -------
    dict
        The ``run`` job's fields (``correct``, errors, ``timing``, ``median_ms``, ``gflops``,
        ``compile_s``, ``reference_s``, ``flop``, ``target``, ``valid``) plus ``remote``
        (``host:port/key``), ``server`` (``host:port`` of the server that ran it),
        ``attempts`` (1, or 2 after a retry), ``lost`` (why earlier servers failed) and
        ``upload_s``.

    Raises
    ------
    RemoteError
        Tracker unreachable, no server for the key, server gone (twice), session timeout.
    StepError, BuildError
        For the schedule and its compilation, as locally.
    """
    from playground.chain import chain_flop
    from playground.lowering import compile_module
    from playground.reference import make_inputs, reference_output
    from playground.schedule import scheduled

    t0 = time.perf_counter()
    executable = compile_module(scheduled(chain, tuple(steps)).mod, remote.target)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs = make_inputs(chain, seed)
    expected = reference_output(chain, inputs)
    reference_s = time.perf_counter() - t0
    run_args = (inputs, expected, chain["input"]["dtype"], measure, int(repeat),
                float(min_repeat_ms))
    lost: list[str] = []
    with tempfile.TemporaryDirectory(prefix="playground-remote-") as tmp:
        library = os.path.join(tmp, "kernel.so")
        executable.export_library(library)
        for attempt in (1, 2):
            try:
                result, server, why = _attempt(remote, library, run_args)
            except RemoteError as e:
                if not lost:
                    raise
                raise RemoteError(f"RPC server for key {remote.key!r} went away during the run: "
                                  f"{lost[0]}; no other server took over: {e.message}",
                                  where="remote", detail=e.detail) from None
            if result is not None:
                break
            lost.append(f"{server}: {why}")
        else:
            raise RemoteError(f"RPC server for key {remote.key!r} went away during the run: "
                              f"{lost[0]}; the retry went away too ({lost[1]})", where="remote")
    timing = result.pop("timing", None)
    result.update({"target": remote.target, "valid": True, "compile_s": compile_s,
                   "reference_s": reference_s, "flop": chain_flop(chain), "timing": timing,
                   "gflops": None, "remote": remote.label, "server": server,
                   "attempts": attempt, "lost": lost})
    if timing is not None:
        from playground.timing import Timing

        parsed = Timing.from_dict(timing)
        result["median_ms"] = parsed.median_ms
        result["gflops"] = parsed.gflops(result["flop"])
    return result


# -- a local cluster for tests and demos ---------------------------------------------------------

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

    def kill(self) -> None:
        """SIGKILL the whole process group (the server's ``popen_worker`` children too); reap."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()


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
