"""Which strings the store can keep, the same on SQLite and on PostgreSQL.

PostgreSQL's text cannot hold NUL (U+0000) and SQLite's can: a string with one would be a
201 on one database and a 500 on the other. A lone UTF-16 surrogate (U+D800-U+DFFF, which
JSON's ``"\\ud800"`` escape produces) is not Unicode text at all: it cannot be encoded as
UTF-8, for either database or for a response. Both are refused wherever text comes in: the
API (`inputs`), imports (`importing`) and an override's reason from the command line (`rounds`).
"""

from __future__ import annotations

from typing import Any

NUL = "holds a NUL character (U+0000), which the store cannot keep"
SURROGATE = "holds a lone UTF-16 surrogate (U+D800-U+DFFF), which is not Unicode text"


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored on both databases alike (`NUL`, `SURROGATE`), or None."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def first_unstorable(value: Any, loc: list | None = None) -> tuple[list, str] | None:
    """(where, why) for the first string in a JSON value, names included, that `unstorable`
    refuses; None if all are fine. Walks iteratively: a value may be deeply nested."""
    stack = [(value, loc or [])]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            why = unstorable(value)
            if why:
                return where, why
        elif isinstance(value, dict):
            for name, item in value.items():
                why = unstorable(name)
                if why:
                    return [*where, shown(name)], why
                stack.append((item, [*where, name]))
        elif isinstance(value, list):
            stack += [(item, [*where, i]) for i, item in enumerate(value)]
    return None


def shown(text: str) -> str:
    """`text` as JSON or a message can carry it: a lone surrogate becomes its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
