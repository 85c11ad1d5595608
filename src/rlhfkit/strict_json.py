"""Strict JSON out: every JSON file and `--json` output rlhfkit writes parses with any
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


def _non_finite(x: Any) -> bool:
    return (
        isinstance(x, numbers.Real)
        and not isinstance(x, numbers.Integral)
        and not math.isfinite(float(x))
    )


def _spelling(x: Any) -> str:
    x = float(x)
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
