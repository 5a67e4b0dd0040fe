"""Running a schedule on a remote device: build here, validate and time on a tracker's server.

A :class:`~playground.remote.device.RemoteDevice` names a TVM RPC tracker (or one server) and a
device key. The worker job
``remote_run`` (:mod:`playground.jobs.rpc`) calls :func:`remote_run`, which compiles the
scheduled chain here twice, as the local ``run`` job does (a validation build whose
intermediates are NaN-filled, and the build that is timed), exports both as shared libraries,
asks the tracker for a free server with the key, uploads and loads them there, checks the
validation build on two input seeds against the numpy references computed here and the timing
build once more (:mod:`playground.compile.check`, the project's one check), and times it on
the server with :func:`playground.measure.timing.measure` (TVM's ``time_evaluator`` runs on the
remote device itself)::

    remote = RemoteDevice("127.0.0.1", 9190, "local")
    result = remote_run(chain, steps, remote, repeat=10)   # inside a worker only
    result["median_ms"], result["server"]                  # e.g. 0.11, "127.0.0.1:9091"

When the server dies during the run, the run is retried once on the server the tracker hands
out next; every failure reaches the caller as a :class:`~playground.remote.device.RemoteError`
naming the tracker, the key and what happened.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from playground.measure.sampling import METHOD
from playground.remote.device import (
    _LOST,
    RemoteDevice,
    RemoteError,
    _first_line,
    is_local_host,
    open_session,
)


def _lost(exc: BaseException) -> bool:
    """Did this error come from the connection to the server breaking (not from the kernel)?"""
    text = str(exc)
    return "RPCSessionTimeoutError" not in text and any(m in text for m in _LOST)


def _load_probe(server: str) -> Any:
    """A probe of the server's processes when the server runs on this machine, else ``None``.

    On loopback the server's kernel shares this machine, so its load is measured here, with
    the server process (found by its listening port) and its session children as "own". A
    server elsewhere runs on a machine this process cannot see: its load stays unknown.
    """
    from playground.measure.load import LoadProbe, server_pids, threads_of

    host, _, port = server.rpartition(":")
    if not is_local_host(host):
        return None
    pids = server_pids(int(port))
    if not pids:
        return None
    return LoadProbe(pids, descendants=True, threads=threads_of(pids[0]), where=server)


def _run_on(sess: Any, libraries: tuple[str, str], remote: RemoteDevice, server: str,
            chain: dict, seed: int, reference: Any, measure: bool, repeat: int,
            min_repeat_ms: float) -> dict:
    """Upload and load both builds, check the validation build and (if ``measure``) time the
    timing build on the server, as the local ``run`` job does (:mod:`playground.compile.check`)."""
    from playground.compile.check import check, time_checked
    from playground.measure.timing import measure as measure_module

    t0 = time.perf_counter()
    checked, timed = (_load(sess, library) for library in libraries)
    dev = sess.cuda(0) if remote.target == "cuda" else sess.cpu(0)
    if not dev.exist:
        raise RemoteError(f"the RPC server has no {remote.target} device", where="remote.target")
    result: dict = {"upload_s": time.perf_counter() - t0, "timing": None}
    result.update(check(checked, chain, dev, seed=seed, reference=reference))
    if result["correct"] and measure:
        result.update(time_checked(
            timed, chain, dev, lambda module, args: measure_module(
                module, args, dev, func_name="main", repeat=repeat, min_repeat_ms=min_repeat_ms,
                load_probe=_load_probe(server)).to_dict(),
            seed=seed, reference=reference))
    return result


def _load(sess: Any, library: str) -> Any:
    """Upload a shared library to the server and load it there."""
    sess.upload(library)
    return sess.load_module(os.path.basename(library))


def _attempt(remote: RemoteDevice, libraries: tuple[str, str],
             run_args: tuple) -> tuple[dict | None, str, str]:
    """One session: ``(result, server, "")``, or ``(None, server, why)`` if the server went away.

    The session and every remote object are dropped before returning, which closes the
    connection and frees the server for the next client.
    """
    sess, server = open_session(remote)
    try:
        return _run_on(sess, libraries, remote, server, *run_args), server, ""
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
               repeat: int = METHOD["repeat"], min_repeat_ms: float = METHOD["min_repeat_ms"],
               seed: int = 0) -> dict:
    """Build here, then validate and (if ``measure``) time the kernel on a remote server.

    Call it inside a worker process only (:mod:`playground.jobs.rpc`): it compiles the
    user's schedule. If the server dies during the run, the run is retried once on the server
    the tracker hands out next.

    Parameters
    ----------
    chain, steps
        The normalized chain and its schedule steps (``Step`` objects).
    remote
        Where to run.
    measure, repeat, min_repeat_ms
        As for the ``run`` job and :func:`playground.measure.timing.measure` (ms per sample).
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
    from playground.chain.spec import chain_flop
    from playground.compile.check import VALIDATION_SEEDS, reference_for
    from playground.compile.lowering import compile_module
    from playground.schedule.replay import scheduled

    t0 = time.perf_counter()
    mod = scheduled(chain, tuple(steps)).mod
    checked = compile_module(mod, remote.target, validation=True)
    # Intermediates are poisoned on the CPU only: a GPU kernel's two builds would be the same.
    builds = (checked, compile_module(mod, remote.target) if remote.target == "cpu" else checked)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    references = {seed + s: reference_for(chain, seed + s) for s in VALIDATION_SEEDS}
    reference_s = time.perf_counter() - t0
    run_args = (chain, seed, lambda _chain, s: references[s], measure, int(repeat),
                float(min_repeat_ms))
    lost: list[str] = []
    with tempfile.TemporaryDirectory(prefix="playground-remote-") as tmp:
        libraries = (os.path.join(tmp, "checked.so"), os.path.join(tmp, "kernel.so"))
        if builds[1] is builds[0]:
            libraries = (libraries[0], libraries[0])
        for library, build in dict(zip(libraries, builds, strict=True)).items():
            build.export_library(library)
        for attempt in (1, 2):
            try:
                result, server, why = _attempt(remote, libraries, run_args)
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
    timing = result.pop("timing")
    result.update({"target": remote.target, "valid": True, "compile_s": compile_s,
                   "reference_s": reference_s, "flop": chain_flop(chain), "timing": timing,
                   "gflops": None, "remote": remote.label, "server": server,
                   "attempts": attempt, "lost": lost})
    if timing is not None:
        from playground.measure.timing import Timing

        parsed = Timing.from_dict(timing)
        result["median_ms"] = parsed.median_ms
        result["gflops"] = parsed.gflops(result["flop"])
    return result
