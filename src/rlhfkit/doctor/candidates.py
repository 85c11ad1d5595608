"""Checks on the candidate pairs, before anyone labels them.

1. Does the model that wrote the candidates ever show each target behavior? Preferences can
   only reinforce what the model samples: an 'increase' criterion the SFT model (almost)
   never shows gives the annotators no pair in which to prefer it, so the labels teach
   something else. Measured per criterion on the candidates' replies of the trained model
   against the starting model's ([generate] start_samples > 0 adds those), on the prompts
   the criterion applies to, each detector given the prompt and the reply (as `eval policy`
   runs it: `rlhfkit.evaluate.criteria.detect`). Which replies the trained model wrote is
   read from the candidates' manifest (`Writers`), never guessed.
2. Are the two replies of a pair too alike to decide? Near-identical pairs cost labels and
   teach nothing (identical ones `generate` already skips).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rlhfkit.criteria import SuccessCriterion, prompt_columns
from rlhfkit.data import load
from rlhfkit.doctor.verdict import Check, Verdict, missing, pct, share
from rlhfkit.errors import UserError, display_path
from rlhfkit.evaluate.criteria import detect
from rlhfkit.lineage import manifest_path

NEVER = 0.05
"""An 'increase' criterion shown in fewer of the trained model's replies than this: fail."""
SELDOM = 0.15
"""... in fewer than this, or no more often than the starting model: warn."""
ALWAYS = 0.95
"""An 'increase' criterion shown in more than this share: ok, already in nearly every reply."""
SIMILAR = 0.9
"""Two replies whose word sequences match at least this much (difflib's ratio) are 'near
identical'."""
SIMILAR_WARN, SIMILAR_FAIL = 0.2, 0.5
"""Shares of near-identical pairs that warn and fail."""

STAGE = "candidates"
PAIR_ID = re.compile(r"^p(\d+)-(\d+)-(\d+)$")
"""`generate`'s pair ids: p<prompt>-<reply a>-<reply b>."""


@dataclass(frozen=True)
class Writers:
    """Who wrote the candidates, as their manifest records it (`generate`'s settings): the
    trained model wrote each prompt's first `n` replies (in a pair id p<prompt>-<a>-<b>,
    the reply numbers below n), the starting model (`start`) the rest."""

    n: int
    start: str | None
    """[generate] start_samples' model (`compare_with`); None when one model wrote all."""

    @classmethod
    def of(cls, candidates: Path) -> Writers | None:
        """From the manifest beside `candidates`; None when there is none."""
        path = manifest_path(candidates)
        if not path.is_file():
            return None
        try:
            config = json.loads(path.read_text())["config"]
            return cls(int(config["n"]), config.get("compare_with"))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise UserError(
                f"{display_path(path)}: not a candidates manifest written by `rlhfkit generate`"
            ) from None

    def trained(self, reply: int | None) -> bool | None:
        """Whether reply number `reply` of its prompt is the trained model's (None: a reply
        whose number is unknown, among two models' replies)."""
        if self.start is None:
            return True
        return None if reply is None else reply < self.n


@dataclass(frozen=True)
class Reply:
    text: str
    trained: bool | None
    """The trained model's reply (False: the starting model's; None: not known)."""
    row: dict[str, Any]
    """The pair's row: its prompt, and the prompt columns that say which criteria apply."""


def replies(rows: Sequence[dict[str, Any]], writers: Writers) -> list[Reply]:
    """Each reply once (with `all_pairs`, a reply sits in several pairs)."""
    seen: dict[Any, Reply] = {}
    for n, row in enumerate(rows):
        found = PAIR_ID.match(str(row.get("id", "")))
        for side, key in ((0, "response_a"), (1, "response_b")):
            text = _text(row[key])
            number = int(found[2 + side]) if found else None
            ident = (found[1], number) if found else (n, side, text)
            seen.setdefault(ident, Reply(text, writers.trained(number), row))
    return list(seen.values())


def _text(value: Any) -> str:
    """A reply's text: the string, or the content of its last message."""
    if isinstance(value, list):
        return str(value[-1].get("content", "")) if value else ""
    return str(value)


def check_candidates(path: Path | None, criteria: Sequence[SuccessCriterion]) -> list[Check]:
    """Each 'increase' criterion's 'never shows' check, and the similar-pairs check. A
    'decrease' criterion has no such check: people can prefer the reply without it whether
    the model shows it often or never."""
    none = "no success criteria given (the project spec's [[success_criteria]])"
    criteria = [c for c in criteria if c.direction == "increase"]
    no_criteria = [] if criteria else [missing("sft_never_shows", STAGE, "criteria", none)]
    if path is None or not path.is_file():
        what = "no candidate pairs yet (the candidates stage writes annotation/candidates.jsonl)"
        out = [missing(f"sft_never_shows:{c.name}", STAGE, _title(c), what) for c in criteria]
        return [*out, *no_criteria, missing("similar_pairs", STAGE, SIMILAR_TITLE, what)]
    rows = load(path).rows
    writers = Writers.of(path)
    if writers is None:
        what = (
            f"which replies the trained model wrote is in the candidates' manifest "
            f"({manifest_path(path).name}, written by `rlhfkit generate`), which is not there"
        )
        out = [missing(f"sft_never_shows:{c.name}", STAGE, _title(c), what) for c in criteria]
    else:
        found = replies(rows, writers)
        out = [never_shows(c, found) for c in criteria]
    return [*out, *no_criteria, similar_pairs(rows)]


def _title(c: SuccessCriterion) -> str:
    return f"the trained model shows '{c.name}' before people label"


def never_shows(c: SuccessCriterion, found: list[Reply]) -> Check:
    name, title = f"sft_never_shows:{c.name}", _title(c)
    if not c.text_only:
        return missing(
            name,
            STAGE,
            title,
            f"its {c.detector.kind} detector needs a model; `eval policy` measures it",
        )
    mine = [r for r in found if r.trained is not None and c.applies(prompt_columns(r.row))]
    if not mine:
        subset = f" (applies_to {c.subset()})" if c.applies_to else ""
        return missing(
            name, STAGE, title, f"no candidate reply is on a prompt it applies to{subset}"
        )
    # the detector sees the prompt too, as in `eval policy` (a callable f(prompt, response))
    hits = detect([c], [r.row["prompt"] for r in mine], [r.text for r in mine])[c.name]
    ours = [bool(h) for h, r in zip(hits, mine, strict=True) if r.trained]
    start = [bool(h) for h, r in zip(hits, mine, strict=True) if not r.trained]
    if not ours:
        return missing(name, STAGE, title, "the trained model wrote no reply on those prompts")
    k = sum(ours)
    numbers: dict[str, Any] = {"trained": [k, len(ours)], "rate": k / len(ours)}
    evidence = f"the trained model shows it in {share(k, len(ours))} replies"
    if start:
        ks = sum(start)
        numbers |= {"start": [ks, len(start)], "start_rate": ks / len(start)}
        evidence += f"; the starting model in {share(ks, len(start))}"
    if c.applies_to:
        evidence += f" (prompts with {c.subset()})"
    return _never_verdict(c, Check(name, STAGE, title, "ok", evidence, "", numbers))


def _never_verdict(c: SuccessCriterion, measured: Check) -> Check:
    """`measured` (ok) as the rates say: a rare 'increase' behavior fails or warns."""
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
