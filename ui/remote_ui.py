"""The remote device option of Validate & measure: a TVM RPC tracker (host, port, device key).

:func:`device_ui` draws "Run on: this machine / remote (RPC)" and, for the remote, the tracker's
fields and a "List keys" button (:func:`playground.remote.device.tracker_keys`: a short socket
exchange with the tracker, nothing compiled here). :func:`run_remote` measures through
:func:`playground.service.remote_run`: the worker builds the module, a server from the tracker
runs, checks and times it. A :class:`~playground.remote.device.RemoteError` whose ``where`` names a
field (``remote.host``, ``remote.port``, ``remote.key``) is shown under that field, for as long
as the fields hold the values it was about.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from playground import service
from playground.remote.device import RemoteError, tracker_keys
from playground.schedule.session import Session
from playground.worker.lock import EventCallback
from playground.worker.pool import WorkerPool
from playground.worker.result import JobResult
from ui import state
from ui.text import RETRY_ICON, WARNING_ICON, code, escape

LOCAL = "this machine"
REMOTE = "remote (RPC)"
FIELDS = ("host", "port", "key")
DEFAULTS = {"host": "127.0.0.1", "port": "9190", "key": "local"}
#: Session-state keys (not widgets): the last field error and the last key listing.
ERROR_KEY = "remote._error"
KEYS_KEY = "remote._keys"


@dataclass(frozen=True)
class RemoteChoice:
    """The tracker the user named, as typed (``RemoteDevice`` checks it)."""

    host: str
    port: str
    key: str

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}/{self.key}"


def chosen() -> RemoteChoice | None:
    """The remote the fields name when "remote (RPC)" is picked, else ``None``."""
    if st.session_state.get("measure.device", LOCAL) != REMOTE:
        return None
    return RemoteChoice(*(str(st.session_state.get(f"remote.{f}", DEFAULTS[f])).strip()
                          for f in FIELDS))


def _use_key(key: str) -> None:
    st.session_state["remote.key"] = key


def _field_error(field: str, choice: RemoteChoice) -> str:
    error = st.session_state.get(ERROR_KEY)
    if error and error["where"] == f"remote.{field}" and error["choice"] == choice:
        return error["message"]
    return ""


def _list_keys(choice: RemoteChoice) -> None:
    try:
        keys = tracker_keys(choice.host, choice.port)
    except RemoteError as e:
        remember_error(choice, e.where or "remote.host", e.message)
        st.session_state.pop(KEYS_KEY, None)
        return
    st.session_state.pop(ERROR_KEY, None)
    st.session_state[KEYS_KEY] = {"tracker": f"{choice.host}:{choice.port}", "keys": keys}


def _render_keys(choice: RemoteChoice) -> None:
    listing = st.session_state.get(KEYS_KEY)
    if not listing or listing["tracker"] != f"{choice.host}:{choice.port}":
        return
    keys = listing["keys"]
    if not keys:
        st.caption(f"Tracker {escape(listing['tracker'])}: no server has registered yet.")
        return
    st.caption(f"Device keys on tracker {escape(listing['tracker'])}:")
    for name, counts in sorted(keys.items()):
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.markdown(f"{code(name)} · {counts['servers']} server(s), {counts['free']} free, "
                        f"{counts['pending']} waiting")
            st.button("use", key=f"remote.use.{name}", on_click=_use_key, args=(name,),
                      disabled=name == choice.key, type="tertiary")


def device_ui() -> RemoteChoice | None:
    """The "Run on" choice and, for a remote, the tracker's fields; returns the remote."""
    where = st.radio("Run on", (LOCAL, REMOTE), key="measure.device", horizontal=True,
                     help="A remote device is reached through a TVM RPC tracker: the module "
                          "is built here, then run, checked and timed on a free server.")
    if where != REMOTE:
        return None
    for field in FIELDS:
        st.session_state.setdefault(f"remote.{field}", DEFAULTS[field])
    choice = chosen()
    cols = st.columns([3, 1.2, 2, 1.2], vertical_alignment="top")
    helps = {"host": "the tracker's hostname or IPv4 address",
             "port": "the tracker's port (1 to 65535)",
             "key": "the device key the RPC servers registered with (--key)"}
    for col, field in zip(cols, FIELDS, strict=False):
        with col:
            st.text_input(f"tracker {field}" if field != "key" else "device key",
                          key=f"remote.{field}", help=helps[field])
            message = _field_error(field, choice)
            if message:
                st.error(escape(message), icon=WARNING_ICON)
    with cols[3]:
        st.markdown("&nbsp;")  # lines the button up with the fields
        if st.button("List keys", key="remote.list", width="stretch",
                     help="ask the tracker which device keys it has servers for"):
            _list_keys(choice)
            st.rerun()  # the fields above show the error, or the listing below appears
    _render_keys(choice)
    return choice


def remember_error(choice: RemoteChoice, where: str, message: str) -> None:
    st.session_state[ERROR_KEY] = {"where": where, "message": message, "choice": choice}


def field_of(where: str) -> str | None:
    """The field a :class:`RemoteError`'s ``where`` names, if it is one the page shows."""
    field = where.removeprefix("remote.") if where.startswith("remote.") else ""
    return field if field in FIELDS else None


def result_key(session: Session, target: str, choice: RemoteChoice, timing: bool) -> str:
    return state.result_key("remote_run", session, target, f"{choice.label}|measure={timing}")


def run_remote(pool: WorkerPool, session: Session, target: str, choice: RemoteChoice,
               timing: bool, on_event: EventCallback | None = None) -> JobResult:
    """Validate (and time) on the tracker's server; a field's error is kept for its field."""
    st.session_state.pop(ERROR_KEY, None)
    try:
        result = service.remote_run(pool, session, choice.host, choice.port, choice.key,
                                    target=target, measure=timing, on_event=on_event)
    except RemoteError as e:  # a bad field: refused before any job ran
        result = JobResult("error", message=e.message, where=e.where)
    if not result.ok and field_of(result.where):
        remember_error(choice, result.where, result.message.removeprefix("RemoteError: "))
    return result


def render_remote(value: dict) -> None:
    """Where a remote result ran, and a notice when the first server went away."""
    if not value.get("server"):
        return
    st.caption(f"ran on {escape(value['server'])} (tracker {escape(value.get('remote', '?'))}, "
               f"uploaded in {value.get('upload_s', 0.0):.2f} s)")
    if value.get("attempts") == 2:
        lost = "; ".join(value.get("lost") or []) or "the connection was lost"
        st.warning(escape(f"The first server went away during the run ({lost}); it was "
                          f"retried on {value['server']}."), icon=RETRY_ICON)
