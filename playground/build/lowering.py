"""Lowered TIR and generated code for a scheduled module.

The readable "lowered" program is the module just before the pass ``tirx.MakePackedAPI``: loops
and buffers after every TIR transformation (buffer compaction, unrolling, vectorization,
storage rewriting), before the calling convention is added. Generated code is LLVM IR or
assembly for the CPU and CUDA C for the GPU.

These functions compile; callers run them in the worker process (see
:mod:`playground.worker.registry`).
"""

from __future__ import annotations

import tvm

from playground.build.gpu import require_cuda_lowered, require_cuda_ready
from playground.build.targets import resolve
from playground.errors import BuildError

CODE_KINDS = {"cpu": ("asm", "llvm"), "cuda": ("cuda",)}


@tvm.instrument.pass_instrument
class _KeepBefore:
    """Keeps the module as it is right before a named pass runs."""

    def __init__(self, pass_name: str) -> None:
        self.pass_name = pass_name
        self.kept = None

    def run_before_pass(self, mod, info) -> None:
        if info.name == self.pass_name and self.kept is None:
            self.kept = mod


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Check failed" in ln:
            return ln.strip()
    return lines[-1].strip() if lines else type(e).__name__


def run_tir_pipeline(mod: tvm.IRModule, target_name: str, instrument) -> None:
    """Run TVM's default TIR pipeline for a target name, watched by a pass ``instrument``
    (which keeps the snapshots it wants); a pass that refuses raises :class:`BuildError`."""
    target = resolve(target_name)
    pipeline, _, _ = tvm.tirx.get_default_tir_pipeline(target)
    try:
        bound = tvm.tirx.transform.BindTarget(target.with_host(target.host or target))(mod)
        with tvm.transform.PassContext(opt_level=3, instruments=[instrument]):
            pipeline(bound)
    except (RuntimeError, ValueError, TypeError) as e:
        raise BuildError(f"lowering for {target_name} failed: {_first_line(e)}",
                         detail=str(e)) from None


def lower(mod: tvm.IRModule, target_name: str = "cpu") -> tvm.IRModule:
    """The module after TIR lowering, just before MakePackedAPI.

    Raises
    ------
    BuildError
        When a lowering pass refuses the schedule, or for ``cuda`` when the schedule is not
        ready for a GPU (see :mod:`playground.build.gpu`: unbound blocks, global intermediates in a
        kernel, thread counts, shared memory).
    """
    if target_name == "cuda":
        require_cuda_ready(mod)
    keep = _KeepBefore("tirx.MakePackedAPI")
    run_tir_pipeline(mod, target_name, keep)
    if keep.kept is None:
        raise BuildError("lowering did not reach MakePackedAPI")
    if target_name == "cuda":
        require_cuda_lowered(keep.kept)
    return keep.kept


def lowered_text(mod: tvm.IRModule, target_name: str = "cpu") -> str:
    """The lowered module as TVMScript text."""
    return lower(mod, target_name).script()


def compile_module(mod: tvm.IRModule, target_name: str = "cpu"):
    """``tvm.compile`` for a target name, with failures as :class:`BuildError`.

    For ``cuda`` the module is lowered first (:func:`lower`) for the GPU checks: TVM itself
    compiles unbound loops as host code and oversized shared buffers without a word.
    """
    if target_name == "cuda":
        lower(mod, target_name)
    try:
        return tvm.compile(mod, target=resolve(target_name))
    except (RuntimeError, ValueError, TypeError) as e:
        hint = ""
        text = str(e)
        if "memory" in text and "global" in text.lower() and target_name == "cuda":
            hint = " (intermediates computed inside a kernel need set_scope 'shared' or 'local')"
        elif "unbound" in text.lower() or ("thread" in text.lower() and target_name == "cuda"):
            hint = " (bind the kernel's outer loops to blockIdx.x and threadIdx.x)"
        raise BuildError(f"compiling for {target_name} failed: {_first_line(e)}{hint}",
                         detail=text) from None


def generated_code(ex, target_name: str, kind: str) -> str:
    """Generated code of a compiled executable: ``asm`` / ``llvm`` (CPU) or ``cuda``."""
    if kind not in CODE_KINDS.get(target_name, ()):
        raise BuildError(f"no {kind!r} code for target {target_name} (choose one of "
                         f"{', '.join(CODE_KINDS.get(target_name, ()))})")
    if target_name == "cpu":
        return ex.mod.inspect_source("s" if kind == "asm" else "ll")
    for m in ex.mod.imports:
        try:
            return m.inspect_source()
        except (RuntimeError, ValueError, AttributeError):
            continue
    raise BuildError("the compiled module has no CUDA device code")
