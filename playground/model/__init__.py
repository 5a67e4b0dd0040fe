"""Whole networks: read an ONNX model, cut it into chains, and scan them ("what should I fuse?").

Owns the importer (:mod:`.onnx_read` checks and sorts the file and infers shapes;
:mod:`.layers` is the one table mapping ONNX nodes to chain layers), the plain-data model it
produces (:mod:`.graph`), the cutter (:mod:`.cut`), the scan of a model's chains with the
search and the verdict (:mod:`.scanner`: long jobs, recorded in the store as one group,
resumable, cancellable), the command line's ``model`` command (:mod:`.cli`) and three example
networks written with ``onnx.helper`` (:mod:`.examples`). Reading a file a user uploads
happens in a worker (job ``model_read``, :func:`read_in_worker`), never in the server.

The API (stable: the page's Model tab is built on it)
------------------------------------------------------
::

    from playground.model import (ModelError, cut_chains, export_schedules, left_out,
                                  load_model, read_in_worker, scan)

    model = load_model("net.onnx")                   # or bytes; input_shape=(1, 3, 224, 224)
    model.summary(); model.flop                      # conv + pool FLOPs of the whole model
    model.nodes                                      # Node: name, op_type, inputs, outputs,
                                                     #   layers (chain layers or ()), reason
    chains = cut_chains(model, max_convs=3)          # list[ModelChain], distinct
    c = chains[0]
    c.chain                                          # normalized chain JSON (Session.new(...))
    c.nodes, c.occurrences, c.count, c.flop          # source nodes; multiplicity; FLOPs of one
    c.describe(), c.key, c.to_dict()
    left_out(model, chains)                          # {"Gemm": 1, "Add": 3, ...}

    model = read_in_worker(pool, data, input_shape=None, max_bytes=...)   # the page's path

    result = scan(pool, model, chains, facts, budget_s_per_chain=30, cancel=event,
                  on_progress=callback, source="page")                   # ScanResult
    # callback(event): {"event": "candidate", "index": i, "of": n, "label", "status",
    #   "median_ms"} after each candidate; {"event": "chain", "index": i, "of": n,
    #   "row": ChainResult, "reused": bool} after each chain
    result.rows                                      # ChainResult per distinct chain:
                                                     #   chain (the ModelChain), auto_ms,
                                                     #   valid, correct, verdict, ratio,
                                                     #   fused_ms, unfused_ms, reason, steps,
                                                     #   status: done|reused|cancelled|failed
    result.total_ms, result.unfused_total_ms         # sums of time x count
    result.to_json()                                 # {"chains": [...], "skipped_ops": {...},
                                                     #  "total_ms": t, ...}
    export_schedules(result, "dir")                  # chain_01.py ... + index.json, index.md

    from playground.model.examples import EXAMPLES, example_bytes        # bundled examples
    example_bytes("resnet18")                        # a .onnx file's bytes (weights declared)

Every bad input (a truncated file, not ONNX, a cycle, too many nodes, an initializer that
declares more than the file holds, dynamic dims without ``input_shape``) is a
:class:`ModelError` with one line.

May import: :mod:`playground.chain`, :mod:`playground.schedule`, :mod:`playground.compile`,
:mod:`playground.measure`,
:mod:`playground.worker`, :mod:`playground.service`, :mod:`playground.templates`,
:mod:`playground.store` (a scan is recorded as one group), :mod:`playground.io` (each chain's
best schedule exported as a script), :mod:`playground.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "ModelError": ("playground.model.graph", "ModelError"),
    "Model": ("playground.model.graph", "Model"),
    "Node": ("playground.model.graph", "Node"),
    "load_model": ("playground.model.onnx_read", "load_model"),
    "MAX_BYTES": ("playground.model.onnx_read", "MAX_BYTES"),
    "ModelChain": ("playground.model.cut", "ModelChain"),
    "cut_chains": ("playground.model.cut", "cut_chains"),
    "left_out": ("playground.model.cut", "left_out"),
    "read_in_worker": ("playground.model.scanner", "read_in_worker"),
    "scan": ("playground.model.scanner", "scan"),
    "ScanResult": ("playground.model.scanner", "ScanResult"),
    "ChainResult": ("playground.model.scanner", "ChainResult"),
    "export_schedules": ("playground.model.scanner", "export_schedules"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'playground.model' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
