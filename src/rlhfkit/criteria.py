"""Success criteria: behaviors written down before training, each with a direction and a
detector that says, for one response, whether the behavior is there. Part of the project spec
(``[[success_criteria]]`` in ``rlhfkit.toml``); below `rlhfkit.project`, which validates them.

Detectors (the ``kind`` in a criterion's ``detector`` table):

- text only — ``regex``, ``keywords``, ``length``, ``starts_with``, ``ends_with``,
  ``refusal`` (a declined request), ``callable`` (``package.module:function`` on the text):
  each has ``matches(text) -> bool``, cheap enough to run on every PPO step;
- with context — ``reward_model`` (a reward model's score is within ``min``/``max``) and
  ``judge`` (a yes/no question put to a judge model): these need the prompt and a model, so
  they run through `rlhfkit.evaluate.criteria.detect` with a `DetectContext`.

`hash_criteria` is the criteria's identity; the record of it made when training starts
(``artifacts/criteria.lock.json``, `LOCK_FILE`) is read by `read_lock`, written by
`rlhfkit.evaluate.criteria.freeze_criteria`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from rlhfkit import strict_json
from rlhfkit.callables import load_callable
from rlhfkit.errors import UserError, display_path
from rlhfkit.spec_base import NAME, Strict

# --- text detectors ------------------------------------------------------------------------


class RegexDetector(Strict):
    kind: Literal["regex"]
    pattern: str
    ignore_case: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE if self.ignore_case else 0) is not None


class KeywordsDetector(Strict):
    kind: Literal["keywords"]
    any: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """The response matches when it contains any of these words or phrases."""
    ignore_case: bool = True

    def matches(self, text: str) -> bool:
        return contains_any(text, self.any, self.ignore_case)


class LengthDetector(Strict):
    kind: Literal["length"]
    unit: Literal["words", "chars"] = "words"
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> LengthDetector:
        if self.min is None and self.max is None:
            raise ValueError("a length detector needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is larger than 'max'")
        return self

    def matches(self, text: str) -> bool:
        n = len(text.split()) if self.unit == "words" else len(text)
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)


class StartsWithDetector(Strict):
    kind: Literal["starts_with"]
    prefixes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    ignore_case: bool = True

    def matches(self, text: str) -> bool:
        t = text.lstrip()
        if self.ignore_case:
            return any(t.lower().startswith(p.lower()) for p in self.prefixes)
        return any(t.startswith(p) for p in self.prefixes)


class EndsWithDetector(Strict):
    kind: Literal["ends_with"]
    suffixes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    ignore_case: bool = True

    def matches(self, text: str) -> bool:
        t = text.rstrip()
        if self.ignore_case:
            return any(t.lower().endswith(s.lower()) for s in self.suffixes)
        return any(t.endswith(s) for s in self.suffixes)


# Declining or refusing, in the words small and large chat models actually use. Kept
# deliberately specific ("I can't help", not "can't"): "we can't wait to see you" is no refusal.
REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) (?:sorry,? )?(?:but )?(?:not able|unable) to\b",
    r"\bI (?:can't|cannot|can not) (?:help|assist|do that|provide|answer|comply|fulfil|share|"
    r"discuss|give|process|access)",
    r"\bI (?:won't|will not) (?:be able to )?(?:help|assist|provide|do that|answer)",
    r"\bI(?:'m| am) (?:not (?:allowed|permitted|authorized|authorised) to|afraid I (?:can't|"
    r"cannot))",
    r"\bI must (?:respectfully |politely )?decline\b",
    r"\bas an AI\b",
    r"\b(?:that|this)(?:'s| is) (?:outside|beyond|not within) (?:my|our|the) (?:scope|remit|"
    r"expertise)",
    r"\bagainst (?:my|our) (?:guidelines|policy|policies|rules)\b",
    r"\bunable to (?:help|assist) (?:you )?with (?:that|this)\b",
    r"\bnot something I can help with\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when the text declines or refuses (curly apostrophes count as straight ones)."""
    return _REFUSAL.search(text.replace("\u2019", "'")) is not None


def contains_any(text: str, phrases: Sequence[str], ignore_case: bool = True) -> bool:
    """Whole-word containment: 'maybe' is in 'Maybe so' but not in 'Maybelline'."""
    flags = re.IGNORECASE if ignore_case else 0
    text = text.replace("\u2019", "'")
    return any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text, flags) for p in phrases)


class RefusalDetector(Strict):
    """The response declines or refuses the request (e.g. for a criterion 'declines
    off-topic requests' that should increase, or 'refuses answerable ones' that should not)."""

    kind: Literal["refusal"]
    also: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """Extra phrases that count as declining here ('please contact a lawyer')."""

    def matches(self, text: str) -> bool:
        return is_refusal(text) or (bool(self.also) and contains_any(text, self.also))


class CallableDetector(Strict):
    kind: Literal["callable"]
    path: Annotated[str, Field(pattern=r"^[\w.]+:[\w]+$")]
    """``package.module:function``; the function takes the response text, returns a bool."""

    def matches(self, text: str) -> bool:
        return bool(load_callable(self.path, f"detector '{self.path}'")(text))


# --- detectors that need the prompt and a model ---------------------------------------------


class RewardModelDetector(Strict):
    """A reward model's score for (prompt, response) lies within [min, max]."""

    kind: Literal["reward_model"]
    model: Annotated[str, Field(min_length=1)]
    """A reward model folder from `rlhfkit train rm`, relative to the project folder."""
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RewardModelDetector:
        if self.min is None and self.max is None:
            raise ValueError("a reward_model detector needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is larger than 'max'")
        return self

    def within(self, reward: float) -> bool:
        return (self.min is None or reward >= self.min) and (self.max is None or reward <= self.max)

    def matches(self, text: str) -> bool:
        raise UserError(needs_context("reward_model"))


class JudgeDetector(Strict):
    """A judge model answers a yes/no question about (prompt, response): 'yes' matches."""

    kind: Literal["judge"]
    question: Annotated[str, Field(min_length=1)]
    """Asked about every response, e.g. 'Does the reply give the customer a concrete next
    step?'. Needs a judge endpoint (`--judge openai`) at evaluation time."""

    def matches(self, text: str) -> bool:
        raise UserError(needs_context("judge"))


def needs_context(kind: str) -> str:
    """Why a context detector cannot run on text alone."""
    return (
        f"a '{kind}' detector needs the prompt and a model; evaluate it with "
        "rlhfkit.evaluate.criteria.detect (as `rlhfkit eval policy` does), not on text alone"
    )


TEXT_DETECTORS = (
    RegexDetector,
    KeywordsDetector,
    LengthDetector,
    StartsWithDetector,
    EndsWithDetector,
    RefusalDetector,
    CallableDetector,
)
DETECTOR_KINDS = (
    "regex",
    "keywords",
    "length",
    "starts_with",
    "ends_with",
    "refusal",
    "callable",
    "reward_model",
    "judge",
)

Detector = Annotated[
    RegexDetector
    | KeywordsDetector
    | LengthDetector
    | StartsWithDetector
    | EndsWithDetector
    | RefusalDetector
    | CallableDetector
    | RewardModelDetector
    | JudgeDetector,
    Field(discriminator="kind"),
]


class SuccessCriterion(Strict):
    """A behavior written down before training, with the direction it should move."""

    name: Annotated[str, Field(pattern=NAME)]
    description: Annotated[str, Field(min_length=1)]
    direction: Literal["increase", "decrease"]
    detector: Detector
    applies_to: dict[Annotated[str, Field(pattern=NAME)], str | list[str]] | None = None
    """Only the prompts whose row has these column values (a list: any of them), e.g.
    ``applies_to = { kind = "off_topic" }``: "declines off-topic requests" is measured on
    off-topic prompts only. None: every prompt."""

    @property
    def text_only(self) -> bool:
        """Decidable from the response text alone (so, e.g., on every PPO step)."""
        return isinstance(self.detector, TEXT_DETECTORS)

    def applies(self, columns: Mapping[str, Any] | None) -> bool:
        """Whether the criterion is measured on a prompt with these columns (its row in the
        prompts file, less the prompt itself). A prompt without the column is outside it."""
        if self.applies_to is None:
            return True
        row = columns or {}
        for col, wanted in self.applies_to.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if str(row.get(col)) not in allowed:
                return False
        return True

    def dump(self) -> dict[str, Any]:
        """As JSON, for the criteria's hash: a criterion without ``applies_to`` dumps as it did
        before the field existed, so frozen hashes of older projects still match."""
        out = self.model_dump(mode="json")
        if out.get("applies_to") is None:
            out.pop("applies_to", None)
        return out


def hash_criteria(dumped: list[dict[str, Any]]) -> str:
    """The hash `ProjectSpec.criteria_hash` computes, from the criteria as JSON."""
    return hashlib.sha256(strict_json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


# --- the record made when training starts ---------------------------------------------------

LOCK_FILE = "criteria.lock.json"
"""In the project's ``artifacts/``: the criteria and their hash when the first training stage
started (written once, by `rlhfkit.evaluate.criteria.freeze_criteria`)."""


def read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock file's record (None when there is none); a damaged one fails clearly."""
    if not lock.exists():
        return None
    try:
        record = json.loads(lock.read_text())
    except json.JSONDecodeError:
        record = None
    if not (isinstance(record, dict) and "criteria" in record and "criteria_hash" in record):
        raise UserError(f"{display_path(lock)}: not a criteria lock written by rlhfkit")
    return record
