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

from playground.compile.gpu import require_cuda_lowered, require_cuda_ready
from playground.compile.poison import compile_validation
from playground.compile.strided_loads import strided_loads
from playground.compile.targets import resolve
from playground.compile.tile_local import TILE_LOCAL_PIPELINE
from playground.errors import BuildError
from playground.explain import explain_build, plain
from playground.schedule import ir

CODE_KINDS = {"cpu": ("asm", "llvm"), "cuda": ("cuda",)}


def pipeline_name(tile_local: bool = True) -> str:
    """The TIR pipeline of a build: TVM's default, with the playground's tile-local step in
    front unless ``tile_local`` is False (:mod:`playground.compile.tile_local`)."""
    return TILE_LOCAL_PIPELINE if tile_local else "default"


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


def _failed(what: str, e: Exception, hint: str = "") -> BuildError:
    """A build failure in plain words (the catalogue in :mod:`playground.explain`), TVM's
    full text in ``detail``."""
    text = str(e)
    said = explain_build(text)
    message = f"{what}: {said}" if said else f"{what}: {plain(_first_line(e))}{hint}"
    return BuildError(message, detail=text)


def require_cpu_ready(mod: tvm.IRModule) -> None:
    """Refuse, before building for the CPU, loops bound to GPU threads (TVM 0.27 fails late
    with "not implemented" or "Unknown device id in current IR")."""
    bound = [f"{s.loop_var.name} ({s.thread_binding.thread_tag})"
             for func in mod.functions.values() if hasattr(func, "body")
             for s in ir.statements(func.body)
             if isinstance(s, ir.For) and s.thread_binding is not None]
    if bound:
        raise BuildError(f"loop {bound[0]} is bound to a GPU thread, but the target is the "
                         "CPU — undo the bind step (use parallel for CPU threads), or switch "
                         "the target to cuda", where="target")


def run_tir_pipeline(mod: tvm.IRModule, target_name: str, instrument, *,
                     tile_local: bool = True) -> None:
    """Run the TIR pipeline of a build (:func:`pipeline_name`) for a target name, watched by a
    pass ``instrument`` (which keeps the snapshots it wants); a pass that refuses raises
    :class:`BuildError`."""
    target = resolve(target_name)
    pipeline, _, _ = tvm.tirx.get_tir_pipeline(pipeline_name(tile_local))
    try:
        bound = tvm.tirx.transform.BindTarget(target.with_host(target.host or target))(mod)
        with tvm.transform.PassContext(opt_level=3, instruments=[instrument]):
            pipeline(bound)
    except (RuntimeError, ValueError, TypeError) as e:
        raise _failed(f"lowering for {target_name} failed", e) from None


def lower(mod: tvm.IRModule, target_name: str = "cpu", *,
          tile_local: bool = True) -> tvm.IRModule:
    """The module after TIR lowering, just before MakePackedAPI (with the tile-local step
    unless ``tile_local`` is False). The playground's last lowering step, the strided loads
    read contiguously (:mod:`playground.compile.strided_loads`), runs after MakePackedAPI in
    a build; here it is applied to the module shown, so that the view has what is built.

    Raises
    ------
    BuildError
        When a lowering pass refuses the schedule, or for ``cuda`` when the schedule is not
        ready for a GPU (see :mod:`playground.compile.gpu`: unbound blocks, global intermediates
        in a kernel, thread counts, shared memory).
    """
    if target_name == "cuda":
        require_cuda_ready(mod)
    else:
        require_cpu_ready(mod)
    keep = _KeepBefore("tirx.MakePackedAPI")
    run_tir_pipeline(mod, target_name, keep, tile_local=tile_local)
    if keep.kept is None:
        raise BuildError("lowering did not reach MakePackedAPI")
    if target_name == "cuda":
        require_cuda_lowered(keep.kept)
    return strided_loads(keep.kept) if tile_local else keep.kept


def lowered_text(mod: tvm.IRModule, target_name: str = "cpu", *,
                 tile_local: bool = True) -> str:
    """The lowered module as TVMScript text."""
    return lower(mod, target_name, tile_local=tile_local).script()


def compile_module(mod: tvm.IRModule, target_name: str = "cpu", *, validation: bool = False,
                   tile_local: bool = True):
    """``tvm.compile`` for a target name, with failures as :class:`BuildError`.

    For ``cuda`` the module is lowered first (:func:`lower`) for the GPU checks: TVM itself
    compiles unbound loops as host code and oversized shared buffers without a word.
    ``validation=True`` builds the CPU kernel with every intermediate allocation NaN-filled
    (:mod:`playground.compile.poison`), so that reading unwritten memory is caught every time;
    such a build is for checking results, never for timing. Both run the tile-local step
    unless ``tile_local`` is False.
    """
    if target_name == "cuda":
        lower(mod, target_name, tile_local=tile_local)
    else:
        require_cpu_ready(mod)
    pipeline = pipeline_name(tile_local)
    try:
        if validation and target_name == "cpu":
            return compile_validation(mod, resolve(target_name), pipeline)
        return tvm.compile(mod, target=resolve(target_name), tir_pipeline=pipeline)
    except (RuntimeError, ValueError, TypeError) as e:
        hint = ""
        text = str(e)
        if "memory" in text and "global" in text.lower() and target_name == "cuda":
            hint = " (intermediates computed inside a kernel need set_scope 'shared' or 'local')"
        elif "unbound" in text.lower() or ("thread" in text.lower() and target_name == "cuda"):
            hint = " (bind the kernel's outer loops to blockIdx.x and threadIdx.x)"
        raise _failed(f"compiling for {target_name} failed", e, hint) from None


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
