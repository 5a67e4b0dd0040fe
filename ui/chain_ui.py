"""The chain builder: input shape and dtype, layers (add, remove, move, edit), presets.

:func:`chain_ui` draws the editor from the session's chain and returns what the user asked
for as plain data (:class:`ChainInput`); :func:`handle_chain_input` applies it to the session.
The editor returns its fields' values; every valid changed field reaches the session at once
and no invalid one does (:func:`playground.chain.edits.apply_fields`): each refused field's
message is shown under its row, all at once, with the value the chain still uses, the field
outlined in red, and the editor keeps the user's values so they can be fixed.
The editor's widget keys come from :func:`ui.state.editor_key`: a new generation after every
change made elsewhere (preset, import, history), so it always shows the session's chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from playground.chain.edits import FieldError, apply_fields
from playground.chain.spec import (
    DTYPES,
    INPUT_NAME,
    OPS,
    chain_flop,
    tensor_shapes,
)
from playground.errors import ChainError, PlaygroundError
from playground.io.presets import list_presets, load_preset, preset_paths
from playground.schedule.session import Session
from ui import state
from ui.io_ui import render_flash, replaced_text
from ui.text import ERROR_ICON, WARNING_ICON, escape

_PREFIX = {"conv2d": "conv", "max_pool2d": "maxpool", "avg_pool2d": "avgpool",
           "bias_add": "bias", "batch_norm": "bn", "relu": "relu", "relu6": "relu6_",
           "clip": "clip", "add": "add"}
_CONV_FIELDS = (("channels", "channels"), ("in ch.", "in_channels"), ("groups", "groups"),
                ("kernel h", "kernel", 0), ("kernel w", "kernel", 1), ("stride h", "stride", 0),
                ("stride w", "stride", 1), ("pad h", "padding", 0), ("pad w", "padding", 1),
                ("dilate h", "dilation", 0), ("dilate w", "dilation", 1))
_POOL_FIELDS = (("kernel h", "kernel", 0), ("kernel w", "kernel", 1), ("stride h", "stride", 0),
                ("stride w", "stride", 1), ("pad h", "padding", 0), ("pad w", "padding", 1))
_POOLS = ("max_pool2d", "avg_pool2d")
_IN_CHANNELS_HELP = ("Optional: the input channels this conv's weight was made for. Empty: "
                     "whatever the layer before gives. Set, it is checked against the tensor "
                     "the layer receives (a 3-channel weight after a 10-channel layer is "
                     "refused, as the forum's program should have been).")


@dataclass
class ChainInput:
    """What the chain editor returns: its fields' values and at most one button action."""

    values: dict  # editor field ("input.h", "0.kernel_w") -> the value it shows
    action: tuple[str, Any] | None = None  # ("add", op) ("remove", i) ("up", i) ("down", i)
    #                                         ("preset", name)
    slots: dict = field(default_factory=dict)  # "input" | "layer:<i>" | "chain" -> st.empty()


def presets() -> list[dict]:
    """The presets that load: parsed once per version of ``schedules/`` (a file added, removed
    or changed is read again), not every few minutes: reading them all takes seconds."""
    return _presets(tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                          for p in preset_paths()))


@st.cache_data(show_spinner=False, max_entries=4)
def _presets(files: tuple) -> list[dict]:
    return [p for p in list_presets() if not p.get("error")]


def _shape_text(shape: list[int]) -> str:
    return "×".join(map(str, shape))


def _preset_ui() -> tuple[str, Any] | None:
    items = presets()
    if not items:
        return None
    names = [p["name"] for p in items]
    # The name first: it is the file in schedules/ and what the README calls the preset.
    titles = {p["name"]: f"{p['name']} — {p['title']}  ({p['target']}, {p['steps']} steps)"
              for p in items}
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    name = left.selectbox("Preset", names, index=None, format_func=titles.get,
                          key="preset.name", placeholder="Choose a worked schedule…",
                          help="Worked schedules from schedules/*.py; loading one replaces the "
                               "chain and the steps.")
    pressed = right.button("Load preset", key="preset.load", width="stretch",
                           disabled=name is None)
    render_flash("preset")
    return ("preset", name) if pressed else None


def _input_ui(spec: dict) -> dict:
    cols = st.columns([1, 1, 1, 1, 1.4])
    values: dict[str, Any] = {
        f"input.{d}": cols[i].number_input(f"input {d.upper()}", value=int(v), step=1,
                                           key=state.editor_key(f"input.{d}"))
        for i, (d, v) in enumerate(zip("nchw", spec["shape"], strict=True))}
    values["input.dtype"] = cols[4].selectbox("dtype", DTYPES,
                                              index=DTYPES.index(spec["dtype"]),
                                              key=state.editor_key("input.dtype"))
    return values


def _window_fields(i: int, layer: dict, cols, fields: tuple) -> dict:
    """The number fields of a conv or pool layer (pairs such as kernel h / kernel w), as
    editor field -> value (``0.kernel_h``, ``0.channels``)."""
    values: dict[str, Any] = {}
    for col, (label, name, *pos) in zip(cols, fields, strict=True):
        field = f"{i}.{name}_{'hw'[pos[0]]}" if pos else f"{i}.{name}"
        key = state.editor_key(field)
        if name == "in_channels":  # optional: empty follows the incoming tensor
            value = col.number_input(label, value=layer.get(name), min_value=1, step=1,
                                     placeholder="auto", key=key, help=_IN_CHANNELS_HELP)
            values[field] = None if value is None else int(value)
            continue
        start = layer[name][pos[0]] if pos else layer[name]
        values[field] = col.number_input(label, value=int(start), step=1, key=key)
    return values


def _layer_fields(i: int, layer: dict, earlier: list[str], cols) -> dict:
    op = layer["op"]
    if op == "conv2d":
        return _window_fields(i, layer, cols, _CONV_FIELDS)
    if op in _POOLS:
        return _window_fields(i, layer, cols, _POOL_FIELDS)
    values: dict[str, Any] = {}
    if op == "clip":
        values[f"{i}.min"] = cols[0].number_input("min", value=float(layer["min"]), step=0.5,
                                                  key=state.editor_key(f"{i}.min"))
        values[f"{i}.max"] = cols[1].number_input("max", value=float(layer["max"]), step=0.5,
                                                  key=state.editor_key(f"{i}.max"))
    elif op == "batch_norm":
        values[f"{i}.eps"] = cols[0].number_input("eps", value=float(layer["eps"]), step=1e-5,
                                                  format="%.1e",
                                                  key=state.editor_key(f"{i}.eps"))
    elif op == "add":
        options = earlier if layer["other"] in earlier else [layer["other"], *earlier]
        values[f"{i}.other"] = cols[0].selectbox("other (added tensor)", options,
                                                 index=options.index(layer["other"]),
                                                 key=state.editor_key(f"{i}.other"))
    else:
        cols[0].caption("no parameters")
    return values


def _layer_ui(i: int, layer: dict, n: int, shape: list[int] | None,
              earlier: list[str]) -> tuple[dict, tuple[str, Any] | None, Any]:
    action = None
    with st.container(border=True):
        head, body, tail = st.columns([1.7, 10, 1.9], vertical_alignment="bottom")
        head.markdown(f"**{escape(layer['name'])}** ({layer['op']})  \n"
                      + (f":gray[→ {_shape_text(shape)}]" if shape else ""))
        width = {"conv2d": len(_CONV_FIELDS), **dict.fromkeys(_POOLS, len(_POOL_FIELDS))}
        fields = body.columns(width.get(layer["op"], 4))
        edited = _layer_fields(i, layer, earlier, fields)
        with tail.container(horizontal=True, gap="xsmall", horizontal_alignment="right"):
            if st.button("↑", key=f"layer.up.{i}", disabled=i == 0, help="move up"):
                action = ("up", i)
            if st.button("↓", key=f"layer.down.{i}", disabled=i == n - 1, help="move down"):
                action = ("down", i)
            if st.button("✕", key=f"layer.remove.{i}", disabled=n == 1, help="remove"):
                action = ("remove", i)
        slot = st.empty()
    return edited, action, slot


def chain_ui(chain: dict) -> ChainInput:
    """Draw the chain editor for ``chain`` (the session's, normalized)."""
    shapes = tensor_shapes(chain)
    action = _preset_ui()
    slots: dict[str, Any] = {}
    values = _input_ui(chain["input"])
    slots["input"] = st.empty()
    earlier = [INPUT_NAME]
    n = len(chain["layers"])
    for i, layer in enumerate(chain["layers"]):
        edited, layer_action, slots[f"layer:{i}"] = _layer_ui(
            i, layer, n, shapes.get(layer["name"]), earlier)
        values.update(edited)
        action = action or layer_action
        earlier.append(layer["name"])
    left, mid, right = st.columns([2, 1, 5], vertical_alignment="bottom")
    op = left.selectbox("New layer", OPS, key="layer.new_op")
    if mid.button("Add layer", key="layer.add", width="stretch"):
        action = ("add", op)
    right.caption(f"{chain_flop(chain) / 1e6:,.1f} MFLOP · output "
                  f"{_shape_text(shapes[chain['layers'][-1]['name']])}")
    slots["chain"] = st.empty()
    return ChainInput(values, action, slots)


# ----------------------------------------------------------------------------- actions

def _unique_name(op: str, chain: dict) -> str:
    taken = {layer["name"] for layer in chain["layers"]}
    k = 1
    while f"{_PREFIX[op]}{k}" in taken:
        k += 1
    return f"{_PREFIX[op]}{k}"


def new_layer(op: str, chain: dict) -> dict:
    """A layer of ``op`` with defaults that fit the end of ``chain``."""
    shapes = tensor_shapes(chain)
    last = chain["layers"][-1]["name"]
    layer: dict[str, Any] = {"op": op, "name": _unique_name(op, chain)}
    if op == "conv2d":
        layer.update(channels=shapes[last][1], kernel=3, padding=1)
    elif op in _POOLS:
        layer.update(kernel=2, stride=2)
    elif op == "add":
        same = [n for n, s in shapes.items() if s == shapes[last] and n != last]
        layer["other"] = same[-1] if same else last
    return layer


def restructured(chain: dict, kind: str, arg: Any) -> dict:
    """``chain`` with a layer added, removed or moved (not validated)."""
    layers = list(chain["layers"])
    if kind == "add":
        layers.append(new_layer(arg, chain))
    elif kind == "remove":
        layers.pop(arg)
    elif kind in ("up", "down"):
        j = arg - 1 if kind == "up" else arg + 1
        layers[arg], layers[j] = layers[j], layers[arg]
    return {**chain, "layers": layers}


def _slot_for(where: str, chain: dict) -> str:
    if where.startswith("input"):
        return "input"
    if where.startswith("layer:"):
        name = where[len("layer:"):].split(".")[0]
        if name.startswith("#") and name[1:].isdigit():
            return f"layer:{int(name[1:]) - 1}"
        for i, layer in enumerate(chain["layers"]):
            if layer.get("name") == name:
                return f"layer:{i}"
    return "chain"


def render_chain_error(inp: ChainInput, error: PlaygroundError, chain: dict) -> None:
    slot = inp.slots.get(_slot_for(error.where, chain)) or inp.slots["chain"]
    slot.error(f"{escape(error.message)} — not applied; the last valid chain is kept.",
               icon=WARNING_ICON)


_LABELS = {name + (f"_{'hw'[pos[0]]}" if pos else ""): label
           for label, name, *pos in (*_CONV_FIELDS, *_POOL_FIELDS)}


def field_label(field: str, chain: dict) -> str:
    """``input H``, ``conv1 kernel w``: an editor field as the page names it."""
    where, name = field.split(".", 1)
    if where == "input":
        return f"input {name.upper()}" if name != "dtype" else "input dtype"
    return f"{chain['layers'][int(where)]['name']} {_LABELS.get(name, name)}"


def render_field_errors(inp: ChainInput, errors: list[FieldError], chain: dict) -> None:
    """Every refused field's error under its row, at once, saying what the chain still
    uses; a red outline on those fields only."""
    by_slot: dict[str, list[FieldError]] = {}
    for e in errors:
        where = e.field.split(".")[0]
        by_slot.setdefault("input" if where == "input" else f"layer:{where}", []).append(e)
    for slot, errs in by_slot.items():
        with inp.slots[slot].container():
            for e in errs:
                shown = "auto" if inp.values[e.field] is None else inp.values[e.field]
                kept = "auto" if e.kept is None else e.kept
                st.error(f"{escape(field_label(e.field, chain))} = {shown}: "
                         f"{escape(e.message)} — not applied: the chain still uses {kept}.",
                         icon=WARNING_ICON)
    outlined = ", ".join(f".st-key-{state.editor_key(e.field).replace('.', '-')} "
                         '[data-baseweb="input"]' for e in errors)
    st.html(f"<style>{outlined} {{border: 2px solid #ff2b2b !important;}}</style>")


def _load_preset(name: str) -> tuple[Session, str]:
    """The preset's session (at its cursor) and the target it was written for."""
    chain, steps, meta = load_preset(name)
    session = Session.new(chain, steps)
    cursor = meta.get("cursor")
    return (session.goto(cursor) if isinstance(cursor, int) else session), meta.get("target", "")


def handle_chain_input(inp: ChainInput) -> None:
    """Apply the editor's action, or every valid field of its edit, to the session (rerun on
    change); show the refused fields' errors (see :func:`playground.chain.edits.apply_fields`).
    """
    current = state.session()
    try:
        if inp.action is not None and inp.action[0] == "preset":
            loaded, target = _load_preset(inp.action[1])
            state.replace_session(loaded, f"preset {inp.action[1]}")
            state.ui().pending_target = target
            state.say("success", f"Loaded preset {inp.action[1]}"
                      + (f" (target {target})" if target else "")
                      + f". {replaced_text(current)}", "preset")
        elif inp.action is not None:
            state.commit(current.with_chain(restructured(current.chain, *inp.action)))
        else:
            chain, errors = apply_fields(current.chain, inp.values)
            if errors:
                render_field_errors(inp, errors, current.chain)
            if chain == current.chain:
                return
            state.commit(current.with_chain(chain), from_editor=True)
    except ChainError as e:
        render_chain_error(inp, ChainError(e.message, where="chain"), current.chain)
        return
    except PlaygroundError as e:
        inp.slots["chain"].error(escape(e.message), icon=ERROR_ICON)
        return
    st.rerun()
