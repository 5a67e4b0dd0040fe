"""Echoing text on the page safely: every value that came from a user, a file, a link or TVM
goes through :func:`escape` (prose) or :func:`code` (a name, a step, a value) before it reaches
Streamlit's Markdown (``st.error``, ``st.caption``, ``st.markdown``, labels).

Why both are needed: Streamlit renders Markdown plus its own extensions (``:red[...]``,
``:material/icon:``, ``:emoji:``, ``$LaTeX$``) and GitHub's autolinks. Backslash escapes stop
the syntax, but autolinks (``http://…``, ``www.…``, ``a@b.c``) are found in the text after
parsing, escapes or not: those parts are shown as inline code, which is never linked. So a
layer named ``[click here](http://example.invalid/x)`` reads as that text, never as a link,
and ``__import__`` stays ``__import__`` instead of a bold "import".

Also here: the icons of messages, as Material Symbols (an emoji icon shows as an empty box
where the browser lacks an emoji font).
"""

from __future__ import annotations

import re
from typing import Any

ERROR_ICON = ":material/error:"
WARNING_ICON = ":material/warning:"
RETRY_ICON = ":material/replay:"

#: What starts Markdown syntax anywhere in a line: emphasis (``*``, and ``_`` at a word's
#: edge: ``snake_case`` stays as it is), code, links and images (``[``), HTML and autolinks
#: (``<``), tables, strikethrough, formulas, entities, and every ``:`` (Streamlit reads
#: ``:red``, ``:material/...:`` and emoji such as ``:100:`` on either side of a word).
_INLINE = r"[\\`*\[\]<|~$&:]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"
#: What starts a block at the beginning of a line: headings, quotes, lists, rules.
_LINE_START = r"^[ \t]*(?:[#>+=-]|\d+[.)])"
_SYNTAX = re.compile(f"{_LINE_START}|{_INLINE}", re.MULTILINE)
#: What GitHub-flavoured Markdown turns into a link after parsing: URLs, www., e-mails.
_LINKABLE = re.compile(r"""(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s'"<>]*"""
                       r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_BACKTICKS = re.compile(r"`+")


def code(value: Any) -> str:
    """``value`` as an inline code span, whatever it holds (backticks, newlines, URLs)."""
    text = " ".join(str(value).splitlines()) or " "
    fence = "`" * (max(map(len, _BACKTICKS.findall(text)), default=0) + 1)
    # A span that starts or ends with a backtick needs a space inside its fence (CommonMark
    # strips one space from each side when both are there).
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _escape_syntax(text: str) -> str:
    """A backslash before each character that would start Markdown syntax (CommonMark allows
    one before any ASCII punctuation); the rest, e.g. ``groups=2``, reads as typed."""
    return _SYNTAX.sub(lambda m: m.group()[:-1] + "\\" + m.group()[-1], text)


def escape(text: Any) -> str:
    """``text`` as Markdown that shows exactly these characters, with no link, format, icon,
    emoji, colour or formula; URLs and e-mail addresses in it are shown as code."""
    text = str(text)
    out, start = [], 0
    for match in _LINKABLE.finditer(text):
        out.append(_escape_syntax(text[start:match.start()]))
        out.append(code(match.group()))
        start = match.end()
    out.append(_escape_syntax(text[start:]))
    # A line break inside a message stays one (Markdown needs two spaces before it).
    return "".join(out).replace("\n", "  \n")
