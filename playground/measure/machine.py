"""The machine's facts, read at run time, never assumed: cores, vector width, caches, CPU.

Templates derive their defaults from these (register tiles from the vector width, tile sizes
from L1/L2), the store fingerprints every measurement with them, and benchmarks print them.
Cache sizes come from ``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}``; the
vector width from the LLVM target's features (``avx512f`` -> 512 bits, ``avx2``/``avx`` ->
256, NEON/SSE -> 128), so that a target given with another ``mcpu`` (an AVX-512 one on an
AVX2 machine, say) gets that machine's facts; cores from ``TVM_NUM_THREADS`` or the CPUs this
process may run on.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_ROOT = Path("/sys/devices/system/cpu/cpu0/cache")
#: Used where sysfs says nothing (containers without it): a common x86 server core.
DEFAULT_CACHES = {"L1": 32 * 1024, "L2": 512 * 1024, "L3": 32 * 1024 * 1024}
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """Bytes of a sysfs cache size such as ``"32K"``, ``"512K"``, ``"32768K"`` or ``"1M"``."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read a cache size from {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def cache_sizes(root: str | Path = CACHE_ROOT) -> dict[str, int]:
    """Data/unified cache sizes in bytes by level (``{"L1": ..., "L2": ..., "L3": ...}``).

    Instruction caches are skipped. Levels that sysfs does not list are filled from
    :data:`DEFAULT_CACHES`, so callers always get the three keys.

    Parameters
    ----------
    root
        The directory holding ``index0``, ``index1``, ... (a fake one in tests).
    """
    found: dict[str, int] = {}
    root = Path(root)
    for index in sorted(root.glob("index*")) if root.is_dir() else []:
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            size = parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        found[f"L{level}"] = max(size, found.get(f"L{level}", 0))
    return {**DEFAULT_CACHES, **found}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown"`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_key(cores: int | None = None) -> str:
    """The key measurements are cached under: CPU model and core count."""
    return f"{cpu_model()}|{cores or os.cpu_count() or 1} cores"


def cores() -> int:
    """Threads kernels run on: ``TVM_NUM_THREADS`` when set, else the CPUs this process may use."""
    env = os.environ.get("TVM_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Vector register width in bits, by the first LLVM feature a target has (x86, then Arm).
_VECTOR_FEATURES = (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse2", 128),
                    ("neon", 128), ("asimd", 128))
_DTYPE_BITS = {"float32": 32, "float16": 16, "float64": 64, "int8": 8, "int32": 32}


@dataclass(frozen=True)
class MachineFacts:
    """What templates and records need to know about the machine a kernel runs on.

    Attributes
    ----------
    cpu_model
        ``/proc/cpuinfo``'s model name.
    cores
        Threads kernels run on (:func:`cores`).
    mcpu, mtriple
        The LLVM target's CPU and triple (``rocketlake``, ``znver3``, ...).
    vector_bits
        SIMD register width the target may use: 512 (AVX-512), 256 (AVX2), 128 (SSE, NEON).
    fma
        Whether the target has fused multiply-add.
    caches
        Bytes per level: L1 data and L2 per core, L3 shared (:func:`cache_sizes`).
    tvm_version
        The TVM that compiles the kernels.
    """

    cpu_model: str
    cores: int
    mcpu: str
    mtriple: str
    vector_bits: int
    fma: bool
    caches: dict[str, int]
    tvm_version: str

    def lanes(self, dtype: str = "float32") -> int:
        """Elements of ``dtype`` in one vector register (AVX2 float32: 8, AVX-512: 16)."""
        return max(1, self.vector_bits // _DTYPE_BITS.get(dtype, 32))

    @property
    def registers(self) -> int:
        """Vector registers: 32 with AVX-512 and on AArch64, 16 with AVX2/SSE (what register
        tiles and the FMA peak kernel size their accumulators by)."""
        return 32 if self.vector_bits >= 512 or "aarch64" in self.mtriple else 16

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for benchmarks and the page, e.g. ``Intel Xeon (rocketlake), 2 cores,
        AVX-512 (16 float32 lanes), L1 48 KiB, L2 2 MiB, L3 480 MiB``."""
        isa = {512: "AVX-512", 256: "AVX2"}.get(self.vector_bits, f"{self.vector_bits}-bit SIMD")
        if "aarch64" in self.mtriple or "arm" in self.mtriple:
            isa = "NEON" if self.vector_bits == 128 else isa
        size = {k: (f"{v >> 20} MiB" if v >= 1 << 20 else f"{v >> 10} KiB")
                for k, v in self.caches.items()}
        return (f"{self.cpu_model} ({self.mcpu}), {self.cores} cores, {isa} "
                f"({self.lanes()} float32 lanes), L1 {size['L1']}, L2 {size['L2']}, "
                f"L3 {size['L3']}")


#: The share of a cache level an intermediate may take and still be said to *stay* in it
#: between the pass that writes it and the pass that reads it back: the rest holds what
#: streams beside it (the layer's input, weights and output). An intermediate as large as the
#: L3 was called "fits in L3" before (issue 21's note): it is streamed through memory.
STAYS_SHARE = 0.5


def fitting_level(nbytes: int, caches: dict[str, int], share: float = 1.0) -> str:
    """The smallest cache level whose capacity times ``share`` holds ``nbytes``, else
    ``"memory"``: ``share`` 1 says where a buffer fits (the buffer table), :data:`STAYS_SHARE`
    where it stays while other data streams beside it (the fuse-or-not verdict)."""
    for level in sorted(caches, key=caches.get):
        if nbytes <= caches[level] * share:
            return level
    return "memory"


def _target_features(target: Any) -> tuple[str, str, int, bool]:
    """(mcpu, mtriple, vector bits, fma) of an LLVM target (the host's when None)."""
    import tvm
    from tvm.target import codegen

    if target is None:
        target = tvm.target.Target.from_device(tvm.cpu())
    mcpu = str(target.attrs.get("mcpu", "") or codegen.llvm_get_system_cpu())
    mtriple = str(target.attrs.get("mtriple", "") or "")
    bits = 128
    for feature, width in _VECTOR_FEATURES:
        try:
            if codegen.target_has_features(feature, target):
                bits = width
                break
        except (RuntimeError, ValueError, TypeError):  # a feature this triple does not know
            continue
    try:
        fma = bool(codegen.target_has_features("fma", target))
    except (RuntimeError, ValueError, TypeError):
        fma = "aarch64" in mtriple
    return mcpu, mtriple, bits, fma


def machine_facts(target: Any = None) -> MachineFacts:
    """This machine's facts; vector width and ``mcpu`` from ``target`` (the host by default).

    Parameters
    ----------
    target
        A ``tvm.target.Target`` of kind llvm, e.g. ``{"kind": "llvm", "mcpu": "znver4"}`` to
        reason about an AVX-512 machine from an AVX2 one.
    """
    import tvm

    mcpu, mtriple, bits, fma = _target_features(target)
    return MachineFacts(cpu_model=cpu_model(), cores=cores(), mcpu=mcpu, mtriple=mtriple,
                        vector_bits=bits, fma=fma, caches=cache_sizes(),
                        tvm_version=str(tvm.__version__))


def fingerprint(facts: MachineFacts | None = None, gpu: str = "") -> dict:
    """The machine as the experiment store records it: CPU, cores, vector width, mcpu, TVM
    version and GPU name (empty without one). Two records with equal fingerprints were made
    on machines that should time alike."""
    facts = facts or machine_facts()
    return {"cpu_model": facts.cpu_model, "cores": facts.cores, "vector_bits": facts.vector_bits,
            "mcpu": facts.mcpu, "tvm_version": facts.tvm_version, "gpu": gpu}


def gpu_name() -> str:
    """The first CUDA device's name, or ``""`` without one."""
    import tvm

    dev = tvm.cuda(0)
    return str(dev.device_name) if dev.exist else ""


@functools.lru_cache(maxsize=1)
def _host_fingerprint() -> tuple:
    return tuple(fingerprint(gpu=gpu_name()).items())


def host_fingerprint() -> dict:
    """This machine's :func:`fingerprint` (host CPU and first GPU), read once per process:
    what the page and the command line record their local runs with."""
    return dict(_host_fingerprint())
