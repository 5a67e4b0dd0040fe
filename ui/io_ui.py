"""Export (the standalone script, the JSON session), import (upload or paste), and the
shareable links: a short link ``?s=<id>`` to the session kept in the experiment store, and
the chain and steps in the URL's query string (``?state=``), both restored on first load.

Imports are read by :mod:`playground.io.script_import`, which parses and never executes them; a
refused import leaves the session as it was.
"""

from __future__ import annotations

import streamlit as st

from playground.errors import PlaygroundError
from playground.io.export import export_script
from playground.io.script_import import import_script
from playground.io.url_state import QUERY_KEY, encode_state, import_query
from playground.schedule.session import Session
from playground.store import StoreError, get_store
from ui import state

MAX_UPLOAD_BYTES = 256 * 1024
#: The short link's query parameter: ``?s=<id>`` of a session kept by the store.
SHORT_KEY = "s"
#: Session-state key (not a widget): ``(link id, session key)`` of the last short link made.
SHORT_LINK = "io._short_link"


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
            st.error(f"Export failed: {e.message}")
        else:
            st.download_button("Download script (.py)", script, file_name="schedule.py",
                               mime="text/x-python", key="io.download_script",
                               on_click="ignore", width="stretch",
                               help="Runs standalone with tvm and numpy: builds, validates "
                                    "and times this schedule. Import it back here.")
    st.download_button("Download session (.json)", session.to_json(),
                       file_name="session.json", mime="application/json",
                       key="io.download_json", on_click="ignore", width="stretch")


def _read_import() -> tuple[str, str] | None:
    """(text, source) from the upload, else the pasted text; None with neither."""
    upload = st.session_state.get("io.upload")
    if upload is not None:
        if upload.size > MAX_UPLOAD_BYTES:
            raise PlaygroundError(f"{upload.name} is {upload.size:,} bytes, above the "
                                  f"{MAX_UPLOAD_BYTES // 1024} KiB limit")
        try:
            return upload.getvalue().decode("utf-8"), upload.name
        except UnicodeDecodeError:
            raise PlaygroundError(f"{upload.name} is not UTF-8 text") from None
    text = st.session_state.get("io.paste", "")
    return (text, "pasted text") if text.strip() else None


def do_import() -> None:
    """Import callback: replace the session, or keep it and report why not."""
    try:
        found = _read_import()
        if found is None:
            raise PlaygroundError("nothing to import: upload a file or paste a script")
        text, source = found
        chain, steps, meta = import_script(text)
        new = Session.new(chain, steps)
        cursor = meta.get("cursor")
        new = new.goto(cursor) if isinstance(cursor, int) else new
    except PlaygroundError as e:
        state.ui().flash.append(("error", f"Import refused, the session is unchanged: "
                                          f"{e.message}"))
        return
    state.commit(new)
    state.ui().pending_target = meta.get("target", "")
    state.ui().flash.append(("success", f"Imported {source}: {len(new.steps)} step(s)."))


def import_ui() -> None:
    """Upload or paste a script / JSON session; Import replaces the session."""
    st.file_uploader("Upload a script or session", type=["py", "json", "txt"],
                     key="io.upload", max_upload_size=1)
    st.text_area("…or paste one", key="io.paste", height=120,
                 placeholder="an exported schedule.py or a JSON session")
    st.button("Import", key="io.import", on_click=do_import, width="stretch")


def make_short_link(session: Session, target: str) -> None:
    """Share callback: keep the session in the store behind a new unguessable id."""
    try:
        link = get_store().share(session, target)
    except StoreError as e:
        state.ui().flash.append(("error", f"No short link: {e.message}"))
        return
    st.session_state[SHORT_LINK] = (link, session.key())


def share_ui(session: Session, target: str = "cpu") -> None:
    """The short link (made on demand) and the long one (the page's URL carries the state)."""
    base = (st.context.url or "").split("?")[0]
    st.button("Make a short link", key="io.share", on_click=make_short_link,
              args=(session, target), width="stretch",
              help="Keeps this session on the server; the link restores it in any browser.")
    link, key = st.session_state.get(SHORT_LINK) or ("", "")
    if link and key == session.key():
        st.code(f"{base}?{SHORT_KEY}={link}", language=None, wrap_lines=True)
    text = url_text(session)
    if not text:
        st.caption("This session is too large for a long link: use the short link, or "
                   "download the script.")
        return
    st.caption("Or the long link (the address bar holds it too), which needs no server:")
    st.code(f"{base}?{QUERY_KEY}={text}", language=None, wrap_lines=True)


def render_flash() -> None:
    """Messages from the last action (import, preset, link), shown once."""
    for level, text in state.ui().flash:
        getattr(st, level)(text)
    state.ui().flash.clear()
