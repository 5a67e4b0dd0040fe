"""AppTest helpers for the page's tests: open the app (optionally on a link), rerun, apply a
step through the schedule form, read the session and the error messages."""

from __future__ import annotations

import paths
from helpers import shown
from streamlit.testing.v1 import AppTest

from playground.io.url_state import QUERY_KEY, encode_state
from playground.schedule.session import Session

APP = paths.APP
TINY = {"input": {"shape": [1, 3, 16, 16]},
        "layers": [{"op": "conv2d", "channels": 4, "kernel": 3}, {"op": "relu"}]}


def start(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def session(at: AppTest) -> Session:
    return at.session_state["session"]


def with_session(s: Session) -> AppTest:
    """An app opened on a link that holds ``s``."""
    return start({QUERY_KEY: encode_state(s.chain, s.steps, s.cursor)})


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def apply(at: AppTest, primitive: str, **values) -> AppTest:
    """Pick ``primitive``, set its pickers in order (each a rerun: later pickers depend on
    earlier ones), press Apply. Values: key suffix -> value."""
    at.selectbox(key="sched.primitive").set_value(primitive)
    run(at)
    for suffix, value in values.items():
        key = f"sched.{primitive}.{suffix}"
        for kind in ("selectbox", "multiselect", "number_input", "checkbox", "text_input"):
            found = [w for w in getattr(at, kind) if w.key == key]
            if found:
                found[0].set_value(value)
                break
        else:
            raise KeyError(key)
        run(at)
    at.button(key="sched.apply").click()
    return run(at)


def errors(at: AppTest) -> list[str]:
    """The error messages on the page, as they read (escaped Markdown unescaped)."""
    return [shown(e.value) for e in at.error]
