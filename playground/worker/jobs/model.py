"""Worker job of the Model tab: read an uploaded ONNX file in a memory-capped process.

A file from a browser may be malformed or hostile (a declared 2 GB tensor, a million nodes);
parsing it here means the worst it can do is cost a killable worker, never the server.
"""

from __future__ import annotations

import base64

from playground.worker.registry import job


@job("model_read")
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
