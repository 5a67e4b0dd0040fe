"""Chains: an input tensor and an ordered list of layers, as plain JSON-able data.

A chain is a dict in *normalized form*: every field present, tuples as lists, every layer
named. :func:`normalize_chain` turns what a user typed (partial fields, ints for pairs) into
that form and refuses anything that cannot be built, with a message that names the layer, the
field and the numbers. The normalized dict is what :mod:`playground.chain.compute` (TVM) and
:mod:`playground.chain.reference` (numpy) read, and what exports embed. What each op accepts
(its fields, their defaults and limits, the shapes it takes) comes from its record in
:mod:`playground.chain.ops`; this module applies the records and the chain-wide rules.

Example
-------
>>> chain = normalize_chain({
...     "input": {"shape": [1, 3, 32, 32]},
...     "layers": [{"op": "conv2d", "channels": 8, "kernel": 3, "padding": 1},
...                {"op": "relu"}],
... })
>>> [layer["name"] for layer in chain["layers"]]
['conv1', 'relu1']
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from playground.chain import ops
from playground.chain.ops import OPS
from playground.chain.ops.base import FLOAT, INT, SIDES, TENSOR, LayerError, window_hw
from playground.errors import ChainError

DTYPES = ("float32", "float16")
LAYOUTS = ("NCHW",)
#: Layers that slide a window over their input (and may pad it): they change H and W.
WINDOW_OPS = tuple(name for name, op in OPS.items() if op.kind != "elementwise")
# Largest tensor (elements) and total work (FLOP) a chain may ask for: a 2-core machine shared
# by several users should not be asked to allocate gigabytes or compute for minutes.
MAX_ELEMENTS = 1 << 26
MAX_FLOP = 2.0e11
MAX_DIM = 1 << 16
INPUT_NAME = "data"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Names the builder derives from a layer's name; a layer may not take one of them.
DERIVED_SUFFIXES = tuple(dict.fromkeys(
    ["_pad", *(p[0] for op in OPS.values() for p in op.params),
     *(h for op in OPS.values() for h in op.helpers)]))


def default_name(op: str, n: int) -> str:
    """The name :func:`normalize_chain` gives the ``n``-th (from 1) unnamed ``op`` layer."""
    return f"{OPS[op].prefix}{n}"


def _err(layer: str, field: str, message: str) -> ChainError:
    where = f"layer:{layer}.{field}" if field else f"layer:{layer}"
    return ChainError(message, where=where)


def _as_int(value: Any, layer: str, field: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(layer, field, f"{layer}: {field} must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise _err(layer, field, f"{layer}: {field} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise _err(layer, field, f"{layer}: {field} must be >= {minimum}, got {value}")
    if value > MAX_DIM:
        raise _err(layer, field, f"{layer}: {field} = {value} is larger than {MAX_DIM}")
    return value


def _as_ints(value: Any, n: int, layer: str, field: str, *, minimum: int = 1) -> list[int]:
    """Accept an int (repeated n times), or a list of 1, 2 or n ints."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise _err(layer, field, f"{layer}: {field} must be an integer or a list of "
                                 f"integers, got {value!r}")
    items = [_as_int(v, layer, field, minimum=minimum) for v in value]
    if len(items) == 1:
        return items * n
    if n == 4 and len(items) == 2:  # (pad_h, pad_w) -> top, left, bottom, right
        return [items[0], items[1], items[0], items[1]]
    if len(items) != n:
        raise _err(layer, field, f"{layer}: {field} needs 1, 2 or {n} values, got {len(items)}")
    return items


def _as_float(value: Any, layer: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _err(layer, field, f"{layer}: {field} must be a finite number, got {value!r}")
    return float(value)


def _check_keys(raw: dict, allowed: set[str], layer: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise _err(layer, unknown[0], f"{layer}: unknown field {unknown[0]!r} for a "
                                      f"{raw.get('op')} layer (known: {known})")


def conv_output_hw(h: int, w: int, layer: dict) -> tuple[int, int]:
    """Output height and width of a normalized window layer on an h x w input (may be <= 0)."""
    return window_hw(h, w, layer)


def _normalize_input(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise ChainError(f"input must be an object with a shape, got {raw!r}", where="input")
    unknown = sorted(set(raw) - {"shape", "dtype"})
    if unknown:
        raise ChainError(f"input: unknown field {unknown[0]!r}", where=f"input.{unknown[0]}")
    shape = raw.get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 4:
        raise ChainError(f"input: shape must be 4 integers (N, C, H, W), got {shape!r}",
                         where="input.shape")
    try:
        dims = [_as_int(v, "input", f"shape[{i}] ({'NCHW'[i]})") for i, v in enumerate(shape)]
    except ChainError as e:  # about the input row, not a layer named "input"
        raise ChainError(e.message, where="input.shape") from None
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ChainError(f"input: unknown dtype {dtype!r} (choose one of {', '.join(DTYPES)})",
                         where="input.dtype")
    return {"shape": dims, "dtype": dtype}


def _normalize_layer(raw: Any, index: int, counts: dict[str, int]) -> dict:
    if not isinstance(raw, dict):
        raise ChainError(f"layer {index + 1} must be an object, got {raw!r}",
                         where=f"layer:#{index + 1}")
    op = raw.get("op")
    if op not in OPS:
        raise ChainError(f"layer {index + 1}: unknown op {op!r} (choose one of {', '.join(OPS)})",
                         where=f"layer:#{index + 1}.op")
    counts[op] = counts.get(op, 0) + 1
    name = raw.get("name") or default_name(op, counts[op])
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ChainError(f"layer {index + 1}: name {name!r} must be lower-case letters, digits "
                         "and '_', starting with a letter, at most 32 characters",
                         where=f"layer:#{index + 1}.name")
    if name == INPUT_NAME or name.endswith(DERIVED_SUFFIXES):
        raise ChainError(f"layer {index + 1}: name {name!r} is reserved",
                         where=f"layer:#{index + 1}.name")
    layer: dict[str, Any] = {"op": op, "name": name}
    record = OPS[op]
    _check_keys(raw, {"op", "name", *(f["name"] for f in record.fields)}, name)
    for f in record.fields:
        _normalize_field(f, raw, layer)
    try:
        record.check(layer)
    except LayerError as e:
        raise _err(name, e.args[0], f"{name}: {e.args[1]}") from None
    return layer


def _normalize_field(f: dict, raw: dict, layer: dict) -> None:
    """Set field ``f`` of ``layer`` from ``raw`` (its default when absent), checked."""
    key, name, kind = f["name"], layer["name"], f["kind"]
    if kind == TENSOR:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise _err(name, key, f"{name}: {layer['op']} needs {key}, the name of an earlier "
                                  f"layer or '{INPUT_NAME}', got {value!r}")
        layer[key] = value
        return
    if f["required"] and key not in raw:
        raise _err(name, key, f"{name}: {layer['op']} needs {key} ({f['required']})")
    if f["optional"] and raw.get(key) is None:
        return
    default = f["default"](layer) if callable(f["default"]) else f["default"]
    value = raw.get(key, default)
    if kind == FLOAT:
        layer[key] = _as_float(value, name, key)
    elif kind == INT:
        layer[key] = _as_int(value, name, key, minimum=f["minimum"])
    else:
        layer[key] = _as_ints(value, 4 if kind == SIDES else 2, name, key, minimum=f["minimum"])


def _infer(chain: dict) -> dict[str, list[int]]:
    """Check every layer against the shape it receives; return each tensor's shape."""
    shapes: dict[str, list[int]] = {INPUT_NAME: list(chain["input"]["shape"])}
    current = shapes[INPUT_NAME]
    for layer in chain["layers"]:
        name, op = layer["name"], layer["op"]
        if name in shapes:
            raise _err(name, "name", f"layer name {name!r} is used twice")
        try:
            current = OPS[op].infer(layer, current, shapes)
        except LayerError as e:
            raise _err(name, e.args[0], f"{name}: {e.args[1]}") from None
        count = math.prod(current)
        if count > MAX_ELEMENTS:
            raise _err(name, "", f"{name}: its output {current} has {count:,} elements, above "
                                 f"the cap of {MAX_ELEMENTS:,}")
        shapes[name] = current
    return shapes


def normalize_chain(raw: Any) -> dict:
    """Validate a chain and return it in normalized form.

    Parameters
    ----------
    raw
        ``{"input": {"shape": [N, C, H, W], "dtype": "float32"}, "layers": [...]}``; layer
        fields may be abbreviated (an int for a pair, missing defaults, missing names).

    Returns
    -------
    dict
        A new dict with every field present, every layer named.

    Raises
    ------
    ChainError
        Naming the layer, the field and the numbers, e.g. "conv2: expects 3 input channels
        (weight 10x3x16x16) but receives 10".
    """
    if not isinstance(raw, dict):
        raise ChainError(f"a chain must be an object with input and layers, got {raw!r}")
    unknown = sorted(set(raw) - {"input", "layers", "layout"})
    if unknown:
        raise ChainError(f"chain: unknown field {unknown[0]!r}", where=f"chain.{unknown[0]}")
    layout = raw.get("layout", "NCHW")
    if layout not in LAYOUTS:
        raise ChainError(f"chain: unknown layout {layout!r} (choose one of {', '.join(LAYOUTS)})",
                         where="chain.layout")
    layers_raw = raw.get("layers", [])
    if not isinstance(layers_raw, list | tuple):
        raise ChainError(f"chain: layers must be a list, got {layers_raw!r}", where="chain.layers")
    if len(layers_raw) > 32:
        raise ChainError(f"chain: {len(layers_raw)} layers is more than the 32 allowed",
                         where="chain.layers")
    counts: dict[str, int] = {}
    chain = {
        "input": _normalize_input(raw.get("input")),
        "layers": [_normalize_layer(layer, i, counts) for i, layer in enumerate(layers_raw)],
        "layout": layout,
    }
    if not chain["layers"]:
        raise ChainError("chain: add at least one layer", where="chain.layers")
    _infer(chain)
    flop = chain_flop(chain)
    if flop > MAX_FLOP:
        raise ChainError(f"chain: {flop / 1e9:,.1f} GFLOP is above the cap of "
                         f"{MAX_FLOP / 1e9:,.0f} GFLOP", where="chain.layers")
    return chain


def layer_by_name(chain: dict, name: str) -> dict:
    for layer in chain["layers"]:
        if layer["name"] == name:
            return layer
    raise ChainError(f"no layer named {name!r}")


def tensor_shapes(chain: dict) -> dict[str, list[int]]:
    """Shape of the input and of every layer's output, by name (chain must be normalized)."""
    return _infer(chain)


def output_shape(chain: dict) -> list[int]:
    return tensor_shapes(chain)[chain["layers"][-1]["name"]]


def chain_flop(chain: dict) -> float:
    """Floating-point operations the chain needs (a multiply-add counts 2), by formula: each
    op's ``flop`` (:mod:`playground.chain.ops`), the chain checked first.

    This is the work the chain *needs*; the schedule analysis compares it with the work a
    schedule *does* (recomputed halos).
    """
    _infer(chain)
    return ops.chain_flop(chain)


def chain_to_json(chain: dict) -> str:
    """Canonical JSON text of a normalized chain (stable key order): a cache key."""
    return json.dumps(chain, sort_keys=True, separators=(",", ":"))


def clone(chain: dict) -> dict:
    return copy.deepcopy(chain)
