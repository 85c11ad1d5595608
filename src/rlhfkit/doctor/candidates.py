"""Checks on the candidate pairs, before anyone labels them.

1. Does the model that wrote the candidates ever show each target behavior? Preferences can
   only reinforce what the model samples: an 'increase' criterion the SFT model (almost)
   never shows gives the annotators no pair in which to prefer it, so the labels teach
   something else. Measured per criterion on the candidates' replies of the trained model
   against the starting model's ([generate] start_samples > 0 adds those; a row's ``models``
   says who wrote each reply), on the prompts the criterion applies to.
2. Are the two replies of a pair too alike to decide? Near-identical pairs cost labels and
   teach nothing (identical ones `generate` already skips).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.data import load
from rlhfkit.doctor.verdict import Check, Verdict, missing, pct, share

NEVER = 0.05
"""An 'increase' criterion shown in fewer of the trained model's replies than this: fail."""
SELDOM = 0.15
"""... in fewer than this, or no more often than the starting model: warn."""
ALWAYS = 0.95
"""A 'decrease' criterion shown in more than this share of replies: warn (a binary detector
at 100% leaves no pair without it; a reward model may still learn a graded difference)."""
SIMILAR = 0.9
"""Two replies whose word sequences match at least this much (difflib's ratio) are 'near
identical'."""
SIMILAR_WARN, SIMILAR_FAIL = 0.2, 0.5
"""Shares of near-identical pairs that warn and fail."""

STAGE = "candidates"
PAIR_ID = re.compile(r"^p(\d+)-(\d+)-(\d+)$")
"""`generate`'s pair ids: p<prompt>-<reply a>-<reply b>."""


@dataclass(frozen=True)
class Reply:
    text: str
    model: str | None
    """Who wrote it (None when one model wrote every reply)."""
    row: dict[str, Any]
    """The pair's row, whose prompt columns say which criteria apply."""


def replies(rows: Sequence[dict[str, Any]]) -> tuple[list[Reply], str | None]:
    """Each reply once (with `all_pairs`, a reply sits in several pairs), and the trained
    model's name: `generate` writes its replies first, so the first pair's first reply is
    the trained model's."""
    seen: dict[Any, Reply] = {}
    for n, row in enumerate(rows):
        models = row.get("models") or [None, None]
        found = PAIR_ID.match(str(row.get("id", "")))
        for side, key in ((0, "response_a"), (1, "response_b")):
            text = _text(row[key])
            ident = (found[1], found[2 + side]) if found else (n, side, text)
            seen.setdefault(ident, Reply(text, models[side], row))
    trained = rows[0].get("models", [None])[0] if rows else None
    return list(seen.values()), trained


def _text(value: Any) -> str:
    """A reply's text: the string, or the content of its last message."""
    if isinstance(value, list):
        return str(value[-1].get("content", "")) if value else ""
    return str(value)


def check_candidates(path: Path | None, criteria: Sequence[SuccessCriterion]) -> list[Check]:
    """Every criterion's 'never shows' check and the similar-pairs check."""
    none = "no success criteria given (the project spec's [[success_criteria]])"
    no_criteria = [] if criteria else [missing("sft_never_shows", STAGE, "criteria", none)]
    if path is None or not path.is_file():
        what = "no candidate pairs yet (the candidates stage writes annotation/candidates.jsonl)"
        out = [missing(f"sft_never_shows:{c.name}", STAGE, _title(c), what) for c in criteria]
        return [*out, *no_criteria, missing("similar_pairs", STAGE, SIMILAR_TITLE, what)]
    rows = load(path).rows
    found, trained = replies(rows)
    out = [never_shows(c, found, trained) for c in criteria]
    return [*out, *no_criteria, similar_pairs(rows)]


def _title(c: SuccessCriterion) -> str:
    return f"the trained model shows '{c.name}' before people label"


def never_shows(c: SuccessCriterion, found: list[Reply], trained: str | None) -> Check:
    name, title = f"sft_never_shows:{c.name}", _title(c)
    if not c.text_only:
        return missing(
            name,
            STAGE,
            title,
            f"its {c.detector.kind} detector needs a model; `eval policy` measures it",
        )
    mine = [r for r in found if c.applies(r.row)]
    if not mine:
        subset = f" (applies_to {c.applies_to})" if c.applies_to else ""
        return missing(
            name, STAGE, title, f"no candidate reply is on a prompt it applies to{subset}"
        )
    ours = [r for r in mine if r.model == trained]
    start = [r for r in mine if r.model != trained]
    if not ours:
        return missing(name, STAGE, title, "the trained model wrote no reply on those prompts")
    k = sum(c.detector.matches(r.text) for r in ours)
    numbers: dict[str, Any] = {"trained": [k, len(ours)], "rate": k / len(ours)}
    evidence = f"the trained model shows it in {share(k, len(ours))} replies"
    if start:
        ks = sum(c.detector.matches(r.text) for r in start)
        numbers |= {"start": [ks, len(start)], "start_rate": ks / len(start)}
        evidence += f"; the starting model in {share(ks, len(start))}"
    if c.applies_to:
        evidence += f" (prompts with {_subset(c)})"
    return _never_verdict(c, Check(name, STAGE, title, "ok", evidence, "", numbers))


def _subset(c: SuccessCriterion) -> str:
    return ", ".join(f"{k} = {v}" for k, v in (c.applies_to or {}).items())


def _never_verdict(c: SuccessCriterion, measured: Check) -> Check:
    """`measured` (ok) as the rates say: rare for an 'increase' criterion fails or warns,
    near-universal for a 'decrease' one warns."""
    rate, base = measured.numbers["rate"], measured.numbers.get("start_rate")
    teach = (
        "teach it first: add SFT examples that show it ([data] sft), or train SFT longer "
        "([train.sft] epochs / max_steps), then `rlhfkit run` again (the candidates are "
        "sampled anew); to label these pairs anyway, `rlhfkit run --ignore-doctor`"
    )
    if c.direction == "increase" and rate < NEVER:
        why = (
            f"under {pct(NEVER)}, so almost no pair lets people prefer it and preferences "
            "cannot reinforce it"
        )
        return _judged(measured, "fail", why, teach)
    if c.direction == "increase" and rate > ALWAYS:
        return _judged(measured, "ok", "already in nearly every reply", "")
    if c.direction == "increase" and (rate < SELDOM or (base is not None and rate <= base)):
        why = f"under {pct(SELDOM)}" if rate < SELDOM else "no more than the starting model"
        return _judged(measured, "warn", f"{why}; few pairs contrast it", teach)
    if c.direction == "decrease" and rate > ALWAYS:
        why = f"over {pct(ALWAYS)}, so almost every pair has it on both sides"
        return _judged(measured, "warn", why, "add SFT examples without it ([data] sft)")
    return measured


def _judged(check: Check, verdict: Verdict, why: str, action: str) -> Check:
    return replace(check, verdict=verdict, evidence=f"{check.evidence}: {why}", action=action)


SIMILAR_TITLE = "the two replies of a pair differ enough to decide"


def similarity(a: str, b: str) -> float:
    """How alike two replies are, word by word (difflib's ratio: 1 is identical)."""
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def similar_pairs(rows: Sequence[dict[str, Any]]) -> Check:
    name = "similar_pairs"
    if not rows:
        return missing(name, STAGE, SIMILAR_TITLE, "the candidates file holds no pair")
    alike = sum(similarity(_text(r["response_a"]), _text(r["response_b"])) >= SIMILAR for r in rows)
    part = alike / len(rows)
    numbers = {"near_identical": alike, "pairs": len(rows), "share": part, "ratio": SIMILAR}
    evidence = f"{share(alike, len(rows))} pairs are near-identical (word match >= {SIMILAR})"
    action = (
        "sample more varied replies: raise [generate] temperature or top_p, or let the "
        "starting model add replies ([generate] start_samples)"
    )
    if part > SIMILAR_FAIL:
        return Check(name, STAGE, SIMILAR_TITLE, "fail", evidence, action, numbers)
    if part > SIMILAR_WARN:
        return Check(name, STAGE, SIMILAR_TITLE, "warn", evidence, action, numbers)
    return Check(name, STAGE, SIMILAR_TITLE, "ok", evidence, "", numbers)
