"""Lossless conversions between preference formats.

Only conversions that lose nothing are offered. ``implicit -> explicit -> implicit`` gives the
rows back exactly; the shared beginning of `chosen` and `rejected` becomes the prompt, as in
TRL's ``extract_prompt`` (for text, a space just before the split stays with the answers).
"""

from __future__ import annotations

from typing import Any

from rlhfkit.data.formats import Format, Kind


def to_explicit_prompt(row: dict[str, Any], conversational: bool) -> dict[str, Any]:
    """``{chosen, rejected}`` with a shared beginning -> ``{prompt, chosen, rejected}``."""
    chosen, rejected = row["chosen"], row["rejected"]
    split = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        split += 1
    if not conversational and split > 0 and chosen[split - 1] == " ":
        split -= 1
    out = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
    out = {"prompt": chosen[:split], "chosen": chosen[split:], "rejected": rejected[split:], **out}
    return out


def to_implicit_prompt(row: dict[str, Any], conversational: bool) -> dict[str, Any]:
    """``{prompt, chosen, rejected}`` -> ``{chosen, rejected}`` with the prompt prepended."""
    prompt = row["prompt"]
    out = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    return {"chosen": prompt + row["chosen"], "rejected": prompt + row["rejected"], **out}


CONVERSIONS = {
    "explicit": (Format.PREFERENCE_IMPLICIT, Format.PREFERENCE, to_explicit_prompt),
    "implicit": (Format.PREFERENCE, Format.PREFERENCE_IMPLICIT, to_implicit_prompt),
}


def convert_rows(
    rows: list[dict[str, Any]], kind: Kind, to: str | None
) -> tuple[list[dict[str, Any]], Kind]:
    """Apply the named conversion (or none, to change only the file format)."""
    if to is None:
        return rows, kind
    source, target, fn = CONVERSIONS[to]
    if kind.format is target:
        return rows, kind
    if kind.format is not source:
        raise ValueError(f"'{to}' converts {source.value} data, not {kind}")
    return [fn(r, kind.conversational) for r in rows], Kind(target, kind.conversational)
