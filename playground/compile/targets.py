"""Compilation targets: the host CPU, CUDA, and the interface a remote device plugs into.

A target is named by a short string in steps, exports and the UI (``"cpu"``, ``"cuda"``); this
module turns it into a ``tvm.target.Target`` and a device. The host CPU target carries the
host's features (``mcpu``) and core count, so that LLVM emits AVX-512 where the machine has
it. CUDA compiles everywhere (nvcc generates the source even without a GPU), but runs only
where ``tvm.cuda().exist``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import tvm

from playground.errors import BuildError

TARGETS = ("cpu", "cuda")


@dataclass(frozen=True)
class TargetInfo:
    """What the UI shows about a target and whether kernels can run on it here."""

    name: str
    description: str
    can_run: bool
    reason: str = ""


@functools.cache
def cpu_target() -> tvm.target.Target:
    """The host CPU with its features (e.g. ``-mcpu=znver5``) and its core count."""
    host = tvm.target.Target.from_device(tvm.cpu())
    config = dict(host.export())
    cores = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    config["num-cores"] = cores
    keep = {k: v for k, v in config.items() if k in ("kind", "mcpu", "mtriple", "num-cores",
                                                     "mattr", "keys", "tag")}
    try:
        return tvm.target.Target(keep)
    except (ValueError, RuntimeError, TypeError):
        return host


def cuda_arch() -> str:
    """``sm_XY`` of the local GPU, or ``sm_90`` to generate code where there is none."""
    dev = tvm.cuda(0)
    if dev.exist:
        major, minor = str(dev.compute_version).split(".")
        return f"sm_{major}{minor}"
    return "sm_90"


def resolve(name: str) -> tvm.target.Target:
    """The ``tvm.target.Target`` for a target name ("cpu" or "cuda")."""
    if name == "cpu":
        return cpu_target()
    if name == "cuda":
        return tvm.target.Target({"kind": "cuda", "arch": cuda_arch()},
                                 host=cpu_target())
    raise BuildError(f"unknown target {name!r} (choose one of {', '.join(TARGETS)})",
                     where="target")


def device(name: str):
    """The local device for a target name."""
    return tvm.cuda(0) if name == "cuda" else tvm.cpu(0)


def info(name: str) -> TargetInfo:
    """Can kernels for ``name`` run on this machine? (CUDA needs a GPU.)"""
    if name == "cpu":
        mcpu = str(cpu_target().attrs.get("mcpu", "generic"))
        return TargetInfo("cpu", f"host CPU (LLVM, mcpu={mcpu})", True)
    if name == "cuda":
        if tvm.cuda(0).exist:
            return TargetInfo("cuda", f"CUDA GPU ({cuda_arch()})", True)
        return TargetInfo("cuda", "CUDA (source only)", False,
                          "no GPU is present: CUDA source is generated and shown, but kernels "
                          "cannot be validated or timed here")
    raise BuildError(f"unknown target {name!r}", where="target")
