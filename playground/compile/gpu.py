"""CUDA: the checks a schedule must pass before a CUDA build, and a CPU emulation of it.

TVM 0.27 accepts, for target ``cuda``, schedules that cannot work on a GPU, and says nothing:

- a block whose loops are not bound to ``blockIdx.*`` / ``threadIdx.*`` is compiled as *host*
  code (the module builds, has no kernel, and runs on the CPU if it runs at all);
- two loops of one kernel bound to ``threadIdx.x`` with different extents compile to a kernel
  launched with one of the extents: the work of the missing threads is silently skipped;
- a shared buffer whose tile TVM cannot bound (a halo clipped at the image border) keeps its
  full size, far above the 48 KiB a thread block may allocate.

Others it refuses late with a message that names no block ("Cannot allocate global memory when
targeting CUDA"). :func:`check_cuda_schedule` finds all of these on the scheduled function and
says which block is wrong and which step fixes it; :func:`check_cuda_lowered` checks the
lowered kernels' shared memory. :func:`playground.compile.lowering.lower` and
:func:`playground.compile.lowering.compile_module` call both for target ``cuda``.
:func:`kernel_resources` reads what each lowered kernel asks of the GPU (threads per block,
blocks, static shared memory).

:func:`serialize_threads` turns every thread-bound loop of a scheduled module back into a
serial loop, so that a CUDA schedule runs on the CPU: the same blocks, tiles, halos and
scopes, one thread after the other. It checks a schedule's arithmetic where there is no GPU;
it cannot check what only a GPU does (barriers, races between threads).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import tvm
from tvm import s_tir

from playground.errors import BuildError
from playground.schedule import ir

#: Static shared memory one thread block may allocate (bytes); more needs dynamic shared memory.
MAX_SHARED_BYTES = 48 * 1024
MAX_THREADS_PER_BLOCK = 1024
#: Largest extent per thread axis (CUDA compute capability >= 3.0).
MAX_EXTENT = {"threadIdx.x": 1024, "threadIdx.y": 1024, "threadIdx.z": 64,
              "blockIdx.x": 2**31 - 1, "blockIdx.y": 65535, "blockIdx.z": 65535}
_THREAD_BINDING = re.compile(r'T\.thread_binding\(([^()]*?),\s*thread="[^"]*"\)')


@dataclass(frozen=True)
class BlockPlace(ir.AboutBlock):
    """A block (as the IR reader sees it: loops outer to inner, reads, writes) and its kernel.

    ``kernel`` numbers the kernels in program order (0, 1, ...): a kernel starts at the
    outermost thread-bound loop. ``None``: the block is not inside any kernel (host code).
    """

    block: ir.Block
    kernel: int | None

    def bound(self, prefix: str) -> list[ir.Loop]:
        return [lp for lp in self.loops if lp.thread.startswith(prefix)]


def placements(sch_or_mod) -> tuple[list[BlockPlace], dict[str, str]]:
    """Every block's place (see :class:`BlockPlace`), and every allocated buffer's scope.

    Works on a scheduled (not lowered) module or schedule.
    """
    kernels: dict[int, int] = {}  # id of a kernel's outermost bound loop -> kernel number
    places = []
    for b in ir.blocks(sch_or_mod):
        outer = next((lp for lp in b.loops if lp.thread), None)
        kernel = None if outer is None else kernels.setdefault(id(outer), len(kernels))
        places.append(BlockPlace(b, kernel))
    scopes = {str(buf.name): buf.scope() or "global" for buf in ir.allocations(sch_or_mod)}
    return places, scopes


def _unbound(p: BlockPlace) -> str | None:
    names = ", ".join(lp.name for lp in p.loops)
    if not p.loops:
        return (f"block {p.name} has no loops, so it is not inside a CUDA kernel (TVM would "
                "compile it as host code): compute_at it under a loop bound to blockIdx.* and "
                "threadIdx.*, or compute_inline it")
    if not p.bound("blockIdx."):
        outer = [lp.name for lp in p.loops[:2]]
        fused = "_".join(outer) + "_fused" if len(outer) > 1 else outer[0]
        how = (f"fuse(block={p.name}, loops=[{', '.join(outer)}]) then bind(block={p.name}, "
               f"loop={fused}, thread=blockIdx.x)" if len(outer) > 1 else
               f"bind(block={p.name}, loop={fused}, thread=blockIdx.x)")
        return (f"block {p.name} is not inside a CUDA kernel: none of its loops ({names}) is "
                f"bound to blockIdx.* (TVM would compile it as host code); bind its outer "
                f"loops, e.g. {how}, or compute_at it into another block's kernel")
    if not p.bound("threadIdx."):
        free = [lp for lp in p.loops if not lp.thread]
        hint = (f"split a spatial loop and bind the inner part, e.g. split(block={p.name}, "
                f"loop={free[0].name}, factors=[None, 64]) then bind(block={p.name}, "
                f"loop={free[0].name}_1, thread=threadIdx.x)" if free
                else "split a loop and bind its inner part to threadIdx.x")
        return (f"block {p.name} runs on one thread per thread block: none of its loops "
                f"({names}) is bound to threadIdx.*; {hint}")
    return None


def _thread_count(p: BlockPlace) -> list[str]:
    problems = []
    # Loops bound to the same axis are the same hardware index (a cooperative fetch re-binds
    # threadIdx.x under the compute's threadIdx.x loop): count each axis once.
    axes: dict[str, ir.Loop] = {}
    for lp in p.loops:
        limit = MAX_EXTENT.get(lp.thread)
        if limit is None or lp.extent is None:
            continue
        if lp.extent > limit:
            problems.append(f"block {p.name}: loop {lp.name} bound to {lp.thread} has extent "
                            f"{lp.extent}, above CUDA's {limit}; split it and bind a smaller "
                            "part")
        if lp.thread.startswith("threadIdx.") and lp.extent > getattr(
                axes.get(lp.thread), "extent", 0):
            axes[lp.thread] = lp
    count = math.prod(lp.extent or 1 for lp in axes.values())
    if count > MAX_THREADS_PER_BLOCK:
        parts = " x ".join(f"{lp.name}={lp.extent} ({lp.thread})" for lp in axes.values())
        problems.append(f"block {p.name} needs {count} threads per thread block ({parts}), above "
                        f"CUDA's {MAX_THREADS_PER_BLOCK}; split the thread loops smaller and "
                        "leave the rest serial")
    return problems


def _consistent_extents(places: list[BlockPlace]) -> list[str]:
    """Loops bound to one thread axis inside one kernel must share their extent.

    TVM launches the kernel with one of the extents and compiles the rest without a word: the
    work of the missing threads is never done.
    """
    seen: dict[tuple[int, str], tuple[int, str, str]] = {}
    problems = []
    for p in places:
        if p.kernel is None:
            continue
        for lp in p.loops:
            if not lp.thread.startswith(("threadIdx.", "blockIdx.")) or lp.extent is None:
                continue
            first = seen.setdefault((p.kernel, lp.thread), (lp.extent, p.name, lp.name))
            if first[0] != lp.extent:
                problems.append(
                    f"block {p.name}: loop {lp.name} is bound to {lp.thread} with extent "
                    f"{lp.extent}, but block {first[1]} in the same kernel binds {first[2]} to "
                    f"{lp.thread} with extent {first[0]}; in one kernel every loop bound to "
                    f"{lp.thread} needs the same extent (TVM launches the kernel with one of "
                    f"them and silently skips work): split {p.name}'s loop by {first[0]} "
                    "before binding")
    return problems


def _scope_problem(buf: str, scope: str, w: BlockPlace, r: BlockPlace) -> str | None:
    index = w.writes.index(buf)
    if scope == "global" and w.kernel is not None and w.kernel == r.kernel:
        return (f"buffer {buf} is in global memory, but block {w.name} writes it and block "
                f"{r.name} reads it inside the same kernel (TVM: 'Cannot allocate global memory "
                f"when targeting CUDA'); add set_scope(block={w.name}, buffer_index={index}, "
                "storage_scope=shared), or local when each thread reads only what it wrote "
                "itself")
    if scope != "global" and (w.kernel is None or w.kernel != r.kernel):
        return (f"buffer {buf} is in {scope} memory, which lives for one kernel only, but block "
                f"{w.name} writes it and block {r.name} reads it in another kernel; compute_at "
                f"{w.name} under {r.name}'s kernel loop, or set_scope(block={w.name}, "
                f"buffer_index={index}, storage_scope=global)")
    return None


def _scopes(places: list[BlockPlace], scopes: dict[str, str]) -> list[str]:
    """Global intermediates inside a kernel; shared/local ones that outlive their kernel.

    One problem per buffer. Writers are tried last first: after decompose_reduction the
    update block (``conv1``), not its ``conv1_init``, is the one to name.
    """
    problems = []
    for buf, scope in scopes.items():
        writers = [p for p in places if buf in p.writes][::-1]
        readers = [p for p in places if buf in p.reads and buf not in p.writes]
        found = (_scope_problem(buf, scope, w, r) for w in writers for r in readers)
        problem = next((msg for msg in found if msg), None)
        if problem:
            problems.append(problem)
    return problems


def check_cuda_schedule(sch_or_mod) -> list[str]:
    """What stops a scheduled module from running as CUDA kernels, one line per problem.

    Parameters
    ----------
    sch_or_mod
        An ``s_tir.Schedule`` or a scheduled (not lowered) IRModule with a function ``main``.

    Returns
    -------
    list[str]
        Empty when the schedule is ready. Each line names the block (and buffer or loop) and
        the step that fixes it: every block under loops bound to ``blockIdx.*`` and
        ``threadIdx.*``; at most 1024 threads per block (64 on ``threadIdx.z``); one extent
        per thread axis in a kernel; no global intermediate written and read in one kernel;
        no shared or local buffer passed between kernels.
    """
    places, scopes = placements(sch_or_mod)
    problems = [msg for p in places if (msg := _unbound(p))]
    for p in places:
        problems += _thread_count(p)
    problems += _consistent_extents(places)
    problems += _scopes(places, scopes)
    return problems


def shared_memory(lowered: tvm.IRModule) -> dict[str, dict[str, int]]:
    """Bytes of static shared memory per kernel and buffer of a lowered module.

    ``{"main_kernel": {"conv2_pad_shared": 15360}}``; ``lowered`` is what
    :func:`playground.compile.lowering.lower` returns for target ``cuda``.
    """
    out: dict[str, dict[str, int]] = {}
    for gv, func in lowered.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or int(func.attrs.get("calling_conv", 0)) != 2:
            continue
        sizes: dict[str, int] = {}
        for stmt in ir.statements(func.body):
            buf = getattr(stmt, "buffer", None)
            if isinstance(stmt, ir.AllocBuffer) and buf.scope() == "shared":
                elements = math.prod(int(d) for d in buf.shape)
                sizes[buf.name] = elements * tvm.DataType(buf.dtype).bits // 8
        out[gv.name_hint] = sizes
    return out


def kernel_resources(lowered: tvm.IRModule) -> dict[str, dict]:
    """What each kernel of a lowered module asks of the GPU when it is launched.

    ``{"main_kernel": {"threads_per_block": 256, "blocks": 98, "shared_bytes": 24576,
    "shared": {"conv2_pad_shared": 15360, ...}}}``: the product of the kernel's
    ``threadIdx.*`` extents and of its ``blockIdx.*`` extents (read from its launch
    attributes), and its static shared memory (:func:`shared_memory`). ``lowered`` is what
    :func:`playground.compile.lowering.lower` returns for target ``cuda``.
    """
    shared = shared_memory(lowered)
    out: dict[str, dict] = {}
    for gv, func in lowered.functions.items():
        if gv.name_hint not in shared:
            continue
        extents: dict[str, int] = {}
        for stmt in ir.statements(func.body):
            if isinstance(stmt, ir.AttrStmt) and stmt.attr_key == "thread_extent":
                tag = str(stmt.node.thread_tag)
                extents[tag] = max(extents.get(tag, 1), int(stmt.value))
        out[gv.name_hint] = {
            "threads_per_block": math.prod(v for k, v in extents.items()
                                           if k.startswith("threadIdx.")),
            "blocks": math.prod(v for k, v in extents.items() if k.startswith("blockIdx.")),
            "shared_bytes": sum(shared[gv.name_hint].values()),
            "shared": shared[gv.name_hint]}
    return out


def check_cuda_lowered(lowered: tvm.IRModule) -> list[str]:
    """Problems only the lowered kernels show: static shared memory above 48 KiB per block."""
    problems = []
    for kernel, sizes in shared_memory(lowered).items():
        total = sum(sizes.values())
        if total > MAX_SHARED_BYTES:
            parts = ", ".join(f"{name} {size:,} B" for name, size in
                              sorted(sizes.items(), key=lambda kv: -kv[1]))
            problems.append(
                f"kernel {kernel} needs {total:,} bytes of shared memory ({parts}), above the "
                f"{MAX_SHARED_BYTES:,} a thread block may allocate; make the tiles smaller, "
                "or move the largest buffer's compute_at to an inner loop. A buffer at (or "
                "near) its full size means TVM could not bound its tile, typically a halo "
                "clipped at the image border: set_scope it back to global, or compute_inline "
                "it")
    return problems


def _raise(problems: list[str], what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BuildError(f"not ready for CUDA: {problems[0]}{more}",
                         detail="\n".join(f"- {p}" for p in problems), where=what)


def require_cuda_ready(sch_or_mod) -> None:
    """Raise :class:`BuildError` naming the first problem of :func:`check_cuda_schedule`.

    The error's ``detail`` lists every problem, one per line.
    """
    _raise(check_cuda_schedule(sch_or_mod), "cuda")


def require_cuda_lowered(lowered: tvm.IRModule) -> None:
    """Raise :class:`BuildError` for the problems of :func:`check_cuda_lowered`."""
    _raise(check_cuda_lowered(lowered), "cuda")


def serialize_threads(sch_or_mod) -> tvm.IRModule:
    """The scheduled module with every thread-bound loop made serial: a CUDA schedule for the CPU.

    Each block keeps its tile, halo and storage scope; cooperative loads are done by every
    "thread" in turn. Compile the result for ``cpu`` and compare it with the reference to check
    a CUDA schedule's arithmetic without a GPU.
    """
    mod = sch_or_mod.mod if isinstance(sch_or_mod, s_tir.Schedule) else sch_or_mod
    # Through TVMScript: the Python API of 0.27 has no statement mutator.
    return tvm.script.from_source(_THREAD_BINDING.sub(r"T.serial(\1)", mod.script()))
