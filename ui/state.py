"""Session-state helpers: the one :class:`Session`, the UI's plain records, the worker pool.

``st.session_state["session"]`` holds the current :class:`~playground.schedule.session.Session`
(immutable: every change replaces it). ``st.session_state["ui"]`` holds :class:`UIState`,
plain data derived from sessions (cached worker results, measurement records, messages to
show once). Widget values live under their own ``key=`` (prefixes ``chain.``, ``sched.``,
``hist.``, ``inspect.``, ``measure.``, ``io.``). Nothing here is module-level mutable state:
every browser tab has its own ``st.session_state``; only the worker pools are shared. Each
tab's long jobs take turns with other tabs' in the pools' fair queue: :func:`init` names the
tab (its Streamlit session id) as the owner of every job this run starts.

The chain editor's keys carry a generation (:func:`editor_key`), bumped by every change that
did not come from the editor itself (:func:`commit`): a preset, an import, undo, a layer
button. Deleting the old keys would not do: the browser keeps every widget's last value and
sends it back with the next click, which would then save the old editor over the new chain.
Under a new key the browser has no value, so the editor shows the session's chain.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from playground import service
from playground.errors import PlaygroundError
from playground.schedule.session import Session
from playground.worker.fair import CURRENT_OWNER
from playground.worker.pools import WorkerPools
from playground.worker.result import JobResult

log = logging.getLogger(__name__)

SESSION_KEY = "session"
UI_KEY = "ui"
#: Widget-key prefix of the chain editor (see :func:`editor_key`).
EDITOR_PREFIX = "chain."
#: The light version of the seed's chain: a 16x16 convolution then relu, small enough to
#: build and time in a fraction of a second.
DEFAULT_CHAIN = {
    "input": {"shape": [1, 3, 64, 64], "dtype": "float32"},
    "layers": [{"op": "conv2d", "channels": 10, "kernel": 16}, {"op": "relu"}],
}
_MAX_RESULTS = 64


@dataclass
class UIState:
    """Plain per-tab data around the session: never a TVM object."""

    #: Worker results (``JobResult.to_dict()``) by ``job|target|extra|session.key()``.
    results: OrderedDict = field(default_factory=OrderedDict)
    #: One record per measurement this tab ran (see :func:`ui.measure_ui.record`).
    measurements: list = field(default_factory=list)
    #: The last refused step: ``{"message", "detail"}``, cleared by the next change.
    step_error: dict | None = None
    #: Messages to show once: ``(level, text, where)``, drawn by ``ui.io_ui.render_flash(where)``
    #: beside the control that caused them ("top": the top of the page).
    flash: list = field(default_factory=list)
    #: The URL state last written, so the URL is rewritten only on change.
    url_state: str = ""
    #: A target a loaded preset or import asked for, applied before the target select draws.
    pending_target: str = ""
    #: The chain editor's key generation (see :func:`editor_key`).
    editor_generation: int = 0


@st.cache_resource(show_spinner=False)
def get_pool() -> WorkerPools:
    """The worker pools shared by every session of this server (started in the background).

    Quick jobs (lowering, code, analysis) and long ones (validate, measure, sweeps, tuning)
    have pools of their own, sized from the machine and ``PLAYGROUND_QUICK_WORKERS`` /
    ``PLAYGROUND_LONG_WORKERS``; ``PLAYGROUND_TRACKER`` sends timings to an RPC farm (see
    :func:`playground.service.server_pools`).

    Raises
    ------
    PlaygroundError
        For a malformed variable (``where`` names it).
    """
    pool = service.server_pools()

    def warm() -> None:
        try:
            pool.warm_up()
        except PlaygroundError as e:  # the first job will report it to the user
            log.warning("worker warm-up failed: %s", e)

    threading.Thread(target=warm, name="pool-warm-up", daemon=True).start()
    return pool


def init(restore: Callable[[], Session | None]) -> None:
    """Create the session once per tab: from ``restore()`` (the URL) or the default chain.

    Also names this tab as the owner of the jobs this run starts (the pools' fair queue).
    """
    ctx = get_script_run_ctx()
    CURRENT_OWNER.set(ctx.session_id if ctx is not None else "")
    if UI_KEY not in st.session_state:
        st.session_state[UI_KEY] = UIState()
    if SESSION_KEY not in st.session_state:
        session = None
        try:
            session = restore()
        except PlaygroundError as e:
            say("error", f"The link's state could not be restored: {e.message}. "
                         "Showing the default chain instead.")
        default = Session.new(DEFAULT_CHAIN)
        # A link's session is a history entry: Undo goes back to the default chain.
        st.session_state[SESSION_KEY] = (session.replacing(default, "opened a link")
                                         if session is not None else default)


def session() -> Session:
    return st.session_state[SESSION_KEY]


def ui() -> UIState:
    return st.session_state[UI_KEY]


def editor_key(field: str) -> str:
    """The chain editor's widget key for ``field`` (e.g. ``"input.h"``, ``"0.channels"``) in
    the current generation: ``chain.input.h.v3``."""
    return f"{EDITOR_PREFIX}{field}.v{ui().editor_generation}"


def commit(new: Session, *, from_editor: bool = False) -> None:
    """Make ``new`` the session. Unless the change came from the editor's fields, the editor
    gets new keys, so that it shows ``new.chain`` and not what the browser remembers."""
    st.session_state[SESSION_KEY] = new
    ui().step_error = None
    if not from_editor:
        ui().editor_generation += 1


def replace_session(new: Session, label: str) -> None:
    """Make ``new`` the session as one history entry, ``label`` (e.g. "imported x.py"): Undo
    brings back the session it replaced, whole (see :meth:`Session.replacing`)."""
    commit(new.replacing(session(), label))


def keep(key: str, default: Any) -> None:
    """Give widget ``key`` its last value (else ``default``) before it is drawn, even after a
    run without it: Streamlit forgets the value of a widget a run does not draw (a lazy tab
    that was closed), so it is copied under ``_kept.<key>`` too. Draw the widget with no
    ``value=``."""
    shadow = f"_kept.{key}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(shadow, default)
    st.session_state[shadow] = st.session_state[key]


def say(level: str, text: str, where: str = "top") -> None:
    """Keep a message (``level``: success, info, warning, error) to show once, beside the
    control ``where`` names (see ``ui.io_ui.render_flash``)."""
    ui().flash.append((level, text, where))


def result_key(job: str, current: Session, target: str, extra: str = "") -> str:
    return f"{job}|{target}|{extra}|{current.key()}"


def cached_result(key: str) -> JobResult | None:
    raw = ui().results.get(key)
    return JobResult(**raw) if raw is not None else None


def remember_result(key: str, result: JobResult) -> None:
    results = ui().results
    results[key] = result.to_dict()
    results.move_to_end(key)
    while len(results) > _MAX_RESULTS:
        results.popitem(last=False)


def forget_result(key: str) -> None:
    ui().results.pop(key, None)


def run_cached(key: str, job: Callable[[], JobResult], spinner: str) -> JobResult:
    """``job()``'s result, run once per key (worker results are derived from the session)."""
    hit = cached_result(key)
    if hit is not None:
        return hit
    with st.spinner(spinner):
        result = job()
    if result.status != "cancelled":
        remember_result(key, result)
    return result
