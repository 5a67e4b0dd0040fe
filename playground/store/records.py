"""Plain data in and out of the store, without the database: keys, names, dates, CSV.

A chain is keyed by its normalized JSON (two sessions on the same chain share the key), a
machine by its fingerprint (``playground.measure.machine.fingerprint()``, passed in by the
caller: the store never reads the machine itself). Names are what people read in lists;
keys are what filters and the leaderboard group by.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from playground.chain.spec import chain_to_json, normalize_chain
from playground.errors import ChainError, PlaygroundError

#: Longest text kept per field (characters); longer text is cut with "…".
LIMITS = {"label": 200, "error": 2000, "detail": 16000, "note": 10000, "name": 200,
          "source": 40, "kind": 40, "target": 40}

#: Columns of a listed experiment (``list_experiments``), in CSV order.
SUMMARY_FIELDS = ("id", "parent_id", "kind", "created", "source", "chain_key", "chain_name",
                  "target", "machine_key", "machine_name", "status", "correct", "median_ms",
                  "gflops", "n_steps", "label", "starred", "note", "error", "children")
#: Columns of a dumped experiment in CSV: the summary's, then the JSON ones.
DUMP_FIELDS = (*SUMMARY_FIELDS[:-1], "steps", "machine", "result", "detail")


def clip(text: Any, field: str) -> str:
    """``text`` as a string of at most ``LIMITS[field]`` characters."""
    text = "" if text is None else str(text)
    limit = LIMITS[field]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def canonical_chain(chain: Mapping) -> dict:
    """The chain normalized (as sessions hold it); a chain that does not normalize is kept
    as given, so that a failed run of a broken chain is still recorded."""
    try:
        return normalize_chain(chain)
    except ChainError:
        return json.loads(json.dumps(chain, default=str))


def chain_key(chain: Mapping) -> str:
    """16 hex digits naming the chain: equal for equal normalized chains."""
    try:
        text = chain_to_json(dict(chain))
    except (TypeError, ValueError):
        text = json.dumps(chain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _layer_name(layer: Mapping) -> str:
    op = layer.get("op", "?")
    name = layer.get("name", op)
    if op == "conv2d":
        kernel = layer.get("kernel", "?")
        kernel = "×".join(map(str, kernel)) if isinstance(kernel, list) else str(kernel)
        groups = layer.get("groups", 1)
        dw = " dw" if groups not in (1, None) else ""
        return f"{name} {layer.get('channels', '?')}ch {kernel}{dw}"
    return str(name)


def chain_name(chain: Mapping) -> str:
    """A short description, e.g. ``1×3×64×64 → conv1 10ch 16×16 → relu1``."""
    shape = (chain.get("input") or {}).get("shape") or []
    head = "×".join(map(str, shape)) or "?"
    layers = [_layer_name(layer) for layer in chain.get("layers") or [] if isinstance(layer,
                                                                                        Mapping)]
    return clip(" → ".join([head, *layers]), "name")


def machine_key(machine: Mapping) -> str:
    """12 hex digits naming the machine: equal for equal fingerprints."""
    text = json.dumps(dict(machine), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine_name(machine: Mapping) -> str:
    """``CPU model (mcpu), N cores[, GPU]``, or ``remote <label>`` for a remote device."""
    if machine.get("remote"):
        return clip(f"remote {machine['remote']}", "name")
    parts = [str(machine.get("cpu_model") or "unknown CPU")]
    if machine.get("mcpu"):
        parts[0] += f" ({machine['mcpu']})"
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("gpu"):
        parts.append(str(machine["gpu"]))
    return clip(", ".join(parts), "name")


def steps_list(steps: Iterable[Any]) -> list[dict]:
    """Steps (``Step`` objects or their dicts) as plain dicts."""
    out = []
    for s in steps:
        out.append(s.to_dict() if hasattr(s, "to_dict") else dict(s))
    return out


def session_dict(session: Any) -> dict:
    """A session (a ``Session`` or its ``to_dict()``) as ``{"chain", "steps", "cursor"}``."""
    raw = session.to_dict() if hasattr(session, "to_dict") else session
    if not isinstance(raw, Mapping) or not isinstance(raw.get("chain"), Mapping):
        raise PlaygroundError("a session to store must have a chain and steps", where="store")
    steps = steps_list(raw.get("steps") or [])
    cursor = raw.get("cursor", len(steps))
    return {"chain": dict(raw["chain"]), "steps": steps,
            "cursor": cursor if isinstance(cursor, int) else len(steps)}


def finite(x: Any) -> float | None:
    """``x`` as a float, or None for missing, non-numeric, NaN or infinite values."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def timestamp(when: Any, *, end_of_day: bool = False) -> float | None:
    """Unix seconds of ``when``: a number, a ``datetime``/``date``, or ISO text
    (``2026-11-24`` or ``2026-11-24T10:00``); a bare date means its start (or its end).

    Raises
    ------
    PlaygroundError
        For text that is not an ISO date.
    """
    if when is None or when == "":
        return None
    if isinstance(when, int | float) and not isinstance(when, bool):
        return float(when)
    if isinstance(when, str):
        try:
            when = dt.datetime.fromisoformat(when.strip()) if "T" in when or ":" in when \
                else dt.date.fromisoformat(when.strip())
        except ValueError:
            raise PlaygroundError(f"{when!r} is not a date (use YYYY-MM-DD)",
                                  where="store.date") from None
    if isinstance(when, dt.datetime):
        return when.timestamp()
    if isinstance(when, dt.date):
        day = dt.datetime.combine(when, dt.time.max if end_of_day else dt.time.min)
        return day.timestamp()
    raise PlaygroundError(f"{when!r} is not a date", where="store.date")


def iso(seconds: float | None) -> str:
    """Local time of Unix ``seconds`` as ``YYYY-MM-DD HH:MM:SS``."""
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def to_csv(rows: Sequence[Mapping], fields: Sequence[str] = SUMMARY_FIELDS) -> str:
    """Rows as CSV text (``created`` as local ISO time; other JSON values as JSON text)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = {}
        for k in fields:
            v = row.get(k)
            if k == "created":
                v = iso(v)
            elif isinstance(v, dict | list):
                v = to_json(v)
            flat[k] = "" if v is None else v
        writer.writerow(flat)
    return out.getvalue()
