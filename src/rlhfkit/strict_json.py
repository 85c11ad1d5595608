"""Strict JSON in and out. Out: every JSON file and `--json` output rlhfkit writes parses with any
RFC 8259 parser. Python's `json` writes NaN and Infinity by default, which JSON has no words
for: JavaScript, jq and most other parsers reject the whole document.

Two cases, chosen per writer:

- `dumps` / `dump` (``allow_nan=False``): configs, hashes, caches, manifests, requests —
  where a non-finite number is a bug to surface (ValueError), never data to write.
- `nulled(obj)` first, for statistics and metrics, where a non-finite value means
  "undefined" (a correlation of constant rewards, a loss that diverged): it becomes null,
  and the dict that held it gains ``non_finite``: {key: "NaN" | "Infinity" | "-Infinity"},
  so the reason is not lost. Writers that know a better reason (the agreement summary's
  ``*_note`` keys) give it themselves; `nulled` is then only the backstop.

In: JSON has no NaN or Infinity, and a double cannot hold 1e999 or a 400-digit integer, but
Python's `json` reads all of them. `loads` refuses them outright (the annotation app's
request bodies); `non_finite_at` finds the first one in a parsed value and names where it
is, so every data file (`rlhfkit.data.io`) reports it as FILE:LINE: FIELD is not a finite
number, and none reaches a statistic.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import IO, Any


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps that raises ValueError on NaN or Infinity instead of writing them."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def dump(obj: Any, fp: IO[str], **kwargs: Any) -> None:
    """json.dump that raises ValueError on NaN or Infinity instead of writing them."""
    json.dump(obj, fp, allow_nan=False, **kwargs)


def nulled(obj: Any) -> Any:
    """A copy of `obj` (dicts, lists, tuples, numbers, numpy scalars) with each non-finite
    float replaced by None; each dict that held one gains ``non_finite`` naming its keys
    and their values as JSON would spell them. Everything else is returned as it is."""
    if isinstance(obj, dict):
        out, gone = {}, {}
        for key, value in obj.items():
            if _non_finite(value):
                out[key] = None
                gone[str(key)] = _spelling(value)
            else:
                out[key] = nulled(value)
        if gone:
            out["non_finite"] = {**out.get("non_finite", {}), **gone}
        return out
    if isinstance(obj, list | tuple):
        return [None if _non_finite(v) else nulled(v) for v in obj]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        return float(obj)  # numpy floats, which json cannot write
    return obj


class NotFinite(ValueError):
    """A number JSON text may spell but a double cannot hold (see `loads`)."""


def loads(text: str, **kwargs: Any) -> Any:
    """json.loads that raises `NotFinite` for NaN, Infinity, -Infinity, a float that
    overflows (1e999) and an integer a double cannot hold; `json.JSONDecodeError` as usual
    for text that is not JSON. Keyword arguments (e.g. object_pairs_hook) pass through."""
    return json.loads(
        text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_double_int,
        **kwargs,
    )


def non_finite_at(value: Any) -> tuple[str, str] | None:
    """(where, what) of the first number in `value` that is not a finite double — where as
    `label` or `meta.scores[2]` ("the value" at the top), what as "NaN", "Infinity",
    "-Infinity" or "too large for a float" — or None when every number is finite."""
    # Iterative, and a path is spelled only for the number found: a value may be nested
    # deeper than the recursion limit (json.loads reads up to it; a caller may build deeper).
    # A trail is (parent's trail, step), so a deep walk costs no string per level.
    stack: list[tuple[Any, tuple | None]] = [(value, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, dict):
            stack += [(item, (trail, f".{key}")) for key, item in reversed(value.items())]
        elif isinstance(value, list):
            stack += [(value[i], (trail, f"[{i}]")) for i in range(len(value) - 1, -1, -1)]
        else:
            what = _not_a_double(value)
            if what:
                return _spelled(trail), what
    return None


def _not_a_double(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return _spelling(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return "too large for a float"
    return None


def _spelled(trail: tuple | None) -> str:
    steps = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    return "".join(reversed(steps)).removeprefix(".") or "the value"


def _no_constant(token: str) -> Any:
    raise NotFinite(f"{token} is not a JSON number (JSON has no NaN or Infinity)")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise NotFinite(f"the number {token[:20]} does not fit a double")
    return value


def _double_int(token: str) -> int:
    try:
        value = int(token)
        float(value)
    except (ValueError, OverflowError):  # past Python's 4300 digits, or a double's range
        raise NotFinite(f"the number {token[:20]}... does not fit a double") from None
    return value


def _non_finite(x: Any) -> bool:
    return (
        isinstance(x, numbers.Real)
        and not isinstance(x, numbers.Integral)
        and not math.isfinite(float(x))
    )


def _spelling(x: Any) -> str:
    x = float(x)
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
