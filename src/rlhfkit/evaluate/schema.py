"""The files `rlhfkit eval policy` and `rlhfkit eval rm` write, as typed records: the one
description of eval.json and eval_rm.json, written by the evaluations and read by the report,
the demo's summary and the CLI.

A record's fields are its JSON keys, in the order they are written. Values are stored as the
file holds them (an int stays an int, a list a list), so a file read and written again is the
same file. Two conventions of the writers are kept:

- a field marked `OPTIONAL_KEY` is left out of the file when it is None (the KL block of two
  models with different tokenizers, the human-majority block without a majority);
- statistics go through `strict_json.nulled` when written: a NaN or infinite value becomes
  null, and the object that held it gains ``non_finite`` {key: "NaN" | ...}. Such a key may
  read null although its type says float; every record keeps ``non_finite`` as it was.

samples.jsonl, beside eval.json, is plain JSON lines, read as they are: one row per prompt x
sample, {prompt_index, sample, seed, prompt, before, after, before_finished, after_finished,
before_words, after_words, columns {the prompt row's other columns}, criteria {name:
{before, after}} (null for a criterion that does not apply to the prompt), reward {before,
after} (with a reward model), kl (nats), judges {judge: {winner: after | before | tie |
both_bad, rationale}}}.

Each file carries ``schema`` (`POLICY_SCHEMA`, `RM_SCHEMA`), checked in `check_schema` only: a
file of another version is refused rather than misread; a hand-written file without one is
read as it is.
"""

from __future__ import annotations

import json
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from rlhfkit import strict_json
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError, display_path

POLICY_SCHEMA = "rlhfkit.eval_policy/1"
RM_SCHEMA = "rlhfkit.eval_rm/1"
OPTIONAL_KEY = {"optional_key": True}
"""Field metadata: the key is absent from the file when the value is None."""

CI = list[float | None]
"""A confidence interval [lo, hi]; an end is null where it was not finite."""


class SchemaError(ValueError):
    """A JSON value that is not the record it should be: where (``criteria[2].before``) and why."""


# --- reading and writing records ----------------------------------------------------------


@dataclass
class Record:
    """Base of every record: `from_json` / `to_json` by the fields' types, in field order."""

    FIRST: ClassVar[tuple[str, ...]] = ()
    """A subclass's own fields that the file holds before the inherited ones."""
    non_finite: dict[str, str] | None = field(default=None, kw_only=True, metadata=OPTIONAL_KEY)
    """What `strict_json.nulled` wrote: {key: "NaN" | "Infinity" | "-Infinity"}; written last."""

    @classmethod
    def from_json(cls, data: Any, where: str = "top level") -> Any:
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: expected an object, found {type(data).__name__}")
        # keys this version does not know (a note added by hand, a later version's field) are
        # read past, as the report's readers always did; a missing required key is an error
        hints = get_type_hints(cls)
        nulled = data.get("non_finite") or {}
        values = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise SchemaError(f"{where}: no {f.name!r}")
                continue
            value, at = data[f.name], f"{where}.{f.name}"
            values[f.name] = (
                None if value is None and f.name in nulled else _decode(hints[f.name], value, at)
            )
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The record as the file holds it (before `strict_json.nulled`)."""
        out = {}
        nulled = self.non_finite or {}
        for f in sorted(fields(self), key=lambda f: f.name not in self.FIRST):  # stable
            value = getattr(self, f.name)
            if f.name == "non_finite" or (
                value is None and f.metadata.get("optional_key") and f.name not in nulled
            ):
                continue
            out[f.name] = _encode(value)
        if self.non_finite is not None:
            out["non_finite"] = dict(self.non_finite)
        return out


def _decode(tp: Any, value: Any, where: str) -> Any:
    """`value` read as type `tp`: records built, lists and dicts walked, plain values checked
    but left as they are (no int -> float: the file must write back the same)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _decode(tp, value, where)
    if isinstance(tp, type) and is_dataclass(tp):
        return tp.from_json(value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, found {type(value).__name__}")
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, found {type(value).__name__}")
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any or _is(tp, value):
        return value
    raise SchemaError(f"{where}: expected {tp.__name__}, found {value!r:.40}")


def _is(tp: type, value: Any) -> bool:
    if tp is float:  # JSON does not tell 1 from 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def check_schema(data: Any, expected: str, source: Path | str) -> None:
    """The one schema-version check: a file another version wrote is refused, not misread.
    A file without ``schema`` (hand-written) is read as it is."""
    found = data.get("schema") if isinstance(data, dict) else None
    if found is not None and found != expected:
        name = display_path(source) if isinstance(source, Path) else source
        raise UserError(
            f"{name}: schema {found!r}; this rlhfkit reads {expected!r}",
            hint="rerun the command that wrote it with this rlhfkit version",
        )


def write_json(record: Record, path: Path) -> None:
    """Write a result file: non-finite statistics as null (see `strict_json.nulled`)."""
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(record.to_json()), f, indent=2)
        f.write("\n")


def read_json(cls: type[Result], path: Path) -> Any:
    """A result file of record type `cls`, or `UserError` saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{display_path(path)}: not a JSON file ({e})") from None
    try:
        return cls.parse(data, path)
    except SchemaError as e:
        raise UserError(f"{display_path(path)}: not a {cls.SCHEMA} file: {e}") from None


# --- common parts ---------------------------------------------------------------------------


@dataclass
class Result(Record):
    """A whole result file: ``schema`` first, checked by `parse`. A subclass names its
    version: ``class X(Result, schema="rlhfkit.x/1")``."""

    SCHEMA: ClassVar[str]
    schema: str = field(default="", kw_only=True)
    """The file's schema version; a record made in memory gets its class's."""

    def __init_subclass__(cls, schema: str = "", **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.SCHEMA = schema

    def __post_init__(self) -> None:
        self.schema = self.schema or self.SCHEMA

    @classmethod
    def parse(cls, data: Any, source: Path | str) -> Any:
        """`from_json` after the schema check (`UserError` naming `source` for a file of
        another version); `SchemaError` for a wrong shape, for the caller to word."""
        check_schema(data, cls.SCHEMA, source)
        return cls.from_json(data)


@dataclass
class Rate(Record):
    rate: float
    """Share of samples that pass, over all prompts x samples."""
    ci: CI
    """Its confidence interval (Wilson or bootstrap, per the test)."""


@dataclass
class Mean(Record):
    mean: float
    ci: CI


@dataclass
class BeforeAfter(Record):
    before: float
    after: float


# --- eval.json (`rlhfkit eval policy`) --------------------------------------------------------


@dataclass
class Seconds(Record):
    """Wall-clock seconds of each step."""

    sample_after: float
    sample_before: float
    score: float
    """Criteria, length, reward and KL."""
    judges: float
    total: float


@dataclass
class ProjectInfo(Record):
    name: str
    spec: str
    """Path of the project's rlhfkit.toml."""
    rubric_version: str


@dataclass
class Models(Record):
    before: str
    after: str


@dataclass
class Settings(Record):
    """The evaluation's settings, with the spec's defaults filled in."""

    prompts: str
    """The held-out prompts file."""
    n_prompts: int
    samples_per_prompt: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    batch_size: int
    test: str
    """The statistical test's name, as `stats.TEST_NAMES` spells it."""
    alpha: float
    confidence: float
    judges: list[str]
    """The --judge choices as given."""
    reward_model: str | None
    slice_by: list[str] | None = field(default=None, metadata=OPTIONAL_KEY)
    """The --slice columns; absent without."""


@dataclass
class Freeze(Record):
    """The success criteria against the hash frozen when training started
    (`criteria.CriteriaStatus.to_json`)."""

    criteria_hash: str
    frozen_hash: str | None
    """None when training never froze them (or the after model carries no hash)."""
    changed: bool
    frozen_at: str | None
    frozen_by: str | None
    changes: list[str]
    message: str


@dataclass
class CriterionResult(Record):
    """One success criterion, before and after."""

    name: str
    description: str
    direction: str
    """increase | decrease: which way training should move it."""
    detector: str
    """The detector's kind (regex, length, judge, ...)."""
    before: Rate
    after: Rate
    diff: float
    """after - before."""
    diff_ci: CI
    p_value: float
    test: str
    verdict: str
    """improved | regressed | no significant change (at alpha, by direction)."""
    applies_to: dict[str, Any] | None = field(default=None, metadata=OPTIONAL_KEY)
    """The criterion's ``applies_to`` ({column: value or [values]}); absent: every prompt."""
    n_prompts: int | None = field(default=None, metadata=OPTIONAL_KEY)
    """Prompts it was measured on (its subset; within a slice, the slice's part of it).
    Absent from files written before subsets existed."""
    n_samples: int | None = field(default=None, metadata=OPTIONAL_KEY)
    """Samples per side it was measured on: n_prompts x samples per prompt."""


@dataclass
class MeanComparison(Record):
    """Means before and after (length, reward), compared over prompts: the paired sign-flip
    test and bootstrap intervals of `stats.compare_means`."""

    before: Mean
    after: Mean
    diff: float
    """after - before."""
    diff_ci: CI
    p_value: float
    test: str


@dataclass
class LengthResult(MeanComparison):
    """Mean response length in words."""

    FIRST = ("unit",)
    unit: str
    """words"""
    ratio: float | None
    """after / before; None when before is 0."""
    tokens: BeforeAfter
    """Mean response tokens."""
    truncated: BeforeAfter
    """Share of responses cut at max_new_tokens."""


@dataclass
class RewardResult(MeanComparison):
    """The reward model's mean reward."""

    FIRST = ("model",)
    model: str
    """The --reward-model given."""
    rise_sd: float | None
    """diff in standard deviations of the before rewards (None when they are constant)."""


@dataclass
class WinRateResult(Record):
    """One judge's verdicts on (after, before) pairs."""

    judge: str
    win_rate: float
    """Share of pairs after beat before, ties and both-bad counting half."""
    ci: CI
    p_value: float
    wins: int
    losses: int
    ties: int
    """Ties, both-bad not included."""
    test: str
    both_bad: int
    n: int
    """Pairs judged."""


@dataclass
class KLResult(Record):
    """KL(after || before) in nats per response (k1 estimator); only ``value`` and ``reason``
    when it could not be estimated (different tokenizers)."""

    value: float | None
    ci: CI | None = field(default=None, metadata=OPTIONAL_KEY)
    per_token: float | None = field(default=None, metadata=OPTIONAL_KEY)
    n: int | None = field(default=None, metadata=OPTIONAL_KEY)
    negative_share: float | None = field(default=None, metadata=OPTIONAL_KEY)
    """Share of samples whose log-ratio is negative."""
    estimator: str | None = field(default=None, metadata=OPTIONAL_KEY)
    exact: bool | None = field(default=None, metadata=OPTIONAL_KEY)
    """False with top-p below 1: the estimate is then approximate."""
    reason: str | None = field(default=None, metadata=OPTIONAL_KEY)
    """Why there is no estimate."""


@dataclass
class MonitorResult(Record):
    """One reward-hacking monitor (`monitors.Flag.to_json`)."""

    name: str
    value: float | None
    """None when the monitor could not be computed."""
    threshold: float
    flagged: bool
    explanation: str
    reference: float | None
    """The same measure on the before samples, where it has one."""


@dataclass(kw_only=True)
class PolicyEvalResult(Result, schema=POLICY_SCHEMA):
    """eval.json: what changed between a policy before and after training."""

    created: str
    """Local time, ``%Y-%m-%dT%H:%M:%S%z``."""
    seconds: Seconds | None = field(default=None, metadata=OPTIONAL_KEY)
    """Every file `eval policy` writes has it; a hand-made one may leave it out."""
    project: ProjectInfo
    models: Models
    settings: Settings
    freeze: Freeze
    criteria: list[CriterionResult]
    slices: dict[str, dict[str, list[CriterionResult]]] | None = field(
        default=None, metadata=OPTIONAL_KEY
    )
    """{column: {value: [criterion results on that value's prompts]}} for each --slice; a
    criterion is listed under a value only where it applies to some of its prompts. Prompts
    without the column form the value "(missing)". Absent without --slice."""
    length: LengthResult
    reward: RewardResult | None
    """None without --reward-model."""
    win_rates: list[WinRateResult]
    kl: KLResult
    monitors: list[MonitorResult]
    flagged: list[str]
    """Names of the monitors that fired."""
    samples_file: str
    """samples.jsonl, beside eval.json."""


# --- eval_rm.json (`rlhfkit eval rm --json`) --------------------------------------------------


@dataclass
class Accuracy(Record):
    pairs: int
    accuracy: float | None
    """Share of pairs with chosen scored above rejected; None without pairs."""
    ci: CI
    """Wilson interval."""


@dataclass
class HumanMajority(Record):
    """The reward model against each pair's majority vote (rows with ``votes``)."""

    rows_with_votes: int
    rows_with_majority: int
    rm_agreement: Accuracy | None
    """None when no row has a majority (then the two shares below are absent)."""
    majority_is_chosen: float | None = field(default=None, metadata=OPTIONAL_KEY)
    annotator_agreement_with_majority: float | None = field(default=None, metadata=OPTIONAL_KEY)
    """How far annotators agree with their own majority: the ceiling for the model."""


@dataclass
class CalibrationBin(Record):
    lo: float
    hi: float
    count: int
    confidence: float | None
    """Mean max(p, 1 - p) in the bin; None when empty."""
    accuracy: float | None


@dataclass
class Calibration(Record):
    """Of the Bradley-Terry probability sigmoid(r_chosen - r_rejected)."""

    ece: float
    """Expected calibration error (Guo et al. 2017)."""
    brier: float
    bins: list[CalibrationBin]


@dataclass
class LengthBias(Record):
    pearson: float | None
    """Of reward with length in words; None when either is constant."""
    spearman: float | None
    rm_prefers_longer: float | None
    """Share of pairs of different lengths where the model scores the longer reply higher."""
    chosen_is_longer: float | None
    """The same share for people (the chosen reply is the longer)."""
    accuracy_chosen_longer: Accuracy
    accuracy_chosen_shorter: Accuracy


@dataclass
class OrderInvariance(Record):
    """Rewards again with each prompt's replies in reverse order: a reward must not move."""

    max_abs_diff: float
    mean_abs_diff: float
    flipped: int
    """Pairs whose verdict changed."""


@dataclass(kw_only=True)
class RMEvalResult(Result, schema=RM_SCHEMA):
    """eval_rm.json: is the reward model fit to be trusted (see `rlhfkit.evaluate.rm`)."""

    model: str
    data: str
    pairs: int
    accuracy: float | None
    accuracy_ci: CI
    ties: int
    mean_margin: float
    mean_reward_chosen: float
    mean_reward_rejected: float
    truncated: int
    """Replies cut to fit the model's length."""
    slices: dict[str, dict[str, Accuracy]]
    """{column: {value: accuracy}} for each --slice."""
    human_majority: HumanMajority | None
    """None when no row carries votes."""
    calibration: Calibration
    length: LengthBias
    order_invariance: OrderInvariance
