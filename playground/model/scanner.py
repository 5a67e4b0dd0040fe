"""Scan a model's chains: for each distinct chain, the search and the fuse-or-not verdict.

Each distinct chain gets :func:`~playground.templates.verdict.fusion_verdict` within its own
budget: the template search (its candidates built, validated and timed as long jobs in the
pool it is given: the server's long pool with its fair queue, or a
:class:`~playground.worker.pool.WorkerPool` from the command line; on the RPC farm when the
pools carry one, ``PLAYGROUND_TRACKER``), then the best fused and unfused schedules timed side
by side. ``auto_ms`` is the faster of the two (the search's best where there is no pair).

The scan is recorded in the experiment store as one group (kind ``"model"``), each chain's
outcome a child (kind ``"model_chain"``: its best steps, ``auto_ms``, the verdict). It is
resumable: before searching a chain, the store is asked for an outcome of the same chain
(normalized JSON), machine, target and budget, and a stored one is reused (``reused``). It is
cancellable (``cancel``: the job in flight is killed, finished chains are kept) and reports
progress (``on_progress``) after every candidate and every chain.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.errors import PlaygroundError
from playground.model.cut import ModelChain, left_out
from playground.model.graph import Model, ModelError
from playground.model.onnx_read import MAX_BYTES
from playground.worker.job_table import MODEL_READ

#: The kind of a chain's outcome in the store (children of a ``"model"`` group).
CHAIN_KIND = "model_chain"


@dataclass
class ChainResult:
    """One distinct chain's outcome: the best schedule's time, the verdict and its steps."""

    chain: ModelChain
    auto_ms: float | None = None
    valid: bool = False
    correct: bool = False
    verdict: str = ""
    ratio: float | None = None
    fused_ms: float | None = None
    unfused_ms: float | None = None
    reason: str = ""
    steps: list[dict] = field(default_factory=list)
    label: str = ""
    search_s: float = 0.0
    status: str = "pending"  # pending | done | reused | cancelled | failed

    @property
    def unfused_or_auto_ms(self) -> float | None:
        return self.unfused_ms if self.unfused_ms is not None else self.auto_ms

    def outcome(self) -> dict:
        """What the store keeps of it (and gives back on resume)."""
        return {"auto_ms": self.auto_ms, "valid": self.valid, "correct": self.correct,
                "verdict": self.verdict, "ratio": self.ratio, "fused_ms": self.fused_ms,
                "unfused_ms": self.unfused_ms, "reason": self.reason, "label": self.label,
                "search_s": self.search_s}

    def to_json(self) -> dict:
        return {**self.chain.to_dict(), **self.outcome(), "status": self.status,
                "steps": self.steps}


@dataclass
class ScanResult:
    """Every distinct chain's outcome and the network's totals."""

    model: str
    rows: list[ChainResult]
    skipped_ops: dict[str, int]
    budget_s_per_chain: float
    model_flop: float = 0.0
    wall_s: float = 0.0
    cancelled: bool = False
    group_id: int | None = None
    machine: str = ""

    @property
    def total_ms(self) -> float:
        """Sum of each chain's best time x its count (chains without one left out)."""
        return math.fsum(r.auto_ms * r.chain.count for r in self.rows if r.auto_ms is not None)

    @property
    def unfused_total_ms(self) -> float:
        """The same with each chain's best unfused schedule (its best where it has none)."""
        return math.fsum(r.unfused_or_auto_ms * r.chain.count for r in self.rows
                         if r.unfused_or_auto_ms is not None)

    @property
    def missing(self) -> int:
        """Distinct chains without a time (failed, or not scanned yet)."""
        return sum(r.auto_ms is None for r in self.rows)

    def to_json(self) -> dict:
        return {"model": self.model, "machine": self.machine,
                "chains": [r.to_json() for r in self.rows], "skipped_ops": self.skipped_ops,
                "total_ms": self.total_ms, "unfused_total_ms": self.unfused_total_ms,
                "chains_without_time": self.missing, "model_flop": self.model_flop,
                "budget_s_per_chain": self.budget_s_per_chain, "wall_s": self.wall_s,
                "cancelled": self.cancelled, "experiment": self.group_id}


def read_in_worker(pool: Any, data: bytes, input_shape: Any = None, *,
                   max_bytes: int = MAX_BYTES, name: str = "", timeout_s: float = 120.0,
                   memory_limit_mb: int | None = 2048) -> Model:
    """:func:`~playground.model.onnx_read.load_model` in a worker (job ``model_read``): a
    hostile file costs a memory-capped, killable process, never the server. The size cap is
    checked here, before anything is sent.

    Raises
    ------
    ModelError
        The reader's one line, or why the worker could not answer.
    """
    if len(data) > max_bytes:
        raise ModelError(f"the model is {len(data):,} bytes, above the cap of {max_bytes:,}")
    res = MODEL_READ.call(pool, {"data": base64.b64encode(data).decode("ascii"),
                                "input_shape": list(input_shape) if input_shape else None,
                                "max_bytes": max_bytes, "name": name},
                          timeout_s=timeout_s, memory_limit_mb=memory_limit_mb)
    if res.status != "ok":
        raise ModelError(f"the model could not be read ({res.status}): {res.message}")
    if res.value.get("error"):
        raise ModelError(res.value["error"])
    return Model.from_dict(res.value["model"])


def _machine(pool: Any, target: str) -> dict:
    from playground.templates.search import timing_machine

    return timing_machine(pool, target)


def _stored(store: Any, chain: ModelChain, machine: dict, target: str,
            budget_s: float) -> dict | None:
    """A stored outcome of this chain on this machine with this budget, or None."""
    from playground.store import StoreError
    from playground.store.records import chain_key, machine_key

    try:
        found = store.list_experiments(chain=chain_key(chain.chain),
                                       machine=machine_key(machine), target=target,
                                       kind=CHAIN_KIND, everything=True)
        for row in found:
            full = store.get(row["id"])
            value = full.get("result") or {}
            if value.get("budget_s") == budget_s and value.get("status") == "done":
                return {**value, "steps": full.get("steps") or []}
    except StoreError:
        return None
    return None


def _search(pool: Any, row: ChainResult, facts: Any, budget_s: float, target: str,
            cancel: threading.Event | None, on_candidate: Callable | None) -> None:
    """Fill ``row`` from the verdict (search + side-by-side timing) of its chain."""
    from playground.templates.verdict import fusion_verdict

    v = fusion_verdict(pool, row.chain.chain, facts, budget_s=budget_s, target=target,
                       cancel=cancel, on_progress=on_candidate)
    search = v.search
    pair = [(ms, c) for ms, c in ((v.fused_ms, v.fused), (v.unfused_ms, v.unfused))
            if ms is not None and c is not None]
    best = min(pair, key=lambda p: p[0]) if pair else None
    if best is None and search is not None and search.best() is not None:
        best = (search.best().median_ms, search.best())
    row.verdict, row.ratio, row.reason = v.verdict, v.ratio, v.reason
    row.fused_ms, row.unfused_ms = v.fused_ms, v.unfused_ms
    row.search_s = search.search_s if search else 0.0
    tried = search.candidates if search else []
    row.valid = any(c.status not in ("invalid", "schedule_error", "build_error") for c in tried)
    if best is not None:
        row.auto_ms, row.correct = best[0], best[1].status == "ok"
        row.steps = [s.to_dict() for s in best[1].steps]
        row.label = best[1].label
    cancelled = cancel is not None and cancel.is_set()
    row.status = "cancelled" if cancelled or (search is not None and search.cancelled) \
        else "done"


def scan(pool: Any, model: Model, chains: list[ModelChain], facts: Any = None, *,
         budget_s_per_chain: float = 30.0, target: str = "cpu",
         cancel: threading.Event | None = None,
         on_progress: Callable[[dict], None] | None = None, source: str = "cli",
         record: bool = True, resume: bool = True, store: Any = None) -> ScanResult:
    """Search and judge every distinct chain (see the module docstring).

    Parameters
    ----------
    pool
        A :class:`~playground.worker.pool.WorkerPool` or the server's pools.
    facts
        The machine's facts (default :func:`playground.measure.machine.machine_facts`).
    on_progress
        Called with ``{"event": "candidate" | "chain", "index": i, "of": n, ...}``: after
        each candidate (``label``, ``status``, ``median_ms``) and each chain (``row``, a
        :class:`ChainResult`; ``reused`` when it came from the store).
    source
        Who records it (``"cli"``, ``"page"``).
    record, resume
        Keep the scan in the store; reuse stored outcomes.
    store
        Another :class:`~playground.store.Store` than the default (tests).
    """
    from playground.measure.machine import machine_facts
    from playground.store import StoreError, get_store, record_group

    if not isinstance(budget_s_per_chain, int | float) or not budget_s_per_chain > 0:
        raise ModelError(f"budget_s_per_chain must be > 0 seconds, got {budget_s_per_chain!r}")
    budget = float(budget_s_per_chain)
    facts = facts or machine_facts()
    machine = _machine(pool, target)
    store = store or get_store()
    result = ScanResult(model.name, [ChainResult(c) for c in chains], left_out(model, chains),
                        budget, model.flop,
                        machine=f"farm {machine['remote']}" if "remote" in machine
                        else facts.summary())
    group = None
    if record and chains:
        group = record_group("model", chains[0].chain, target, machine, source=source,
                             label=f"model {model.name}: {len(chains)} chains, "
                                   f"{budget:g} s each", store=store,
                             info={"model": model.name, "chains": len(chains),
                                   "budget_s_per_chain": budget,
                                   "skipped_ops": result.skipped_ops})
        result.group_id = group.id
    t0 = time.monotonic()
    n = len(chains)

    def emit(event: dict) -> None:
        if on_progress is not None:
            on_progress(event)

    for i, row in enumerate(result.rows):
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            break
        stored = _stored(store, row.chain, machine, target, budget) if resume else None
        if stored is not None:
            for key, value in row.outcome().items():
                setattr(row, key, stored.get(key, value))
            row.steps, row.status = list(stored["steps"]), "reused"
        else:
            def on_candidate(cand, _result, i=i) -> None:
                emit({"event": "candidate", "index": i, "of": n, "label": cand.label,
                      "status": cand.status, "median_ms": cand.median_ms})

            try:
                _search(pool, row, facts, budget, target, cancel, on_candidate)
            except PlaygroundError as e:  # this chain fails; the network's scan goes on
                row.status, row.reason = "failed", e.message
        if group is not None and group.id is not None and row.status != "cancelled":
            try:
                store.record_run(row.chain.chain, row.steps, target, machine,
                                 status="ok" if row.correct else "no_schedule",
                                 value={**row.outcome(), "median_ms": row.auto_ms,
                                        "correct": row.correct, "budget_s": budget,
                                        # a failure is kept, never reused
                                        "status": "failed" if row.status == "failed"
                                        else "done", "count": row.chain.count,
                                        "nodes": list(row.chain.nodes)},
                                 label=f"{row.chain.count}x {row.chain.describe()}"[:200],
                                 source=source, kind=CHAIN_KIND, parent=group.id)
            except StoreError:
                pass  # history not saved: store.problem says why; the scan goes on
        emit({"event": "chain", "index": i, "of": n, "row": row,
              "reused": row.status == "reused"})
        if row.status == "cancelled":
            result.cancelled = True
            break
    result.wall_s = time.monotonic() - t0
    if group is not None:
        group.finish("cancelled" if result.cancelled else "done")
    return result


def export_schedules(result: ScanResult, directory: str | Path) -> list[Path]:
    """Each chain's best schedule as a standalone script in ``directory`` (``chain_01.py``
    ...), plus ``index.json`` and ``index.md``; returns the paths written."""
    import json

    from playground.io.export import export_script

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written, index = [], []
    for i, row in enumerate(result.rows, 1):
        entry = {**row.chain.to_dict(), **row.outcome(), "file": None}
        del entry["chain"]
        if row.steps:
            path = out / f"chain_{i:02d}.py"
            path.write_text(export_script(
                row.chain.chain, row.steps,
                title=f"{result.model}, chain {i} (x{row.chain.count})",
                description=f"Source nodes: {', '.join(row.chain.nodes)}. Found by `python -m "
                            f"playground model` ({result.budget_s_per_chain:g} s) on "
                            f"{result.machine}: {row.auto_ms:.3f} ms, {row.verdict}."))
            entry["file"] = path.name
            written.append(path)
        index.append(entry)
    (out / "index.json").write_text(json.dumps({"model": result.model, "chains": index,
                                                "total_ms": result.total_ms}, indent=2))
    lines = [f"# {result.model}: best schedules per chain", "",
             "| file | count | auto ms | verdict | nodes |", "|---|---|---|---|---|"]
    for e in index:
        ms = "-" if e["auto_ms"] is None else f"{e['auto_ms']:.3f}"
        lines.append(f"| {e['file'] or '-'} | {e['count']} | {ms} | {e['verdict']} | "
                     f"{', '.join(e['nodes'])} |")
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return [*written, out / "index.json", out / "index.md"]
