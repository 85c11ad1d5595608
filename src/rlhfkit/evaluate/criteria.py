"""Running the success criteria (their specs live in `rlhfkit.criteria`) on responses, and
the record that freezes them when training starts.

Text detectors run on the text alone; ``reward_model`` and ``judge`` detectors need the prompt
and a model, so they run through `detect` with a `DetectContext`.

Criteria are frozen by whoever starts a project's first training stage (`rlhfkit train` and the
demo call `freeze_for_training`): `freeze_criteria` writes ``artifacts/criteria.lock.json``
with their hash, once. An evaluation compares the spec's criteria with that record
(`criteria_status`) and says loudly when they changed — criteria edited after seeing the
results are not pre-registered any more.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlhfkit import strict_json
from rlhfkit.criteria import (
    LOCK_FILE,
    TEXT_DETECTORS,
    RewardModelDetector,
    SuccessCriterion,
    hash_criteria,
    needs_context,
    read_lock,
)
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError
from rlhfkit.project import Project, load_project
from rlhfkit.train.configs import LoopConfig
from rlhfkit.train.loop import check_start
from rlhfkit.train.reward_model import RewardFn, RewardModelFn

# --- evaluating criteria on responses --------------------------------------------------------


class QuestionJudge(Protocol):
    """What a `judge` detector needs: a yes/no answer about one response."""

    def ask(self, question: str, prompt: Any, response: str) -> bool: ...


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
            path = Path(model) if Path(model).is_absolute() else self.root / model
            self.reward_models[model] = RewardModelFn(str(path))
        return [float(r) for r in self.reward_models[model](prompts, responses)]


def detect(
    criteria: Sequence[SuccessCriterion],
    prompts: list[Any],
    responses: list[str],
    ctx: DetectContext | None = None,
    columns: Sequence[Mapping[str, Any] | None] | None = None,
) -> dict[str, list[bool | None]]:
    """Whether each response shows each criterion's behavior: ``{name: [bool per response]}``.

    `prompts[i]` is the prompt `responses[i]` answers; `columns[i]` its row's other columns.
    With `columns`, a criterion with ``applies_to`` is run only on the responses to prompts
    it applies to; the others get None (not measured). Without `ctx`, only text detectors
    can run; a context detector then fails with a message that says what it needs.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    out: dict[str, list[bool | None]] = {}
    for c in criteria:
        keep = [True] * len(prompts) if columns is None else [c.applies(col) for col in columns]
        rows = [i for i, k in enumerate(keep) if k]
        hits = iter(_detect_one(c, [prompts[i] for i in rows], [responses[i] for i in rows], ctx))
        out[c.name] = [next(hits) if k else None for k in keep]
    return out


def _detect_one(
    c: SuccessCriterion, prompts: list[Any], responses: list[str], ctx: DetectContext | None
) -> list[bool]:
    """One criterion's detector on every (prompt, response)."""
    d = c.detector
    if not responses:  # nothing to load a model for
        return []
    if isinstance(d, TEXT_DETECTORS):
        return [d.matches(r, p) for p, r in zip(prompts, responses, strict=True)]
    if ctx is None:
        raise UserError(f"success criterion '{c.name}': " + needs_context(d.kind))
    if isinstance(d, RewardModelDetector):
        return [d.within(r) for r in ctx.rewards(d.model, prompts, responses)]
    if ctx.question_judge is None:
        raise UserError(
            f"success criterion '{c.name}' asks a judge: {d.question!r}",
            hint="give a judge endpoint: --judge openai with RLHFKIT_JUDGE_BASE_URL, "
            "RLHFKIT_JUDGE_MODEL (and RLHFKIT_JUDGE_API_KEY) set",
        )
    judge = ctx.question_judge
    return [judge.ask(d.question, p, r) for p, r in zip(prompts, responses, strict=True)]


# --- freezing --------------------------------------------------------------------------------


def _dumps(criteria: Sequence[SuccessCriterion]) -> list[dict[str, Any]]:
    return [c.dump() for c in criteria]


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
    record = read_lock(project.artifacts(LOCK_FILE))
    if record is None:
        if recorded_hash is None:
            return CriteriaStatus(current, None)
        changes = () if recorded_hash == current else ("differs from the model's manifest",)
        return CriteriaStatus(current, recorded_hash, None, "the trained model's manifest", changes)
    frozen_hash = record["criteria_hash"]
    changes = _changes(record["criteria"], now)
    if frozen_hash != current and not changes:
        changes = ["criteria reordered or re-typed"]
    return CriteriaStatus(
        current, frozen_hash, record.get("frozen_at"), record.get("frozen_by"), tuple(changes)
    )


def freeze_for_training(cfg: LoopConfig) -> str | None:
    """What the caller that starts a training stage with a project does first (`rlhfkit
    train`, the demo; a Python caller the same): after the checks that could refuse the run
    (`check_start`), freeze the criteria if this is the project's first training stage, and
    warn when they were edited since. Returns the frozen hash (None without a project)."""
    if cfg.project is None:
        return None
    check_start(cfg)
    stage = type(cfg).__name__.removesuffix("Config").lower()  # sft, reward, dpo, ppo
    status = freeze_criteria(load_project(cfg.project), stage)
    if status.changed:
        warnings.warn(status.message(), stacklevel=2)
    return status.frozen_hash


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
