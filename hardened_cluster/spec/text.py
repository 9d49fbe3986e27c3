"""How messages about a spec show what the user wrote: key paths and values, escaped and bounded.

Invisible and confusable characters (BOM, zero-width, non-breaking spaces, tabs, controls, and any
other non-ASCII character, such as a Cyrillic 'а' in a Latin name) are shown as escapes, so that `'name\\u200b'` explains why a key that looks right is unknown. Values under keys
that hold or reference key material are never shown.
"""
from __future__ import annotations

import re
from typing import Any

# An identifier-like key is written as is; anything else in brackets, quoted and escaped.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_SHOWN = 80


class Hidden:
    """Stands in for a value that must not appear in a message."""

    def __repr__(self) -> str:
        return "a value that is not shown (this key holds or references key material)"


HIDDEN = Hidden()


def escaped(text: str) -> str:
    """`text` quoted, with every character but printable ASCII escaped, cut to MAX_SHOWN."""
    cut = text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN]
    out = "".join(c if c != "\\" and c.isascii() and c.isprintable() else c.encode("unicode_escape").decode()
                  for c in cut)
    more = f"... ({len(text):,} characters)" if cut is not text else ""
    return f"'{out}'{more}" if "'" not in out else f'"{out}"{more}'


def shown(value: Any) -> str:
    """A short rendering of a YAML value for messages."""
    if isinstance(value, Hidden):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        text = str(value)
        return text if len(text) <= MAX_SHOWN else f"a number of {len(text):,} digits"
    if isinstance(value, str):
        return escaped(value)
    return {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def key_path(loc: tuple[Any, ...]) -> str:
    """('nodes', 3, 'labels', 'a/b') -> nodes[3].labels['a/b']."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{escaped(part) if isinstance(part, str) else shown(part)}]"
    return out
