"""Success criteria: behaviors written down before training, each with a direction and a
detector that says, for one response, whether the behavior is there.

Detectors (the ``kind`` in ``[[success_criteria]]``'s ``detector`` table):

- text only — ``regex``, ``keywords``, ``length``, ``starts_with``, ``ends_with``,
  ``refusal`` (a declined request), ``callable`` (``package.module:function`` on the text):
  each has ``matches(text) -> bool``, cheap enough to run on every PPO step;
- with context — ``reward_model`` (a reward model's score is within ``min``/``max``) and
  ``judge`` (a yes/no question put to a judge model): these need the prompt and a model, so
  they run through `detect` with a `DetectContext`.

Criteria are frozen when the first training stage of a project starts: `freeze_criteria`
writes ``artifacts/criteria.lock.json`` with their hash, once. An evaluation compares the
spec's criteria with that record (`criteria_status`) and says loudly when they changed —
criteria edited after seeing the results are not pre-registered any more.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from rlhfkit import strict_json
from rlhfkit.errors import UserError, display_path
from rlhfkit.spec_base import NAME, Strict

if TYPE_CHECKING:
    from rlhfkit.project import Project


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
        module, _, name = self.path.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"detector '{self.path}' cannot be imported: {e}") from None
        return bool(fn(text))


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
        raise UserError(_needs_context("reward_model"))


class JudgeDetector(Strict):
    """A judge model answers a yes/no question about (prompt, response): 'yes' matches."""

    kind: Literal["judge"]
    question: Annotated[str, Field(min_length=1)]
    """Asked about every response, e.g. 'Does the reply give the customer a concrete next
    step?'. Needs a judge endpoint (`--judge openai`) at evaluation time."""

    def matches(self, text: str) -> bool:
        raise UserError(_needs_context("judge"))


def _needs_context(kind: str) -> str:
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

    @property
    def text_only(self) -> bool:
        """Decidable from the response text alone (so, e.g., on every PPO step)."""
        return isinstance(self.detector, TEXT_DETECTORS)


# --- evaluating criteria on responses --------------------------------------------------------


class QuestionJudge(Protocol):
    """What a `judge` detector needs: a yes/no answer about one response."""

    def ask(self, question: str, prompt: Any, response: str) -> bool: ...


RewardFn = Callable[[list[Any], list[str]], Sequence[float]]


@dataclass
class DetectContext:
    """What the context detectors need. Reward models load on first use and stay loaded."""

    root: Path = Path(".")
    """The project folder: a `reward_model` detector's path is relative to it."""
    question_judge: QuestionJudge | None = None
    reward_models: dict[str, RewardFn] = field(default_factory=dict)
    """Already-loaded reward functions by the detector's `model` string (tests put one here)."""

    def rewards(self, model: str, prompts: list[Any], responses: list[str]) -> list[float]:
        if model not in self.reward_models:
            from rlhfkit.train.rewards import RewardModelFn

            path = Path(model) if Path(model).is_absolute() else self.root / model
            self.reward_models[model] = RewardModelFn(str(path))
        return [float(r) for r in self.reward_models[model](prompts, responses)]


def detect(
    criteria: Sequence[SuccessCriterion],
    prompts: list[Any],
    responses: list[str],
    ctx: DetectContext | None = None,
) -> dict[str, list[bool]]:
    """Whether each response shows each criterion's behavior: ``{name: [bool per response]}``.

    `prompts[i]` is the prompt `responses[i]` answers. Without `ctx`, only text detectors
    can run; a context detector then fails with a message that says what it needs.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    out: dict[str, list[bool]] = {}
    for c in criteria:
        d = c.detector
        if isinstance(d, TEXT_DETECTORS):
            out[c.name] = [d.matches(r) for r in responses]
        elif ctx is None:
            raise UserError(f"success criterion '{c.name}': " + _needs_context(d.kind))
        elif isinstance(d, RewardModelDetector):
            out[c.name] = [d.within(r) for r in ctx.rewards(d.model, prompts, responses)]
        else:
            if ctx.question_judge is None:
                raise UserError(
                    f"success criterion '{c.name}' asks a judge: {d.question!r}",
                    hint="give a judge endpoint: --judge openai with RLHFKIT_JUDGE_BASE_URL, "
                    "RLHFKIT_JUDGE_MODEL (and RLHFKIT_JUDGE_API_KEY) set",
                )
            judge = ctx.question_judge
            pairs = zip(prompts, responses, strict=True)
            out[c.name] = [judge.ask(d.question, p, r) for p, r in pairs]
    return out


# --- freezing --------------------------------------------------------------------------------

LOCK_FILE = "criteria.lock.json"


def _dumps(criteria: Sequence[SuccessCriterion]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in criteria]


def hash_criteria(dumped: list[dict[str, Any]]) -> str:
    """The hash `ProjectSpec.criteria_hash` computes, from the criteria as JSON."""
    return hashlib.sha256(strict_json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CriteriaStatus:
    """The spec's criteria now, against the record made when training started."""

    criteria_hash: str
    frozen_hash: str | None
    """None: no training stage of this project has recorded the criteria yet."""
    frozen_at: str | None = None
    frozen_by: str | None = None
    """The stage that froze them (e.g. 'sft', 'ppo')."""
    changes: tuple[str, ...] = ()
    """What differs, criterion by criterion ('concise: detector or direction edited')."""

    @property
    def changed(self) -> bool:
        return self.frozen_hash is not None and self.frozen_hash != self.criteria_hash

    def message(self) -> str:
        if self.frozen_hash is None:
            return (
                "the success criteria were never frozen: no training stage recorded them, so "
                "nothing shows they were written down before training"
            )
        if self.changed:
            return (
                f"THE SUCCESS CRITERIA CHANGED after training started (frozen {self.frozen_hash} "
                f"by {self.frozen_by} at {self.frozen_at}, now {self.criteria_hash}): "
                + "; ".join(self.changes)
                + ". These results are not a pre-registered test."
            )
        return f"success criteria unchanged since {self.frozen_by} froze them ({self.frozen_at})"

    def to_json(self) -> dict[str, Any]:
        return {
            "criteria_hash": self.criteria_hash,
            "frozen_hash": self.frozen_hash,
            "changed": self.changed,
            "frozen_at": self.frozen_at,
            "frozen_by": self.frozen_by,
            "changes": list(self.changes),
            "message": self.message(),
        }


def freeze_criteria(project: Project, stage: str) -> CriteriaStatus:
    """Record the criteria's hash when a project's first training stage starts (once: a later
    stage finds the record and leaves it alone). Returns the status against that record."""
    from rlhfkit.data.io import atomic_open

    lock = project.artifacts(LOCK_FILE)
    if not lock.exists():
        dumped = _dumps(project.spec.success_criteria)
        record = {
            "criteria_hash": hash_criteria(dumped),
            "frozen_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "frozen_by": stage,
            "criteria": dumped,
        }
        with atomic_open(lock) as f:
            strict_json.dump(record, f, indent=2)
            f.write("\n")
    return criteria_status(project)


def criteria_status(project: Project, recorded_hash: str | None = None) -> CriteriaStatus:
    """The spec's criteria against the project's lock file; without one, against
    `recorded_hash` (e.g. the hash a trained model's manifest carries), if given."""
    now = _dumps(project.spec.success_criteria)
    current = hash_criteria(now)
    lock = project.artifacts(LOCK_FILE)
    if not lock.exists():
        if recorded_hash is None:
            return CriteriaStatus(current, None)
        changes = () if recorded_hash == current else ("differs from the model's manifest",)
        return CriteriaStatus(current, recorded_hash, None, "the trained model's manifest", changes)
    try:
        record = json.loads(lock.read_text())
        frozen = record["criteria"]
        frozen_hash = record["criteria_hash"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{display_path(lock)}: not a criteria lock written by rlhfkit") from None
    changes = _changes(frozen, now)
    if frozen_hash != current and not changes:
        changes = ["criteria reordered or re-typed"]
    return CriteriaStatus(
        current, frozen_hash, record.get("frozen_at"), record.get("frozen_by"), tuple(changes)
    )


def _changes(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    old = {c["name"]: c for c in before}
    new = {c["name"]: c for c in now}
    out = [f"{n}: removed" for n in old if n not in new]
    out += [f"{n}: added" for n in new if n not in old]
    for n in old.keys() & new.keys():
        for part in ("direction", "detector", "description"):
            if old[n].get(part) != new[n].get(part):
                out.append(f"{n}: {part} edited")
    return sorted(out)
