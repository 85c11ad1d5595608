"""Conversions between the two preference formats.

``implicit -> explicit`` splits off the shared beginning of `chosen` and `rejected` as the
prompt, as TRL's ``extract_prompt`` does; ``explicit -> implicit`` prepends the prompt. The
first direction loses nothing (converting back gives the rows exactly). The second loses
where the prompt ended whenever the two answers begin alike: converting back would move
their shared words into the prompt. `ambiguous_rows` counts those rows so the CLI can say so.
"""

from __future__ import annotations

from typing import Any

from rlhfkit.data.formats import Format, Kind, split_implicit_prompt


def to_explicit_prompt(row: dict[str, Any], conversational: bool) -> dict[str, Any]:
    """``{chosen, rejected}`` with a shared beginning -> ``{prompt, chosen, rejected}``."""
    return split_implicit_prompt(row, conversational)


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


def ambiguous_rows(rows: list[dict[str, Any]], conversational: bool) -> int:
    """Explicit rows whose prompt boundary an implicit copy would not preserve."""
    n = 0
    for row in rows:
        back = split_implicit_prompt(to_implicit_prompt(row, conversational), conversational)
        n += back["prompt"] != row["prompt"]
    return n
