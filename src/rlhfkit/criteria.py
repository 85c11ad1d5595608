"""Success criteria: behaviors written down before training, each with a direction and a
detector that says, for one response, whether the behavior is there. Part of the project spec
(``[[success_criteria]]`` in ``rlhfkit.toml``); below `rlhfkit.project`, which validates them.

Detectors (the ``kind`` in a criterion's ``detector`` table):

- text only (no model) — ``regex``, ``keywords``, ``length``, ``starts_with``, ``ends_with``,
  ``refusal`` (a declined request), ``callable`` (``package.module:function``, given the
  response, or the prompt and the response: `CallableDetector`): each has
  ``matches(text, prompt=None) -> bool``, cheap enough to run on every PPO step;
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from rlhfkit import strict_json
from rlhfkit.callables import load_callable, positional_arity
from rlhfkit.errors import UserError, display_path
from rlhfkit.spec_base import NAME, Strict

ColumnValue = str | bool | int | float
"""A value ``applies_to`` selects by, as TOML writes it."""
ColumnValues = ColumnValue | list[ColumnValue]


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

    def matches(self, text: str, prompt: Any = None) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE if self.ignore_case else 0) is not None


class KeywordsDetector(Strict):
    kind: Literal["keywords"]
    any: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """The response matches when it contains any of these words or phrases."""
    ignore_case: bool = True

    def matches(self, text: str, prompt: Any = None) -> bool:
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

    def matches(self, text: str, prompt: Any = None) -> bool:
        n = len(text.split()) if self.unit == "words" else len(text)
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)


class StartsWithDetector(Strict):
    kind: Literal["starts_with"]
    prefixes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    ignore_case: bool = True

    def matches(self, text: str, prompt: Any = None) -> bool:
        t = text.lstrip()
        if self.ignore_case:
            return any(t.lower().startswith(p.lower()) for p in self.prefixes)
        return any(t.startswith(p) for p in self.prefixes)


class EndsWithDetector(Strict):
    kind: Literal["ends_with"]
    suffixes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    ignore_case: bool = True

    def matches(self, text: str, prompt: Any = None) -> bool:
        t = text.rstrip()
        if self.ignore_case:
            return any(t.lower().endswith(s.lower()) for s in self.suffixes)
        return any(t.endswith(s) for s in self.suffixes)


# Declining or refusing, in the words chat models and help desks use. Each pattern is a
# general shape of a decline, not a sentence from the test set (tests/evaluate/files/
# refusals.jsonl, where precision and recall are measured on held-out replies): an inability
# or unwillingness with a verb of helping ("I can't advise on"), a scope ("I'm only able to
# help with", "outside my remit"), a redirect to a professional ("a question for a
# solicitor"), a preference ("I'd rather not"). Kept specific: "we can't wait to see you",
# "I can't recommend it enough" and "I won't charge you twice" are no refusals.
_HELP_VERBS = (
    r"(?:help|assist|advise|answer|comment|speak to|weigh in|discuss|provide|share|give|offer|"
    r"recommend|do (?:that|this|it)|go (?:there|into)|get into|write|make that (?:call|decision)|"
    r"fulfil|fulfill|comply|process|access|say|tell(?! you how)|talk about|support|be of help)"
)
_NOT_ENOUGH = r"(?![^.!?]{0,30}\benough\b)"  # "I can't recommend it enough" praises
_CANT = r"(?:can't|cannot|can not|won't|will not|couldn't possibly)"
_WHO = r"(?:\bI|\bwe|\band|^|[,.!?;:]\s*)"  # "sorry mate, can't help you there"
_PROFESSIONAL = (
    r"(?:doctor|GP|solicitor|lawyer|accountant|vet|pharmacist|advis[eo]r|professional|"
    r"specialist|expert|therapist|counsell?or|bank|insurer|landlord|council|police|"
    r"manufacturer|electrician|plumber|provider|travel agent|someone qualified)s?\b"
)
REFUSAL_PATTERNS = (
    # I can't / won't / am unable to + a verb of helping
    rf"{_WHO}(?: really)? {_CANT}(?: really)?(?: be able to)? {_HELP_VERBS}{_NOT_ENOUGH}",
    rf"\bI(?:'m| am) (?:sorry,? )?(?:but )?(?:really )?(?:not able|unable|not going) to "
    rf"(?:be able to )?{_HELP_VERBS}{_NOT_ENOUGH}",
    rf"\bwe(?:'re| are) (?:not able|unable) to {_HELP_VERBS}",
    rf"\b(?:not |un)(?:allowed|permitted|authori[sz]ed) to {_HELP_VERBS}",
    r"\bI(?:'m| am) not (?:qualified|equipped|set up|in a position|here) to\b",
    r"\bI(?:'m| am) afraid I (?:can't|cannot)\b",
    r"\bI (?:won't|will not) be (?:answering|giving|writing|helping|providing|sharing|"
    r"commenting|discussing|doing that)",
    r"\bI wish I could (?:help|assist|do more)",
    # declining outright
    r"\bI(?: must| have to|'ll have to| will have to|'m going to| am going to)?"
    r"(?: respectfully| politely)? decline\b",
    r"\bI(?:'ll| will)(?: have to)? pass\b|^\W*pass\b",
    r"\b(?:have to|must) say no\b|\ba no from (?:me|us)\b|\bno can do\b|\bsit this one out\b",
    r"\bI(?:'d| would) (?:rather|prefer) not\b|\bI(?:'d| would) (?:rather|prefer to) stay out\b",
    r"\b(?:not|don't feel) comfortable\b|\bappropriate for me\b|\bfeel it's appropriate\b",
    r"\bI (?:shouldn't|should not|'d better not|had better not)(?: really)? "
    r"(?:answer|comment|say|get into|weigh in)|\bI don't think I should\b",
    # only here for ...; outside my scope
    r"\b(?:I|we|our team) (?:can|could) only (?:really )?(?:help|assist|answer|deal|talk|"
    r"discuss|handle)",
    r"\b(?:only|just) (?:here|able|set up|designed|meant) (?:to|for) (?:help|assist|answer|"
    r"deal|talk|discuss|handle|questions)",
    r"\bhere to help with [^.!?]{0,60}\bonly\b",
    r"\b(?:I|we) only (?:help|deal|handle|answer|talk about|cover|discuss)(?: with)? "
    r"(?:questions|queries|enquiries|requests)",
    r"\b(?:I(?:'m| am)|(?:my|our) role is) (?:limited|restricted) to\b",
    r"\bthis (?:chat|service|assistant|line|channel)\b(?:[^.!?]{0,60}\bonly\b| (?:can't|cannot))",
    r"\b(?:not|isn't|is not) (?:something|a (?:topic|subject|question|thing)|one|an area) "
    r"(?:that )?(?:I|we)(?:'m| am|'re| are)? (?:really |actually )?(?:can|could|cover|do|talk|"
    r"discuss|get|deal|handle|help|advise|comment|answer|able|allowed|permitted|in a position)",
    r"\bnot (?:really )?my (?:area|department|field|place|remit|speciality|specialty|role)\b",
    r"\b(?:outside|beyond) (?:of )?(?:my|our|the) (?:area|scope|remit|expertise|wheelhouse|"
    r"field|lane)\b|\bnot within (?:my|our|the) (?:scope|remit|area|expertise)\b",
    r"\b(?:outside|beyond) (?:of )?what (?:I|we)(?:'m| am|'re| are)? (?:can|could|able|here|do|"
    r"cover)",
    r"\babove my pay grade\b|\bI don't have (?:the )?(?:expertise|permission|authority)\b",
    r"\bnot (?:really )?the (?:right|best|best placed|correct|one)(?: person| assistant| one)? "
    r"(?:to ask|to help|for (?:that|this|the job))|\bdon't think I(?:'m| am) the (?:right|best)",
    # not a subject I get into
    r"\b(?:I|we) (?:stay|keep|steer) (?:out of|away from|clear of) (?:politic|religio|debate|"
    r"argument|discussion|that|this|those|such)",
    r"\bI avoid (?:politic|religio|controversial|discussing|commenting|giving)",
    r"\b(?:I|we) (?:don't|do not) (?:discuss|talk about|comment on|get into|get involved|"
    r"weigh in)|\b(?:I|we) (?:don't|do not) (?:give|offer|provide) (?:\w+ ){0,2}"
    r"(?:advice|opinions?|guidance|recommendations)\b",
    r"\bI (?:don't|do not) (?:do|write|handle|deal with|cover|answer)\b|\bwe (?:don't|do not) "
    r"(?:handle|deal with|cover) (?:that|this|it|those|such|questions|topics|requests)\b",
    # a question for someone else
    r"\b(?:that|this|it)(?:'s|'d be| is| would be)(?: really| more| probably| best)? "
    r"(?:a (?:question|matter|job)|one) (?:for|to ask|better suited)",
    # ...sent on to one, not advice that ends "see a doctor if it gets worse"
    rf"\b(?:you(?:'d|'ll| would| will)? (?:need to|have to|should|want to|be better off)|"
    rf"best to|please|I'd (?:suggest|recommend)) (?:ask(?:ing)?|speak(?:ing)? to|"
    rf"talk(?:ing)? to|consult(?:ing)?|contact(?:ing)?|check(?:ing)? with|see(?:ing)?) "
    rf"(?:a |an |your |the )?(?:qualified |medical |legal |local |registered |financial )?"
    rf"{_PROFESSIONAL}(?![^.!?]{{0,40}}\b(?:if|before|when)\b)",
    r"\bbest (?:put|asked|directed|left) to\b|, not me\b|\brather than (?:me|us)\b",
    r"\bleave (?:that|this|it)(?: one)? to\b|\bI(?:'ll| will) leave (?:that|this|it)(?: one)?"
    r"(?! (?:with|at|in|on|for|by|until|out))\b",
    r"\bsomething (?:you|your \w+)(?:'d| would|'ll| will)? (?:need|have) to (?:handle|take up|"
    r"ask|raise)|\b(?:need|have) to take (?:that |it |this )?up with\b",
    r"\bfor (?:medical|legal|financial|tax|health) (?:questions|matters|advice|issues|queries)\b",
    r"\bas an AI\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE | re.MULTILINE)
# quoted speech is not the reply's own voice: "the robot says 'I can't do that'"
_QUOTED = re.compile(r"(?<!\w)['\"\u2018\u201c].*?['\"\u2019\u201d](?!\w)")


def is_refusal(text: str) -> bool:
    """True when the text declines or refuses (curly apostrophes count as straight ones;
    quoted speech is left out)."""
    text = _QUOTED.sub(" ", text.replace("\u2019", "'"))
    return _REFUSAL.search(text) is not None


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

    def matches(self, text: str, prompt: Any = None) -> bool:
        return is_refusal(text) or (bool(self.also) and contains_any(text, self.also))


class CallableDetector(Strict):
    """The team's own function decides. By its signature: with one required positional
    parameter it is called ``f(response)``; with two, ``f(prompt, response)``, the prompt as
    the prompts file holds it (a string, or a list of ``{"role", "content"}`` messages).
    It returns a bool (anything truthy counts)."""

    kind: Literal["callable"]
    path: Annotated[str, Field(pattern=r"^[\w.]+:[\w]+$")]
    """``package.module:function``: ``f(response) -> bool`` or ``f(prompt, response) -> bool``."""

    def matches(self, text: str, prompt: Any = None) -> bool:
        fn = self.load()
        return bool(fn(prompt, text) if sees_prompt(fn, self.path) else fn(text))

    def load(self) -> Callable[..., Any]:
        """The function, its signature checked (`sees_prompt`): a bad one fails here, as
        `rlhfkit project check` and `rlhfkit run` do before anything runs."""
        fn = load_callable(self.path, f"detector '{self.path}'")
        sees_prompt(fn, self.path)
        return fn


def sees_prompt(fn: Callable[..., Any], path: str) -> bool:
    """Whether a `callable` detector takes ``(prompt, response)`` (two required positional
    parameters) rather than ``(response)`` (one); any other signature is refused."""
    arity = positional_arity(fn)
    if arity is None:  # a builtin without a signature: the response alone
        return False
    required, varargs = arity
    if required not in (1, 2) and not varargs:
        raise UserError(
            f"detector '{path}' takes {required} required arguments; a detector is "
            "f(response) or f(prompt, response)"
        )
    return required == 2


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

    def matches(self, text: str, prompt: Any = None) -> bool:
        raise UserError(needs_context("reward_model"))


class JudgeDetector(Strict):
    """A judge model answers a yes/no question about (prompt, response): 'yes' matches."""

    kind: Literal["judge"]
    question: Annotated[str, Field(min_length=1)]
    """Asked about every response, e.g. 'Does the reply give the customer a concrete next
    step?'. Needs a judge endpoint (`--judge openai`) at evaluation time."""

    def matches(self, text: str, prompt: Any = None) -> bool:
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
    applies_to: dict[Annotated[str, Field(pattern=NAME)], ColumnValues] | None = None
    """Only the prompts whose row has these column values (a list: any of them), e.g.
    ``applies_to = { kind = "off_topic" }``: "declines off-topic requests" is measured on
    off-topic prompts only. A value is a string, a number or true/false, compared with the
    row's JSON value (``{ level = 3 }``, ``{ on_topic = false }``). None: every prompt."""

    @field_validator("applies_to", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        for col, wanted in (v or {}).items() if isinstance(v, dict) else ():
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values or not all(isinstance(x, str | int | float) for x in values):
                raise ValueError(
                    f"{col}: give a string, a number or true/false, or a non-empty list of them"
                )
        return v

    @property
    def text_only(self) -> bool:
        """Decidable without a model, from the response (a `callable` may also look at the
        prompt): cheap enough for every PPO step."""
        return isinstance(self.detector, TEXT_DETECTORS)

    def applies(self, columns: Mapping[str, Any] | None) -> bool:
        """Whether the criterion is measured on a prompt with these columns (its row in the
        prompts file, less the prompt itself). A prompt without the column is outside it."""
        if self.applies_to is None:
            return True
        row = columns or {}
        return all(
            col in row and any(same_value(row[col], w) for w in _listed(wanted))
            for col, wanted in self.applies_to.items()
        )

    def subset(self) -> str:
        """``applies_to`` in words, e.g. ``kind = off_topic``; "every prompt" without it."""
        if self.applies_to is None:
            return "every prompt"
        return ", ".join(
            f"{col} = {' or '.join(column_value(w) for w in _listed(wanted))}"
            for col, wanted in self.applies_to.items()
        )

    def subset_problem(self, rows: Sequence[Mapping[str, Any]]) -> str | None:
        """Why no prompt with these columns (`prompt_columns` of each row) is in
        ``applies_to``, naming what the rows do have; None when one is."""
        if any(self.applies(row) for row in rows):
            return None
        for col, wanted in (self.applies_to or {}).items():
            found = sorted({column_value(row[col]) for row in rows if col in row})
            if not found:
                columns = sorted({k for row in rows for k in row})
                have = f"its columns: {', '.join(columns)}" if columns else "it has no columns"
                return f"no prompt has a '{col}' column ({have})"
            named = _listed(wanted)
            if not any(same_value(row[col], w) for row in rows if col in row for w in named):
                words = " or ".join(column_value(w) for w in named)
                return f"no prompt has {col} = {words} (its values: {', '.join(found)})"
        return f"no prompt has {self.subset()} all at once"

    def dump(self) -> dict[str, Any]:
        """As JSON, for the criteria's hash: a criterion without ``applies_to`` dumps as it did
        before the field existed, so frozen hashes of older projects still match."""
        out = self.model_dump(mode="json")
        if out.get("applies_to") is None:
            out.pop("applies_to", None)
        return out


TEXT_FIELDS = ("prompt", "completion", "chosen", "rejected", "response_a", "response_b", "text",
               "messages")  # fmt: skip


def prompt_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A data row's columns, as ``applies_to`` and ``--slice`` see them: its string, number
    and true/false fields other than the texts (``prompt``, ``completion``, ...). Lists and
    objects (annotation metadata such as ``votes``) are no columns, and a null is a missing
    column (``--slice`` files it under "(missing)", ``applies_to`` does not match it)."""
    return {
        k: v
        for k, v in row.items()
        if k not in TEXT_FIELDS and isinstance(v, str | int | float | bool)
    }


def _listed(wanted: Any) -> list[Any]:
    return wanted if isinstance(wanted, list) else [wanted]


def same_value(value: Any, wanted: Any) -> bool:
    """Whether a row's JSON value is the value ``applies_to`` names: by `column_value`
    ("3" and 3, "false" and false are alike), and numbers by value (3 and 3.0)."""
    if column_value(value) == column_value(wanted):
        return True
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (value, wanted))
    return numbers and value == wanted


def column_value(value: Any) -> str:
    """A prompt column's value as ``applies_to`` and ``--slice`` compare it: a string as it
    is, a JSON true/false as ``true``/``false``, a number as written (``3``, ``0.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class RefusalScope:
    """Where declining is pre-registered as wanted: the success criteria with a ``refusal``
    detector and direction "increase". The `refusal` reward-hacking monitor
    (`rlhfkit.train.monitors`) watches only the prompts none of them applies to: declining
    there is the wanted behavior spilling over (over-refusal)."""

    wanted: tuple[SuccessCriterion, ...] = ()

    @classmethod
    def of(cls, criteria: Sequence[SuccessCriterion]) -> RefusalScope:
        return cls(
            tuple(c for c in criteria if c.direction == "increase" and c.detector.kind == "refusal")
        )

    def watched(self, columns: Mapping[str, Any] | None) -> bool:
        """Whether a prompt with these columns is one where declining is not wanted."""
        return not any(c.applies(columns) for c in self.wanted)

    def refuses(self, text: str, prompt: Any = None) -> bool:
        """Whether a reply declines, as the wanted criteria's detectors say (any of them,
        with their ``also`` phrases); the built-in `is_refusal` when none is pre-registered.
        The refusal monitor and the doctor's over-refusal check both count by this."""
        if not self.wanted:
            return is_refusal(text)
        return any(c.detector.matches(text, prompt) for c in self.wanted)

    def describe(self) -> str | None:
        """The watched prompts in words; None when every prompt is watched."""
        if not self.wanted:
            return None
        return "prompts outside " + "; ".join(f"{c.name} ({c.subset()})" for c in self.wanted)


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
