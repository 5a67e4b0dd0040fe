"""Long jobs (sweeps, tuning, comparisons) in a background thread of this tab.

A :class:`Task` runs ``work(task)`` in a daemon thread that never touches Streamlit: it only
updates ``task.progress`` / ``task.text`` and leaves a plain ``result`` (or an ``error``).
The page polls it from a fragment (``st.fragment(run_every=...)``), so the rest of the page
stays usable while a sweep runs, and a Cancel button sets ``task.cancel``, which the library
passes to the worker pool (the job in flight is killed).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from playground.errors import PlaygroundError

TASKS_KEY = "tasks"


@dataclass
class Task:
    """A background job of one tab: progress in [0, 1], a line of text, the outcome."""

    name: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    text: str = "starting…"
    result: Any = None
    error: str = ""
    done: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def running(self) -> bool:
        return not self.done

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started


def _tasks() -> dict[str, Task]:
    if TASKS_KEY not in st.session_state:
        st.session_state[TASKS_KEY] = {}
    return st.session_state[TASKS_KEY]


def get(name: str) -> Task | None:
    return _tasks().get(name)


def start(name: str, work: Callable[[Task], Any]) -> Task:
    """Run ``work(task)`` in a thread; a task of that name still running is cancelled first."""
    old = get(name)
    if old is not None and old.running:
        old.cancel.set()
    task = Task(name)

    def run() -> None:
        try:
            task.result = work(task)
        except PlaygroundError as e:
            task.error = e.message
        except Exception as e:  # a bug must not kill the thread silently: show it
            task.error = f"{type(e).__name__}: {e}"
        finally:
            task.finished = time.monotonic()
            task.done = True

    _tasks()[name] = task
    # In this run's context: the task's jobs keep this tab as their owner (fair queue).
    threading.Thread(target=contextvars.copy_context().run, args=(run,), name=f"task-{name}",
                     daemon=True).start()
    return task


def wait(name: str, timeout_s: float) -> Task | None:
    """Block until the task is done (tests and scripts; the page polls instead)."""
    deadline = time.monotonic() + timeout_s
    task = get(name)
    while task is not None and task.running and time.monotonic() < deadline:
        time.sleep(0.05)
    return task
