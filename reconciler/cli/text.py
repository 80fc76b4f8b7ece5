"""Text from rows, made safe to print on one line of a log or a terminal.

A row's name, user, bind source or message is written by whoever may INSERT a row: a newline in
it would forge a line in a text log, and an ESC or OSC sequence would reach the terminal of the
operator running ``reconciler get``. Every control character (C0, DEL, C1) is shown as a Python
escape instead (``\\n``, ``\\x1b``), and so are the Unicode bidirectional overrides that can make
a line read differently from what it holds. Printable text, non-ASCII included, is unchanged.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with every control character replaced by a visible escape."""
    if not _UNSAFE.search(text):
        return text  # the common case, without building a new string
    return _UNSAFE.sub(
        lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode()), text
    )
