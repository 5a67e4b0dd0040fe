"""Shareable URL state: a session as compact URL-safe text, and back.

JSON, zlib, base64url without padding, capped at :data:`MAX_STATE_CHARS` encoded and
:data:`MAX_STATE_JSON` decompressed (a zip bomb stops there). Nothing is executed; a decoded
session is replayed like any import.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping
from typing import Any

from playground.errors import ScriptError
from playground.io.script_import import MAX_STEPS
from playground.schedule.session import Session
from playground.schedule.steps import Step

MAX_STATE_CHARS = 8 * 1024  # encoded URL state
MAX_STATE_JSON = 64 * 1024  # decompressed URL state
QUERY_KEY = "state"


_B64_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def encode_state(chain: dict, steps: tuple[Step, ...] | list[Step], cursor: int | None = None
                 ) -> str:
    """A session as compact URL-safe text: JSON, zlib, base64url without padding.

    Raises
    ------
    ScriptError
        When the encoded state is longer than ``MAX_STATE_CHARS`` (export a script instead).
    """
    payload = {"chain": chain, "steps": [s.to_dict() for s in steps]}
    if cursor is not None:
        payload["cursor"] = cursor
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    text = base64.urlsafe_b64encode(zlib.compress(data, 9)).decode().rstrip("=")
    if len(text) > MAX_STATE_CHARS or len(data) > MAX_STATE_JSON:
        raise ScriptError(f"the session is too large for a URL ({len(text):,} characters "
                          f"encoded, the limit is {MAX_STATE_CHARS:,}): export a script "
                          "instead", where="query")
    return text


def decode_state(text: str) -> dict:
    """The ``{"chain", "steps", "cursor"?}`` dict of :func:`encode_state`'s text (not replayed).

    Raises
    ------
    ScriptError
        For text that is too long, not base64url, not zlib data, decompresses to more than
        ``MAX_STATE_JSON`` bytes (a zip bomb stops there), or is not a session object.
    """
    if not isinstance(text, str):
        raise ScriptError(f"URL state must be text, got {type(text).__name__}", where="query")
    text = text.strip()
    if len(text) > MAX_STATE_CHARS:
        raise ScriptError(f"URL state is {len(text):,} characters, above the limit of "
                          f"{MAX_STATE_CHARS:,}", where="query")
    if not text or not _B64_RE.match(text):
        raise ScriptError("URL state is not base64url text (A-Z a-z 0-9 - _)", where="query")
    try:
        body = text.rstrip("=")
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ScriptError("URL state is not valid base64url (truncated?)", where="query") from None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_STATE_JSON + 1)
    except zlib.error as e:
        raise ScriptError(f"URL state is not compressed session data ({e})",
                          where="query") from None
    if len(raw) > MAX_STATE_JSON or inflater.unconsumed_tail:
        raise ScriptError(f"URL state decompresses to more than {MAX_STATE_JSON:,} bytes",
                          where="query")
    if not inflater.eof:
        raise ScriptError("URL state is truncated (incomplete compressed data)", where="query")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ScriptError("URL state does not hold valid JSON", where="query") from None
    if not isinstance(state, dict) or not isinstance(state.get("chain"), dict) or \
            not isinstance(state.get("steps", []), list):
        raise ScriptError("URL state must be an object with chain and steps", where="query")
    unknown = sorted(set(state) - {"chain", "steps", "cursor"})
    if unknown:
        raise ScriptError(f"URL state: unknown field {unknown[0]!r}", where="query")
    return state


def import_query(params: Mapping[str, Any]) -> Session:
    """The session encoded in a shareable URL's query parameters (key ``QUERY_KEY``).

    Raises
    ------
    PlaygroundError
        ScriptError for a missing or undecodable state; ChainError / StepError for a chain or
        steps that do not apply.
    """
    value = params.get(QUERY_KEY)
    if isinstance(value, list | tuple):
        value = value[-1] if value else None
    if value is None:
        raise ScriptError(f"the URL has no {QUERY_KEY}= parameter", where="query")
    state = decode_state(value)
    if "steps" in state and len(state["steps"]) > MAX_STEPS:
        raise ScriptError(f"URL state has more than {MAX_STEPS} steps", where="query")
    try:
        return Session.from_dict(state)
    except (RecursionError, MemoryError):
        raise ScriptError("URL state is nested too deeply", where="query") from None
