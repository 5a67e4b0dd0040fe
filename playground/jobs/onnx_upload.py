"""Worker jobs of the Model tab: read an ONNX file (``model_read``), and read it and cut it
into chains (``model_open``), in a memory-capped, killable process.

A file from a browser may be malformed or hostile (a declared 2 GB tensor, a million nodes);
parsing it here means the worst it can do is cost a killable worker, never the server. The cut
runs here too because its cost grows with the graph a user sends (a long run of chain layers is
grown from every node it holds). An example is built here with ``onnx.helper``: the server
never imports ``onnx``.
"""

from __future__ import annotations

import base64

from playground.worker.job_table import MODEL_OPEN, MODEL_READ
from playground.worker.registry import job


@job(MODEL_READ)
def model_read_job(payload: dict) -> dict:
    """Payload ``data`` (the file, base64), ``input_shape`` (or None), ``max_bytes``, ``name``.

    Returns ``{"model": Model.to_dict()}``, or ``{"error": "<one line>"}`` for a file the
    importer refuses (:class:`playground.model.graph.ModelError`).
    """
    from playground.model.graph import ModelError
    from playground.model.onnx_read import MAX_BYTES, load_model

    try:
        data = base64.b64decode(payload.get("data", ""), validate=True)
        model = load_model(data, payload.get("input_shape"),
                           max_bytes=int(payload.get("max_bytes") or MAX_BYTES),
                           name=str(payload.get("name") or ""))
    except ModelError as e:
        return {"error": e.message}
    except ValueError:
        return {"error": "the upload is not valid base64"}
    return {"model": model.to_dict()}


@job(MODEL_OPEN)
def model_open_job(payload: dict) -> dict:
    """Payload: ``data`` (the file, base64) or ``example`` (a name of
    :data:`playground.model.examples.EXAMPLES`), ``input_shape`` (or None), ``max_bytes``,
    ``name``, ``max_convs``.

    Returns ``{"model": Model.to_dict(), "chains": [ModelChain.to_dict(), ...],
    "left_out": {op: count}}``, or ``{"error": "<one line>"}`` for a file the importer or the
    cutter refuses (:class:`playground.model.ModelError`).
    """
    from playground.model import MAX_BYTES, ModelError, cut_chains, left_out, load_model
    from playground.model.examples import example_bytes

    try:
        if payload.get("example"):
            data = example_bytes(str(payload["example"]))
        else:
            data = base64.b64decode(payload.get("data", ""), validate=True)
        model = load_model(data, payload.get("input_shape"),
                           max_bytes=int(payload.get("max_bytes") or MAX_BYTES),
                           name=str(payload.get("name") or ""))
        chains = cut_chains(model, max_convs=payload.get("max_convs", 3))
    except ModelError as e:
        return {"error": e.message}
    except ValueError:
        return {"error": "the upload is not valid base64"}
    return {"model": model.to_dict(), "chains": [c.to_dict() for c in chains],
            "left_out": left_out(model, chains)}
