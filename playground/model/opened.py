"""A model opened for the page: read and cut in one worker job (``model_open``).

The page's Model tab shows a model's drawing, its chains and what was left out, for a file a
user uploads or a bundled example. :func:`open_in_worker` sends the file (checked against the
size cap first: the server never sends, let alone parses, more) or the example's name to a
worker, which reads it and cuts it (:mod:`playground.jobs.onnx_upload`), and returns
an :class:`Opened`: plain data, safe to keep in the page's session state.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from playground.model import MAX_BYTES, Model, ModelChain, ModelError
from playground.worker.job_table import MODEL_OPEN


@dataclass(frozen=True)
class Opened:
    """A model read and cut: its data path, its distinct chains and the ops left out."""

    model: Model
    chains: tuple[ModelChain, ...]
    left_out: dict[str, int]
    max_convs: int

    @property
    def chains_flop(self) -> float:
        """The FLOPs of every chain occurrence (equal to ``model.flop`` when every window
        layer is in a chain)."""
        return sum(c.flop * c.count for c in self.chains)

    @property
    def occurrences(self) -> int:
        return sum(c.count for c in self.chains)


def open_in_worker(pool: Any, data: bytes | None = None, *, example: str = "",
                   input_shape: Any = None, max_convs: int = 3, max_bytes: int = MAX_BYTES,
                   name: str = "", timeout_s: float = 120.0,
                   memory_limit_mb: int | None = 2048) -> Opened:
    """Read and cut ``data`` (a ``.onnx`` file's bytes) or the bundled ``example`` in a
    worker of ``pool`` (a :class:`~playground.worker.pool.WorkerPool` or the server's pools).

    Raises
    ------
    ModelError
        One line: the file is above ``max_bytes`` (checked before anything is sent), the
        reader's or the cutter's refusal, or why the worker could not answer (its time or
        memory limit).
    """
    if (data is None) == (not example):
        raise ModelError("open either a file's bytes or an example, not both or neither")
    if data is not None and len(data) > max_bytes:
        raise ModelError(f"the model is {len(data):,} bytes, above the cap of {max_bytes:,}")
    payload = {"example": example, "input_shape": list(input_shape) if input_shape else None,
               "max_bytes": max_bytes, "name": name, "max_convs": max_convs,
               "data": base64.b64encode(data).decode("ascii") if data is not None else ""}
    res = MODEL_OPEN.call(pool, payload, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb)
    if res.status != "ok":
        raise ModelError(f"the model could not be read ({res.status}): {res.message}")
    if res.value.get("error"):
        raise ModelError(res.value["error"])
    return Opened(Model.from_dict(res.value["model"]),
                  tuple(ModelChain.from_dict(c) for c in res.value["chains"]),
                  dict(res.value["left_out"]), max_convs)
