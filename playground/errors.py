"""The library's one error type.

Everything a user can get wrong (a chain, a step's arguments, an uploaded script, a query
string) and everything TVM refuses (a schedule primitive, a build) reaches callers as a
:class:`PlaygroundError`. Its ``str()`` is one line that names what is wrong; ``detail`` holds
the full explanation (for example TVM's annotated IR) for an expander in the UI.
"""

from __future__ import annotations


class PlaygroundError(Exception):
    """A user-facing error with a one-line message and an optional long explanation.

    Parameters
    ----------
    message
        One line naming what is wrong: the layer, step or argument, and the value.
    detail
        The full explanation (TVM's rendered error, a traceback of a build); may be empty.
    where
        What the error is about, for the UI to place the message next to the right field:
        e.g. ``"layer:conv2.channels"``, ``"step:3.factors"``, ``"script:line 12"``.
    """

    def __init__(self, message: str, *, detail: str = "", where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.where = where

    def __str__(self) -> str:
        return self.message


class ChainError(PlaygroundError):
    """A chain (input shape and layers) that cannot be built."""


class StepError(PlaygroundError):
    """A schedule step that is malformed or that TVM rejected."""


class ScriptError(PlaygroundError):
    """An imported script or query string outside the playground's format."""


class BuildError(PlaygroundError):
    """A schedule that applies but does not lower or compile for the chosen target."""
