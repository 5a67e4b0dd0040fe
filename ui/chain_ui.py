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
from playground.chain.ops import OPS
from playground.chain.ops.base import FLOAT, PAIR, SIDES, TENSOR
from playground.chain.spec import DTYPES, INPUT_NAME, chain_flop, tensor_shapes
from playground.errors import ChainError, PlaygroundError
from playground.io.presets import list_presets, load_preset, preset_paths
from playground.schedule.session import Session
from ui import state
from ui.io_ui import render_flash, replaced_text
from ui.text import ERROR_ICON, WARNING_ICON, escape

#: Pixels of a layer's number field and of its name: wide enough for every label on one
#: line and for "auto" in an empty "in ch." (the row wraps between fields instead).
FIELD_WIDTH = 72
HEAD_WIDTH = 150
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
                          help="Worked schedules from schedules/*.json; loading one replaces the "
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


def _field_ui(i: int, layer: dict, f: dict, earlier: list[str]) -> dict:
    """The editor's widgets of one field of a layer (two for a pair: ``kernel h``,
    ``kernel w``), as editor field -> value (``0.kernel_h``, ``0.channels``)."""
    name, kind, label = f["name"], f["kind"], f["label"]
    key = state.editor_key(f"{i}.{name}")
    if kind in (PAIR, SIDES):
        return {f"{i}.{name}_{side}": st.number_input(
                    f"{label} {side}", value=int(layer[name][k]), step=1,
                    key=state.editor_key(f"{i}.{name}_{side}"), width=FIELD_WIDTH)
                for k, side in enumerate("hw")}
    if kind == TENSOR:
        options = earlier if layer[name] in earlier else [layer[name], *earlier]
        return {f"{i}.{name}": st.selectbox(label, options, index=options.index(layer[name]),
                                            key=key, width=220)}
    if kind == FLOAT:
        return {f"{i}.{name}": st.number_input(label, value=float(layer[name]), step=f["step"],
                                               format=f["shown"], key=key, width=FIELD_WIDTH)}
    if f["optional"]:  # empty: follows the incoming tensor
        value = st.number_input(label, value=layer.get(name), min_value=f["minimum"], step=1,
                                placeholder="auto", key=key, help=f["tip"] or None,
                                width=FIELD_WIDTH)
        return {f"{i}.{name}": None if value is None else int(value)}
    return {f"{i}.{name}": st.number_input(label, value=int(layer[name]), step=1, key=key,
                                           width=FIELD_WIDTH)}


def _layer_fields(i: int, layer: dict, earlier: list[str]) -> dict:
    """The editable fields of a layer, as its op's record lists them."""
    values: dict[str, Any] = {}
    for f in OPS[layer["op"]].fields:
        if f["editable"]:
            values.update(_field_ui(i, layer, f, earlier))
    if not values:
        st.caption("no parameters", width="content")
    return values


def _layer_ui(i: int, layer: dict, n: int, shape: list[int] | None,
              earlier: list[str]) -> tuple[dict, tuple[str, Any] | None, Any]:
    """One layer: its name and output shape, its fields, its buttons, on one row that wraps
    between whole fields on a narrow page (never inside a label)."""
    action = None
    with st.container(border=True):
        with st.container(horizontal=True, wrap=True, vertical_alignment="bottom",
                          gap="small"):
            st.markdown(f"**{escape(layer['name'])}** ({layer['op']})  \n"
                        + (f":gray[→ {_shape_text(shape)}]" if shape else ""),
                        width=HEAD_WIDTH)
            edited = _layer_fields(i, layer, earlier)
            with st.container(horizontal=True, gap="xsmall", width="content"):
                if st.button("↑", key=f"layer.up.{i}", disabled=i == 0, help="move up"):
                    action = ("up", i)
                if st.button("↓", key=f"layer.down.{i}", disabled=i == n - 1,
                             help="move down"):
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
    op = left.selectbox("New layer", list(OPS), key="layer.new_op", help=_ops_help())
    if mid.button("Add layer", key="layer.add", width="stretch"):
        action = ("add", op)
    right.caption(f"{chain_flop(chain) / 1e6:,.1f} MFLOP · output "
                  f"{_shape_text(shapes[chain['layers'][-1]['name']])}")
    slots["chain"] = st.empty()
    return ChainInput(values, action, slots)


# ----------------------------------------------------------------------------- actions

def _ops_help() -> str:
    """Each op in one line, from its record's docstring."""
    return "\n".join(f"- **{name}**: {(op.__doc__ or '').splitlines()[0]}"
                     for name, op in OPS.items())


def _unique_name(op: str, chain: dict) -> str:
    taken = {layer["name"] for layer in chain["layers"]}
    k = 1
    while f"{OPS[op].prefix}{k}" in taken:
        k += 1
    return f"{OPS[op].prefix}{k}"


def new_layer(op: str, chain: dict) -> dict:
    """A layer of ``op`` with defaults that fit the end of ``chain`` (its record's
    ``starter``)."""
    shapes = tensor_shapes(chain)
    starter = OPS[op].starter(shapes, chain["layers"][-1]["name"])
    return {"op": op, "name": _unique_name(op, chain), **starter}


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


#: The bordered box of a number field and of a select, outlined when refused.
_BOXES = ('[data-testid="stNumberInputContainer"]', '[data-baseweb="select"] > div')
_LABELS = {f["name"] + suffix: f["label"] + suffix.replace("_", " ")
           for op in OPS.values() for f in op.fields
           for suffix in (("_h", "_w") if f["kind"] in (PAIR, SIDES) else ("",))}


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
    outlined = ", ".join(f".st-key-{state.editor_key(e.field).replace('.', '-')} {box}"
                         for e in errors for box in _BOXES)
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
