"""Export (the standalone script, the JSON session), import (upload or paste), and the
shareable links: a short link ``?s=<id>`` to the session kept in the experiment store, and
the chain and steps in the URL's query string (``?state=``), both restored on first load.

Imports are read by :mod:`playground.io.script_import`, which parses and never executes them; a
refused import leaves the session as it was (and a refused file leaves the uploader); an
accepted one is a history entry that Undo reverses. Messages appear under the Import button.
With both a file in the uploader and text in the
paste box, the one touched last is imported, and the page says which.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import streamlit as st

from playground.errors import PlaygroundError
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.io.url_state import QUERY_KEY, encode_state, import_query
from playground.schedule.session import Session
from playground.store import StoreError, get_store
from ui import state
from ui.text import ERROR_ICON, code, escape

MAX_UPLOAD_BYTES = 256 * 1024
#: The short link's query parameter: ``?s=<id>`` of a session kept by the store.
SHORT_KEY = "s"
#: Session-state key (not a widget): ``(link id, session key)`` of the last short link made.
SHORT_LINK = "io._short_link"
#: Session-state key (not a widget): "upload" or "paste", whichever the user touched last.
SOURCE_KEY = "io._source"
#: Session-state key (not a widget): the uploader's key generation (see :func:`upload_key`).
UPLOAD_GENERATION = "io._upload_generation"


def restore_from_url() -> Session | None:
    """The session a short link (``?s=``) or the URL state (``?state=``) holds, or None
    without either; raises PlaygroundError for a link that cannot be restored."""
    if SHORT_KEY in st.query_params:
        shared = get_store().load_shared(st.query_params.get(SHORT_KEY))
        session = Session.from_dict(shared["session"])
        state.ui().pending_target = shared.get("target", "")
        return session
    if QUERY_KEY not in st.query_params:
        return None
    return import_query({QUERY_KEY: st.query_params.get(QUERY_KEY)})


def url_text(session: Session) -> str:
    """The session as URL state, or "" when it is too large for a URL."""
    try:
        return encode_state(session.chain, session.steps, session.cursor)
    except PlaygroundError:
        return ""  # too large for a URL: the export is the way to share it


def sync_url(session: Session) -> None:
    """Keep the URL's query string equal to the session (only rewritten when it changes); a
    short link's id leaves it once restored (the state follows the session from there)."""
    st.query_params.pop(SHORT_KEY, None)
    text = url_text(session)
    if text != st.query_params.get(QUERY_KEY, ""):
        if text:
            st.query_params[QUERY_KEY] = text
        else:
            st.query_params.pop(QUERY_KEY, None)
    state.ui().url_state = text


def export_ui(session: Session, target: str) -> None:
    """Download buttons: the standalone script and the JSON session."""
    if export_script is not None:
        try:
            script = export_script(session.chain, session.active, target=target,
                                   title="Schedule Playground session")
        except PlaygroundError as e:
            st.error(f"Export failed: {escape(e.message)}", icon=ERROR_ICON)
        else:
            st.download_button("Download script (.py)", script, file_name="schedule.py",
                               mime="text/x-python", key="io.download_script",
                               on_click="ignore", width="stretch",
                               help="Runs standalone with tvm and numpy: builds, validates "
                                    "and times this schedule. Import it back here.")
    st.download_button("Download session (.json)", session.to_json(),
                       file_name="session.json", mime="application/json",
                       key="io.download_json", on_click="ignore", width="stretch")


def _touched(source: str) -> None:
    st.session_state[SOURCE_KEY] = source


def upload_key() -> str:
    """The uploader's key: a new one after a refused file, which clears it from the uploader
    (a file uploader's value cannot be set)."""
    return f"io.upload.v{st.session_state.get(UPLOAD_GENERATION, 0)}"


def _held() -> dict:
    """The import sources that hold something: "upload" (the file), "paste" (the text)."""
    held = {"upload": st.session_state.get(upload_key()),
            "paste": (st.session_state.get("io.paste") or "").strip()}
    return {name: value for name, value in held.items() if value}


def import_source() -> str | None:
    """What Import reads: of the sources that hold something, the one touched last."""
    held = _held()
    last = st.session_state.get(SOURCE_KEY)
    return last if last in held else next(iter(held), None)


def _read_import(source: str | None) -> tuple[str, str]:
    """(text, what it is) of the chosen source."""
    if source == "upload":
        upload = st.session_state[upload_key()]
        if upload.size > MAX_UPLOAD_BYTES:
            raise PlaygroundError(f"{upload.name} is {upload.size:,} bytes, above the "
                                  f"{MAX_UPLOAD_BYTES // 1024} KiB limit")
        try:
            return upload.getvalue().decode("utf-8"), upload.name
        except UnicodeDecodeError:
            raise PlaygroundError(f"{upload.name} is not UTF-8 text") from None
    if source == "paste":
        return st.session_state["io.paste"], "the pasted text"
    raise PlaygroundError("nothing to import: upload a file or paste a script")


def import_ui() -> bool:
    """Upload or paste a script / JSON session; returns whether Import was pressed. The
    import's messages are drawn under the button (:func:`render_flash`)."""
    st.file_uploader("Upload a script or session", type=["py", "json", "txt"],
                     key=upload_key(), max_upload_size=1, on_change=_touched,
                     args=("upload",))
    st.text_area("…or paste one", key="io.paste", height=120, on_change=_touched,
                 args=("paste",), placeholder="an exported schedule.py or a JSON session")
    held, source = _held(), import_source()
    if source is not None:
        said = {name: (f"the uploaded file {code(value.name)}" if name == "upload"
                       else "the pasted text") for name, value in held.items()}
        other = [text for name, text in said.items() if name != source]
        st.caption(f"Import reads {said[source]}"
                   + (f" (touched last); {other[0]} is ignored." if other else "."))
    # Never disabled: text typed into the paste box counts only once the box loses focus,
    # which is when this button is clicked.
    pressed = st.button("Import", key="io.import", width="stretch")
    render_flash("import")
    return pressed


def handle_import(pressed: bool) -> None:
    """Replace the session with the imported one as a history entry that Undo reverses
    (rerun), or keep it and say why not beside the button; a refused file leaves the
    uploader."""
    if not pressed:
        return
    source = import_source()
    try:
        text, name = _read_import(source)
        chain, steps, meta = import_script(text)
        new = Session.new(chain, steps)
        cursor = meta.get("cursor")
        new = new.goto(cursor) if isinstance(cursor, int) else new
    except PlaygroundError as e:
        state.say("error", f"Import refused, the session is unchanged: {e.message}", "import")
        if source == "upload":
            st.session_state[UPLOAD_GENERATION] = st.session_state.get(UPLOAD_GENERATION, 0) + 1
        st.rerun()
    before = state.session()
    state.replace_session(new, f"imported {name}")
    state.ui().pending_target = meta.get("target", "")
    state.say("success", f"Imported {name}: {len(new.steps)} step(s). "
                         f"{replaced_text(before)}", "import")
    st.rerun()


def replaced_text(before: Session) -> str:
    """What Undo brings back after a replacement, in a few words."""
    layers = " → ".join(layer["op"] for layer in before.chain["layers"])
    return (f"Undo brings back the session it replaced ({layers}, "
            f"{len(before.steps)} step(s)).")


def share_link(page_url: str, key: str, text: str) -> str:
    """The page's address with ``?key=text`` (and the ``/`` of an empty path)."""
    parts = urlsplit(page_url or "")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", f"{key}={text}", ""))


def make_short_link(session: Session, target: str) -> None:
    """Share callback: keep the session in the store behind a new unguessable id."""
    try:
        link = get_store().share(session, target)
    except StoreError as e:
        state.say("error", f"No short link: {e.message}", "share")
        return
    st.session_state[SHORT_LINK] = (link, session.key())


def share_ui(session: Session, target: str = "cpu") -> None:
    """The short link (made on demand) and the long one (the page's URL carries the state)."""
    st.button("Make a short link", key="io.share", on_click=make_short_link,
              args=(session, target), width="stretch",
              help="Keeps this session on the server; the link restores it in any browser.")
    render_flash("share")
    link, key = st.session_state.get(SHORT_LINK) or ("", "")
    if link and key == session.key():
        st.code(share_link(st.context.url, SHORT_KEY, link), language=None, wrap_lines=True)
    text = url_text(session)
    if not text:
        st.caption("This session is too large for a long link: use the short link, or "
                   "download the script.")
        return
    st.caption("Or the long link (the address bar holds it too), which needs no server:")
    st.code(share_link(st.context.url, QUERY_KEY, text), language=None, wrap_lines=True)


def render_flash(where: str = "top") -> None:
    """The messages of the last action taken at ``where`` (import, preset, link...), shown
    once, in the place that caused them."""
    flash = state.ui().flash
    for level, text, _ in [m for m in flash if m[2] == where]:  # plain text: may quote a file
        getattr(st, level)(escape(text), icon=ERROR_ICON if level == "error" else None)
    flash[:] = [m for m in flash if m[2] != where]
