"""The chain builder: input shape and dtype, layers (add, remove, move, edit), presets.

:func:`chain_ui` draws the editor from the session's chain and returns what the user asked
for as plain data (:class:`ChainInput`); :func:`handle_chain_input` applies it to the session.
An invalid edit never reaches the session: the library's message is shown under the layer (or
the input row) its ``where`` names, and the editor keeps the user's values so they can be fixed.
The editor's widget keys come from :func:`ui.state.editor_key`: a new generation after every
change made elsewhere (preset, import, history), so it always shows the session's chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from playground.chain.spec import (
    DTYPES,
    INPUT_NAME,
    OPS,
    chain_flop,
    normalize_chain,
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
    """What the chain editor returns: the edited chain and at most one button action."""

    draft: dict
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
    dims = [cols[i].number_input(f"input {'NCHW'[i]}", value=int(v), step=1,
                                 key=state.editor_key(f"input.{'nchw'[i]}"))
            for i, v in enumerate(spec["shape"])]
    dtype = cols[4].selectbox("dtype", DTYPES, index=DTYPES.index(spec["dtype"]),
                              key=state.editor_key("input.dtype"))
    return {"shape": dims, "dtype": dtype}


def _window_fields(i: int, layer: dict, cols, fields: tuple) -> dict:
    """The number fields of a conv or pool layer (pairs such as kernel h / kernel w)."""
    out = dict(layer)
    pairs: dict[str, list[int]] = {"kernel": [], "stride": [], "padding": [], "dilation": []}
    for col, (label, name, *pos) in zip(cols, fields, strict=True):
        suffix = f"{name}_{'hw'[pos[0]]}" if pos else name  # chain.0.kernel_h, chain.0.groups
        key = state.editor_key(f"{i}.{suffix}")
        if name == "in_channels":  # optional: empty follows the incoming tensor
            value = col.number_input(label, value=layer.get(name), min_value=1, step=1,
                                     placeholder="auto", key=key, help=_IN_CHANNELS_HELP)
            if value is None:
                out.pop(name, None)
            else:
                out[name] = int(value)
            continue
        start = layer[name][pos[0]] if pos else layer[name]
        value = col.number_input(label, value=int(start), step=1, key=key)
        if pos:
            pairs[name].append(value)
        else:
            out[name] = value
    out.update(kernel=pairs["kernel"], stride=pairs["stride"])
    if pairs["dilation"]:
        out["dilation"] = pairs["dilation"]
    t, left = layer["padding"][0], layer["padding"][1]
    # Asymmetric padding (top != bottom) is kept as it is until the user edits it.
    out["padding"] = layer["padding"] if pairs["padding"] == [t, left] else pairs["padding"]
    return out


def _layer_fields(i: int, layer: dict, earlier: list[str], cols) -> dict:
    op = layer["op"]
    if op == "conv2d":
        return _window_fields(i, layer, cols, _CONV_FIELDS)
    if op in _POOLS:
        return _window_fields(i, layer, cols, _POOL_FIELDS)
    out = dict(layer)
    if op == "clip":
        out["min"] = cols[0].number_input("min", value=float(layer["min"]), step=0.5,
                                          key=state.editor_key(f"{i}.min"))
        out["max"] = cols[1].number_input("max", value=float(layer["max"]), step=0.5,
                                          key=state.editor_key(f"{i}.max"))
    elif op == "batch_norm":
        out["eps"] = cols[0].number_input("eps", value=float(layer["eps"]), step=1e-5,
                                          format="%.1e", key=state.editor_key(f"{i}.eps"))
    elif op == "add":
        options = earlier if layer["other"] in earlier else [layer["other"], *earlier]
        out["other"] = cols[0].selectbox("other (added tensor)", options,
                                         index=options.index(layer["other"]),
                                         key=state.editor_key(f"{i}.other"))
    else:
        cols[0].caption("no parameters")
    return out


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
    draft: dict = {"input": _input_ui(chain["input"]), "layers": [],
                   "layout": chain.get("layout", "NCHW")}
    slots["input"] = st.empty()
    earlier = [INPUT_NAME]
    n = len(chain["layers"])
    for i, layer in enumerate(chain["layers"]):
        edited, layer_action, slots[f"layer:{i}"] = _layer_ui(
            i, layer, n, shapes.get(layer["name"]), earlier)
        draft["layers"].append(edited)
        action = action or layer_action
        earlier.append(layer["name"])
    left, mid, right = st.columns([2, 1, 5], vertical_alignment="bottom")
    op = left.selectbox("New layer", OPS, key="layer.new_op")
    if mid.button("Add layer", key="layer.add", width="stretch"):
        action = ("add", op)
    right.caption(f"{chain_flop(chain) / 1e6:,.1f} MFLOP · output "
                  f"{_shape_text(shapes[chain['layers'][-1]['name']])}")
    slots["chain"] = st.empty()
    return ChainInput(draft, action, slots)


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


def _slot_for(where: str, draft: dict) -> str:
    if where.startswith("input"):
        return "input"
    if where.startswith("layer:"):
        name = where[len("layer:"):].split(".")[0]
        if name.startswith("#") and name[1:].isdigit():
            return f"layer:{int(name[1:]) - 1}"
        for i, layer in enumerate(draft["layers"]):
            if layer.get("name") == name:
                return f"layer:{i}"
    return "chain"


def render_chain_error(inp: ChainInput, error: PlaygroundError) -> None:
    slot = inp.slots.get(_slot_for(error.where, inp.draft)) or inp.slots["chain"]
    slot.error(f"{escape(error.message)} — not applied; the last valid chain is kept.",
               icon=WARNING_ICON)


def _load_preset(name: str) -> tuple[Session, str]:
    """The preset's session (at its cursor) and the target it was written for."""
    chain, steps, meta = load_preset(name)
    session = Session.new(chain, steps)
    cursor = meta.get("cursor")
    return (session.goto(cursor) if isinstance(cursor, int) else session), meta.get("target", "")


def handle_chain_input(inp: ChainInput) -> None:
    """Apply the editor's action or edit to the session (rerun on change), or show the error."""
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
            chain = normalize_chain(inp.draft)
            if chain == current.chain:
                return
            state.commit(current.with_chain(chain), from_editor=True)
    except ChainError as e:
        render_chain_error(inp, e if inp.action is None else ChainError(e.message, where="chain"))
        return
    except PlaygroundError as e:
        inp.slots["chain"].error(escape(e.message), icon=ERROR_ICON)
        return
    st.rerun()
