"""A remote device: a TVM RPC tracker (or one server) and a device key, checked; and the
tracker's protocol, spoken directly.

:class:`RemoteDevice` validates every field with a message naming it. The tracker protocol is
spoken here (not with ``tvm.rpc.connect_tracker``) so that an unreachable tracker fails at
once and a key that no server offers fails after ``timeout_s`` instead of blocking forever.
:func:`open_session` returns a live RPC session on a free server.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any

from playground.errors import PlaygroundError

KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: Messages of TVM's RPC client that mean the connection to the server is gone.
_LOST = ("kShutdown", "Socket", "Broken pipe", "Connection reset", "connection reset",
         "Connection refused", "EOF", "closed")
_LOCAL_HOSTS = ("localhost", "127.0.0.1")


def is_local_host(host: str) -> bool:
    """True for a loopback address: a server there is this machine and shares its CPU."""
    return host in _LOCAL_HOSTS or host.startswith("127.")


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
        The target name to compile for (:data:`playground.compile.targets.TARGETS`);
        ``"cpu"`` is the host CPU of *this* machine, right for a server on the same kind of machine.

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
        from playground.compile.targets import TARGETS

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
        return is_local_host(self.host)

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
