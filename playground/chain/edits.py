"""The chain editor's fields, and an edit of several of them applied field by field.

The page edits a chain one field at a time (``input.h``, ``0.channels``, ``0.kernel_w``...),
but a person may change several before any is valid: H = 100000, then W = 100000, then
C = 3. :func:`apply_fields` keeps every change that is valid (with those already kept) and
gives each invalid one its own error, so the page can show every field's error at once,
outline only the fields at fault, and say what the chain still uses for each; a valid change
never waits for an invalid one to be fixed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from playground.chain.ops import OPS
from playground.chain.ops.base import PAIR, SIDES
from playground.chain.spec import normalize_chain
from playground.errors import ChainError

INPUT_DIMS = "nchw"
_FIELDS = [f for op in OPS.values() for f in op.fields]
#: Layer fields that are an (h, w) pair in the editor: ``kernel_h``, ``kernel_w``...
PAIRS = tuple(dict.fromkeys(f["name"] for f in _FIELDS if f["kind"] in (PAIR, SIDES)))
#: Layer fields that are one value: ``channels``, ``min``...
SINGLE = tuple(dict.fromkeys(f["name"] for f in _FIELDS if f["kind"] not in (PAIR, SIDES)))


@dataclass(frozen=True)
class FieldError:
    """An edited field that was not applied: why, and what the chain still uses."""

    field: str
    message: str
    kept: Any


def field_values(chain: dict) -> dict[str, Any]:
    """The editor's fields of a normalized ``chain`` and their values (``in_channels`` is
    None when it follows the incoming tensor)."""
    values: dict[str, Any] = {f"input.{d}": v for d, v in
                              zip(INPUT_DIMS, chain["input"]["shape"], strict=True)}
    values["input.dtype"] = chain["input"]["dtype"]
    for i, layer in enumerate(chain["layers"]):
        for f in OPS[layer["op"]].fields:
            name = f["name"]
            if f["kind"] in (PAIR, SIDES):
                values[f"{i}.{name}_h"], values[f"{i}.{name}_w"] = layer[name][:2]
            else:
                values[f"{i}.{name}"] = layer.get(name)
    return values


def with_fields(chain: dict, values: dict[str, Any]) -> dict:
    """A raw copy of ``chain`` with the fields in ``values`` set (not validated). Padding
    edited in the editor is symmetric: ``[h, w]``; unedited, it keeps its four sides."""
    out = copy.deepcopy(chain)
    for field, value in values.items():
        where, name = field.split(".", 1)
        if where == "input":
            if name == "dtype":
                out["input"]["dtype"] = value
            else:
                out["input"]["shape"][INPUT_DIMS.index(name)] = value
            continue
        layer = out["layers"][int(where)]
        if name in SINGLE:
            if value is None:
                layer.pop(name, None)
            else:
                layer[name] = value
            continue
        pair, side = name.rsplit("_", 1)
        both = list(layer[pair][:2])
        both["hw".index(side)] = value
        layer[pair] = both
    return out


def changed_fields(chain: dict, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` that differ from ``chain``'s, in the editor's order."""
    now = field_values(chain)
    return {f: v for f, v in values.items() if f in now and now[f] != v}


def apply_fields(chain: dict, values: dict[str, Any]) -> tuple[dict, list[FieldError]]:
    """``chain`` (normalized) with every changed field of ``values`` that is valid applied,
    and an error for each that is not (with the value the chain keeps for it).

    A change is kept when the chain with it and the changes kept before normalizes; the
    refused ones are tried again once more (a change may need another, such as channels and
    groups edited together). The fields are tried in the editor's order.
    """
    pending = changed_fields(chain, values)
    now = field_values(chain)
    kept: dict[str, Any] = {}
    errors: dict[str, ChainError] = {}
    for _ in range(2):
        for field, value in list(pending.items()):
            try:
                normalize_chain(with_fields(chain, {**kept, field: value}))
            except ChainError as e:
                errors[field] = e
                continue
            kept[field] = value
            errors.pop(field, None)
            del pending[field]
        if not errors:
            break
    new = normalize_chain(with_fields(chain, kept)) if kept else chain
    return new, [FieldError(f, errors[f].message, now[f]) for f in pending]
