"""A fair queue for workers: callers take turns by owner, so one user cannot starve another.

A server shared by a team runs many users' jobs on a few workers. First come, first served is
unfair to the user who asked for one thing while another queued twelve sweep points: the
twelve all go first. :class:`FairQueue` hands each free worker to the *owners* in turn (round
robin), and to one owner's waiting jobs in the order they came::

    A queued a1 a2 a3, then B queued b1  ->  served a1, b1, a2, a3

An owner is any string naming who asked (the page uses its Streamlit session id). Callers that
name none share the owner ``""``, which is plain FIFO. The owner can be given per call or set
for a context with :func:`owner_scope`, so that a library function that calls ``pool.run``
deep inside (a sweep, the search) needs no new parameter to be counted as its user's. A new
thread starts with an empty context: start it with ``contextvars.copy_context().run`` to keep
the owner (the page's background tasks do).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from playground.worker.lock import POLL_S, EventCallback, emit

T = TypeVar("T")

#: Who is asking, for calls that name no owner (see :func:`owner_scope`).
CURRENT_OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("playground_owner",
                                                                    default="")


def current_owner() -> str:
    """The owner set by the innermost :func:`owner_scope` of this context (``""``: none)."""
    return CURRENT_OWNER.get()


@contextlib.contextmanager
def owner_scope(owner: str) -> Iterator[None]:
    """Count every job run in the ``with`` block (this context) as ``owner``'s."""
    token = CURRENT_OWNER.set(str(owner))
    try:
        yield
    finally:
        CURRENT_OWNER.reset(token)


class FairQueue(Generic[T]):
    """Free items (workers) handed to waiting callers round robin by owner, FIFO within one.

    Parameters
    ----------
    items
        The items free at the start.
    """

    def __init__(self, items: list[T]) -> None:
        self._cond = threading.Condition()
        self._free: deque[T] = deque(items)
        #: owner -> its waiting tickets, oldest first; dict order is the owners' turn order.
        self._waiting: OrderedDict[str, deque[int]] = OrderedDict()
        self._tickets = itertools.count()

    def put(self, item: T) -> None:
        """Give an item back; the next owner in turn gets it."""
        with self._cond:
            self._free.append(item)
            self._cond.notify_all()

    def waiting(self) -> dict[str, int]:
        """Waiting callers per owner, in turn order (for tests and a status line)."""
        with self._cond:
            return {owner: len(q) for owner, q in self._waiting.items()}

    def get(self, owner: str = "", *, cancel: threading.Event | None = None,
            closed: Callable[[], bool] = lambda: False,
            on_event: EventCallback | None = None) -> T | None:
        """Wait for a free item in ``owner``'s turn; ``None`` when ``cancel`` is set first.

        ``on_event`` gets ``{"event": "waiting", "position": n}`` when the caller has to wait,
        and again whenever ``n`` (the callers that will be served first) changes.

        Raises
        ------
        Exception
            Whatever ``closed()`` raises; it is polled while waiting so that a closed pool
            ends the wait.
        """
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.setdefault(owner, deque()).append(ticket)
            last = None
            try:
                while True:
                    if self._free and self._is_next(owner, ticket):
                        self._serve(owner)
                        return self._free.popleft()
                    if cancel is not None and cancel.is_set():
                        break
                    closed()
                    position = self._position(owner, ticket)
                    if position != last:
                        emit(on_event, {"event": "waiting", "position": position})
                        last = position
                    self._cond.wait(POLL_S)
            except BaseException:
                self._drop(owner, ticket)
                raise
            self._drop(owner, ticket)
            return None

    # -- turn order (call with the condition held) ----------------------------------------------

    def _is_next(self, owner: str, ticket: int) -> bool:
        first = next(iter(self._waiting))
        return first == owner and self._waiting[owner][0] == ticket

    def _serve(self, owner: str) -> None:
        """The first owner's oldest ticket is served: it goes to the back of the turn order."""
        queue = self._waiting[owner]
        queue.popleft()
        if queue:
            self._waiting.move_to_end(owner)
        else:
            del self._waiting[owner]
        self._cond.notify_all()

    def _drop(self, owner: str, ticket: int) -> None:
        queue = self._waiting.get(owner)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[owner]
            self._cond.notify_all()

    def _position(self, owner: str, ticket: int) -> int:
        """How many waiting callers are served before ``ticket`` if nobody else arrives.

        The ticket is the ``k``-th of its owner, whose turn is at index ``i``: each round
        serves one ticket per owner in turn order, so owners before ``i`` go ``k + 1`` times
        first, those after it ``k`` times, each at most as often as it has tickets.
        """
        owners = list(self._waiting)
        i = owners.index(owner)
        k = self._waiting[owner].index(ticket)
        ahead = k
        for j, other in enumerate(owners):
            if other != owner:
                ahead += min(len(self._waiting[other]), k + 1 if j < i else k)
        return ahead
